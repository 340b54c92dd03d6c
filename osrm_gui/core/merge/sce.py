"""SCE — Select, Calculate, Erase (FuseChat, Wan et al. 2024), as mergekit defines ``sce``.

For the task vectors ``ΔW_t`` of one layer, with the user's coefficients ``c_t``:

0. **Coefficients first**: ``δ_t = c_t · ΔW_t``. mergekit's ``sce`` has no per-model weight;
   here a coefficient scales its task vector before everything else, so it acts on the
   selection, the sign vote and (squared) on the weights below. Equal coefficients ``c``
   just scale the result by ``c``; a negative one negates that task.
1. **Select** (``select_topk`` < 1): the cross-task variance ``v = Var_t(δ_t)`` (population,
   per entry); of the entries with ``v ≠ 0``, the ``k = int(count·select_topk)`` of largest
   ``v`` are kept in every ``δ_t``, the rest become 0. At 1 (the default) nothing is dropped.
2. **Calculate**: ``w_t = mean(δ_t²) / Σ_u mean(δ_u²)``; equal weights when every δ is 0.
   (mergekit falls back to equal weights when ``Σ_u mean(δ_u²) < 1e-6``, an absolute
   threshold that real LoRA updates, with entries around 1e-3, can fall under; we only
   fall back at exactly 0 — the weights do not depend on the overall scale.)
3. **Erase**: elected sign ``+1`` where ``Σ_t δ_t ≥ 0`` else ``−1``; ``a_t = [sign(δ_t) = elected]``.
4. merged ``= Σ_t w_t a_t δ_t / max(Σ_t w_t a_t, 1e-6)``, times λ.
"""

from __future__ import annotations

import torch

from osrm_gui.core.merge._tensors import coefficient_weights, stack_task_vectors
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod, Param
from osrm_gui.core.merge.ties import agreement_mask

SELECT_TOPK = Param(
    "select_topk",
    1.0,
    "Fraction of the entries kept by their variance across tasks, largest first (1 = keep all).",
    minimum=0.0,
    maximum=1.0,
    min_exclusive=True,
    label="Variance selection (top-k)",
)

DIVISOR_FLOOR = 1e-6  # mergekit's clamp of the per-entry weight sum


def variance_select(stack: torch.Tensor, select_topk: float) -> torch.Tensor:
    """The stack with only its highest-variance entries (across tasks) kept (step 1)."""
    if select_topk >= 1:
        return stack
    variance = stack.var(dim=0, unbiased=False)
    k = int(int(torch.count_nonzero(variance)) * select_topk)
    mask = torch.zeros_like(variance)
    if k > 0:
        mask.view(-1)[torch.topk(variance.abs().reshape(-1), k=k, largest=True).indices] = 1.0
    return stack * mask


def energy_weights(stack: torch.Tensor) -> torch.Tensor:
    """``mean(δ_t²) / Σ_u mean(δ_u²)`` per task (step 2), shaped [T]."""
    energy = (stack * stack).mean(dim=tuple(range(1, stack.dim())))
    total = energy.sum()
    if total == 0:
        return torch.full_like(energy, 1.0 / energy.numel())
    return energy / total


def sce_merge(stack: torch.Tensor, select_topk: float = 1.0) -> torch.Tensor:
    """Steps 1–4 (without λ) on an already coefficient-scaled [T, d_out, d_in] stack."""
    stack = variance_select(stack, select_topk)
    agree = agreement_mask(stack, "total").to(stack.dtype)
    weights = energy_weights(stack).view(-1, *([1] * (stack.dim() - 1))) * agree
    return (stack * weights).sum(dim=0) / weights.sum(dim=0).clamp(min=DIVISOR_FLOOR)


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    stack = stack_task_vectors(deltas).to(ctx.device)
    stack = stack * coefficient_weights(deltas, ctx, stack)
    return LayerResult(delta=ctx.lam * sce_merge(stack, ctx.params["select_topk"]))


METHOD = MergeMethod(
    name="sce",
    label="SCE",
    doc="Weights each task vector (times its coefficient) by its mean squared entry, keeps per entry "
    "only those agreeing with the elected sign and takes their weighted mean, scaled by λ.",
    params=(SELECT_TOPK,),
    merge_layer=_merge_layer,
)
