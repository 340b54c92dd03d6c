"""DELLA (Deep, Hoang & Shareghi 2024), as mergekit defines ``della`` / ``della_linear``.

For the task vectors ``ΔW_t`` of one layer (d_out × d_in):

1. **Keep probabilities** (mergekit's ``della_magprune``): within each row, rank the
   entries by ``|ΔW_t|`` ascending (rank 0 … d_in − 1, ties by position) and normalise
   ``r̃ = rank / (d_in − 1)`` (``r̃ = ½`` when d_in = 1, where mergekit divides 0 by 0);
   ``p = (density − ε) + r̃·2ε``, computed in float32 as mergekit does. A density below 1
   needs ``0 < density − ε`` and ``density + ε < 1`` (ValueError otherwise); at density 1
   nothing is dropped.
2. **Mask**: one CPU ``torch.Generator`` seeded with the layer's seed draws
   ``torch.bernoulli(p_t)`` for t = 1 … T in turn — the masks mergekit draws after
   ``torch.manual_seed(seed)``.
3. **Rescale** (``rescale``): "l1" (mergekit) multiplies each masked task tensor by
   ``‖ΔW_t‖₁ / ‖masked_t‖₁`` (left as is when either norm is below 1e-7); "inverse_p" (the
   paper) divides each kept entry by its own ``p``; "none" does not rescale.
4. **Mix** with weights ``w_t = c_t``: ``x_t = w_t · pruned_t``.
   ``della``: elected sign ``+1`` where ``Σ_t x_t ≥ 0`` else ``−1``, agreement ``a_t =
   [sign(x_t) = elected]``, merged ``= Σ_t a_t x_t / Σ_t a_t w_t`` (a zero divisor becomes 1)
   — mergekit's ``normalize: true``, so only the *ratios* of the coefficients matter.
   ``della_linear``: merged ``= Σ_t x_t`` (no consensus, no normalisation).
5. Multiply by λ.
"""

from __future__ import annotations

import torch

from osrm_gui.core.merge._params import DENSITY
from osrm_gui.core.merge._tensors import coefficient_weights, stack_task_vectors
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod, Param
from osrm_gui.core.merge.ties import agreement_mask

EPSILON = Param(
    "epsilon",
    0.15,
    "Spread of the keep probabilities: from density − ε for a row's smallest entry to density + ε for its largest.",
    minimum=0.0,
    maximum=0.5,
    label="Probability spread (ε)",
)

RESCALE = Param(
    "rescale",
    "l1",
    "How the kept entries are rescaled: 'l1' = match each task tensor's L1 norm (mergekit), "
    "'inverse_p' = divide each entry by its keep probability (the paper), 'none' = keep as is.",
    choices=("l1", "inverse_p", "none"),
    label="Rescaling",
)

L1_EPS = 1e-7  # mergekit's rescaled_masked_tensor: no rescaling when a norm is below this


def keep_probabilities(stack: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """float32 keep probabilities of the entries of a [T, d_out, d_in] stack (step 1)."""
    if density - epsilon <= 0 or density + epsilon >= 1:
        raise ValueError(
            f"DELLA needs 0 < density − ε and density + ε < 1 (density {density:g}, ε {epsilon:g}); "
            "lower ε or choose density 1 (no pruning)"
        )
    n = stack.shape[-1]
    ranks = torch.argsort(torch.argsort(stack.abs(), dim=-1, stable=True), dim=-1).to(torch.float32)
    rank_norm = ranks / (n - 1) if n > 1 else torch.full_like(ranks, 0.5)
    return (density - epsilon) + rank_norm * 2 * epsilon


def bernoulli_masks(probabilities: torch.Tensor, seed: int) -> torch.Tensor:
    """{0, 1} float32 masks on the CPU, one ``torch.bernoulli`` per task tensor from one seeded generator."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    probabilities = probabilities.to(device="cpu", dtype=torch.float32)
    return torch.stack([torch.bernoulli(p, generator=generator) for p in probabilities])


def l1_rescale(original: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Each masked task tensor scaled so that its L1 norm is the original's (mergekit's "l1")."""
    dims = tuple(range(1, original.dim()))
    before = original.abs().sum(dim=dims, keepdim=True)
    after = masked.abs().sum(dim=dims, keepdim=True)
    usable = (before >= L1_EPS) & (after >= L1_EPS)
    return torch.where(usable, masked * (before / torch.where(usable, after, 1.0)), masked)


def della_prune(stack: torch.Tensor, density: float, epsilon: float, rescale: str, seed: int) -> torch.Tensor:
    """Steps 1–3 on each task tensor of a [T, d_out, d_in] stack."""
    if density >= 1:
        return stack.clone()
    probabilities = keep_probabilities(stack, density, epsilon)
    mask = bernoulli_masks(probabilities, seed).to(device=stack.device, dtype=stack.dtype)
    masked = stack * mask
    if rescale == "l1":
        return l1_rescale(stack, masked)
    if rescale == "inverse_p":
        return masked / probabilities.to(device=stack.device, dtype=stack.dtype)
    if rescale == "none":
        return masked
    raise ValueError(f"rescale must be 'l1', 'inverse_p' or 'none', got {rescale!r}")


def della_merge(stack: torch.Tensor, weights: torch.Tensor, density: float, epsilon: float, rescale: str, seed: int,
                consensus: bool) -> torch.Tensor:
    """Steps 1–4 (without λ) for a stack and [T, 1, 1] weights; ``consensus`` selects ``della``."""
    weighted = della_prune(stack, density, epsilon, rescale, seed) * weights
    if not consensus:
        return weighted.sum(dim=0)
    agree = agreement_mask(weighted, "total").to(weighted.dtype)
    divisor = (weights * agree).sum(dim=0)
    divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    return (weighted * agree).sum(dim=0) / divisor


def _merger(consensus: bool):
    def merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
        stack = stack_task_vectors(deltas).to(ctx.device)
        p = ctx.params
        merged = della_merge(stack, coefficient_weights(deltas, ctx, stack), p["density"], p["epsilon"], p["rescale"],
                             ctx.seed, consensus)
        return LayerResult(delta=ctx.lam * merged)

    return merge_layer


DELLA = MergeMethod(
    name="della",
    label="DELLA",
    doc="Randomly drops entries of each task vector, keeping larger ones more often (density ± ε by "
    "rank within a row), rescales, then a TIES sign election and a coefficient-weighted mean, "
    "scaled by λ. Seeded.",
    params=(DENSITY, EPSILON, RESCALE),
    merge_layer=_merger(consensus=True),
)

DELLA_LINEAR = MergeMethod(
    name="della_linear",
    label="DELLA (linear)",
    doc="Randomly drops entries of each task vector, keeping larger ones more often (density ± ε by "
    "rank within a row), rescales, then sums them with their coefficients, scaled by λ. Seeded.",
    params=(DENSITY, EPSILON, RESCALE),
    merge_layer=_merger(consensus=False),
)
