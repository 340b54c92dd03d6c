"""A merge of loaded adapters into a base: the spec a user chose, the layer-by-layer
computation through the merge engine, and installing the result in the model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Generator

import torch
from torch import nn

from osrm_gui.core.inputs.adapters import Adapter, validate_adapter
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.merge import get_method
from osrm_gui.core.merge.base import LayerResult
from osrm_gui.core.merge.engine import merge_layers
from osrm_gui.core.inputs.models import BaseModel
from osrm_gui.core.progress import Progress
from osrm_gui.core.inputs.tasks import Task


# Far beyond any useful coefficient, and far from float32 overflow (≈3.4e38) once multiplied
# by an adapter's update: a larger value is a typo or an attack, not a merge.
COEFFICIENT_LIMIT = 1e6


def finite_number(value, what: str, limit: float = COEFFICIENT_LIMIT) -> float:
    """``value`` as a float, or a one-line error: NaN, ±inf and magnitudes above ``limit`` are refused."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OsrmError(f"{what} {value!r}: not a number") from None
    if not math.isfinite(number) or abs(number) > limit:
        raise OsrmError(f"{what} {value!r}: expected a finite number of magnitude at most {limit:g}")
    return number


@dataclass
class MergeSpec:
    method: str = "task_arithmetic"
    coefficients: list[float] | None = None  # None: 1.0 per adapter
    lam: float = 1.0
    params: dict = field(default_factory=dict)
    seed: int = 0

    def resolved(self, n_adapters: int) -> "MergeSpec":
        try:
            method = get_method(self.method)
        except ValueError as exc:
            raise OsrmError(str(exc)) from None
        coefficients = list(self.coefficients) if self.coefficients is not None else [1.0] * n_adapters
        if len(coefficients) != n_adapters:
            raise OsrmError(f"{len(coefficients)} coefficients given for {n_adapters} adapters")
        try:
            params = method.resolve_params(self.params)
        except ValueError as exc:
            raise OsrmError(str(exc)) from None
        coefficients = [finite_number(c, f"coefficient {i + 1}") for i, c in enumerate(coefficients)]
        return MergeSpec(method.name, coefficients, finite_number(self.lam, "λ"), params, int(self.seed))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MergedState:
    spec: MergeSpec
    layers: dict[str, LayerResult]

    @property
    def low_rank(self) -> bool:
        return all(r.A is not None for r in self.layers.values())

    def scaled(self, factor: float) -> "MergedState":
        """The same merge at ``factor`` times its λ. Every registered method is linear in λ (a test
        holds them to it), so a λ grid needs one merge, not one per value."""
        layers = {
            name: LayerResult(
                delta=None if r.delta is None else factor * r.delta, A=r.A, B=None if r.B is None else factor * r.B,
                truncation_error=r.truncation_error,
                task_deltas=None if r.task_deltas is None else {i: factor * t for i, t in r.task_deltas.items()},
            )
            for name, r in self.layers.items()
        }
        return MergedState(MergeSpec(self.spec.method, self.spec.coefficients, self.spec.lam * factor, self.spec.params, self.spec.seed), layers)

    @property
    def per_task(self) -> bool:
        """Whether each task runs with its own update (see LayerResult.task_deltas)."""
        return any(r.task_deltas is not None for r in self.layers.values())

    def dense_deltas(self, task: int | None = None) -> dict[str, torch.Tensor]:
        """Every layer's merged update; with ``task`` (an adapter index), the ones its task runs with."""
        return {name: result.dense(task) for name, result in self.layers.items()}

    def truncation_error(self) -> float | None:
        """Overall relative error of a compressing method (None when exact)."""
        errors = [r.truncation_error for r in self.layers.values() if r.truncation_error is not None]
        return max(errors) if errors else None


def merge_adapters(
    adapters: list[Adapter], spec: MergeSpec, device: torch.device | str = "cpu", grams: list[dict[str, torch.Tensor]] | None = None,
    fishers: list[dict[str, torch.Tensor]] | None = None,
) -> Generator[Progress, None, MergedState]:
    """``grams``: per adapter, the Gram matrix of its task's features per layer (RegMean);
    ``fishers``: per adapter, the diagonal Fisher of each of its layers' dense weights (Fisher merging)."""
    if not adapters:
        raise OsrmError("no adapters to merge")
    spec = spec.resolved(len(adapters))
    method = get_method(spec.method)
    names = sorted({name for adapter in adapters for name in adapter.layers})
    layers: dict[str, LayerResult] = {}
    if method.merge_model is not None:  # a whole-model method (OPCM's global rescale): no layer engine
        try:
            layers = yield from method.merge_model([a.factors() for a in adapters], tuple(spec.coefficients), spec.lam, spec.params,
                                                   spec.seed, device)
        except ValueError as exc:
            raise OsrmError(str(exc)) from None
        for name, result in layers.items():
            if not all(bool(torch.isfinite(t).all()) for t in (result.delta, result.A, result.B) if t is not None):
                raise OsrmError(f"merging layer {name} with {spec.method} gave non-finite values (overflow); lower the coefficients or λ")
        return MergedState(spec, layers)
    try:
        for done, (name, result) in enumerate(
            merge_layers([a.factors() for a in adapters], method, spec.coefficients, spec.lam, spec.params, spec.seed, device, grams,
                         fishers), 1
        ):
            factors = [result.delta] if result.delta is not None else [result.A, result.B]
            factors += list((result.task_deltas or {}).values())
            if not all(bool(torch.isfinite(t).all()) for t in factors):
                raise OsrmError(f"merging layer {name} with {spec.method} gave non-finite values (overflow); lower the coefficients or λ")
            layers[name] = result
            yield Progress("merge", done, len(names), name)
    except ValueError as exc:
        raise OsrmError(str(exc)) from None
    return MergedState(spec, layers)


def pair_tasks(adapters: list[Adapter], tasks: list[Task]) -> dict[str, Adapter]:
    """Which adapter's head serves which task: by the task the adapter records, else by order.
    A task's class ids are renumbered to the order of the label names its adapter records."""
    from osrm_gui.core.inputs.tasks import align_to_head

    by_name = {a.task: a for a in adapters if a.task}
    pairs: dict[str, Adapter] = {}
    for i, task in enumerate(tasks):
        adapter = by_name.get(task.name) or (adapters[i] if i < len(adapters) and not adapters[i].task else None)
        if adapter is None:
            raise OsrmError(f"no adapter for task {task.name!r} (adapters are for: {', '.join(a.task or a.name for a in adapters)})")
        if not adapter.head:
            raise OsrmError(f"{adapter.path}: has no task head (modules_to_save), so task {task.name!r} cannot be scored")
        # Before the count: names say more than "4 outputs, 3 labels", and equal counts prove nothing.
        align_to_head(task, adapter.metadata.get("label_names"), str(adapter.path))
        if adapter.num_labels != task.num_labels:
            raise OsrmError(f"{adapter.path}: its head has {adapter.num_labels} outputs, task {task.name!r} has {task.num_labels} labels")
        pairs[task.name] = adapter
    return pairs


def task_heads(base: BaseModel, pairs: dict[str, Adapter]) -> dict[str, nn.Module]:
    return {task: base.build_head(adapter.head) for task, adapter in pairs.items()}


def validate_all(base: BaseModel, adapters: list[Adapter]) -> list[str]:
    warnings: list[str] = []
    for adapter in adapters:
        warnings += validate_adapter(adapter, base)
    return warnings
