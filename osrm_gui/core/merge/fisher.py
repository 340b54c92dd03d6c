"""Fisher merging (Matena & Raffel, NeurIPS 2022) of LoRA task vectors, per layer.

Each adapter i brings the diagonal Fisher ``F_i`` of the *dense* weight W of every layer it
adapts, under its own model (base + ΔW_i + head i), over unlabelled inputs of its task
(``osrm_gui.core.osrm.fisher_info``). Per layer, for the adapters that target it:

    ΔW* = λ · Σ_i c_i F̃_i ⊙ ΔW_i / Σ_i c_i F̃_i

with ``F̃_i = F_i / ‖F_i‖ + 1e-6`` when ``normalize`` is on (‖F_i‖: the Frobenius norm of
adapter i's Fisher over every layer it adapts, "the whole model"), else ``F̃_i = F_i + 1e-6``.
The floor 1e-6 is added to every adapter's Fisher, fusion_bench's convention (the original
adds it to the first model only); with ``normalize`` off and raw Fishers far below 1e-6 the
floor dominates and the merge tends to the coefficient-weighted average. With equal Fishers
the merge *is* that average, ``λ·Σ c_i ΔW_i / Σ c_i``: the coefficients are mixing weights,
not scales (use λ for the strength). Where the denominator is exactly 0 (coefficients that
sum to 0, e.g. all zero) the entry falls back to the plain average ``λ·Σ_i c_i ΔW_i / T``.
Coefficients are meant to be positive; a negative one (task negation) can make the
denominator small and the merge large.

Adapters that do not target a layer take no part in it (as in RegMean here), although in
the full-model original their unchanged W0 would pull the merge toward the base there.
The result is dense (``low_rank=False``).
"""

from __future__ import annotations

import torch

from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod, Param

FISHER_FLOOR = 1e-6
DEFAULT_EXAMPLES = 64


def fisher_merge(deltas: list[torch.Tensor], fishers: list[torch.Tensor], weights: list[float],
                 norms: list[float] | None = None) -> torch.Tensor:
    """``Σ_i w_i F̃_i ⊙ ΔW_i / Σ_i w_i F̃_i`` (plain average ``Σ w_i ΔW_i / T`` where the
    denominator is 0), ``F̃_i = F_i / norms_i + floor`` (``norms`` None: no normalisation)."""
    numerator = torch.zeros_like(deltas[0])
    denominator = torch.zeros_like(deltas[0])
    for i, (delta, fisher, weight) in enumerate(zip(deltas, fishers, weights)):
        # a zero norm means a zero Fisher: it stays 0 (then gets the floor)
        tilde = (fisher / norms[i] if norms is not None and norms[i] > 0 else fisher) + FISHER_FLOOR
        numerator += weight * tilde * delta
        denominator += weight * tilde
    plain = sum(w * d for w, d in zip(weights, deltas)) / len(deltas)
    zero = denominator == 0
    return torch.where(zero, plain, numerator / torch.where(zero, torch.ones_like(denominator), denominator))


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    dense = [d.dense(torch.float64) for d in deltas]
    fishers = [ctx.fishers[d.index].to(device=dense[0].device, dtype=torch.float64) for d in deltas]
    weights = [float(ctx.coefficients[d.index]) for d in deltas]
    norms = [float(ctx.fisher_norms[d.index]) for d in deltas] if ctx.params["normalize"] == "on" else None
    merged = fisher_merge(dense, fishers, weights, norms)
    return LayerResult(delta=(ctx.lam * merged).float())


METHOD = MergeMethod(
    name="fisher",
    label="Fisher merging",
    doc="Entry-wise average of the task vectors weighted by each adapter's diagonal Fisher information of the dense "
        "weights (from its own model's predictions on its task's training inputs, per example, no labels) times its "
        "coefficient; scaled by λ. Needs every adapter's task data; dense.",
    params=(
        Param("fisher_examples", DEFAULT_EXAMPLES, "Training examples per task (a seeded sample) the Fisher is averaged over.",
              minimum=1, maximum=100_000, label="Fisher examples per task"),
        Param("normalize", "on", "Divide each adapter's Fisher by its norm over the whole model before merging "
              "(on), or use the raw Fishers (off).", choices=("on", "off"), label="Normalise Fishers"),
    ),
    merge_layer=_merge_layer,
    needs_fisher=True,
)
