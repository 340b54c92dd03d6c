"""Magnitude prune: per-tensor top-k of each task vector, then the weighted sum.

``λ · Σ_t c_t · topk(ΔW_t)`` with ``k = int(density · numel)`` per task tensor
(peft's ``magnitude_prune``); no sign election.
"""

from __future__ import annotations

import torch

from osrm_gui.core.merge._params import DENSITY
from osrm_gui.core.merge._tensors import coefficient_weights, stack_task_vectors, weighted_sum
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod
from osrm_gui.core.merge.sparsify import magnitude_trim


def magnitude_prune_merge(stack: torch.Tensor, weights: torch.Tensor, density: float) -> torch.Tensor:
    return weighted_sum(magnitude_trim(stack, density), weights)


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    stack = stack_task_vectors(deltas).to(ctx.device)
    merged = magnitude_prune_merge(stack, coefficient_weights(deltas, ctx, stack), ctx.params["density"])
    return LayerResult(delta=ctx.lam * merged)


METHOD = MergeMethod(
    name="magnitude_prune",
    label="Magnitude prune",
    doc="Keeps each task vector's largest entries (density) and sums them with their "
    "coefficients, scaled by λ; no sign election.",
    params=(DENSITY,),
    merge_layer=_merge_layer,
)
