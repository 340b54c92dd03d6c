"""Continual merging curves: adapters arrive one at a time (OPCM), and after each arrival every
task whose adapter has arrived is scored through its own head.

The paper (Tang et al., NeurIPS 2025) reports the mean over several random arrival orders, so
a run takes several orders and returns, per step (number of adapters merged so far), the mean
and spread over the orders of each task's metric and of the average over the tasks arrived.
A task's value at step t exists in the orders where its adapter arrived by step t; its mean and
spread at t are over those orders only (so a task's curve starts at the earliest step it arrived
in any order). Spread = the sample standard deviation (n − 1) over the orders with a value, 0
when only one has it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator
from dataclasses import dataclass, field, replace

import numpy as np

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.merge.opcm import ALPHA, OpcmSnapshot, opcm_merge
from osrm_gui.core.merge.spec import MergedState, MergeSpec
from osrm_gui.core.progress import Progress
from osrm_gui.core.workspace import Workspace

# Above this many adapters the orders are drawn at random (and a repeat is drawn again) instead
# of sampled from the list of all orders.
_ENUMERATE_UP_TO = 7


@dataclass(frozen=True)
class ArrivalScores:
    """The merge after one arrival in one order, scored: a plain event."""

    order: int  # index of the order in the run
    step: int  # adapters merged so far (1-based)
    adapter: str  # the adapter that just arrived
    scores: dict[str, float]  # task -> metric, every task whose adapter has arrived

    @property
    def average(self) -> float:
        return float(np.mean(list(self.scores.values()))) if self.scores else math.nan


@dataclass(frozen=True)
class Curve:
    """One line of the plot: per step with a value, the mean and spread over the orders."""

    steps: list[int]
    mean: list[float]
    std: list[float]
    count: list[int]  # how many orders have a value at that step


@dataclass
class ContinualResult:
    orders: list[list[int]]  # adapter indices, in arrival order
    adapters: list[str]
    tasks: list[str]
    alpha: float
    split: str = "test"
    limit: int | None = None
    # per order, per step (index = step − 1): task -> metric
    curves: list[list[dict[str, float]]] = field(default_factory=list)

    def __post_init__(self):
        if not self.curves:
            self.curves = [[] for _ in self.orders]

    @property
    def steps(self) -> int:
        return len(self.orders[0]) if self.orders else 0

    def add(self, event: ArrivalScores) -> None:
        curve = self.curves[event.order]
        if len(curve) < event.step:
            curve.extend({} for _ in range(event.step - len(curve)))
        curve[event.step - 1] = dict(event.scores)

    def _values(self, step: int, task: str | None) -> list[float]:
        values = []
        for curve in self.curves:
            if len(curve) >= step:
                scores = curve[step - 1]
                if task is None and scores:
                    values.append(float(np.mean(list(scores.values()))))
                elif task is not None and task in scores:
                    values.append(scores[task])
        return values

    def curve(self, task: str | None = None) -> Curve:
        """A task's line over the steps (``None``: the average over the tasks arrived)."""
        steps, means, stds, counts = [], [], [], []
        for step in range(1, self.steps + 1):
            values = self._values(step, task)
            if values:
                steps.append(step)
                means.append(float(np.mean(values)))
                stds.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
                counts.append(len(values))
        return Curve(steps, means, stds, counts)

    def order_names(self, index: int) -> list[str]:
        return [self.adapters[i] for i in self.orders[index]]

    def summary_rows(self) -> list[dict]:
        """One row per step: the average and each task as mean, spread and number of orders with a value."""
        lines = {name: self.curve(name) for name in [None, *self.tasks]}
        rows = []
        for step in range(1, self.steps + 1):
            row: dict = {"step": step}
            for name, line in lines.items():
                label = name or "average"
                if step in line.steps:
                    at = line.steps.index(step)
                    row[label], row[f"{label} std"], row[f"{label} orders"] = line.mean[at], line.std[at], line.count[at]
                else:
                    row[label], row[f"{label} std"], row[f"{label} orders"] = None, None, 0
            rows.append(row)
        return rows

    def rows(self) -> list[dict]:
        """One row per order and step (metrics of tasks not arrived yet left empty)."""
        rows = []
        for index, curve in enumerate(self.curves):
            names = self.order_names(index)
            for step, scores in enumerate(curve, 1):
                row = {"order": index + 1, "step": step, "arrived": names[step - 1]}
                row.update({task: scores.get(task) for task in self.tasks})
                row["average"] = float(np.mean(list(scores.values()))) if scores else None
                rows.append(row)
        return rows


    def csv_rows(self) -> list[dict]:
        """:meth:`rows`, then per step the mean and the spread over the orders (order = "mean", "std")."""
        out = self.rows()
        for row in self.summary_rows():
            for kind, suffix in (("mean", ""), ("std", " std")):
                values = {task: row[task + suffix] for task in self.tasks}
                out.append({"order": kind, "step": row["step"], "arrived": "", **values, "average": row["average" + suffix]})
        return out


def random_orders(n_adapters: int, count: int, seed: int = 0) -> list[list[int]]:
    """``count`` different arrival orders of ``n_adapters`` adapters, drawn with ``seed``."""
    if n_adapters < 1:
        raise OsrmError("no adapters to order")
    available = math.factorial(n_adapters) if n_adapters <= 20 else math.inf
    if not 1 <= count <= available:
        raise OsrmError(f"{n_adapters} adapters have {available} different arrival orders; cannot draw {count}")
    rng = np.random.default_rng(int(seed))
    if n_adapters <= _ENUMERATE_UP_TO:
        every = list(itertools.permutations(range(n_adapters)))
        return [list(every[i]) for i in rng.choice(len(every), size=count, replace=False)]
    orders: list[list[int]] = []
    while len(orders) < count:
        order = [int(i) for i in rng.permutation(n_adapters)]
        if order not in orders:
            orders.append(order)
    return orders


def check_orders(orders: list[list[int]], n_adapters: int) -> list[list[int]]:
    """Every order lists every adapter index exactly once."""
    if not orders:
        raise OsrmError("no arrival order given")
    checked = []
    for order in orders:
        order = [int(i) for i in order]
        if sorted(order) != list(range(n_adapters)):
            raise OsrmError(f"arrival order {[i + 1 for i in order]}: must list each of the {n_adapters} adapters (1…{n_adapters}) once")
        checked.append(order)
    return checked


def continual_run(
    ws: Workspace, orders: list[list[int]], alpha: float = 0.5, split: str = "test", limit: int | None = None,
    names: list[str] | None = None,
) -> Generator[Progress | ArrivalScores, None, ContinualResult]:
    """OPCM over each order (lists of adapter indices), each task scored after every arrival
    from the one its adapter made. ``names`` label the adapters (default: their own names).

    Not itself a generator: bad orders, α and a workspace without tasks fail at the call."""
    if not ws.adapters:
        raise OsrmError("no adapters to merge")
    orders = check_orders(orders, len(ws.adapters))
    names = list(names) if names is not None else [a.name for a in ws.adapters]
    if len(names) != len(ws.adapters):
        raise OsrmError(f"{len(names)} names for {len(ws.adapters)} adapters")
    try:
        alpha = ALPHA.validate(alpha)
    except ValueError as exc:
        raise OsrmError(str(exc)) from None
    if not ws.tasks:
        raise OsrmError("no task to score: the adapters need task data and heads")
    if limit is not None and limit < 1:
        raise OsrmError(f"limit {limit}: expected at least 1 example")
    try:
        opcm_merge([a.factors() for a in ws.adapters], orders[0], alpha)  # checks the factors' shapes at the call
    except ValueError as exc:
        raise OsrmError(str(exc)) from None
    return _run(ws, orders, alpha, split, limit, names)


def _run(ws: Workspace, orders, alpha, split, limit, names):
    adapter_of = {t.name: next(i for i, a in enumerate(ws.adapters) if a is ws.pairs[t.name]) for t in ws.tasks}
    result = ContinualResult(orders, names, [t.name for t in ws.tasks], alpha, split, limit)
    spec = MergeSpec("opcm", None, 1.0, {"alpha": alpha, "order": "given"})
    heads = ws.heads  # built once, shared by the per-step views
    factors = [a.factors() for a in ws.adapters]
    total, done = len(orders) * len(names), 0
    for index, order in enumerate(orders):
        for event in opcm_merge(factors, order, alpha, device=ws.base.device):
            if not isinstance(event, OpcmSnapshot):
                continue
            arrived = [t for t in ws.tasks if adapter_of[t.name] in event.arrived]
            scores = {}
            if arrived:
                view = replace(ws, tasks=arrived, _heads=heads)
                metrics = yield from view.evaluate(MergedState(spec, event.layers), split, limit)
                scores = {t.name: float(metrics[t.name]["metric"]) for t in arrived}
            done += 1
            scored = ArrivalScores(index, event.step, names[event.adapter], scores)
            result.add(scored)
            yield Progress("continual", done, total, f"order {index + 1}/{len(orders)}: {event.step} of {len(names)} merged")
            yield scored
    return result
