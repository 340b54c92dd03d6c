"""Linear merge: the coefficient-weighted average of the task vectors.

``λ · Σ_t (c_t / Σ_all c) · ΔW_t``, normalised by the sum of *all* coefficients
of the merge (also those of adapters that do not target this layer), so a layer
only one adapter targets is not inflated back to full strength.
"""

from __future__ import annotations

import torch

from osrm_gui.core.merge._tensors import coefficient_weights, stack_task_vectors, weighted_sum
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod


def linear_merge(stack: torch.Tensor, weights: torch.Tensor, total: float) -> torch.Tensor:
    """``Σ_t (w_t / total) · stack_t``; ``total`` must not be 0."""
    if total == 0:
        raise ValueError("linear merge: the coefficients sum to 0, the average is undefined")
    return weighted_sum(stack, weights) / total


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    stack = stack_task_vectors(deltas).to(ctx.device)
    total = float(sum(ctx.coefficients))
    return LayerResult(delta=ctx.lam * linear_merge(stack, coefficient_weights(deltas, ctx, stack), total))


def _weights(coefficients: tuple[float, ...], lam: float, params: dict) -> list[float]:
    total = float(sum(coefficients))
    if total == 0:
        raise ValueError("linear merge: the coefficients sum to 0, the average is undefined")
    return [lam * c / total for c in coefficients]


METHOD = MergeMethod(
    name="linear",
    label="Linear (weighted average)",
    doc="Weighted average of the task vectors: each coefficient is divided by the sum of all "
    "coefficients, then the result is scaled by λ.",
    params=(),
    merge_layer=_merge_layer,
    adapter_weights=_weights,
)
