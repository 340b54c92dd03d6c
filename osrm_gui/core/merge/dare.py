"""DARE (Yu et al. 2024): random drop and rescale, then a linear or TIES merge.

For the task vectors ``ΔW_t`` of one layer:

1. **Drop**: one mask ``M ~ Bernoulli(density)`` over the stacked
   [T, d_out, d_in] tensor, drawn as float32 by a CPU ``torch.Generator``
   seeded with the layer's seed; ``dropped_t = ΔW_t · M_t / density``.
   With the same seed these are exactly the masks peft's ``dare_linear`` /
   ``dare_ties`` draw after ``torch.manual_seed(seed)`` (for float32 tensors).
2. **dare_linear**: ``λ · Σ_t c_t · dropped_t``.
   **dare_ties**: ``w_t = c_t · dropped_t`` (weights before election, as in
   :mod:`.ties`), sign election ("total" / "frequency"), disjoint mean, × λ.
"""

from __future__ import annotations

import torch

from osrm_gui.core.merge._params import DENSITY, MAJORITY_SIGN_METHOD
from osrm_gui.core.merge._tensors import coefficient_weights, stack_task_vectors, weighted_sum
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod
from osrm_gui.core.merge.sparsify import dare_drop
from osrm_gui.core.merge.ties import elect_and_merge


def dare_linear_merge(stack: torch.Tensor, weights: torch.Tensor, density: float, seed: int) -> torch.Tensor:
    return weighted_sum(dare_drop(stack, density, seed), weights)


def dare_ties_merge(
    stack: torch.Tensor, weights: torch.Tensor, density: float, seed: int, majority_sign_method: str = "total"
) -> torch.Tensor:
    return elect_and_merge(dare_drop(stack, density, seed) * weights, majority_sign_method)


def _merge_linear(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    stack = stack_task_vectors(deltas).to(ctx.device)
    merged = dare_linear_merge(stack, coefficient_weights(deltas, ctx, stack), ctx.params["density"], ctx.seed)
    return LayerResult(delta=ctx.lam * merged)


def _merge_ties(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    stack = stack_task_vectors(deltas).to(ctx.device)
    weights = coefficient_weights(deltas, ctx, stack)
    merged = dare_ties_merge(stack, weights, ctx.params["density"], ctx.seed, ctx.params["majority_sign_method"])
    return LayerResult(delta=ctx.lam * merged)


DARE_LINEAR = MergeMethod(
    name="dare_linear",
    label="DARE (linear)",
    doc="Randomly drops entries of each task vector (keeping a density fraction, rescaled by "
    "1/density), then sums them with their coefficients, scaled by λ. Seeded.",
    params=(DENSITY,),
    merge_layer=_merge_linear,
)

DARE_TIES = MergeMethod(
    name="dare_ties",
    label="DARE-TIES",
    doc="Randomly drops entries of each task vector (rescaled by 1/density), then merges them "
    "with TIES sign election and disjoint mean, scaled by λ. Seeded.",
    params=(DENSITY, MAJORITY_SIGN_METHOD),
    merge_layer=_merge_ties,
)
