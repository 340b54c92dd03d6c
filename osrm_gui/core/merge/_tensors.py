"""Small tensor helpers shared by the merge methods (no registry, no context)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from osrm_gui.core.merge.base import LayerContext, LoraDelta


def compute_dtype(deltas: Sequence[LoraDelta]) -> torch.dtype:
    """float64 when any factor is float64, else float32 (half types are upcast)."""
    if any(t.dtype == torch.float64 for d in deltas for t in (d.A, d.B)):
        return torch.float64
    return torch.float32


def stack_task_vectors(deltas: Sequence[LoraDelta], dtype: torch.dtype | None = None) -> torch.Tensor:
    """The task vectors ``s_t · B_t A_t`` stacked into a [T, d_out, d_in] tensor."""
    dtype = dtype or compute_dtype(deltas)
    return torch.stack([d.dense(dtype) for d in deltas], dim=0)


def coefficient_weights(deltas: Sequence[LoraDelta], ctx: LayerContext, like: torch.Tensor) -> torch.Tensor:
    """The coefficients of the layer's adapters, shaped [T, 1, 1] to broadcast over a stack."""
    values = [float(ctx.coefficients[d.index]) for d in deltas]
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


def weighted_sum(stack: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_t w_t · stack_t`` for a [T, ...] stack and [T, 1, ...] weights."""
    return (stack * weights).sum(dim=0)
