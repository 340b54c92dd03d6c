"""Coefficient sweeps: evaluate a merge at each value of λ or of one adapter's
coefficient, yielding each point as soon as it is scored."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Generator

import numpy as np

from .errors import OsrmError
from .merging import MergeSpec
from .progress import Progress
from .workspace import Workspace

LAMBDA = "lambda"


@dataclass(frozen=True)
class SweepPoint:
    value: float
    scores: dict[str, float]  # task -> metric

    @property
    def average(self) -> float:
        return float(np.mean(list(self.scores.values()))) if self.scores else float("nan")


@dataclass
class SweepResult:
    target: str  # "lambda" or an adapter name
    spec: MergeSpec
    points: list[SweepPoint] = field(default_factory=list)

    @property
    def axis(self) -> str:
        return "lambda" if self.target == LAMBDA else f"coefficient of {self.target}"

    def rows(self) -> list[dict]:
        return [{self.axis: p.value, **p.scores, "average": p.average} for p in self.points]


def sweep_values(start: float, stop: float, count: int) -> list[float]:
    if count < 2:
        raise OsrmError("a sweep needs at least 2 points")
    return [float(v) for v in np.linspace(start, stop, count)]


def spec_at(spec: MergeSpec, adapter_names: list[str], target: str, value: float) -> MergeSpec:
    if target == LAMBDA:
        return replace(spec, lam=value)
    if target not in adapter_names:
        raise OsrmError(f"cannot sweep {target!r}: not one of the merged adapters ({', '.join(adapter_names)})")
    coefficients = list(spec.coefficients or [1.0] * len(adapter_names))
    coefficients[adapter_names.index(target)] = value
    return replace(spec, coefficients=coefficients)


def run_sweep(
    ws: Workspace, spec: MergeSpec, target: str, values: list[float], split: str = "test", limit: int | None = None,
    names: list[str] | None = None,
) -> Generator[Progress | SweepPoint, None, SweepResult]:
    """``names`` label the adapters for ``target`` (default: the adapters' own names)."""
    names = names or [a.name for a in ws.adapters]
    result = SweepResult(target, spec)
    for i, value in enumerate(values):
        point_spec = spec_at(spec, names, target, value)
        merged = yield from ws.merge(point_spec)
        scores = yield from ws.evaluate(merged, split, limit)
        point = SweepPoint(value, {task: s["metric"] for task, s in scores.items()})
        result.points.append(point)
        yield Progress("sweep", i + 1, len(values), f"{target}={value:g}")
        yield point
    return result
