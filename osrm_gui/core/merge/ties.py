"""TIES merging (Yadav et al. 2023), per layer.

Definition used here, step by step, for the task vectors ``ΔW_t`` of one layer:

1. **Trim, per tensor**: each ``ΔW_t`` keeps its ``k = int(density · numel)``
   largest-magnitude entries, the rest become 0 (peft's
   ``magnitude_based_pruning``). The top-k is taken per task tensor of this
   layer, not over the whole model.
2. **Weight before election**: ``w_t = c_t · trimmed_t``. The coefficients act
   before the sign election, so a negative coefficient (task negation) flips
   that task's vote. peft elects on the unweighted trimmed tensors and weights
   afterwards; both agree when all coefficients are positive and the election is
   "frequency", or when all coefficients are equal and positive.
3. **Elect a sign per entry**: ``γ = +1 where S ≥ 0 else −1``, with
   ``S = Σ_t w_t`` ("total") or ``S = Σ_t sign(w_t)`` ("frequency"); ties go to +1.
4. **Disjoint mean**: ``Σ_t w_t·[sign(w_t) = γ] / max(1, Σ_t [sign(w_t) = γ])``
   (zeros never agree, so pruned entries are not counted).
5. Multiply by λ.
"""

from __future__ import annotations

import torch

from osrm_gui.core.merge._params import DENSITY, MAJORITY_SIGN_METHOD
from osrm_gui.core.merge._tensors import coefficient_weights, stack_task_vectors
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod
from osrm_gui.core.merge.sparsify import magnitude_trim


def agreement_mask(weighted: torch.Tensor, majority_sign_method: str = "total") -> torch.Tensor:
    """Boolean [T, ...] mask of the entries whose sign equals the elected sign."""
    signs = weighted.sign()
    if majority_sign_method == "total":
        score = weighted.sum(dim=0)
    elif majority_sign_method == "frequency":
        score = signs.sum(dim=0)
    else:
        raise ValueError(f"majority_sign_method must be 'total' or 'frequency', got {majority_sign_method!r}")
    elected = torch.where(score >= 0, 1.0, -1.0).to(signs.dtype)
    return signs == elected


def disjoint_mean(weighted: torch.Tensor, agree: torch.Tensor) -> torch.Tensor:
    """Mean over the agreeing entries of each position (0 where none agree)."""
    total = (weighted * agree).sum(dim=0)
    count = agree.sum(dim=0).to(weighted.dtype).clamp(min=1.0)
    return total / count


def elect_and_merge(weighted: torch.Tensor, majority_sign_method: str = "total") -> torch.Tensor:
    """Sign election then disjoint mean of already weighted task tensors."""
    return disjoint_mean(weighted, agreement_mask(weighted, majority_sign_method))


def ties_merge(
    stack: torch.Tensor, weights: torch.Tensor, density: float, majority_sign_method: str = "total"
) -> torch.Tensor:
    """TIES of a [T, d_out, d_in] stack with [T, 1, 1] weights (steps 1–4 above, without λ)."""
    return elect_and_merge(magnitude_trim(stack, density) * weights, majority_sign_method)


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    stack = stack_task_vectors(deltas).to(ctx.device)
    merged = ties_merge(
        stack, coefficient_weights(deltas, ctx, stack), ctx.params["density"], ctx.params["majority_sign_method"]
    )
    return LayerResult(delta=ctx.lam * merged)


METHOD = MergeMethod(
    name="ties",
    label="TIES",
    doc="Keeps each task vector's largest entries (density), elects a sign per entry and "
    "averages only the entries that agree with it; scaled by λ.",
    params=(DENSITY, MAJORITY_SIGN_METHOD),
    merge_layer=_merge_layer,
)
