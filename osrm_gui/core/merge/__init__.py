"""Merge methods: one module per method, collected in the :data:`METHODS` registry.

Every method merges one layer at a time from its LoRA factors (see
:mod:`.base`); :func:`.engine.merge_layers` drives them over a whole model.
"""

from __future__ import annotations

from osrm_gui.core.merge import (
    breadcrumbs, concat, dare, della, do_merging, emr, iso, knots, linear, magnitude_prune, regmean, sce, svd, task_arithmetic, ties, tsv,
)
from osrm_gui.core.merge import doge, fisher, opcm
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod, Param
from osrm_gui.core.merge.engine import fidelity, layer_seed, merge_layers

METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in (
        linear.METHOD,
        task_arithmetic.METHOD,
        ties.METHOD,
        dare.DARE_LINEAR,
        dare.DARE_TIES,
        magnitude_prune.METHOD,
        concat.METHOD,
        svd.METHOD,
        regmean.METHOD,
        emr.METHOD,
        iso.ISO_C,
        iso.ISO_CTS,
        tsv.METHOD,
        knots.KNOTS_TIES,
        knots.KNOTS_DARE_TIES,
        do_merging.METHOD,
        della.DELLA,
        della.DELLA_LINEAR,
        breadcrumbs.BREADCRUMBS,
        breadcrumbs.BREADCRUMBS_TIES,
        sce.METHOD,
        doge.METHOD,
        fisher.METHOD,
        opcm.METHOD,
    )
}


def get_method(name: str) -> MergeMethod:
    """The registered method called ``name``; ValueError listing the valid names otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown merge method {name!r}; valid: {', '.join(METHODS)}") from None


__all__ = [
    "METHODS",
    "get_method",
    "merge_layers",
    "fidelity",
    "layer_seed",
    "LayerContext",
    "LayerResult",
    "LoraDelta",
    "MergeMethod",
    "Param",
]
