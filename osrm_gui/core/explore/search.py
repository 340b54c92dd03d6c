"""Multi-fidelity merge search with Optuna (METHODS.md §6).

Each trial draws a merge from a :class:`SearchSpace` and scores it on the **validation split
only**, chunk by chunk (:mod:`.search_fidelity`): after each chunk the running mean score is
reported and a Hyperband pruner (min 1, max = the number of chunks, η = 3) may stop the trial,
so only promising merges see every example. The best point — for NSGA-II the best mean of the
Pareto set — is then scored once on **test**, reported apart and never used to choose.

Samplers: TPE (multivariate; the default), CMA-ES (continuous spaces only), NSGA-II (two
objectives, the mean and the worst task; no pruning) and random search (the baseline).
Objective: the mean over tasks of each task's metric divided by its adapter's own score on
validation (``normalise``), or of the raw metric. A minimum-per-task constraint (no task
below ``min_task_fraction`` of its adapter's own validation score) goes to Optuna's
constraint handling where the sampler uses it (TPE, NSGA-II; random search needs none), and
for CMA-ES, which ignores constraints, subtracts ``1 + violation`` from the value instead.

Studies live in an Optuna SQLite storage under a name: the same call again continues the
study (its sampler seeded with ``seed`` + the trials already there, so no point is drawn
twice), and refuses to continue one made with other settings. Every scored trial is also
recorded in the run history, with the examples per task it saw as its ``limit``.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator

import numpy as np

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.history import History, HistoryPoint, pareto_front, point_key
from osrm_gui.core.execution import Call, Executor, ExecutorSettings, WorkerStatus, open_executor
from osrm_gui.core.explore.search_fidelity import RunningScores, ValidationChunks, chunks_of, reference_scores, score_split, score_trial_chunk
from osrm_gui.core.explore.search_space import LayerGroups, SearchPoint, SearchSpace, cmaes_start, suggest
from osrm_gui.core.explore.search_study import SAMPLERS, make_sampler, open_study, study_settings
from osrm_gui.core.explore.sweep import workspace_context
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import Progress
from osrm_gui.core.workspace import Workspace

MIN_IMPORTANCE_TRIALS = 3  # complete trials before parameter importances mean anything


@dataclass(frozen=True)
class SearchTrial:
    """One trial as the app lists it (plain values only)."""

    number: int
    state: str  # "complete", "pruned" or "fail"
    values: tuple[float, ...]  # objective value(s): the last reported one when pruned; none when failed
    params: dict  # Optuna's parameter names -> values
    examples: int  # forward passes it made: validation examples scored, over all tasks
    fidelity: float  # the fraction of the validation examples it scored
    scores: dict[str, float]  # task -> metric on the examples it scored
    feasible: bool | None = None  # None: no constraint
    message: str = ""  # why it failed


@dataclass(frozen=True)
class TrialEvent:
    trial: SearchTrial
    best: SearchTrial | None  # the best complete (feasible) trial so far
    done: int  # trials finished in this run
    total: int | None  # trials this run will make (None: until the timeout)


@dataclass
class SearchResult:
    study_name: str
    storage: Path | None
    sampler: str
    objectives: tuple[str, ...]
    trials: list[SearchTrial]  # every trial of the study, earlier runs included, by number
    best: SearchTrial | None
    best_point: SearchPoint | None  # its merge; best_point.spec is "apply best" (see SearchPoint on layer groups)
    validation: dict[str, float]  # task -> the best point's metric on the whole validation split
    test: dict[str, float]  # task -> the best point's metric on test (empty when not scored)
    reference: dict[str, float]  # task -> its adapter alone on validation (empty when not needed)
    pareto: list[int] = field(default_factory=list)  # trial numbers of the Pareto set (two objectives)
    examples: dict[str, int] = field(default_factory=dict)  # forward passes of this run: search, reference, test
    layer_groups: list[str] = field(default_factory=list)
    _frozen: list = field(default_factory=list, repr=False)  # Optuna's FrozenTrials, for importances
    _directions: list[str] = field(default_factory=list, repr=False)

    @property
    def best_spec(self) -> MergeSpec | None:
        return self.best_point.spec if self.best_point else None

    @property
    def study_examples(self) -> int:
        """Validation examples every trial of the study scored, earlier runs included."""
        return sum(t.examples for t in self.trials)

    def importances(self) -> dict[str, float]:
        """Optuna's parameter importances (PED-ANOVA), largest first; empty when fewer than
        MIN_IMPORTANCE_TRIALS trials are complete or the importances cannot be told apart."""
        import optuna

        complete = [t for t in self._frozen if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) < MIN_IMPORTANCE_TRIALS:
            return {}
        study = optuna.create_study(directions=self._directions)  # in memory: the result holds no live storage
        study.add_trials(complete)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                values = optuna.importance.get_param_importances(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                return {}
        if any("too small" in str(w.message) for w in caught):
            return {}
        return {k: float(v) for k, v in values.items()}

    def rows(self) -> list[dict]:
        """One row per trial, for tables."""
        rows = []
        for t in self.trials:
            row = {"trial": t.number, "state": t.state}
            row.update({name: (t.values[i] if i < len(t.values) else None) for i, name in enumerate(self.objectives)})
            row.update({"examples": t.examples, "fidelity": t.fidelity, "feasible": "" if t.feasible is None else ("yes" if t.feasible else "no")})
            row.update({k: v for k, v in t.params.items()})
            rows.append(row)
        return rows


def best_trial_rows(trials: list[SearchTrial], objectives: tuple[str, ...], pareto: list[int] | None, top: int) -> list[dict]:
    """The Pareto set (two objectives) or the ``top`` best complete trials, best first, for tables."""
    complete = [t for t in trials if t.state == "complete" and t.values]
    shown = [t for t in complete if t.number in pareto] if pareto else complete
    rows = []
    for t in sorted(shown, key=lambda t: (-t.values[0], t.number))[:top]:
        row = {"trial": t.number, **dict(zip(objectives, t.values)), "examples": t.examples}
        if t.feasible is not None:
            row["feasible"] = "yes" if t.feasible else "no"
        row["point"] = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        rows.append(row)
    return rows


def default_storage_path(history_path: str | Path) -> Path:
    """Where studies are kept: next to the run history (``history.sqlite`` → ``history.studies.sqlite``)."""
    path = Path(history_path)
    return path.with_name(path.stem + ".studies.sqlite")


def search(
    ws: Workspace, space: SearchSpace, sampler: str = "tpe", trials: int | None = None, timeout: float | None = None,
    seed: int = 0, storage: str | Path | None = None, study_name: str | None = None, chunk: int = 32,
    min_task_fraction: float | None = None, history: History | None = None, normalise: bool = True, prune: bool = True,
    score_test: bool = True, initial: list[dict] | None = None, executor: ExecutorSettings | None = None,
) -> Generator[Progress | TrialEvent | WorkerStatus, None, SearchResult]:
    """Search ``space`` for ``trials`` new trials and/or ``timeout`` seconds (checked before each
    trial starts); see the module docstring. ``storage``: an SQLite file (None: in memory, not
    resumable); ``study_name`` defaults to a hash of the settings, so the same search run again
    continues. ``initial``: points (Optuna parameter names → values) tried first.
    ``executor``: where trials are scored; on Ray, one trial per worker is in flight (TPE then
    samples with a constant liar), so which points are drawn depends on which trial finishes
    first, while each point's scores are those the local executor gives it.

    Not itself a generator: bad settings fail at the call, before anything is scored."""
    check_settings(space, sampler, trials, timeout, min_task_fraction, len(ws.adapters))
    if not ws.tasks:
        raise OsrmError("a search scores merges on the tasks' validation data, and no task is known")
    layer_names = sorted({name for adapter in ws.adapters for name in adapter.layers})
    groups = LayerGroups.of(layer_names, space.layer_groups)
    chunks = chunks_of(ws, chunk, seed)
    objectives = ("mean", "worst task") if sampler == "nsga2" else ("mean",)
    objectives = tuple(f"normalised {o}" for o in objectives) if normalise else objectives
    settings = study_settings(ws, space, chunks, objectives, normalise, min_task_fraction)
    # the default name tells samplers apart too; a named study may change its sampler between runs
    named = {**settings, "sampler": sampler}
    name = study_name or "search-" + hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:10]
    x0 = cmaes_start(space, [a.name for a in ws.adapters], groups) if sampler == "cmaes" else None
    make_sampler(sampler, seed, x0, 1)  # a missing optional package fails here, not after the first trials
    pruning = prune and len(objectives) == 1  # Optuna prunes single-objective trials only
    study = open_study(storage, name, len(objectives), settings, pruning, chunks.count)
    return _run(ws, space, sampler, trials, timeout, seed, study, storage, groups, chunks, objectives, min_task_fraction,
                history, normalise, pruning, score_test, initial or [], x0, executor)


def check_settings(space: SearchSpace, sampler: str, trials: int | None, timeout: float | None, min_task_fraction: float | None,
                   n_adapters: int = 1) -> None:
    """OsrmError, in one line, for settings no search could run with (before any model loads)."""
    if sampler not in SAMPLERS:
        raise OsrmError(f"sampler {sampler!r}: choose from {', '.join(SAMPLERS)}")
    if trials is None and timeout is None:
        raise OsrmError("a search needs a budget: a number of trials, a timeout, or both")
    if trials is not None and trials < 1 or timeout is not None and not timeout > 0:
        raise OsrmError(f"budget of {trials} trials / {timeout} s: expected at least one trial and a positive timeout")
    if min_task_fraction is not None and not 0 < min_task_fraction <= 1:
        raise OsrmError(f"minimum task fraction {min_task_fraction}: expected a fraction in (0, 1]")
    space.check(n_adapters)
    if sampler == "cmaes" and space.categorical():
        raise OsrmError("CMA-ES searches continuous spaces only, and this one has categorical choices: "
                        f"{'; '.join(space.categorical())}. Search one method and fix its categorical parameters, or use the tpe sampler")


@dataclass
class _Running:
    """A trial in flight: its merge, the worker scoring it chunk by chunk, and its scores so far."""

    trial: object
    point: SearchPoint
    worker: int | None
    running: RunningScores
    k: int = 0  # chunks scored
    spent: int = 0


def _run(ws, space, sampler, trials, timeout, seed, study, storage, groups, chunks, objectives, fraction, history, normalise, pruning,
         score_test, initial, x0, executor):
    with open_executor(executor, ws) as runner:
        return (yield from _drive(ws, space, sampler, trials, timeout, seed, study, storage, groups, chunks, objectives, fraction, history,
                                  normalise, pruning, score_test, initial, x0, runner))


def _drive(ws, space, sampler, trials, timeout, seed, study, storage, groups, chunks, objectives, fraction, history, normalise, pruning,
           score_test, initial, x0, runner):
    """Trials in flight: one per worker (one in all with the local executor, which makes the
    run the same as scoring them one after the other). Each trial's chunks go to the worker
    that started it (it keeps the trial's merge); the driver reports, prunes and tells."""
    from optuna.trial import TrialState

    examples = {"search": 0, "reference": 0, "test": 0}
    reference = study.user_attrs.get("reference")
    if reference is None and (normalise or fraction is not None):
        scores = yield from _one_call(runner, reference_scores, ())
        reference = {t: s["metric"] for t, s in scores.items()}
        examples["reference"] = sum(int(s["n"]) for s in scores.values())
        study.set_user_attr("reference", reference)
    reference = reference or {}
    if normalise and any(v <= 0 for v in reference.values()):
        low = ", ".join(f"{t} ({v:.3g})" for t, v in reference.items() if v <= 0)
        raise OsrmError(f"normalised scores divide by each adapter's own validation score, and {low} is not above 0; search raw scores instead")
    native_constraints = fraction is not None and sampler != "cmaes"
    study.sampler = make_sampler(sampler, seed + len(study.trials), x0, trials, parallel=runner.slots > 1)
    if x0 is not None and not study.trials:
        # the sampler's first draw is a random start-up trial; the uniform start itself is tried first
        study.enqueue_trial(x0)
    for params in initial:
        study.enqueue_trial(params, skip_if_exists=True)
    context = {**workspace_context(ws), "search": {"chunk": chunks.size, "order_seed": chunks.seed}}
    names = [a.name for a in ws.adapters]
    tasks = {t.name: t for t in ws.tasks}
    started, asked, done = time.monotonic(), 0, 0
    best = _best(study, len(objectives))
    active: dict[int, _Running] = {}
    free = list(range(runner.slots))

    def submit(state: _Running) -> None:
        runner.submit(Call(state.trial.number, score_trial_chunk, (state.point, groups, chunks.size, chunks.seed, state.k),
                           f"trial {state.trial.number} chunk {state.k + 1}/{chunks.count}", state.worker))

    def fail(state: _Running | None, trial, message: str) -> TrialEvent:
        nonlocal done, best
        frozen = study.tell(trial, state=TrialState.FAIL)
        examples["search"] += state.spent if state else 0
        done += 1
        if state is not None:
            del active[trial.number]
            free.append(state.worker)
        record = SearchTrial(trial.number, "fail", (), dict(frozen.params), state.spent if state else 0, 0.0, {}, None, message)
        return TrialEvent(record, best, done, trials)

    try:
        while True:
            while free and (trials is None or asked < trials) and (timeout is None or time.monotonic() - started < timeout):
                trial = study.ask()
                asked += 1
                try:
                    point = suggest(trial, space, names, groups, seed)
                except OsrmError as exc:
                    yield fail(None, trial, str(exc))
                    continue
                state = _Running(trial, point, free.pop(0), RunningScores(ws.tasks))
                active[trial.number] = state
                submit(state)
            if not active:
                break
            outcome = yield from runner.next_outcome()
            state = active[outcome.key]
            trial = state.trial
            if outcome.error is not None:
                yield fail(state, trial, outcome.error)
                continue
            found, spent = outcome.value
            for task, predictions, labels in found:
                state.running.add(tasks[task], predictions, labels)
            state.spent += spent
            state.k += 1
            metrics = state.running.metrics()
            values = _objective_values(metrics, reference, normalise)[: len(objectives)]
            yield _progress(done, trials, started, timeout, f"trial {trial.number}: {state.k}/{chunks.count} chunks, {values[0]:.4f}")
            pruned = False
            if pruning and state.k < chunks.count:
                trial.report(values[0], state.k)
                pruned = trial.should_prune()
            if not pruned and state.k < chunks.count:
                submit(state)
                continue
            del active[trial.number]
            free.append(state.worker)
            examples["search"] += state.spent
            violation = None
            if fraction is not None:
                shortfall = {t: fraction * reference[t] - m["metric"] for t, m in metrics.items()}
                violation = float(sum(max(v, 0.0) for v in shortfall.values()))
                if native_constraints:
                    for task, value in shortfall.items():
                        trial.set_constraint(f"min:{task}", value)
                elif violation > 0 and not pruned:
                    values = tuple(v - 1.0 - violation for v in values)
                trial.set_user_attr("violation", violation)
            seen = {t.name: chunks.seen(t, state.k) for t in ws.tasks}
            trial.set_user_attr("scores", {t: m["metric"] for t, m in metrics.items()})
            trial.set_user_attr("examples", state.spent)
            trial.set_user_attr("fidelity", sum(seen.values()) / sum(len(o) for o in chunks.order.values()))
            trial.set_user_attr("spec", state.point.spec.to_dict())
            trial.set_user_attr("group_coefficients", state.point.group_coefficients)
            frozen = study.tell(trial, state=TrialState.PRUNED) if pruned else study.tell(trial, list(values))
            done += 1
            record = _record(frozen)
            if history is not None:
                history.record(_history_point(ws, state.point, groups, metrics, seen, chunks, names, context, study.study_name, record))
            best = _best(study, len(objectives))
            yield TrialEvent(record, best, done, trials)
    except BaseException:  # cancelled (the generator closed) or a bug: never leave a trial running in the storage
        for state in active.values():
            study.tell(state.trial, state=TrialState.FAIL)
        raise
    return (yield from _finish(ws, study, storage, sampler, objectives, groups, reference, examples, score_test, runner))


def _one_call(runner: Executor, fn, args: tuple):
    """One call on the executor, waited for; its OsrmError raised here."""
    runner.submit(Call("one", fn, args, fn.__name__.replace("_", " ")))
    outcome = yield from runner.next_outcome()
    if outcome.error is not None:
        raise OsrmError(outcome.error)
    return outcome.value


def _progress(done, trials, started, timeout, message) -> Progress:
    if trials is not None:
        return Progress("search", done, trials, message)
    return Progress("search", min(int(time.monotonic() - started), int(timeout)), int(timeout), message)


def _objective_values(metrics: dict, reference: dict, normalise: bool) -> tuple[float, float]:
    """(mean, worst task) of each task's metric, divided by its adapter's own score when normalised."""
    per_task = [m["metric"] / reference[t] if normalise else m["metric"] for t, m in metrics.items()]
    return float(np.mean(per_task)), float(np.min(per_task))


def _record(frozen) -> SearchTrial:
    from optuna.trial import TrialState

    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(frozen.state, "fail")
    values = tuple(float(v) for v in frozen.values) if frozen.values is not None else ()
    violation = frozen.user_attrs.get("violation")
    return SearchTrial(frozen.number, state, values, dict(frozen.params), int(frozen.user_attrs.get("examples", 0)),
                       float(frozen.user_attrs.get("fidelity", 0.0)), dict(frozen.user_attrs.get("scores", {})),
                       None if violation is None else violation <= 0)


def _point(frozen) -> SearchPoint:
    return SearchPoint(MergeSpec(**frozen.user_attrs["spec"]), frozen.user_attrs.get("group_coefficients"))


def _best_frozen(study, n_objectives: int):
    """The best complete trial: feasible ones first; with two objectives, the best mean of the
    Pareto set. (None, []) before any trial completes; the Pareto set's trial numbers."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    feasible = [t for t in complete if t.user_attrs.get("violation", 0.0) <= 0] or complete
    if not feasible:
        return None, []
    if n_objectives == 1:
        return max(feasible, key=lambda t: (t.values[0], -t.number)), []
    front = [feasible[i] for i in pareto_front([(t.values[0], t.values[1]) for t in feasible])]
    return max(front, key=lambda t: (t.values[0], -t.number)), sorted(t.number for t in front)


def _best(study, n_objectives: int) -> SearchTrial | None:
    frozen, _ = _best_frozen(study, n_objectives)
    return _record(frozen) if frozen is not None else None


def _finish(ws, study, storage, sampler, objectives, groups, reference, examples, score_test, runner):
    from optuna.trial import TrialState

    frozen_trials = [t for t in study.get_trials(deepcopy=True) if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    best_frozen, pareto = _best_frozen(study, len(objectives))
    best_point = _point(best_frozen) if best_frozen is not None else None
    test = {}
    if best_point is not None and score_test:
        scores = yield from _one_call(runner, score_split, (best_point, groups, "test"))
        test = {t: s["metric"] for t, s in scores.items()}
        examples["test"] = sum(int(s["n"]) for s in scores.values())
    return SearchResult(
        study.study_name, Path(storage) if storage else None, sampler, objectives, [_record(t) for t in frozen_trials],
        _record(best_frozen) if best_frozen is not None else None, best_point,
        dict(best_frozen.user_attrs["scores"]) if best_frozen is not None else {}, test, dict(reference), pareto, examples,
        groups.labels if len(groups.labels) > 1 else [],
        frozen_trials, ["maximize"] * len(objectives),
    )


def _history_point(ws, point: SearchPoint, groups: LayerGroups, metrics: dict, seen: dict, chunks: ValidationChunks, names, context,
                   study_name: str, record: SearchTrial) -> HistoryPoint:
    """The trial as a run-history point: its fidelity is the examples per task it scored (the
    ``limit``; None when all), of a seeded subset rather than the first ones — the key says so."""
    spec = point.spec
    params = dict(spec.params)
    if point.group_coefficients is not None:
        # a MergeSpec holds one coefficient per adapter: the per-group ones travel with the parameters
        params["layer_coefficients"] = {label: list(c) for label, c in zip(groups.labels, point.group_coefficients)}
    full = all(seen[t.name] == len(chunks.order[t.name]) for t in ws.tasks)
    limit = None if full else max(seen.values())
    key = point_key(context, spec.method, params, spec.lam, spec.coefficients, spec.seed, "validation", limit)
    label = f"search {study_name} trial {record.number} ({record.state}, {sum(seen.values())} examples)"
    return HistoryPoint(spec.method, params, spec.lam, list(spec.coefficients), spec.seed, names, [a.content_hash for a in ws.adapters],
                        "validation", limit, {t: m["metric"] for t, m in metrics.items()}, kind="full" if full else "preview",
                        label=label, key=key)
