"""Model Breadcrumbs (Davari & Belilovsky 2023), as mergekit defines ``breadcrumbs`` / ``breadcrumbs_ties``.

For the task vectors ``ΔW_t`` of one layer (each a d_out × d_in tensor, ``n = d_out·d_in``):

1. **Trim both tails, per task tensor** (mergekit's ``magnitude_outliers``):
   ``keep = int(density·n)``, ``n_top = int(γ·n)``, ``n_bottom = n − keep − n_top``; when
   ``n_bottom < 0`` fewer outliers are dropped (``n_top += n_bottom``, ``n_bottom = 0``) so that
   ``keep`` entries always remain. Sorting ``|ΔW_t|`` ascending (stable), the ``n_bottom``
   smallest and the ``n_top`` largest entries become 0. No rescaling of the survivors.
   This is mergekit 0.1.5's ``indices[n_bot : n_bot + keep]``; the older slice
   ``indices[n_bot:-n_top]`` (commit a6e4028) is empty when ``n_top = 0`` and drops the whole tensor.
2. **breadcrumbs**: ``λ · Σ_t c_t · trimmed_t``.
   **breadcrumbs_ties**: ``w_t = c_t · trimmed_t``; elected sign per entry ``+1`` where
   ``Σ_t w_t ≥ 0`` else ``−1`` (mergekit's "sum" consensus); ``λ · Σ_t w_t·[sign(w_t) = elected]``.
   As in mergekit (``normalize: false``) the agreeing entries are *summed*, not averaged:
   this is not the disjoint mean of :mod:`.ties`.
"""

from __future__ import annotations

import torch

from osrm_gui.core.merge._params import DENSITY
from osrm_gui.core.merge._tensors import coefficient_weights, stack_task_vectors, weighted_sum
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod, Param
from osrm_gui.core.merge.ties import agreement_mask

GAMMA = Param(
    "gamma",
    0.01,
    "Fraction of each task vector's largest-magnitude entries dropped as outliers (fewer when γ + density > 1).",
    minimum=0.0,
    maximum=1.0,
    label="Outliers dropped (γ)",
)


def outlier_counts(numel: int, density: float, gamma: float) -> tuple[int, int]:
    """``(n_bottom, n_top)``: how many of the smallest and of the largest entries are dropped."""
    keep = int(density * numel)
    n_top = int(gamma * numel)
    n_bottom = numel - keep - n_top
    if n_bottom < 0:
        n_top += n_bottom
        n_bottom = 0
    return n_bottom, n_top


def outlier_trim(stack: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Each task tensor of a [T, ...] stack without its smallest and its ``γ`` largest entries (step 1)."""
    flat = stack.reshape(stack.shape[0], -1)
    numel = flat.shape[1]
    n_bottom, n_top = outlier_counts(numel, density, gamma)
    if n_bottom == 0 and n_top == 0:
        return stack.clone()
    order = torch.argsort(flat.abs(), dim=1, stable=True)  # ascending magnitude
    mask = torch.zeros_like(flat)
    mask.scatter_(1, order[:, n_bottom : numel - n_top], 1.0)
    return (flat * mask).reshape(stack.shape)


def breadcrumbs_merge(stack: torch.Tensor, weights: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """``Σ_t w_t · trimmed_t`` (without λ)."""
    return weighted_sum(outlier_trim(stack, density, gamma), weights)


def breadcrumbs_ties_merge(stack: torch.Tensor, weights: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """The sum of the weighted trimmed entries that agree with the elected sign (without λ)."""
    weighted = outlier_trim(stack, density, gamma) * weights
    return (weighted * agreement_mask(weighted, "total")).sum(dim=0)


def _merge_linear(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    stack = stack_task_vectors(deltas).to(ctx.device)
    weights = coefficient_weights(deltas, ctx, stack)
    return LayerResult(delta=ctx.lam * breadcrumbs_merge(stack, weights, ctx.params["density"], ctx.params["gamma"]))


def _merge_ties(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    stack = stack_task_vectors(deltas).to(ctx.device)
    weights = coefficient_weights(deltas, ctx, stack)
    merged = breadcrumbs_ties_merge(stack, weights, ctx.params["density"], ctx.params["gamma"])
    return LayerResult(delta=ctx.lam * merged)


BREADCRUMBS = MergeMethod(
    name="breadcrumbs",
    label="Model Breadcrumbs",
    doc="Drops each task vector's γ largest entries (outliers) and its smallest ones so that a "
    "density fraction remains, then sums them with their coefficients, scaled by λ.",
    params=(DENSITY, GAMMA),
    merge_layer=_merge_linear,
)

BREADCRUMBS_TIES = MergeMethod(
    name="breadcrumbs_ties",
    label="Model Breadcrumbs + TIES",
    doc="Model Breadcrumbs trimming, then a TIES sign election: only the weighted entries that "
    "agree with the elected sign are summed, scaled by λ.",
    params=(DENSITY, GAMMA),
    merge_layer=_merge_ties,
)
