"""Sparsification of stacked task vectors: magnitude top-k and random (DARE) drops.

Both work per task tensor: row ``t`` of a [T, d_out, d_in] stack is pruned on
its own, as peft's ``magnitude_based_pruning`` / ``random_pruning`` do.
"""

from __future__ import annotations

import torch


def magnitude_trim(stack: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``k = int(density · numel)`` largest-magnitude entries of each task tensor.

    ``stack`` is [T, ...]; k counts the entries of one task tensor, not of the stack.
    """
    flat = stack.reshape(stack.shape[0], -1)
    k = int(density * flat.shape[1])
    if k >= flat.shape[1]:
        return stack.clone()
    mask = torch.zeros_like(flat)
    if k > 0:
        top = torch.topk(flat.abs(), k=k, dim=1, largest=True).indices
        mask.scatter_(1, top, 1.0)
    return (flat * mask).reshape(stack.shape)


def random_keep_mask(shape: torch.Size | tuple[int, ...], density: float, seed: int) -> torch.Tensor:
    """A {0, 1} float32 mask on the CPU, each entry 1 with probability ``density``.

    One ``torch.bernoulli`` over the whole [T, d_out, d_in] shape from a CPU
    generator seeded with ``seed``: the same numbers peft's ``random_pruning``
    draws for T tensors in turn after ``torch.manual_seed(seed)``.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    probabilities = torch.full(tuple(shape), float(density), dtype=torch.float32)
    return torch.bernoulli(probabilities, generator=generator)


def dare_drop(stack: torch.Tensor, density: float, seed: int) -> torch.Tensor:
    """Random drop with keep probability ``density``, survivors rescaled by ``1/density``."""
    mask = random_keep_mask(stack.shape, density, seed).to(device=stack.device, dtype=stack.dtype)
    return stack * mask / density
