"""Task arithmetic: ``λ · Σ_t c_t · ΔW_t`` (no normalisation)."""

from __future__ import annotations

import torch

from osrm_gui.core.merge._tensors import coefficient_weights, stack_task_vectors, weighted_sum
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod


def task_arithmetic_merge(stack: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_t w_t · stack_t`` for a [T, d_out, d_in] stack."""
    return weighted_sum(stack, weights)


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    stack = stack_task_vectors(deltas).to(ctx.device)
    return LayerResult(delta=ctx.lam * task_arithmetic_merge(stack, coefficient_weights(deltas, ctx, stack)))


def _weights(coefficients: tuple[float, ...], lam: float, params: dict) -> list[float]:
    return [lam * c for c in coefficients]


METHOD = MergeMethod(
    name="task_arithmetic",
    label="Task arithmetic",
    doc="Sum of the task vectors, each times its coefficient, scaled by λ.",
    params=(),
    merge_layer=_merge_layer,
    adapter_weights=_weights,
)
