"""Initialisation families compared on a task suite: train one adapter per task
for each family and seed, then measure single-task scores, merged scores (task
arithmetic over a λ grid, TIES), normalised scores and mean interference.

Task arithmetic's λ is chosen per run on the validation split and reported on test; the
test curve over the grid is kept for plots, never for choosing."""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Generator

import numpy as np

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.execution import Executor, ExecutorSettings, Finished, LocalExecutor, WorkerStatus, open_executor, run_all
from osrm_gui.core.analysis.pairwise import mean_off_diagonal
from osrm_gui.core.analysis.interference import interference_matrix
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import Progress
from osrm_gui.core.inputs.tasks import Task
from osrm_gui.core.osrm.training import TrainSettings, train_adapter
from osrm_gui.core.workspace import Workspace, open_workspace

# name -> (settings that differ from the baseline, what it is)
FAMILIES: dict[str, tuple[dict, str]] = {
    "peft-default": ({"init": "peft-default"}, "peft's default init (Kaiming-uniform A, B = 0), A and B trained"),
    "gaussian": ({"init": "gaussian"}, "peft's Gaussian init (A ~ N(0, 1/r)), A and B trained"),
    "osrm-cov": ({"init": "osrm-cov"}, "OSRM cov init, A and B trained (the paper's setting)"),
    "osrm-cov-a0.1": ({"init": "osrm-cov", "a_lr_multiplier": 0.1}, "OSRM cov init, A trained at 0.1× the learning rate"),
    "osrm-cov-frozen": ({"init": "osrm-cov", "freeze_a": True}, "OSRM cov init, A frozen, only B (and the head) trained"),
    "peft-default-frozen": ({"init": "peft-default", "freeze_a": True}, "peft's default init, A frozen (control for osrm-cov-frozen)"),
    "osrm-mean": ({"init": "osrm-mean"}, "OSRM mean init (official code's variant), A and B trained"),
}
LAMBDAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

# The trade-off study's knobs (issue 13), between A trained freely (osrm-cov) and A frozen.
# Budget k: A = C·U_m with m = k·rank, so k = 1 keeps row(A) where the init put it and k = 16
# (m = 128 of MiniLM's 384 inputs) leaves A nearly free.
SUBSPACE_BUDGETS = (1, 2, 4, 8, 16)
# Penalty β on the other tasks' energy share in row(A). Measured on the demo's seed-0 adapters,
# that share is 6e-5 at the OSRM init, 2e-3 after training osrm-cov and 4.5e-3 for peft-default
# (random: 1/384 = 2.6e-3), against a final cross-entropy of ~0.2. So at the drift osrm-cov reaches,
# β = 1 costs 1 % of the loss (a nudge), 100 as much as the whole loss, 1000 ten times it: the
# log grid spans "no effect" to "held at the init".
SUBSPACE_PENALTIES = (1.0, 10.0, 100.0, 1000.0)
FAMILIES.update({f"osrm-cov-k{k}": ({"init": "osrm-cov", "subspace_budget": k},
                                    f"OSRM cov init, A's rows kept in the {k}·r smallest-eigenvalue directions of the other tasks' "
                                    "statistics (A = C·U_m, C and B trained)") for k in SUBSPACE_BUDGETS})
FAMILIES.update({f"{init}-pen{beta:g}": ({"init": init, "subspace_penalty": beta},
                                         f"{init} init, A and B trained, loss + {beta:g} × the other tasks' energy share in row(A)")
                 for init in ("osrm-cov", "peft-default") for beta in SUBSPACE_PENALTIES})
FAMILIES["osrm-cov-a0.01"] = ({"init": "osrm-cov", "a_lr_multiplier": 0.01}, "OSRM cov init, A trained at 0.01× the learning rate")


@dataclass
class FamilyRun:
    family: str
    seed: int
    single: dict[str, float]
    task_arithmetic: dict[str, dict[str, float]]  # str(λ) -> task -> metric
    ties: dict[str, float]
    interference: float
    paths: list[str] = field(default_factory=list)
    validation: dict[str, dict[str, float]] = field(default_factory=dict)  # str(λ) -> task -> metric on validation
    # Added by the trade-off study (explore/tradeoff.py); runs saved before it load with these empty.
    ties_validation: dict[str, dict[str, float]] = field(default_factory=dict)  # str(λ) -> task -> TIES on validation
    ties_chosen: dict[str, float] = field(default_factory=dict)  # task -> TIES on test at ties_lambda
    heldout_interference: float | None = None  # as ``interference``, on held-out inputs' Grams
    heldout_split: str | None = None
    other_energy: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> {"start", "end"} from the adapter's metadata

    @property
    def chosen_lambda(self) -> str | None:
        """The λ with the best validation average; None for a run saved before validation was scored
        (its λ cannot be chosen honestly, so it is not chosen at all)."""
        return best_on_validation(self.validation)

    @property
    def ties_lambda(self) -> str | None:
        """TIES's λ chosen on validation as task arithmetic's is; None before the trade-off study (TIES at λ = 1 only)."""
        return best_on_validation(self.ties_validation)


def best_on_validation(validation: dict[str, dict[str, float]]) -> str | None:
    """The λ (key) with the best average over tasks; the smaller λ on a tie."""
    if not validation:
        return None
    return max(validation, key=lambda lam: (np.mean(list(validation[lam].values())), -float(lam)))


def family_settings(family: str, base: TrainSettings, seed: int, task_index: int, task_specs: list[str]) -> TrainSettings:
    if family not in FAMILIES:
        raise OsrmError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    overrides = FAMILIES[family][0]
    known = {f.name for f in fields(TrainSettings)}
    missing = [name for name in overrides if name not in known]
    if missing:  # a knob this version's training does not have yet
        raise OsrmError(f"family {family!r} needs the training setting(s) {', '.join(missing)}, which this version of osrm-gui lacks")
    return TrainSettings(**{**asdict(base), **overrides, "seed": seed * 100 + task_index, "osrm_tasks": task_specs})


def _reusable(folder: Path, settings: TrainSettings, task: Task, overrides: dict | None = None) -> bool:
    """An adapter already trained there with the same seed and steps on the same data (and, when
    given, the family's own settings: a folder left by another definition of the family is retrained)."""
    meta_path = folder / "osrm_adapter.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    recorded = meta.get("settings", {})
    return (recorded.get("seed") == settings.seed and meta.get("task_hash") == task.content_hash()
            and recorded.get("steps") == settings.steps and all(recorded.get(k) == v for k, v in (overrides or {}).items()))


def train_one(_ws, base_path, task: Task, folder: Path, settings: TrainSettings, device: str | None) -> Generator[Progress, None, str]:
    """An executor's call: train one adapter into ``folder`` (which every worker must be able to write)."""
    yield from train_adapter(base_path, task, folder, settings, device, force=True)
    return str(folder)


def using(executor: Executor | ExecutorSettings | None):
    """A context giving the executor to run on: an open :class:`Executor` as it is (whoever opened
    it closes it, so a study of many batches starts its Ray workers once), else one opened from
    the settings for the duration and closed after."""
    return nullcontext(executor) if isinstance(executor, Executor) else open_executor(executor, None)


def train_sets(
    sets_wanted: list[tuple[str, int]], tasks: list[Task], work: Path, base_settings: TrainSettings, device: str | None = None,
    base_path: str | Path | None = None, executor: Executor | ExecutorSettings | None = None,
) -> Generator[Progress | WorkerStatus, None, dict[tuple[str, int], list[Path]]]:
    """One adapter per (family, seed) set and task, under ``work/FAMILY/seedSEED/TASK``; an adapter
    already trained there with the same settings is reused, the others are trained by the
    executor (side by side on Ray; see :func:`using`). (family, seed) -> the adapters' folders, in task order."""
    specs = [t.extra.get("spec") or t.name for t in tasks]
    sets, jobs, labels = {}, [], []
    for family, seed in sets_wanted:
        sets[(family, seed)] = []
        for index, task in enumerate(tasks):
            settings = family_settings(family, base_settings, seed, index, specs)
            folder = work / family / f"seed{seed}" / task.name
            sets[(family, seed)].append(folder)
            if not _reusable(folder, settings, task, FAMILIES[family][0]):
                jobs.append((base_path, task, folder, settings, device))
                labels.append(f"{family} seed {seed} {task.name}")
    with using(executor) as runner:
        done = 0
        for event in run_all(runner, train_one, jobs, labels, ahead=1):
            if isinstance(event, Finished):
                done += 1
                if not isinstance(runner, LocalExecutor):  # the local executor passes each training's own progress on
                    yield Progress("adapters", done, len(jobs), labels[event.index])
            else:
                yield event
    return sets


def train_family(
    family: str, seed: int, tasks: list[Task], work: Path, base_settings: TrainSettings, device: str | None = None,
    base_path: str | Path | None = None,
) -> Generator[Progress, None, list[Path]]:
    """One adapter per task, trained in this process; an adapter already trained with the same settings is reused."""
    sets = yield from train_sets([(family, seed)], tasks, work, base_settings, device, base_path)
    return sets[(family, seed)]


def evaluate_family(ws: Workspace, family: str, seed: int, limit: int | None = None) -> Generator[Progress, None, FamilyRun]:
    single = yield from ws.evaluate_single(limit=limit)
    grid, validation = {}, {}
    for lam in LAMBDAS:
        merged = yield from ws.merge(MergeSpec("task_arithmetic", None, lam))
        scores = yield from ws.evaluate(merged, limit=limit)
        grid[f"{lam:g}"] = {t: s["metric"] for t, s in scores.items()}
        chosen_on = yield from ws.evaluate(merged, "validation", limit=limit)
        validation[f"{lam:g}"] = {t: s["metric"] for t, s in chosen_on.items()}
    merged = yield from ws.merge(MergeSpec("ties", None, 1.0, {"density": 0.5}))
    ties = yield from ws.evaluate(merged, limit=limit)
    grams = yield from ws.adapter_grams()
    interference = mean_off_diagonal(interference_matrix(ws.adapters, grams))
    return FamilyRun(family, seed, {t: s["metric"] for t, s in single.items()}, grid, {t: s["metric"] for t, s in ties.items()},
                     interference, [str(a.path) for a in ws.adapters], validation)


def evaluate_set(_ws, base_path, paths: list[Path], task_specs: list[str], device: str | None, family: str, seed: int,
                 limit: int | None) -> Generator[Progress, None, FamilyRun]:
    """An executor's call: open one adapter set and evaluate it as :func:`evaluate_family` does."""
    ws = open_workspace(base_path, paths, task_specs, device=device)
    return (yield from evaluate_family(ws, family, seed, limit))


def over_sets(sets: dict[tuple[str, int], list[Path]], fn, args_of, executor: Executor | ExecutorSettings | None, what: str):
    """``fn(ws, *args_of(family, seed, paths))`` per adapter set, on the executor (see :func:`using`):
    yields (family, seed, value) as each set is done, the executor's events in between."""
    keys = list(sets)
    labels = [f"{what} {family} seed {seed}" for family, seed in keys]
    with using(executor) as runner:
        for event in run_all(runner, fn, [args_of(*k, sets[k]) for k in keys], labels, ahead=1):
            yield (*keys[event.index], event.value) if isinstance(event, Finished) else event


def compare(
    families: list[str], seeds: list[int], tasks: list[Task], work: Path, base_settings: TrainSettings,
    device: str | None = None, limit: int | None = None, base_path: str | Path | None = None, executor: ExecutorSettings | None = None,
) -> Generator[Progress | WorkerStatus, None, list[FamilyRun]]:
    wanted = [(family, seed) for family in families for seed in seeds]
    specs = [t.extra.get("spec") for t in tasks]
    runs = {}
    args_of = lambda family, seed, paths: (base_path, paths, specs, device, family, seed, limit)  # noqa: E731
    with using(executor) as runner:  # training and evaluation on the same workers
        sets = yield from train_sets(wanted, tasks, work, base_settings, device, base_path, runner)
        for event in over_sets(sets, evaluate_set, args_of, runner, "evaluate"):
            if isinstance(event, tuple):
                runs[event[:2]] = event[2]
            else:
                yield event
    return [runs[k] for k in sets]


def summarise(runs: list[FamilyRun]) -> list[dict]:
    """One row per family: means (± std over seeds) of the averages over tasks."""
    rows = []
    for family in dict.fromkeys(r.family for r in runs):
        mine = [r for r in runs if r.family == family]

        def stat(values):
            values = np.array(values, dtype=float)
            return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"

        single = [np.mean(list(r.single.values())) for r in mine]
        row = {"family": family, "seeds": len(mine), "single": stat(single)}
        for lam in mine[0].task_arithmetic:
            row[f"TA λ={lam}"] = stat([np.mean(list(r.task_arithmetic[lam].values())) for r in mine])
        row["TIES"] = stat([np.mean(list(r.ties.values())) for r in mine])
        if all(r.chosen_lambda is not None for r in mine):
            row["TA (λ by validation)"] = stat([np.mean(list(r.task_arithmetic[r.chosen_lambda].values())) for r in mine])
            row["normalised"] = stat([np.mean([r.task_arithmetic[r.chosen_lambda][t] / r.single[t] for t in r.single]) for r in mine])
        else:
            row["TA (λ by validation)"] = row["normalised"] = "no validation scores"
        row["interference"] = stat([r.interference for r in mine])
        rows.append(row)
    return rows


def per_task(runs: list[FamilyRun]) -> list[dict]:
    """Per family and task, means over seeds: alone, task arithmetic at each run's λ chosen on
    validation (reported on test), TIES, and the normalised TA score (merged / alone)."""
    rows = []
    for family in dict.fromkeys(r.family for r in runs):
        mine = [r for r in runs if r.family == family]
        if any(r.chosen_lambda is None for r in mine):
            continue  # runs saved before validation was scored: no λ can be chosen for them
        lams = sorted({r.chosen_lambda for r in mine}, key=float)
        for task in mine[0].single:
            single = np.mean([r.single[task] for r in mine])
            merged = np.mean([r.task_arithmetic[r.chosen_lambda][task] for r in mine])
            rows.append({"family": family, "task": task, "single": f"{single:.3f}",
                         "TA (λ by validation)": f"{merged:.3f} (λ={','.join(lams)})",
                         "TIES": f"{np.mean([r.ties[task] for r in mine]):.3f}",
                         "normalised TA": f"{np.mean([r.task_arithmetic[r.chosen_lambda][task] / r.single[task] for r in mine]):.3f}"})
    return rows


def save_runs(runs: list[FamilyRun], path: Path, meta: dict) -> None:
    from osrm_gui.core.atomic import atomic_write_text

    atomic_write_text(path, json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=2) + "\n", force=True)


def load_runs(path: Path) -> tuple[dict, list[FamilyRun]]:
    data = json.loads(Path(path).read_text())
    return data["meta"], [FamilyRun(**r) for r in data["runs"]]
