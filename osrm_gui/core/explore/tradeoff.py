"""The trade-off study (issue 13): single-task accuracy against mergeability, per training setting.

Each setting is a family of :mod:`.compare` (peft-default, osrm-cov, the subspace budgets, the
penalties, the A learning-rate multipliers), trained over seeds exactly as ``demo compare`` trains
them. Per adapter set (family × seed) the study measures, on top of the single-task scores:

* task arithmetic over a fine λ grid on validation and test (the fast LoRA-sum engine): λ is chosen
  on validation and reported on test, and the test curve gives the **λ width**, how far λ may move
  from the best and stay within one point of it (the robustness the OSRM paper claims);
* TIES over its own λ grid on validation, reported on test at the chosen λ;
* interference on the training rows the OSRM statistics come from and on **held-out** inputs
  (the held-out split's Grams), so a subspace that only fits its own statistics shows;
* the other tasks' energy share in row(A) at the start and end of training, when training recorded it.

Summaries give mean ± std over seeds, the Pareto front in (single-task accuracy, merged normalised
accuracy) and whether any setting beats both peft-default and osrm-cov by more than the seeds' spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator

import numpy as np

from osrm_gui.core.analysis.interference import interference_matrix
from osrm_gui.core.analysis.pairwise import mean_off_diagonal
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.execution import ExecutorSettings, WorkerStatus
from osrm_gui.core.explore.compare import FamilyRun, best_on_validation, family_settings, over_sets, train_sets, using
from osrm_gui.core.inputs.tasks import Task
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.osrm.training import TrainSettings
from osrm_gui.core.progress import Progress
from osrm_gui.core.workspace import Workspace, open_workspace

# 0 … 1.5 by 0.1. With 4 LoRA adapters the demo's best λ lies between 0.4 and 1 (compare.json), and
# the within-a-point interval is a few tenths wide, so 0.1 steps (interpolated between) resolve it;
# the grid runs past 1 because near-orthogonal updates (frozen A, small budgets) merge best at
# λ ≥ 1, where a 0–1 grid would cut their interval (and their choice of λ) short. 16 points
# through the LoRA-sum engine cost about what 16 plain evaluations do: no merge per point.
FINE_LAMBDAS = tuple(round(0.1 * i, 1) for i in range(16))
TIES_LAMBDAS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)  # TIES trims half of each update: its best λ may pass 1 too
TIES_PARAMS = {"density": 0.5}  # as demo compare
WIDTH_TOLERANCE = 0.01  # "within one point" of the best test average
REFERENCES = ("peft-default", "osrm-cov")  # what a setting must beat: the default and the paper's OSRM, A trained
STUDY_FAMILIES = ("peft-default", "osrm-cov", *(f"osrm-cov-k{k}" for k in (1, 2, 4, 8, 16)),
                  *(f"osrm-cov-pen{b}" for b in ("1", "10", "100", "1000")), "osrm-cov-a0.1", "osrm-cov-a0.01")


def _metrics(scores: dict) -> dict[str, float]:
    return {t: s["metric"] for t, s in scores.items()}


def _average(scores: dict[str, float]) -> float:
    return float(np.mean(list(scores.values())))


def heldout_grams(ws: Workspace, split: str = "test", limit: int | None = None) -> Generator[Progress, None, list[dict]]:
    """Per adapter, per-token Gram matrices of its task's ``split`` inputs to each of its layers on
    the pretrained base (all of the split, or ``limit`` examples): what
    :meth:`Workspace.adapter_grams` gives, on inputs no statistic and no training has seen."""
    from osrm_gui.core.osrm.features import collect_features

    task_of = {id(ws.pairs[t.name]): t for t in ws.tasks}
    grams = []
    for adapter in ws.adapters:
        task = task_of.get(id(adapter))
        if task is None:
            raise OsrmError(f"{adapter.path}: held-out interference needs the adapter's task data")
        size = len(task.split(split))
        features = yield from collect_features(ws.base, task, adapter.targets, min(limit or size, size), ws.max_length, split=split)
        grams.append({name: s.gram / max(s.count, 1) for name, s in features.layers.items()})
    return grams


def evaluate_tradeoff(ws: Workspace, family: str, seed: int, limit: int | None = None,
                      heldout: str = "test") -> Generator[Progress, None, FamilyRun]:
    """One adapter set's run: the :class:`FamilyRun` of ``demo compare`` with task arithmetic on
    :data:`FINE_LAMBDAS` and the trade-off fields filled in."""
    single = _metrics((yield from ws.evaluate_single(limit=limit)))
    test, validation = {}, {}
    for lam in FINE_LAMBDAS:
        spec = MergeSpec("task_arithmetic", None, lam)
        test[f"{lam:g}"] = _metrics((yield from ws.score(spec, "test", limit)))
        validation[f"{lam:g}"] = _metrics((yield from ws.score(spec, "validation", limit)))
    unit = yield from ws.merge(MergeSpec("ties", None, 1.0, TIES_PARAMS))  # linear in λ: one merge serves the grid
    ties_validation = {}
    for lam in TIES_LAMBDAS:
        ties_validation[f"{lam:g}"] = _metrics((yield from ws.evaluate(unit.scaled(lam), "validation", limit)))
    ties_at_one = _metrics((yield from ws.evaluate(unit, "test", limit)))
    chosen = best_on_validation(ties_validation)
    ties_chosen = ties_at_one if float(chosen) == 1.0 else _metrics((yield from ws.evaluate(unit.scaled(float(chosen)), "test", limit)))
    train_rows = yield from ws.adapter_grams()
    held = yield from heldout_grams(ws, heldout, limit)
    energy = {a.task or a.name: dict(a.metadata["other_energy"]) for a in ws.adapters if isinstance(a.metadata.get("other_energy"), dict)}
    return FamilyRun(family, seed, single, test, ties_at_one, mean_off_diagonal(interference_matrix(ws.adapters, train_rows)),
                     [str(a.path) for a in ws.adapters], validation, ties_validation, ties_chosen,
                     mean_off_diagonal(interference_matrix(ws.adapters, held)), heldout, energy)


def evaluate_set(_ws, base_path, paths: list[Path], task_specs: list[str], device: str | None, family: str, seed: int,
                 limit: int | None, heldout: str) -> Generator[Progress, None, FamilyRun]:
    """An executor's call: open one adapter set and run :func:`evaluate_tradeoff` on it."""
    ws = open_workspace(base_path, paths, task_specs, device=device)
    return (yield from evaluate_tradeoff(ws, family, seed, limit, heldout))


def is_study_run(run: FamilyRun) -> bool:
    """Whether the run carries the trade-off fields (a plain ``demo compare`` run does not)."""
    return bool(run.ties_validation) and run.heldout_interference is not None


def study(
    families: list[str], seeds: list[int], tasks: list[Task], work: Path, base_settings: TrainSettings, device: str | None = None,
    limit: int | None = None, base_path: str | Path | None = None, executor: ExecutorSettings | None = None,
    kept: list[FamilyRun] = (), save: Callable[[list[FamilyRun]], None] | None = None, heldout: str = "test",
) -> Generator[Progress | WorkerStatus, None, list[FamilyRun]]:
    """Per (family, seed) set not among ``kept``: train its missing adapters (those already in
    ``work`` are reused), then evaluate it; ``save(runs)`` after every set, so an interruption
    loses one set at most. Returns the kept runs and the new ones, families × seeds in order."""
    specs = [t.extra.get("spec") for t in tasks]
    for family in families:  # a setting training would refuse fails here, not hours into the study
        family_settings(family, base_settings, 0, 0, [s or t.name for s, t in zip(specs, tasks)]).check()
    specs = specs if all(specs) else None  # else each adapter's recorded task
    done = {(r.family, r.seed) for r in kept}
    wanted = [(family, seed) for family in families for seed in seeds if (family, seed) not in done]
    runs = list(kept)
    order = {key: i for i, key in enumerate((f, s) for f in families for s in seeds)}
    if not wanted:
        return sorted(runs, key=lambda r: order.get((r.family, r.seed), len(order)))
    args_of = lambda family, seed, paths: (base_path, paths, specs, device, family, seed, limit, heldout)  # noqa: E731
    # trained and evaluated a batch of sets at a time, so that an interrupted study has its finished
    # sets on disk (training everything first left nothing to read after hours); one set per Ray
    # worker keeps every worker busy within a batch
    batch = executor.workers if executor is not None and executor.remote else 1
    with using(executor) as runner:  # Ray's workers start once for the whole study, not twice per batch
        for start in range(0, len(wanted), batch):
            sets = yield from train_sets(wanted[start : start + batch], tasks, work, base_settings, device, base_path, runner)
            for event in over_sets(sets, evaluate_set, args_of, runner, "tradeoff"):
                if not isinstance(event, tuple):
                    yield event
                    continue
                runs.append(event[2])
                if save is not None:
                    save(runs)
    return sorted(runs, key=lambda r: order.get((r.family, r.seed), len(order)))


# Measures of one run

def lambda_interval(curve: dict[str, float], tolerance: float = WIDTH_TOLERANCE) -> tuple[float, float]:
    """The λ interval around the best point of ``curve`` (str(λ) -> average) that stays within
    ``tolerance`` of the best: the contiguous run of grid points at or above best − tolerance,
    extended to where the straight line to the next point crosses that level. At the grid's
    ends the interval stops there (its width is then a lower bound)."""
    lams = sorted(curve, key=float)
    x = np.array([float(lam) for lam in lams])
    y = np.array([curve[lam] for lam in lams], dtype=float)
    best = int(np.argmax(y))  # the first (smallest λ) on a tie
    level = y[best] - tolerance

    def edge(step: int) -> float:
        i = best
        while 0 <= i + step < len(x) and y[i + step] >= level:
            i += step
        if not 0 <= i + step < len(x):
            return float(x[i])
        j = i + step
        return float(x[i] + (x[j] - x[i]) * (y[i] - level) / (y[i] - y[j]))

    return edge(-1), edge(1)


def lambda_width(run: FamilyRun, tolerance: float = WIDTH_TOLERANCE) -> float:
    low, high = lambda_interval({lam: _average(scores) for lam, scores in run.task_arithmetic.items()}, tolerance)
    return high - low


def single_accuracy(run: FamilyRun) -> float:
    return _average(run.single)


def normalised(run: FamilyRun, scores: dict[str, float]) -> float:
    return float(np.mean([scores[t] / run.single[t] for t in run.single]))


def _ta_at_chosen(run: FamilyRun) -> dict[str, float]:
    """Task arithmetic's test scores per task at the λ chosen on validation."""
    if run.chosen_lambda is None:
        raise OsrmError(f"{run.family} seed {run.seed}: no validation scores to choose λ with")
    return run.task_arithmetic[run.chosen_lambda]


def ta_normalised(run: FamilyRun) -> float:
    """Task arithmetic at the λ chosen on validation, on test, over each task's adapter alone."""
    return normalised(run, _ta_at_chosen(run))


def ta_merged(run: FamilyRun) -> float:
    """Task arithmetic's test average at the λ chosen on validation: the merged model's own accuracy
    (normalised accuracy flatters a setting that is weak alone)."""
    return _average(_ta_at_chosen(run))


def ties_normalised(run: FamilyRun) -> float | None:
    return normalised(run, run.ties_chosen) if run.ties_chosen else None


def other_energy(run: FamilyRun, when: str = "end") -> float | None:
    """The other tasks' energy share in row(A) at the ``start`` or ``end`` of training, mean over
    the set's adapters; None when training did not record it (adapters trained before it did)."""
    values = [e[when] for e in run.other_energy.values() if isinstance(e.get(when), (int, float))]
    return float(np.mean(values)) if values else None


# Summaries over seeds

def _stat(values) -> str:
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if not len(values):
        return "–"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def in_study_order(families) -> list[str]:
    """The settings, each once, in :data:`STUDY_FAMILIES` order (knob by knob, whatever order a
    resumed study measured them in), any other setting after them in the order given."""
    seen = list(dict.fromkeys(families))
    rank = {family: i for i, family in enumerate(STUDY_FAMILIES)}
    return sorted(seen, key=lambda family: (rank.get(family, len(rank)), seen.index(family)))


def _by_family(runs: list[FamilyRun]) -> dict[str, list[FamilyRun]]:
    return {family: [r for r in runs if r.family == family] for family in in_study_order(r.family for r in runs)}


def summarise(runs: list[FamilyRun]) -> list[dict]:
    """One row per setting: means ± std over seeds."""
    rows = []
    for family, mine in _by_family(runs).items():
        start, end = ([other_energy(r, when) for r in mine] for when in ("start", "end"))
        rows.append({
            "setting": family, "seeds": len(mine), "single": _stat([single_accuracy(r) for r in mine]),
            "TA merged": _stat([ta_merged(r) for r in mine]),
            "TA normalised": _stat([ta_normalised(r) for r in mine]), "TA λ": ",".join(r.chosen_lambda for r in mine),
            "TIES normalised": _stat([ties_normalised(r) for r in mine]),
            "TIES λ": ",".join(r.ties_lambda or "1" for r in mine),
            f"λ width (±{WIDTH_TOLERANCE * 100:g} pt)": _stat([lambda_width(r) for r in mine]),
            "interference (train rows)": _stat([r.interference for r in mine]),
            "interference (held-out)": _stat([r.heldout_interference for r in mine]),
            "others' energy start → end": _energy(start, end),
        })
    return rows


def _energy(start: list[float | None], end: list[float | None]) -> str:
    """Means over the seeds that recorded it (scientific: the shares are 1e-5 … 1e-2)."""
    if any(v is None for v in start + end):
        return "–" if all(v is None for v in start + end) else "some seeds only"
    return f"{np.mean(start):.1e} → {np.mean(end):.1e}"


@dataclass
class Point:
    """One setting on the Pareto plot: means and standard deviations over seeds (std NaN for one seed)."""
    family: str
    seeds: int
    single: float
    single_std: float
    merged: float
    merged_std: float


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def pareto_points(runs: list[FamilyRun]) -> list[Point]:
    """x = single-task accuracy, y = task arithmetic's normalised accuracy at the λ chosen on validation."""
    points = []
    for family, mine in _by_family(runs).items():
        points.append(Point(family, len(mine), *_mean_std([single_accuracy(r) for r in mine]), *_mean_std([ta_normalised(r) for r in mine])))
    return points


def non_dominated(points: list[Point]) -> list[str]:
    """The settings no other setting matches on both axes and beats on one (means only)."""
    def dominates(a: Point, b: Point) -> bool:
        return a.single >= b.single and a.merged >= b.merged and (a.single > b.single or a.merged > b.merged)

    return [p.family for p in points if not any(dominates(q, p) for q in points if q is not p)]


def _margin(a: list[float], b: list[float]) -> tuple[float, float, str]:
    """Mean difference, combined spread (√(var_a + var_b), as the leaderboard's family margin) and the verdict."""
    diff = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), "one seed: no spread"
    spread = float(np.sqrt(np.var(a, ddof=1) + np.var(b, ddof=1)))
    return diff, spread, "better" if diff > spread else ("worse" if -diff > spread else "within the spread")


FREE_GAIN = "merges better, alone within the spread"


def dominance(runs: list[FamilyRun], references: tuple[str, ...] = REFERENCES) -> list[dict]:
    """Per setting other than the references: against each reference and on each axis (single-task
    accuracy, TA normalised), the mean difference, the seeds' combined spread and the verdict.
    "dominates all" is yes only when every one of them is "better"; :data:`FREE_GAIN` when merging
    is better against every reference and single-task accuracy is nowhere worse beyond the spread
    (a gain the seeds cannot show to cost anything alone); no otherwise."""
    families = _by_family(runs)
    missing = [r for r in references if r not in families]
    if missing:
        raise OsrmError(f"the verdict needs the reference setting(s) {', '.join(missing)} among the runs")
    axes = {"single": single_accuracy, "TA normalised": ta_normalised}
    rows = []
    for family, mine in families.items():
        if family in references:
            continue
        row, verdicts = {"setting": family}, {axis: [] for axis in axes}
        for reference in references:
            for axis, measure in axes.items():
                diff, spread, verdict = _margin([measure(r) for r in mine], [measure(r) for r in families[reference]])
                row[f"{axis} vs {reference}"] = f"{diff:+.3f} (spread {spread:.3f}): {verdict}"
                verdicts[axis].append(verdict)
        if all(v == "better" for v in verdicts["single"] + verdicts["TA normalised"]):
            row["dominates all"] = "yes"
        elif all(v == "better" for v in verdicts["TA normalised"]) and all(v in ("better", "within the spread") for v in verdicts["single"]):
            row["dominates all"] = FREE_GAIN
        else:
            row["dominates all"] = "no"
        rows.append(row)
    return rows


def verdict(runs: list[FamilyRun], references: tuple[str, ...] = REFERENCES) -> str:
    """The study's answer in one sentence."""
    rows = dominance(runs, references)
    winners = [r["setting"] for r in rows if r["dominates all"] == "yes"]
    free = [r["setting"] for r in rows if r["dominates all"] == FREE_GAIN]
    against = " and ".join(references)
    if winners:
        return (f"yes: {', '.join(winners)} beat{'s' if len(winners) == 1 else ''} {against} on both single-task accuracy and "
                "merged normalised accuracy by more than the seeds' combined spread")
    answer = (f"no: no setting beats {against} on both single-task accuracy and merged normalised accuracy "
              "by more than the seeds' combined spread")
    if free:
        answer += (f"; {', '.join(free)} merge{'s' if len(free) == 1 else ''} better than both by more than the spread, "
                   "with single-task accuracy within the spread of both")
    return answer


def coverage(meta: dict, runs: list[FamilyRun]) -> str:
    """"" when every planned (family, seed) set was measured, else one line saying how many were and
    which are not yet. The plan: the saved file's families × its seeds (or, in files written before
    the seeds were saved, every seed any run has)."""
    seeds = meta.get("seeds") or sorted({r.seed for r in runs})
    families = in_study_order([*(meta.get("families") or {}), *(r.family for r in runs)])
    done = {(r.family, r.seed) for r in runs}
    missing = {f: [s for s in seeds if (f, s) not in done] for f in families}
    missing = {f: left for f, left in missing.items() if left}
    if not missing:
        return ""
    planned = len(families) * len(seeds)
    left = "; ".join(f"{f} (seed{'s' * (len(v) > 1)} {', '.join(map(str, v))})" for f, v in missing.items())
    return f"partial study: {planned - sum(map(len, missing.values()))} of {planned} adapter sets measured; not yet: {left}"
