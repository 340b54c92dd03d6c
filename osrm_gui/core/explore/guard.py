"""The guard against a bad contributor: a data-free pre-screen, then a leave-one-out analysis of
the merge (METHODS.md §8, "Flagging a bad contributor").

Leave-one-out: M_all merges every adapter with the user's recipe; M_{−j} is the same recipe (method,
parameters, λ, seed, the other adapters' coefficients) without adapter j. For every task t other than
j's own, Δ_{j,t} = score_t(M_all) − score_t(M_{−j}): what including j gains (> 0) or costs (< 0) task t.

Flag rule, with τ in the tasks' metric units (0.01 = one accuracy point): j is flagged when the mean
over t of e_{j,t} is below −τ, or any e_{j,t} is below −2τ, where e_{j,t} = Δ_{j,t} − r_{j,t} and
- ``reference="others"`` (default): r_{j,t} is the median of Δ_{i,t} over the *other* contributors i to t
  (neither j nor t's own adapter), or 0 when there is none (two adapters). Merging always costs the
  other tasks something (on the demo at λ 0.5 every honest adapter's inclusion lowers the others by 2 to
  6 points), so the question is whether j costs them more than the other adapters do. The median keeps
  one bad contributor from setting the yardstick for another, once there are three others or more;
- ``reference="zero"``: r = 0, METHODS.md §8 as written: any net loss counts.
Adapters are judged from the most harmful to the least; a flagged adapter's own task then stops counting
against those judged after it (:func:`judge`): that task is scored through a head made for the flagged
adapter, which sits in both M_all and M_{−j}, so it says little about j.

τ against noise: τ = 0.01 (METHODS.md's "1 pt") is two examples of a 200-example validation split,
and honest demo adapters differ from each other by up to 5 points of excess; at that τ the guard flags
one or two honest demo adapters per run (bench/guard_demo.py). On small splits raise τ (0.03–0.05).

The split defaults to validation: flagging decides which adapters to merge, a selection, and the
test split stays for reporting the merge that results. Pre-screen flags (:mod:`..analysis.prescreen`)
are reported beside the leave-one-out ones, never mixed into them.

Cost: N + 1 scored merges. Methods that are a weighted sum of task vectors (linear, task arithmetic,
concat) score M_{−j} through the stacked LoRA factors of all N with j's weight set to 0 — the same sum,
with nothing merged or restacked; every other method merges the N − 1 adapters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Generator

import numpy as np

from osrm_gui.core.analysis.prescreen import PreScreen, ScreenRules, prescreen
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.merge import get_method
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import Progress
from osrm_gui.core.workspace import Workspace

DEFAULT_SPLIT = "validation"
DEFAULT_TAU = 0.01
REFERENCES = ("others", "zero")
ROUNDING = 1e-9


@dataclass(frozen=True)
class LeftOut:
    """Event: M_{−j} has been scored (one per adapter, in order)."""

    index: int  # j, 0-based
    total: int  # N
    adapter: str
    task: str  # j's own task (not scored here)
    scores: dict[str, float]  # task -> score of M_{−j}
    deltas: dict[str, float]  # task -> Δ_{j,t} = score_t(M_all) − score_t(M_{−j})


@dataclass
class Verdict:
    adapter: str
    task: str  # its own task
    prescreen: list[str]  # reasons from the pre-screen
    leave_one_out: list[str]  # reasons from the leave-one-out analysis
    mean_delta: float  # mean of Δ_{j,t} over the tasks its verdict counts (the other tasks, see ignored_tasks)
    worst_delta: float
    worst_task: str
    mean_excess: float  # the same, against the reference (see the module docstring)
    worst_excess: float
    average_with: float  # mean over the counted tasks of score(M_all)
    average_without: float  # … and of score(M_{−j})
    ignored_tasks: list[str] = field(default_factory=list)  # tasks of adapters flagged before this one (see judge)

    @property
    def flagged(self) -> bool:
        return bool(self.prescreen or self.leave_one_out)

    @property
    def status(self) -> str:
        by = [name for name, reasons in (("pre-screen", self.prescreen), ("leave-one-out", self.leave_one_out)) if reasons]
        return f"flagged ({', '.join(by)})" if by else "pass"


@dataclass
class GuardResult:
    spec: MergeSpec
    split: str
    limit: int | None
    tau: float
    reference: str
    adapters: list[str]
    own_tasks: list[str]  # adapter i serves own_tasks[i]
    tasks: list[str]  # every task, in the workspace's order (the Δ matrix's columns)
    with_all: dict[str, float]  # task -> score of M_all
    without: dict[str, dict[str, float]]  # adapter -> task -> score of M_{−adapter} (its own task absent)
    deltas: dict[str, dict[str, float]]  # adapter -> task -> Δ (its own task absent)
    references: dict[str, dict[str, float]]  # adapter -> task -> r its verdict used (counted tasks only)
    prescreen: PreScreen
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def flagged(self) -> list[str]:
        return [v.adapter for v in self.verdicts if v.flagged]

    def delta_matrix(self) -> np.ndarray:
        """Adapters × tasks (``self.tasks`` order); NaN where the task is the adapter's own."""
        return np.array([[self.deltas[a].get(t, math.nan) for t in self.tasks] for a in self.adapters])

    def delta_rows(self) -> list[dict]:
        return [{"left out": v.adapter, **{t: self.deltas[v.adapter].get(t) for t in self.tasks}, "mean Δ": v.mean_delta,
                 "mean excess": v.mean_excess, "not counted": ", ".join(v.ignored_tasks),
                 "leave-one-out": "flagged" if v.leave_one_out else "pass"} for v in self.verdicts]

    def verdict_rows(self) -> list[dict]:
        return [{"adapter": v.adapter, "task": v.task, "avg with": v.average_with, "avg without": v.average_without,
                 "verdict": v.status, "why": "; ".join(v.prescreen + v.leave_one_out)} for v in self.verdicts]

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "split": self.split, "limit": self.limit, "tau": self.tau, "reference": self.reference,
                "adapters": self.adapters, "own_tasks": self.own_tasks, "tasks": self.tasks, "with_all": self.with_all,
                "without": self.without, "deltas": self.deltas, "references": self.references,
                "verdicts": [{**asdict(v), "flagged": v.flagged, "status": v.status} for v in self.verdicts],
                "flagged": self.flagged, "prescreen": self.prescreen.to_dict()}


def own_tasks(ws: Workspace) -> list[str]:
    """The task each adapter serves, in adapter order; a one-line error naming every adapter without one."""
    by_adapter = {id(adapter): task for task, adapter in ws.pairs.items()}
    missing = [str(a.path) for a in ws.adapters if id(a) not in by_adapter]
    if missing:
        raise OsrmError(f"the guard scores each adapter's task, and none is known for {', '.join(missing)}; name every adapter's "
                        "evaluation data with --task, one per adapter")
    return [by_adapter[id(a)] for a in ws.adapters]


def _without(ws: Workspace, j: int) -> Workspace:
    """A view of ``ws`` without adapter j and its task; the base, heads and caches are shared."""
    task = next(t for t, a in ws.pairs.items() if a is ws.adapters[j])
    heads = ws.heads
    return replace(ws, adapters=[a for i, a in enumerate(ws.adapters) if i != j], tasks=[t for t in ws.tasks if t.name != task],
                   pairs={t: a for t, a in ws.pairs.items() if t != task}, warnings=[],
                   _heads={t: h for t, h in heads.items() if t != task}, lora_sum_cache={})


def score_without(ws: Workspace, spec: MergeSpec, j: int, split: str = DEFAULT_SPLIT,
                  limit: int | None = None) -> Generator[Progress, None, dict]:
    """Metrics per task (all but adapter j's own) of ``spec``'s merge without adapter j."""
    spec = spec.resolved(len(ws.adapters))
    sub_spec = replace(spec, coefficients=[c for i, c in enumerate(spec.coefficients) if i != j]).resolved(len(ws.adapters) - 1)
    sub = _without(ws, j)
    method = get_method(spec.method)
    if method.adapter_weights is None:
        return (yield from sub.score(sub_spec, split, limit))
    try:
        weights = list(method.adapter_weights(tuple(sub_spec.coefficients), sub_spec.lam, sub_spec.params))
    except ValueError as exc:
        raise OsrmError(f"without {ws.adapters[j].name}: {exc}") from None
    weights.insert(j, 0.0)
    lora_sum = ws.lora_sum()
    lora_sum.set_weights(weights)
    with lora_sum.installed():
        return (yield from sub.evaluate(None, split, limit))


def reference_deltas(deltas: dict[str, dict[str, float]], name: str, reference: str = "others") -> dict[str, float]:
    """r_{j,t} for adapter ``name`` on each task it has a Δ for: the median Δ_{i,t} of the other
    contributors i to t ("others"; 0 when there is none), or 0 ("zero")."""
    if reference not in REFERENCES:
        raise OsrmError(f"reference {reference!r}: expected one of {', '.join(REFERENCES)}")
    refs = {}
    for t in deltas[name]:
        others = [deltas[i][t] for i in deltas if i != name and t in deltas[i]]
        refs[t] = float(np.median(others)) if reference == "others" and others else 0.0
    return refs


def leave_one_out_reasons(deltas: dict[str, float], refs: dict[str, float], tau: float) -> list[str]:
    """Why including an adapter harms the other tasks (see the module docstring), or nothing."""
    if not deltas:
        return []
    excess = {t: d - refs[t] for t, d in deltas.items()}
    mean_delta, mean_excess = float(np.mean(list(deltas.values()))), float(np.mean(list(excess.values())))
    worst = min(excess, key=excess.get)
    relative = any(refs[t] for t in deltas)
    reasons = []
    # metric differences such as 0.53 − 0.54 carry float rounding: a loss of exactly τ is not below −τ
    if mean_excess < -tau - ROUNDING:
        against = f", {mean_excess:+.3f} against the other adapters'" if relative else ""
        reasons.append(f"mean Δ {mean_delta:+.3f} over the other tasks{against} (limit -{tau:g})")
    if excess[worst] < -2 * tau - ROUNDING:
        against = f", {excess[worst]:+.3f} against the other adapters'" if relative else ""
        reasons.append(f"Δ {deltas[worst]:+.3f} on {worst}{against} (limit -{2 * tau:g})")
    return reasons


@dataclass
class Judgement:
    counted: list[str]  # the tasks the verdict counts
    references: dict[str, float]  # task -> r used
    reasons: list[str]


def judge(deltas: dict[str, dict[str, float]], owned: dict[str, str], tau: float, reference: str = "others") -> dict[str, Judgement]:
    """The leave-one-out verdict of every adapter (``deltas``: adapter -> task -> Δ, its own task absent;
    ``owned``: adapter -> its task).

    Adapters are judged from the most harmful (lowest mean excess) to the least. Once one is flagged,
    its task no longer counts against the adapters judged after it: the task is scored through a head
    made for the flagged adapter, which sits in both M_all and M_{−j}, so it says little about j, and a
    merge that leaves the flagged adapter out does not serve that task anyway. (A backward elimination
    without the re-merging: an adapter whose every other task belongs to a flagged one is not judged.)"""
    tau = check_tau(tau)
    refs = {name: reference_deltas(deltas, name, reference) for name in deltas}

    def mean_excess(name: str) -> float:
        return float(np.mean([d - refs[name][t] for t, d in deltas[name].items()])) if deltas[name] else 0.0

    flagged_tasks: set[str] = set()
    result = {}
    for name in sorted(deltas, key=lambda a: (mean_excess(a), list(deltas).index(a))):
        counted = [t for t in deltas[name] if t not in flagged_tasks]
        reasons = leave_one_out_reasons({t: deltas[name][t] for t in counted}, refs[name], tau)
        if reasons:
            flagged_tasks.add(owned[name])
        result[name] = Judgement(counted, {t: refs[name][t] for t in counted}, reasons)
    return {name: result[name] for name in deltas}


def _verdict(name: str, task: str, screen_reasons: list[str], judged: Judgement, deltas: dict[str, float],
             with_all: dict[str, float], without: dict[str, float]) -> Verdict:
    counted = judged.counted
    excess = {t: deltas[t] - judged.references[t] for t in counted}
    worst = min(excess, key=excess.get) if counted else ""
    mean = lambda values: float(np.mean(values)) if len(values) else math.nan  # noqa: E731
    return Verdict(name, task, list(screen_reasons), judged.reasons, mean([deltas[t] for t in counted]), deltas.get(worst, math.nan),
                   worst, mean(list(excess.values())), excess.get(worst, math.nan), mean([with_all[t] for t in counted]),
                   mean([without[t] for t in counted]), [t for t in deltas if t not in counted])


def check_tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
        raise OsrmError(f"--tau {tau!r}: expected a finite number ≥ 0 (in the tasks' metric units: 0.01 is one accuracy point)")
    return float(tau)


def guard(
    ws: Workspace, spec: MergeSpec, split: str = DEFAULT_SPLIT, tau: float = DEFAULT_TAU, limit: int | None = None,
    rules: ScreenRules = ScreenRules(), reference: str = "others",
) -> Generator[Progress | PreScreen | LeftOut, None, GuardResult]:
    """Pre-screen the adapters, score M_all and every M_{−j} on ``split`` and flag bad contributors.

    Yields Progress (stages "prescreen", "guard" and those of merging and evaluation), the
    :class:`PreScreen` as soon as it is done, and one :class:`LeftOut` per adapter; returns a
    :class:`GuardResult`."""
    tau = check_tau(tau)
    if reference not in REFERENCES:
        raise OsrmError(f"reference {reference!r}: expected one of {', '.join(REFERENCES)}")
    if len(ws.adapters) < 2:
        raise OsrmError(f"the guard compares a merge with and without each adapter, so it needs 2 adapters or more ({len(ws.adapters)} given)")
    owned = own_tasks(ws)
    spec = spec.resolved(len(ws.adapters))
    screen = yield from prescreen(ws.adapters, rules)
    yield screen
    n = len(ws.adapters)
    yield Progress("guard", 0, n + 1, "all adapters")
    with_all = {t: s["metric"] for t, s in (yield from ws.score(spec, split, limit)).items()}
    without, deltas = {}, {}
    for j, adapter in enumerate(ws.adapters):
        yield Progress("guard", j + 1, n + 1, f"without {adapter.name}")
        scores = {t: s["metric"] for t, s in (yield from score_without(ws, spec, j, split, limit)).items()}
        without[adapter.name] = scores
        deltas[adapter.name] = {t: with_all[t] - scores[t] for t in with_all if t in scores}
        yield LeftOut(j, n, adapter.name, owned[j], dict(scores), dict(deltas[adapter.name]))
    yield Progress("guard", n + 1, n + 1)
    judged = judge(deltas, {a.name: owned[j] for j, a in enumerate(ws.adapters)}, tau, reference)
    verdicts = [_verdict(a.name, owned[j], screen.adapters[j].reasons, judged[a.name], deltas[a.name], with_all, without[a.name])
                for j, a in enumerate(ws.adapters)]
    return GuardResult(spec, split, limit, tau, reference, [a.name for a in ws.adapters], owned, [t.name for t in ws.tasks], with_all,
                       without, deltas, {a: j.references for a, j in judged.items()}, screen, verdicts)
