"""EMR-Merging: elect, mask, rescale (Huang et al., NeurIPS 2024), per layer.

For the weighted task vectors ``w_t = c_t·ΔW_t`` of one layer:

1. **Elect** a sign per entry: ``σ = sign(Σ_t w_t)``; an exact zero counts as −1 (as the
   authors' code does).
2. **Unified update**: ``τ_uni = σ ⊙ max_t |w_t|`` over the tasks whose entry agrees with σ
   (``w_t·σ > 0``); 0 where none agrees.
3. **Mask per task**: ``M_t = (w_t·σ > 0)``.
4. **Rescale per task**: ``γ_t = mean|w_t| / mean|M_t ⊙ τ_uni|`` (1 where the masked update is 0).
5. Task t runs with ``λ·γ_t·M_t ⊙ τ_uni`` through its own head; ``λ·τ_uni`` is the shared part.

The authors compute one γ per task over the whole model; this engine merges one layer at a
time, so γ is per task *and layer* (a finer rescaling of the same definition; with one layer
they agree). No data and no hyper-parameters besides λ. Every task needs its own update at
inference: the workbench knows which task an input belongs to (each has its own head). Storage
is a dense τ_uni plus one bit-mask per task and layer, not a LoRA: ``emr_storage`` says how much.
"""

from __future__ import annotations

import torch

from osrm_gui.core.merge._tensors import coefficient_weights, stack_task_vectors
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod


def emr_merge(weighted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a [T, m, n] stack of weighted task vectors: (τ_uni [m, n], masks [T, m, n] bool, γ [T])."""
    sign = torch.where(weighted.sum(dim=0) > 0, 1.0, -1.0).to(weighted.dtype)
    masks = weighted * sign > 0
    unified = sign * (weighted.abs() * masks).amax(dim=0)
    kept = (masks * unified).abs().mean(dim=(1, 2))
    scales = torch.where(kept > 0, weighted.abs().mean(dim=(1, 2)) / kept.clamp_min(torch.finfo(weighted.dtype).tiny), 1.0)
    return unified, masks, scales


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    stack = stack_task_vectors(deltas).to(ctx.device)
    unified, masks, scales = emr_merge(stack * coefficient_weights(deltas, ctx, stack))
    per_task = {d.index: ctx.lam * scales[t] * masks[t] * unified for t, d in enumerate(deltas)}
    return LayerResult(delta=ctx.lam * unified, task_deltas=per_task)


def emr_storage(merged) -> dict[str, int]:
    """Bytes EMR needs to run every task: the dense unified updates (float32) plus one bit per
    entry and task for the masks, and one scale per task and layer."""
    dense = sum(r.delta.numel() * 4 for r in merged.layers.values() if r.task_deltas is not None)
    masks = sum(r.delta.numel() * len(r.task_deltas) // 8 for r in merged.layers.values() if r.task_deltas is not None)
    scales = sum(len(r.task_deltas) * 4 for r in merged.layers.values() if r.task_deltas is not None)
    return {"unified": dense, "masks": masks, "scales": scales, "total": dense + masks + scales}


METHOD = MergeMethod(
    name="emr",
    label="EMR (elect, mask, rescale)",
    doc="One unified update (elected sign, largest agreeing magnitude) plus a per-task mask and scale: "
    "each task runs with its own masked, rescaled copy through its own head; scaled by λ. Not low-rank.",
    params=(),
    merge_layer=_merge_layer,
)
