"""The space a merge search samples (METHODS.md §6): a merge method, its λ, a coefficient per
adapter — optionally one per adapter and group of consecutive transformer blocks — and the
method's own parameters, each drawn through an Optuna trial.

Parameter names, as Optuna, the trial events and the importances show them: ``method`` (only
when there is a choice), ``lambda``, ``c[ADAPTER]`` (``c[ADAPTER]@g1`` per layer group) and the
method's parameter names; with several methods the method-specific ones carry it, as
``lambda[ties]`` and ``density[ties]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Generator

import numpy as np

from osrm_gui.core.analysis.pairwise import layer_index
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.leaderboard import lambda_grid
from osrm_gui.core.merge import get_method
from osrm_gui.core.merge.base import MergeMethod, Param
from osrm_gui.core.merge.spec import COEFFICIENT_LIMIT, MergedState, MergeSpec
from osrm_gui.core.progress import Progress
from osrm_gui.core.workspace import Workspace

COEFFICIENT_RANGE = (0.0, 1.5)
# An exclusive minimum (density in (0, 1]) starts this fraction of the range above it: a
# density of 1e-300 is allowed but keeps nothing, and would only waste trials.
EXCLUSIVE_MARGIN = 0.01


@dataclass
class SearchSpace:
    methods: tuple[str, ...] = ("task_arithmetic",)
    lambda_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # per method; default: its leaderboard λ grid's span
    coefficient_range: tuple[float, float] = COEFFICIENT_RANGE
    layer_groups: int = 1  # > 1: a coefficient per adapter and group of blocks, for weighted-sum methods
    fixed_params: dict = field(default_factory=dict)  # method parameters held at a value instead of searched
    method_params: bool = True  # search the methods' own parameters (False: their defaults)

    def lambda_range(self, method: str) -> tuple[float, float]:
        if method in self.lambda_ranges:
            return tuple(float(v) for v in self.lambda_ranges[method])
        grid = lambda_grid(method)
        return float(min(grid)), float(max(grid))

    def searched_params(self, method: str) -> list[Param]:
        """The method's parameters the search varies: categorical ones and floats with both bounds.
        Integers (ranks, step and example counts) are budgets rather than merge settings: they keep
        their defaults, as do parameters in ``fixed_params``."""
        if not self.method_params:
            return []
        return [p for p in get_method(method).params if p.name not in self.fixed_params
                and (p.choices is not None or (p.kind is float and p.minimum is not None and p.maximum is not None))]

    def grouped(self, method: str) -> bool:
        """Whether ``method`` gets a coefficient per layer group (only weighted sums of task vectors do)."""
        return self.layer_groups > 1 and get_method(method).adapter_weights is not None

    def categorical(self) -> list[str]:
        """The categorical dimensions, as ``name (choice, …)``: CMA-ES cannot search them."""
        found = [f"method ({', '.join(self.methods)})"] if len(self.methods) > 1 else []
        for method in self.methods:
            found += [f"{p.name} ({', '.join(p.choices)})" for p in self.searched_params(method) if p.choices is not None]
        return found

    def check(self, n_adapters: int) -> None:
        """OsrmError, in one line, for anything a search over this space could not run."""
        if not self.methods:
            raise OsrmError("a search needs at least one merge method")
        if len(set(self.methods)) != len(self.methods):
            raise OsrmError(f"methods {', '.join(self.methods)}: a method is named twice")
        for method in self.methods:
            try:
                get_method(method)
            except ValueError as exc:
                raise OsrmError(str(exc)) from None
        for method in self.lambda_ranges:
            if method not in self.methods:
                raise OsrmError(f"a λ range is given for {method!r}, which is not searched ({', '.join(self.methods)})")
        for what, (low, high) in [*((f"λ range of {m}", self.lambda_range(m)) for m in self.methods),
                                  ("coefficient range", self.coefficient_range)]:
            if not all(math.isfinite(v) and abs(v) <= COEFFICIENT_LIMIT for v in (low, high)) or low > high:
                raise OsrmError(f"{what} {low:g}…{high:g}: expected finite bounds, the lower one first")
        if self.layer_groups < 1:
            raise OsrmError(f"layer groups {self.layer_groups}: expected 1 or more")
        if self.layer_groups > 1 and not any(self.grouped(m) for m in self.methods):
            weighted = ", ".join(m.name for m in _weighted_sum_methods())
            raise OsrmError(f"coefficients per layer group need a method that is a weighted sum of task vectors ({weighted}); "
                            f"{', '.join(self.methods)} is not")
        for name, value in self.fixed_params.items():
            owners = [get_method(m) for m in self.methods if name in {p.name for p in get_method(m).params}]
            if not owners:
                raise OsrmError(f"parameter {name!r} belongs to none of the searched methods ({', '.join(self.methods)})")
            for method in owners:
                try:
                    method.resolve_params({name: value})
                except ValueError as exc:
                    raise OsrmError(f"{method.name}: {exc}") from None
        if n_adapters < 1:
            raise OsrmError("a search needs adapters to merge")

    def describe(self) -> dict:
        """Everything that shapes the space, as plain JSON values (a resumed study must match it)."""
        return {"methods": list(self.methods), "lambda": {m: list(self.lambda_range(m)) for m in self.methods},
                "coefficients": list(self.coefficient_range), "layer_groups": self.layer_groups,
                "fixed": {k: self.fixed_params[k] for k in sorted(self.fixed_params)}, "method_params": self.method_params}


def _weighted_sum_methods() -> list[MergeMethod]:
    from osrm_gui.core.merge import METHODS

    return [m for m in METHODS.values() if m.adapter_weights is not None]


@dataclass
class SearchPoint:
    """One sampled merge. With layer groups, ``group_coefficients`` (per group, one per adapter)
    replace ``spec.coefficients`` (then all 1): a MergeSpec holds one coefficient per adapter only."""

    spec: MergeSpec
    group_coefficients: list[list[float]] | None = None

    def layer_weights(self, groups: "LayerGroups") -> dict[str, list[float]]:
        """Per adapted layer, the weight of each adapter's task vector (weighted-sum methods only)."""
        method = get_method(self.spec.method)
        coefficients = self.group_coefficients or [list(self.spec.coefficients)] * len(groups.labels)
        per_group = [method.adapter_weights(tuple(c), self.spec.lam, self.spec.params) for c in coefficients]
        return {name: per_group[g] for name, g in groups.of_layer.items()}

    def summary(self) -> str:
        parts = [self.spec.method, f"λ={self.spec.lam:.3g}"]
        parts += [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.spec.params.items()]
        if self.group_coefficients is None:
            parts.append("c=" + ",".join(f"{c:.3g}" for c in self.spec.coefficients))
        else:
            parts += [f"c@g{g}=" + ",".join(f"{c:.3g}" for c in cs) for g, cs in enumerate(self.group_coefficients)]
        return " ".join(parts)


@dataclass
class LayerGroups:
    """Adapted layers split into groups of consecutive transformer blocks (by the block number in
    the layer's name); layers outside numbered blocks join the first group."""

    labels: list[str]  # e.g. "blocks 0-2"
    of_layer: dict[str, int]  # layer name -> group index

    @classmethod
    def of(cls, layer_names: list[str], count: int) -> "LayerGroups":
        blocks = sorted({i for i in map(layer_index, layer_names) if i is not None})
        if count > max(len(blocks), 1):
            raise OsrmError(f"{count} layer groups asked for, but the adapters adapt {len(blocks)} numbered blocks")
        parts = [list(p) for p in np.array_split(blocks, count)] if blocks else [[]]
        group_of_block = {b: g for g, part in enumerate(parts) for b in part}
        labels = [f"blocks {p[0]}-{p[-1]}" if len(p) > 1 else (f"block {p[0]}" if p else "all layers") for p in parts]
        return cls(labels, {name: group_of_block.get(layer_index(name), 0) for name in layer_names})


def _name(base: str, method: str, space: SearchSpace) -> str:
    return f"{base}[{method}]" if len(space.methods) > 1 else base


def suggest(trial, space: SearchSpace, adapter_names: list[str], groups: LayerGroups, seed: int) -> SearchPoint:
    """The merge an Optuna ``trial`` asks for (conditional on its method)."""
    method = trial.suggest_categorical("method", list(space.methods)) if len(space.methods) > 1 else space.methods[0]
    lam = trial.suggest_float(_name("lambda", method, space), *space.lambda_range(method))
    params = {p.name: _suggest_param(trial, p, _name(p.name, method, space)) for p in space.searched_params(method)}
    params.update({k: v for k, v in space.fixed_params.items() if k in {p.name for p in get_method(method).params}})
    low, high = space.coefficient_range
    if space.grouped(method):
        coefficients = [[trial.suggest_float(f"c[{a}]@g{g}", low, high) for a in adapter_names] for g in range(len(groups.labels))]
        spec = MergeSpec(method, [1.0] * len(adapter_names), lam, params, seed)
        return SearchPoint(spec.resolved(len(adapter_names)), coefficients)
    spec = MergeSpec(method, [trial.suggest_float(f"c[{a}]", low, high) for a in adapter_names], lam, params, seed)
    return SearchPoint(spec.resolved(len(adapter_names)))


def _suggest_param(trial, param: Param, name: str):
    if param.choices is not None:
        return trial.suggest_categorical(name, list(param.choices))
    low, high = float(param.minimum), float(param.maximum)
    if param.min_exclusive:
        low += EXCLUSIVE_MARGIN * (high - low)
    return trial.suggest_float(name, low, high)


def cmaes_start(space: SearchSpace, adapter_names: list[str], groups: LayerGroups) -> dict:
    """CMA-ES's x0: every coefficient equal (1, uniform weights), λ mid-range, parameters at their
    defaults (moved into the searched range). Only for one method (CMA-ES takes no categories)."""
    method = space.methods[0]
    x0 = {_name("lambda", method, space): sum(space.lambda_range(method)) / 2}
    low, high = space.coefficient_range
    one = min(max(1.0, low), high)
    if space.grouped(method):
        x0.update({f"c[{a}]@g{g}": one for a in adapter_names for g in range(len(groups.labels))})
    else:
        x0.update({f"c[{a}]": one for a in adapter_names})
    for p in space.searched_params(method):
        low_p = float(p.minimum) + (EXCLUSIVE_MARGIN * (float(p.maximum) - float(p.minimum)) if p.min_exclusive else 0.0)
        x0[_name(p.name, method, space)] = min(max(float(p.default), low_p), float(p.maximum))
    return x0


def merged_state(ws: Workspace, point: SearchPoint, groups: LayerGroups) -> Generator[Progress, None, MergedState]:
    """The merge of ``point`` as weights, for export: with layer groups, each group's layers come
    from the merge at that group's coefficients (exact, as these methods merge layer by layer)."""
    if point.group_coefficients is None:
        return (yield from ws.merge(point.spec))
    layers = {}
    for g, coefficients in enumerate(point.group_coefficients):
        merged = yield from ws.merge(replace(point.spec, coefficients=list(coefficients)))
        layers.update({name: result for name, result in merged.layers.items() if groups.of_layer.get(name, 0) == g})
    return MergedState(point.spec, layers)
