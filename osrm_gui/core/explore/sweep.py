"""Coefficient sweeps: 1-D over λ or one adapter's coefficient, 2-D grids over two
coefficients, each optionally for several merge methods. Points are yielded as soon
as they are scored; with a run history, points already scored are taken from it (and
yielded first), so a cancelled sweep resumes where it stopped. The points are scored by an
executor: one after the other in this process, or side by side on a Ray cluster."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Generator

import numpy as np

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.execution import ExecutorSettings, Finished, WorkerStatus, open_executor, run_all
from osrm_gui.core.explore.history import History, HistoryPoint, point_key
from osrm_gui.core.merge.spec import MergeSpec, finite_number
from osrm_gui.core.progress import Progress
from osrm_gui.core.workspace import Workspace

LAMBDA = "lambda"
# Each point is a merge and an evaluation (about a second on a small model): more than this on
# one axis is a typo, and would only allocate a huge grid before failing hours later.
MAX_AXIS_POINTS = 10_000


@dataclass(frozen=True)
class Axis:
    target: str  # "lambda" or an adapter name
    values: tuple[float, ...]

    @property
    def label(self) -> str:
        return "λ" if self.target == LAMBDA else f"coefficient of {self.target}"


@dataclass(frozen=True)
class SweepPoint:
    values: tuple[float, ...]  # one per axis
    scores: dict[str, float]  # task -> metric
    method: str = ""
    reused: bool = False  # taken from the run history, not recomputed

    @property
    def value(self) -> float:
        return self.values[0]

    @property
    def average(self) -> float:
        return float(np.mean(list(self.scores.values()))) if self.scores else float("nan")


@dataclass
class SweepResult:
    axes: list[Axis]
    spec: MergeSpec
    methods: list[str] = field(default_factory=list)
    points: list[SweepPoint] = field(default_factory=list)

    @property
    def target(self) -> str:
        return self.axes[0].target

    @property
    def axis(self) -> str:
        return self.axes[0].label

    @property
    def total(self) -> int:
        return len(self.methods) * int(np.prod([len(a.values) for a in self.axes]))

    def rows(self) -> list[dict]:
        rows = []
        for p in self.points:
            row = {"method": p.method} if len(self.methods) > 1 else {}
            row.update({axis.label: v for axis, v in zip(self.axes, p.values)})
            rows.append({**row, **p.scores, "average": p.average})
        return rows

    def grid(self, method: str, task: str = "average") -> np.ndarray:
        """A 2-D sweep's scores as a (len(axis 0) × len(axis 1)) array, NaN where not yet scored."""
        first, second = self.axes
        out = np.full((len(first.values), len(second.values)), np.nan)
        for p in self.points:
            if p.method == method:
                i, j = first.values.index(p.values[0]), second.values.index(p.values[1])
                out[i, j] = p.average if task == "average" else p.scores[task]
        return out


def sweep_values(start: float, stop: float, count: int) -> list[float]:
    if not 2 <= count <= MAX_AXIS_POINTS:
        raise OsrmError(f"a sweep needs 2 to {MAX_AXIS_POINTS} points, not {count}")
    start, stop = finite_number(start, "start"), finite_number(stop, "end")
    return [round(float(v), 12) for v in np.linspace(start, stop, count)]


def parse_axis(text: str) -> Axis:
    """``TARGET=START:STOP:COUNT`` (e.g. ``lambda=0:1:11``) or ``TARGET=v1,v2,…``."""
    target, sep, spec = text.partition("=")
    try:
        if not sep or not target:
            raise ValueError
        values = _axis_values(spec)
    except ValueError:
        raise OsrmError(f"cannot read sweep axis {text!r}: expected TARGET=START:STOP:COUNT or TARGET=v1,v2,…") from None
    except OsrmError as exc:
        raise OsrmError(f"sweep axis {text!r}: {exc}") from None
    return Axis(target, tuple(values))


def _axis_values(spec: str) -> list[float]:
    if ":" in spec:
        start, stop, count = spec.split(":")
        return sweep_values(finite_number(start, "start"), finite_number(stop, "end"), int(count))
    return [finite_number(v, "value") for v in spec.split(",")]


def spec_at(spec: MergeSpec, adapter_names: list[str], axes: list[Axis], values: tuple[float, ...]) -> MergeSpec:
    coefficients = list(spec.coefficients or [1.0] * len(adapter_names))
    lam = spec.lam
    for axis, value in zip(axes, values):
        if axis.target == LAMBDA:
            lam = value
        elif axis.target in adapter_names:
            coefficients[adapter_names.index(axis.target)] = value
        else:
            raise OsrmError(f"cannot sweep {axis.target!r}: not one of the merged adapters ({', '.join(adapter_names)})")
    return replace(spec, coefficients=coefficients, lam=lam)


def workspace_context(ws: Workspace) -> dict:
    """What, besides the merge itself, a score depends on (for history keys)."""
    return {
        # the dtype changes scores; the device only rounds differently, and a history is shared across machines
        "base": ws.base.fingerprint, "dtype": str(ws.base.dtype),
        "adapters": [a.content_hash for a in ws.adapters],
        "tasks": {t.name: {"data": t.content_hash(), "metric": t.metric} for t in ws.tasks},
        "heads": {t: ws.pairs[t].content_hash for t in sorted(ws.pairs)},
        "evaluation": evaluation_settings(ws),
        "feature_samples": ws.feature_samples,  # RegMean's statistics
    }


def evaluation_settings(ws: Workspace) -> dict:
    """The batch size and truncation length ``Workspace.score`` evaluates with (the workspace's own;
    a workspace-like object without them has Workspace's defaults)."""
    defaults = Workspace.__dataclass_fields__
    return {name: getattr(ws, name, defaults[name].default) for name in ("batch_size", "max_length")}


def score_point(
    ws: Workspace, spec: MergeSpec, split: str = "test", limit: int | None = None, names: list[str] | None = None,
    history: History | None = None, label: str | None = None, context: dict | None = None,
) -> Generator[Progress, None, HistoryPoint]:
    """Score one merge, from the history when it was scored before, and record it there.
    ``context``: :func:`workspace_context` of ``ws``, when the caller already has it."""
    spec = spec.resolved(len(ws.adapters))
    names = names or [a.name for a in ws.adapters]
    context = context or workspace_context(ws)
    if history is not None:
        known = history.find(_key(context, spec, split, limit))
        if known is not None:
            known.reused = True
            return known
    scores = yield from ws.score(spec, split, limit)
    point = history_point(ws, spec, split, limit, names, scores, label, context)
    if history is not None:
        history.record(point)
    return point


def _key(context: dict, spec: MergeSpec, split: str, limit: int | None) -> str:
    return point_key(context, spec.method, spec.params, spec.lam, spec.coefficients, spec.seed, split, limit)


def history_point(
    ws: Workspace, spec: MergeSpec, split: str, limit: int | None, names: list[str], scores: dict, label: str | None = None,
    context: dict | None = None,
) -> HistoryPoint:
    """The record of ``scores`` (per task, as ``Workspace.score`` returns them) for ``spec``."""
    spec = spec.resolved(len(ws.adapters))  # the key holds every parameter, defaults included
    key = _key(context or workspace_context(ws), spec, split, limit)
    return HistoryPoint(
        spec.method, spec.params, spec.lam, spec.coefficients, spec.seed, names, [a.content_hash for a in ws.adapters],
        split, limit, {task: s["metric"] for task, s in scores.items()}, kind="preview" if limit else "full", label=label, key=key,
    )


def check_axes(axes: list[Axis]) -> None:
    """OsrmError unless there are one or two axes varying different things, each over finite values."""
    if not 1 <= len(axes) <= 2:
        raise OsrmError("a sweep has one or two axes")
    if len({a.target for a in axes}) != len(axes):
        raise OsrmError("the two axes of a grid must vary different things")
    for axis in axes:
        if not 1 <= len(axis.values) <= MAX_AXIS_POINTS:
            raise OsrmError(f"a sweep of the {axis.label} needs 1 to {MAX_AXIS_POINTS} values, not {len(axis.values)}")
        for value in axis.values:
            finite_number(value, f"{axis.label} =")


def check_methods(ws: Workspace, spec: MergeSpec, axes: list[Axis], names: list[str], methods: list[str]) -> None:
    """Every method's merge at the sweep's first point resolves: unknown methods, bad parameters
    and coefficients fail here, before the first method's points are scored."""
    first = tuple(a.values[0] for a in axes)
    for method in methods:
        spec_at(_method_spec(spec, method), names, axes, first).resolved(len(ws.adapters))


def _method_spec(spec: MergeSpec, method: str) -> MergeSpec:
    return spec if method == spec.method else replace(spec, method=method, params={})


def run_sweep(
    ws: Workspace, spec: MergeSpec, axes: list[Axis], split: str = "test", limit: int | None = None,
    names: list[str] | None = None, methods: list[str] | None = None, history: History | None = None,
    executor: ExecutorSettings | None = None,
) -> Generator[Progress | WorkerStatus | SweepPoint, None, SweepResult]:
    """``names`` label the adapters for the axes (default: the adapters' own names);
    ``methods`` defaults to the spec's own method; other methods use their default parameters.
    ``executor``: where the points are scored (default: in this process, one after the other);
    on Ray they are scored side by side and come back in the order they finish.

    Not itself a generator: bad axes, targets and methods fail at the call, before anything is printed or scored."""
    check_axes(axes)
    names = names or [a.name for a in ws.adapters]
    methods = methods or [spec.method]
    check_methods(ws, spec, axes, names, methods)
    return _sweep(ws, spec, list(axes), split, limit, names, list(methods), history, executor)


def score_spec(ws: Workspace, spec: MergeSpec, split: str, limit: int | None) -> Generator[Progress, None, dict]:
    """An executor's call: the metrics per task of one merge (as ``Workspace.score`` gives them)."""
    return (yield from ws.score(spec, split, limit))


def _sweep(ws, spec, axes, split, limit, names, methods, history, executor):
    result = SweepResult(axes, spec, methods)
    label = " × ".join(a.target for a in axes)
    context = workspace_context(ws)  # hashes every task's data: once per sweep, not per point
    grid = [(method, tuple(values), spec_at(_method_spec(spec, method), names, axes, values).resolved(len(ws.adapters)))
            for method in methods for values in itertools.product(*(a.values for a in axes))]
    done = 0

    def finished(method, values, recorded):
        nonlocal done
        point = SweepPoint(values, recorded.scores, method, reused=recorded.reused)
        result.points.append(point)
        done += 1
        return Progress("sweep", done, result.total, f"{method} " + ", ".join(f"{a.target}={v:g}" for a, v in zip(axes, values))), point

    todo = []
    for method, values, point_spec in grid:
        known = history.find(_key(context, point_spec, split, limit)) if history is not None else None
        if known is None:
            todo.append((method, values, point_spec))
            continue
        known.reused = True
        yield from finished(method, values, known)
    with open_executor(executor, ws) as runner:
        labels = [f"{m} " + ", ".join(f"{a.target}={v:g}" for a, v in zip(axes, values)) for m, values, _ in todo]
        for event in run_all(runner, score_spec, [(s, split, limit) for _, _, s in todo], labels):
            if not isinstance(event, Finished):
                yield event
                continue
            method, values, point_spec = todo[event.index]
            recorded = history_point(ws, point_spec, split, limit, names, event.value, f"sweep {label}", context)
            if history is not None:
                history.record(recorded)
            yield from finished(method, values, recorded)
    order = {(m, v): i for i, (m, v, _) in enumerate(grid)}
    result.points.sort(key=lambda p: order[(p.method, p.values)])
    return result
