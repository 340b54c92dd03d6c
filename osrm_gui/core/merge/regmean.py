"""RegMean (Jin et al., ICLR 2023) for LoRA task vectors.

Per linear layer, the merged weight minimises Σ_t ‖H_t W − H_t W_tᵀ‖² over the
tasks' inputs H_t, with each Gram matrix G_t = H_tᵀH_t regularised by scaling its
off-diagonal entries by α:  W*ᵀ = (Σ_t G̃_t)⁻¹ Σ_t G̃_t W_tᵀ.  With W_t = W0 + c_t ΔW_t
the base weight drops out, so only the deltas are merged:

    ΔW* = λ · [ (Σ_t G̃_t)⁻¹ Σ_t G̃_t (c_t ΔW_t)ᵀ ]ᵀ

The Gram matrices are the pretrained base's feature statistics (the same ones OSRM
collects), not the fine-tuned models' inputs as in the original paper,
and averaged per token so that each task weighs the same whatever its text lengths.
"""

from __future__ import annotations

import torch

from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod, Param


def regularised(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """Off-diagonal entries scaled by α, the diagonal kept."""
    diagonal = torch.diag(torch.diagonal(gram))
    return alpha * gram + (1.0 - alpha) * diagonal


def regmean_merge(deltas: list[torch.Tensor], grams: list[torch.Tensor], weights: list[float], alpha: float) -> torch.Tensor:
    """Pure function on dense (d_out × d_in) deltas and (d_in × d_in) Grams, float64."""
    tilde = [regularised(g, alpha) for g in grams]
    total = sum(tilde)
    rhs = sum(g @ (w * d).T for g, d, w in zip(tilde, deltas, weights))
    # a solve, not an inverse: stable when the pooled Gram is ill-conditioned; lstsq if singular
    try:
        solution = torch.linalg.solve(total, rhs)
    except RuntimeError:
        solution = torch.linalg.lstsq(total, rhs).solution
    return solution.T


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    dense = [d.dense(torch.float64) for d in deltas]
    grams = [ctx.grams[d.index] for d in deltas]
    weights = [ctx.coefficients[d.index] for d in deltas]
    merged = regmean_merge(dense, grams, weights, ctx.params["alpha"])
    return LayerResult(delta=(ctx.lam * merged).float())


METHOD = MergeMethod(
    name="regmean",
    label="RegMean",
    doc="Least-squares merge of each layer on the tasks' input statistics (Gram matrices from the feature statistics); "
        "off-diagonal entries scaled by alpha. Needs the statistics of every adapter's task.",
    params=(Param("alpha", 0.9, "Scale of the Gram matrices' off-diagonal entries (1 = plain least squares, smaller = closer to an average).",
                  minimum=0.0, maximum=1.0, min_exclusive=True),),
    merge_layer=_merge_layer,
    needs_grams=True,
)
