"""A mutable merge session, the state behind the app: a base, adapter slots
(enabled, coefficient, paired evaluation data), the chosen method, and the
results computed so far. Saved as a JSON workspace with relative paths."""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Generator

import numpy as np
from torch import nn

from osrm_gui.core.inputs.adapters import Adapter, load_adapter, validate_adapter
from osrm_gui.core.atomic import atomic_write_text, read_document
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.execution import LOCAL, ExecutorSettings
from osrm_gui.core.merge import get_method
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.metrics import compute_metrics
from osrm_gui.core.metrics.confidence import TaskUncertainty, batch_metric, task_uncertainty
from osrm_gui.core.evaluation import EvaluationCache, Outcomes
from osrm_gui.core.inputs.models import BaseModel, load_base
from osrm_gui.core.osrm.others import SHIPPED_STATS
from osrm_gui.core.progress import Progress, Run
from osrm_gui.core.explore.history import History, HistoryPoint, default_history_path, history_path_for
from osrm_gui.core.explore.sweep import Axis, SweepPoint, SweepResult, history_point, run_sweep
from osrm_gui.core.inputs.tasks import Task, TaskSplit, align_to_head, resolve_task
from osrm_gui.core.workspace import Workspace

WORKSPACE_FORMAT = "osrm-gui/workspace@1"
PREVIEW_FIRST = 16  # examples per task a preview scores first: numbers in a fraction of the time, then refined
EVALUATION_SPLIT = "test"


@dataclass
class AdapterSlot:
    adapter: Adapter
    label: str
    enabled: bool = True
    coefficient: float = 1.0
    task_spec: str | None = None
    task: Task | None = None

    @property
    def path(self) -> Path:
        return self.adapter.path


@dataclass(frozen=True)
class TrainedAdapter:
    task: str
    path: Path
    final_loss: float


@dataclass(frozen=True)
class LoadedStatistics:
    """What a loaded adapter offers a new adapter trained against it: its task's data in the
    session, else the statistics shipped in its folder (neither: it cannot be avoided)."""

    label: str
    task: str | None  # the task it was trained for, paired or recorded in its metadata
    spec: str | None  # its task data, when the session has it and no statistics were shipped
    stats: Path | None  # the statistics file shipped next to it

    @property
    def usable(self) -> bool:
        return self.spec is not None or self.stats is not None


@dataclass
class EvalResult:
    kind: str  # "preview" or "full"
    spec: MergeSpec
    scores: dict[str, dict]  # task -> {"metric": …, "n": …}
    single: dict[str, dict] = field(default_factory=dict)  # each task's reference adapter alone, same examples
    references: dict[str, str] = field(default_factory=dict)  # task -> path of the adapter behind its single score (its head scores the merge)
    uncertainty: dict[str, TaskUncertainty] = field(default_factory=dict)  # task -> 95 % intervals and the paired test
    partial: bool = False  # a preview's first pass, on its first examples only: the full preview follows
    key: str | None = field(default=None, compare=False, repr=False)  # MergeSession.result_key of the settings it scored

    @property
    def average(self) -> float:
        values = [s["metric"] for s in self.scores.values()]
        return sum(values) / len(values) if values else float("nan")


@dataclass
class MergeSession:
    base_path: Path | None = None  # None: the embedded MiniLM
    base: BaseModel | None = None
    slots: list[AdapterSlot] = field(default_factory=list)
    method: str = "task_arithmetic"
    params: dict = field(default_factory=dict)
    lam: float = 1.0
    seed: int = 0
    preview_limit: int = 100
    preview_first: int = PREVIEW_FIRST  # examples per task of a preview's first pass (0, or ≥ preview_limit: one pass)
    device: str | None = None
    last_result: EvalResult | None = None
    references: dict[str, Path] = field(default_factory=dict)  # task -> the adapter chosen as its reference, when several serve it
    sweeps: list[SweepResult] = field(default_factory=list)
    history: History | None = None  # where every scored point is recorded (None: the per-user history, opened on first use)
    executor: ExecutorSettings = LOCAL  # where sweeps score their points (an app setting: not saved in the workspace)
    training_tasks: dict[str, tuple[Task, str]] = field(default_factory=dict)  # tasks added to train a new adapter for (no adapter yet)
    _heads: dict[int, nn.Module] = field(default_factory=dict, repr=False)
    _lora_sums: dict = field(default_factory=dict, repr=False)
    _encodings: dict = field(default_factory=dict, repr=False)
    _row_encodings: EvaluationCache = field(default_factory=lambda: EvaluationCache(metrics=False), repr=False)  # of a preview's row ranges
    _single_scores: dict[tuple[str, int], dict] = field(default_factory=dict, repr=False)  # (single_identity, examples) -> scores
    _encoded_tasks: dict[str, Task] = field(default_factory=dict, repr=False)  # the Task each encoding's name stood for
    _single_predictions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # single_identity -> predictions, in split order
    _task_hashes: dict[int, tuple[Task, str]] = field(default_factory=dict, repr=False)  # id -> (the task, pinned; its content hash)
    _unsaved_singles: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)  # single_identity -> (task, adapter hash)

    # -- base and adapters ------------------------------------------------
    def load_base(self, path: str | Path | None = None) -> BaseModel:
        base = load_base(path, device=self.device)
        for slot in self.slots:
            validate_adapter(slot.adapter, base)
        self.base, self.base_path = base, (Path(path) if path is not None else None)
        self._heads.clear()
        self._encodings.clear()
        self._row_encodings.clear()
        return base

    def read_adapter(self, path: str | Path) -> AdapterSlot:
        """Load and check one adapter (safe off the GUI thread: it only reads the base)."""
        if self.base is None:
            raise OsrmError("load a base model before adding adapters")
        adapter = load_adapter(path)
        if any(s.path.resolve() == adapter.path.resolve() for s in self.slots):
            raise OsrmError(f"{adapter.path}: already loaded")
        validate_adapter(adapter, self.base)
        slot = AdapterSlot(adapter, label=adapter.name, task_spec=adapter.metadata.get("task_spec"))
        if slot.task_spec:
            try:
                slot.task = _fit_to_head(resolve_task(slot.task_spec), adapter, slot.task_spec, slot.label)
            except OsrmError:
                slot.task = None  # its data moved or changed: the user can pair other data
        return slot

    def add_slot(self, slot: AdapterSlot) -> None:
        labels = {s.label for s in self.slots}
        while slot.label in labels:
            slot.label += "'"
        self.slots.append(slot)

    def remove(self, index: int) -> AdapterSlot:
        slot = self.slots.pop(index)
        self._heads.pop(id(slot.adapter), None)
        return slot

    def pair_task(self, index: int, spec: str) -> Task:
        slot = self.slots[index]
        task = _fit_to_head(resolve_task(spec), slot.adapter, spec, slot.label)
        slot.task_spec, slot.task = spec, task
        return task

    # -- merging and evaluation ---------------------------------------------
    def active(self) -> list[AdapterSlot]:
        return [s for s in self.slots if s.enabled]

    def spec(self) -> MergeSpec:
        return MergeSpec(self.method, [s.coefficient for s in self.active()], self.lam, dict(self.params), self.seed)

    def workspace(self) -> Workspace:
        if self.base is None:
            raise OsrmError("no base model loaded")
        slots = self.active()
        if not slots:
            raise OsrmError("no enabled adapters to merge")
        scored = list(self.reference_slots().values())
        ws = Workspace(self.base, [s.adapter for s in slots], [s.task for s in scored], {s.task.name: s.adapter for s in scored})
        self._forget_encodings_of_replaced_tasks(ws.tasks)
        ws.encoding_cache = self._encodings
        heads = {}
        for s in scored:
            if id(s.adapter) not in self._heads:
                self._heads[id(s.adapter)] = self.base.build_head(s.adapter.head)
            heads[s.task.name] = self._heads[id(s.adapter)]
        ws._heads = heads
        ws.lora_sum_cache = self._lora_sums
        return ws

    # -- references: which adapter alone each task is compared with ---------------------
    def serving(self, task: str) -> list[AdapterSlot]:
        """The enabled adapters (with a head) whose paired data is the task named ``task``."""
        return [s for s in self.active() if s.task is not None and s.adapter.head and s.task.name == task]

    def reference_slots(self) -> dict[str, AdapterSlot]:
        """Each scored task's reference adapter: the one chosen for it, else the first loaded that serves
        it (an adapter added later never silently replaces it). Its head scores the merge on the task."""
        chosen: dict[str, AdapterSlot] = {}
        for slot in self.active():
            if slot.task is None or not slot.adapter.head:
                continue
            name = slot.task.name
            wanted = self.references.get(name)
            if name not in chosen or (wanted is not None and _same_path(slot.path, wanted) and not _same_path(chosen[name].path, wanted)):
                chosen[name] = slot
        return chosen

    def set_reference(self, task: str, path: str | Path) -> None:
        if not any(_same_path(s.path, path) for s in self.serving(task)):
            raise OsrmError(f"{path}: not an enabled adapter of the task {task}")
        self.references[task] = Path(path).resolve()

    # -- evaluation --------------------------------------------------------------------
    def result_key(self, full: bool = False) -> str | None:
        """A hash of everything a preview (or full evaluation) of the current settings depends on,
        so a result can be reused; None when there is nothing to score or a setting is impossible."""
        slots = self.active()
        if self.base is None or not slots:
            return None
        try:
            spec = self.spec().resolved(len(slots))
        except OsrmError:
            return None
        defaults = Workspace.__dataclass_fields__
        identity = {
            "base": self.base.fingerprint, "dtype": str(self.base.dtype), "adapters": [s.adapter.content_hash for s in slots],
            "tasks": {name: [self._task_hash(s.task), s.task.metric, s.adapter.content_hash] for name, s in self.reference_slots().items()},
            "spec": spec.to_dict(), "limit": None if full else self.preview_limit,
            "evaluation": [defaults["batch_size"].default, defaults["max_length"].default],
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()

    def evaluate_job(self, full: bool = False) -> Generator[Progress | EvalResult, None, EvalResult]:
        """The merge scored on the preview examples (or all), with each task's reference adapter alone on
        the same examples, their 95 % intervals and a paired test. A preview longer than ``preview_first``
        scores that many examples of each task first and yields that partial result; the full pass then
        scores only the examples after them (the first pass's are the same examples, and kept)."""
        key = self.result_key(full)
        ws = self.workspace()
        spec = self.spec().resolved(len(ws.adapters))
        limit = None if full else self.preview_limit
        sizes = {t.name: len(t.split(EVALUATION_SPLIT)) for t in ws.tasks}
        stages = [limit] if full or not 0 < self.preview_first < limit else [self.preview_first, limit]
        score_rows = yield from _merge_scorer(ws, spec)
        merged: dict[str, Outcomes] = {}
        for stage in stages:
            stops = {name: size if stage is None else min(stage, size) for name, size in sizes.items()}
            single = yield from self._single_outcomes(ws, stops)
            fresh = yield from _outcomes_of_rows(ws, ws.tasks, {n: (len(merged.get(n, ())), stop) for n, stop in stops.items()}, score_rows,
                                                 self._row_encodings)
            merged = {t.name: merged[t.name].then(fresh[t.name]) if t.name in merged and t.name in fresh else fresh.get(t.name, merged.get(t.name))
                      for t in ws.tasks}
            partial = stage != stages[-1]
            alone = {t.name: self._single_scores_of(ws, t, single[t.name], partial) for t in ws.tasks}
            result = _result(ws, spec, "full" if full else "preview", merged, single, alone, partial, key)
            if partial:
                yield result
        names = [s.label for s in self.active()]
        self.run_history().record(history_point(ws, spec, EVALUATION_SPLIT, limit, names, result.scores))
        self._save_singles()
        return result

    def single_identity(self, ws: Workspace, task: Task) -> str:
        """What the reference adapter's predictions on ``task`` depend on (not how many examples: a stored
        prefix serves any shorter preview)."""
        identity = {"base": ws.base.fingerprint, "dtype": str(ws.base.dtype), "adapter": ws.pairs[task.name].content_hash,
                    "task": self._task_hash(task), "split": EVALUATION_SPLIT, "evaluation": [ws.batch_size, ws.max_length]}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _single_outcomes(self, ws: Workspace, stops: dict[str, int]) -> Generator[Progress, None, dict[str, Outcomes]]:
        """Each task's reference adapter alone on its first ``stops[task]`` examples: from this session,
        else from the run history (a later launch), else scored now, only past what is known, and kept in both."""
        identities = {t.name: self.single_identity(ws, t) for t in ws.tasks}
        short = [identities[t.name] for t in ws.tasks if len(self._single_predictions.get(identities[t.name], ())) < stops[t.name]]
        stored = self.run_history().single_predictions(short)
        known: dict[str, np.ndarray] = {}
        for task in ws.tasks:
            identity = identities[task.name]
            if len(stored.get(identity, ())) > len(self._single_predictions.get(identity, ())):
                self._single_predictions[identity] = np.asarray(stored[identity], _prediction_type(task))
            known[task.name] = self._single_predictions.get(identity, np.zeros(0, _prediction_type(task)))
        ranges = {t.name: (len(known[t.name]), stops[t.name]) for t in ws.tasks}
        fresh = yield from _outcomes_of_rows(ws, ws.tasks, ranges, lambda sub, split: sub.evaluate_single(split), self._row_encodings)
        for task in ws.tasks:
            if task.name in fresh:
                predictions = known[task.name] = np.concatenate([known[task.name], fresh[task.name].predictions])
                identity = identities[task.name]
                self._single_predictions[identity] = predictions
                self._unsaved_singles[identity] = (task.name, ws.pairs[task.name].content_hash)
        return {t.name: _outcomes(t, known[t.name][: stops[t.name]]) for t in ws.tasks}

    def _save_singles(self) -> None:
        """Into the run history, in one write once a job is done (not one per task and pass, before
        the first numbers): a later launch then finds them."""
        unsaved, self._unsaved_singles = self._unsaved_singles, {}
        self.run_history().record_singles([(identity, task, adapter, self._single_predictions[identity].tolist())
                                           for identity, (task, adapter) in unsaved.items()])

    def _single_scores_of(self, ws: Workspace, task: Task, outcomes: Outcomes, partial: bool) -> dict:
        """The reference's scores on these examples: the same for every merge, so computed once."""
        if partial:
            return _quick_scores(task, outcomes)
        key = (self.single_identity(ws, task), len(outcomes))
        if key not in self._single_scores:
            self._single_scores[key] = _task_scores(task, outcomes)
        return self._single_scores[key]

    def _task_hash(self, task: Task) -> str:
        # a task's data does not change once loaded; hashing it (ms for thousands of rows) once per Task is enough
        entry = self._task_hashes.get(id(task))
        if entry is None or entry[0] is not task:
            entry = self._task_hashes[id(task)] = (task, task.content_hash())
        return entry[1]

    def _forget_encodings_of_replaced_tasks(self, tasks: list[Task]) -> None:
        """Encodings are keyed by task name: when a name now stands for other data (data paired anew,
        another reference chosen), none of them may be reused."""
        if any(self._encoded_tasks.get(t.name, t) is not t for t in tasks):
            self._encodings.clear()
            self._row_encodings.clear()
            self._encoded_tasks.clear()
        self._encoded_tasks.update({t.name: t for t in tasks})

    def sweep_job(
        self, axes: list[Axis] | str, values: list[float] | None = None, limit: int | None = None, methods: list[str] | None = None
    ) -> Generator[Progress | SweepPoint, None, SweepResult]:
        """``axes``: one or two sweep axes, or a single target name with its ``values``."""
        if isinstance(axes, str):
            axes = [Axis(axes, tuple(values or ()))]
        names = [s.label for s in self.active()]
        limit = self.preview_limit if limit is None else limit
        return (yield from run_sweep(self.workspace(), self.spec(), axes, limit=limit, names=names, methods=methods, history=self.run_history(),
                                     executor=self.executor))

    def run_history(self) -> History:
        if self.history is None:
            self.history = History(default_history_path())
        return self.history

    def history_points(self) -> list[HistoryPoint]:
        """The recorded points of the adapters now enabled, in their current order."""
        return self.run_history().points(adapter_hashes=[s.adapter.content_hash for s in self.active()])

    # -- OSRM ----------------------------------------------------------------------
    def tasks_by_name(self) -> dict[str, tuple[Task, str]]:
        """Every task with data in the session: name -> (task, spec)."""
        return {s.task.name: (s.task, s.task_spec) for s in self.slots if s.task is not None and s.task_spec}

    def trainable_tasks(self) -> dict[str, tuple[Task, str]]:
        """The loaded adapters' tasks and the tasks added for training: name -> (task, spec)."""
        return {**self.training_tasks, **self.tasks_by_name()}

    def add_training_task(self, spec: str) -> Task:
        """A task to train a new adapter for, though no loaded adapter has it yet."""
        task = resolve_task(spec)
        self.training_tasks[task.name] = (task, spec)
        return task

    def loaded_statistics(self) -> list[LoadedStatistics]:
        """What each enabled adapter offers a new adapter trained against the loaded set; shipped
        statistics win over task data (they are the adapter's own, and need no features computed)."""
        offers = []
        for slot in self.active():
            task = slot.task.name if slot.task is not None else slot.adapter.task
            stats = slot.path / SHIPPED_STATS
            shipped = stats if stats.is_file() else None
            spec = slot.task_spec if slot.task is not None and shipped is None else None
            offers.append(LoadedStatistics(slot.label, task, spec, shipped))
        return offers

    def features_job(self, names: list[str], samples: int = 100, targets: list[str] | None = None) -> Generator[Progress, None, dict]:
        from osrm_gui.core.osrm.features import cached_features

        known = self.trainable_tasks()
        result = {}
        for name in names:
            result[name] = yield from cached_features(self.base, known[name][0], targets, samples)
        return result

    def train_outputs(self, names: list[str], settings, out_dir: str | Path) -> list[Path]:
        """The adapter folders :meth:`train_job` would write, one per named task; the knobs that
        change what A may learn are in the name, so settings trained side by side stay apart."""
        knobs = [settings.init]
        if settings.subspace_budget is not None:
            knobs.append(f"k{settings.subspace_budget}")
        if settings.subspace_penalty:
            knobs.append(f"beta{settings.subspace_penalty:g}")
        if settings.a_lr_multiplier != 1.0 and not settings.freeze_a:
            knobs.append(f"alr{settings.a_lr_multiplier:g}")
        return [Path(out_dir) / "-".join([name, *knobs]) for name in names]

    def train_job(self, names: list[str], settings, out_dir: str | Path, force: bool = False) -> Generator:
        """Train one adapter per named task; each avoids the other tasks in ``settings.osrm_tasks``
        (None: the other named tasks) and the statistics files in ``settings.against_stats`` except
        those shipped with an adapter of its own task. Yields progress and a ``TrainedAdapter`` per
        finished adapter."""
        from dataclasses import replace

        from osrm_gui.core.osrm.training import train_adapter

        known = self.trainable_tasks()
        specs = settings.osrm_tasks if settings.osrm_tasks is not None else [known[n][1] for n in names]
        owners = {str(offer.stats): offer.task for offer in self.loaded_statistics() if offer.stats is not None}
        paths = []
        for index, (name, folder) in enumerate(zip(names, self.train_outputs(names, settings, out_dir))):
            task = known[name][0]
            against = [f for f in settings.against_stats or [] if owners.get(str(f)) != name]
            task_settings = replace(settings, seed=settings.seed + index, osrm_tasks=specs, against_stats=against or None)
            run = Run(train_adapter(self.base_path, task, folder, task_settings, self.device, force))
            for event in run:
                # the stage names the task, so a view can draw one loss curve per task
                yield replace(event, stage=f"{event.stage}:{name}")
            paths.append(run.result.path)
            yield TrainedAdapter(name, run.result.path, run.result.final_loss)
        return paths

    def project_job(self, row: int, variant: str = "cov", samples: int = 100, out: str | Path | None = None) -> Generator[Progress, None, dict]:
        """Post-hoc OSRM of one adapter from the statistics of the session's other tasks."""
        from osrm_gui.core.osrm.features import cached_features
        from osrm_gui.core.osrm.subspaces import project_adapter, subspaces_from_others, write_projection

        slot = self.slots[row]
        others = [task for name, (task, _) in self.tasks_by_name().items() if slot.task is None or name != slot.task.name]
        if not others:
            raise OsrmError(f"post-hoc OSRM of {slot.label} needs the data of at least one other task")
        stats = []
        for task in others:
            stats.append((yield from cached_features(self.base, task, slot.adapter.targets, samples)))
        projection = project_adapter(slot.adapter, subspaces_from_others(stats, max(slot.adapter.ranks), variant))
        out = Path(out) if out is not None else slot.path.parent / f"{slot.path.name}-osrm-{variant}"
        write_projection(projection, self.base, out, variant, [t.name for t in others], force=True)
        return {"path": out, "kept": sum(projection.kept.values()) / len(projection.kept)}

    def export_job(self, kind: str, out: str | Path, rank: int | None = None, force: bool = False) -> Generator[Progress, None, dict]:
        from osrm_gui.core.export import export_merge

        return (yield from export_merge(self.workspace(), self.spec(), kind, out, rank, force))

    def method_params(self) -> dict:
        return get_method(self.method).resolve_params(self.params)

    # -- workspace files ----------------------------------------------------------
    def to_dict(self, where: Path) -> dict:
        rel = lambda p: os.path.relpath(Path(p).resolve(), where)  # noqa: E731
        return {
            "format": WORKSPACE_FORMAT,
            "base": None if self.base_path is None else rel(self.base_path),
            "adapters": [
                {"path": rel(s.path), "label": s.label, "enabled": s.enabled, "coefficient": s.coefficient,
                 "task": _portable_spec(s.task_spec, where)} for s in self.slots
            ],
            "merge": {"method": self.method, "params": self.params, "lambda": self.lam, "seed": self.seed,
                      "references": {task: rel(path) for task, path in self.references.items()}},
            "preview_limit": self.preview_limit,
            "results": {
                "last": None if self.last_result is None else _result_dict(self.last_result, rel),
                "sweeps": [
                    {"axes": [{"target": a.target, "values": list(a.values)} for a in r.axes], "methods": r.methods, "spec": r.spec.to_dict(),
                     "points": [{"values": list(p.values), "method": p.method, "scores": p.scores} for p in r.points]}
                    for r in self.sweeps
                ],
            },
        }

    def save(self, path: str | Path) -> None:
        """Write the workspace; its run history lives beside it (the points so far come along)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        target = History(history_path_for(path))  # an unusable history beside it refuses before anything is written
        atomic_write_text(path, json.dumps(self.to_dict(path.resolve().parent), indent=2) + "\n", force=True)
        if self.history is not None and self.history.path.resolve() != target.path.resolve():
            self.history.copy_to(target)
        self.history = target

    # -- analysis --------------------------------------------------------------------
    def analysis_job(self, metric: str, density: float = 0.2) -> Generator[Progress, None, dict]:
        """The enabled adapters' pairwise ``metric`` (a name in ``analysis.METRICS``) per common
        layer, and how faithfully the current merge keeps their sum, per merged layer.

        Returns {"names", "per_layer", "fidelity", "fidelity_error"}; the merge failing (say
        RegMean without task data) leaves ``fidelity`` empty and says why, but keeps the metric."""
        from osrm_gui.core.analysis import pairwise as analysis

        if metric not in analysis.METRICS:
            raise OsrmError(f"unknown analysis metric {metric!r}; one of {', '.join(analysis.METRICS)}")
        ws = self.workspace()
        slots = self.active()
        grams = None
        if metric in analysis.NEEDS_GRAMS:
            missing = [s.label for s in slots if s.task is None]
            if missing:
                raise OsrmError(f"{analysis.METRICS[metric].label} needs every adapter's task data; pair data with {', '.join(missing)}")
            grams = []
            for slot in slots:
                # one workspace per adapter: two adapters of the same task each keep their own statistics
                own = Workspace(ws.base, [slot.adapter], [slot.task], {slot.task.name: slot.adapter})
                grams += yield from own.adapter_grams()
        yield Progress("analysis", 0, 2, analysis.METRICS[metric].label)
        per_layer = analysis.METRICS[metric].compute(ws.adapters, grams, density)
        yield Progress("analysis", 1, 2, "merge fidelity")
        fidelity, fidelity_error = {}, None
        try:
            merged = yield from ws.merge(self.spec())
            fidelity = analysis.merge_fidelity(ws.adapters, merged)
        except OsrmError as exc:
            fidelity_error = str(exc)
        yield Progress("analysis", 2, 2)
        return {"names": [s.label for s in slots], "per_layer": per_layer, "fidelity": fidelity, "fidelity_error": fidelity_error}


def _same_path(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


RowScorer = Callable[[Workspace, str], Generator]


def _merge_scorer(ws: Workspace, spec: MergeSpec) -> Generator[Progress, None, RowScorer]:
    """How to score the merge ``spec`` on a workspace of some rows: a method that is a weighted sum of
    task vectors runs through the LoRA-sum hooks (nothing to merge); any other is merged once, here,
    and that merge evaluated on every pass."""
    if get_method(spec.method).adapter_weights is not None:
        return lambda sub, split: sub.score(spec, split)
    merged = yield from ws.merge(spec)
    return lambda sub, split: sub.evaluate(merged, split)


def _outcomes_of_rows(ws: Workspace, tasks: list[Task], rows: dict[str, tuple[int, int]], score: RowScorer,
                      cache: EvaluationCache) -> Generator[Progress, None, dict[str, Outcomes]]:
    """Per-example outcomes of each task on its test rows ``rows[task] = (start, stop)`` (tasks with none
    left out): ``score`` runs on a workspace whose tasks hold just those rows, as a split named after them
    (so their tokenisation is cached in ``cache`` apart from every other range)."""
    groups: dict[tuple[int, int], list[Task]] = defaultdict(list)
    for task in tasks:
        start, stop = rows[task.name]
        if stop > start:
            groups[(start, stop)].append(task)
    found: dict[str, Outcomes] = {}
    for (start, stop), group in groups.items():
        split = f"{EVALUATION_SPLIT}[{start}:{stop}]"
        sliced = [replace(t, splits={split: _slice(t.split(EVALUATION_SPLIT), start, stop)}) for t in group]
        sub = Workspace(ws.base, ws.adapters, sliced, ws.pairs, _heads=ws.heads, encoding_cache=cache,
                        lora_sum_cache=ws.lora_sum_cache, batch_size=ws.batch_size, max_length=ws.max_length)
        yield from score(sub, split)
        found.update({t.name: cache.outcomes[t.name] for t in group})
    return found


def _slice(split: TaskSplit, start: int, stop: int) -> TaskSplit:
    return TaskSplit(split.texts[start:stop], split.labels[start:stop], split.pairs[start:stop] if split.pairs else None)


def _prediction_type(task: Task):
    return np.float32 if task.is_regression else np.int64


def _outcomes(task: Task, predictions: np.ndarray) -> Outcomes:
    labels = task.split(EVALUATION_SPLIT).labels[: len(predictions)]
    return Outcomes.of(labels, predictions, task.is_regression)


def _task_scores(task: Task, outcomes: Outcomes) -> dict:
    """The task's metrics from its per-example predictions (its own labels, exactly as evaluation reads them)."""
    labels = task.split(EVALUATION_SPLIT).labels[: len(outcomes)]
    scores = compute_metrics(labels, outcomes.predictions, task.is_regression)
    return {"metric": scores[task.metric], **scores, "n": len(outcomes)}


def _quick_scores(task: Task, outcomes: Outcomes) -> dict:
    """Only the task's own metric, by numpy: a first pass's numbers, replaced by the full pass's, need not
    wait for scikit-learn (a second to import on a busy machine, ~10 ms a task after)."""
    value = float(batch_metric(task.metric, outcomes.labels[None], outcomes.predictions[None])[0])
    return {"metric": value, task.metric: value, "n": len(outcomes)}


def _result(ws: Workspace, spec: MergeSpec, kind: str, merged: dict[str, Outcomes], single: dict[str, Outcomes], alone: dict[str, dict],
            partial: bool, key: str | None) -> EvalResult:
    scores, uncertainty = {}, {}
    for task in ws.tasks:
        scores[task.name] = (_quick_scores if partial else _task_scores)(task, merged[task.name])
        uncertainty[task.name] = task_uncertainty(task.metric, merged[task.name].labels, merged[task.name].predictions,
                                                  single[task.name].predictions, scores[task.name]["metric"], alone[task.name]["metric"])
    references = {t.name: str(ws.pairs[t.name].path) for t in ws.tasks}
    return EvalResult(kind, spec, scores, alone, references, uncertainty, partial, key)


def _fit_to_head(task: Task, adapter: Adapter, spec: str, label: str) -> Task:
    """The task's labels checked against (and numbered as) the adapter's head, as pair_tasks does."""
    align_to_head(task, adapter.metadata.get("label_names"), str(adapter.path))
    if adapter.num_labels not in (None, task.num_labels):
        raise OsrmError(f"{spec}: {task.num_labels} labels, but adapter {label} has a head with {adapter.num_labels} outputs")
    return task


def _portable_spec(spec: str | None, where: Path) -> str | None:
    if not spec or spec.startswith("demo:"):
        return spec
    file, sep, options = spec.partition("@")
    return os.path.relpath(Path(file).resolve(), where) + sep + options


def _absolute_spec(spec: str | None, where: Path) -> str | None:
    if not spec or spec.startswith("demo:"):
        return spec
    file, sep, options = spec.partition("@")
    return str((where / file).resolve()) + sep + options


def open_session(path: str | Path, device: str | None = None) -> Generator[Progress, None, MergeSession]:
    """Read a workspace file: the base, every adapter (checked again) and the saved results."""
    path = Path(path)
    data = read_document(path, WORKSPACE_FORMAT, "workspace")
    _check_workspace(path, data)
    where = path.resolve().parent
    session = MergeSession(device=device)
    merge = data.get("merge", {})
    session.method = merge.get("method", session.method)
    session.params = merge.get("params", {})
    session.lam = float(merge.get("lambda", 1.0))
    session.seed = int(merge.get("seed", 0))
    session.references = {task: (where / path).resolve() for task, path in (merge.get("references") or {}).items()}
    session.preview_limit = int(data.get("preview_limit", session.preview_limit))
    entries = data.get("adapters", [])
    yield Progress("open", 0, len(entries) + 1, "base model")
    session.load_base(None if data.get("base") is None else where / data["base"])
    for i, entry in enumerate(entries, 1):
        slot = session.read_adapter(where / entry["path"])
        slot.label, slot.enabled, slot.coefficient = entry["label"], entry["enabled"], float(entry["coefficient"])
        if entry.get("task"):
            slot.task_spec = _absolute_spec(entry["task"], where)
            slot.task = resolve_task(slot.task_spec)
        session.slots.append(slot)
        yield Progress("open", i + 1, len(entries) + 1, slot.label)
    results = data.get("results") or {}
    try:
        if results.get("last"):
            session.last_result = _read_result(results["last"], where)
        session.sweeps = [_read_sweep(r) for r in results.get("sweeps", [])]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise OsrmError(f"{path}: its saved results are malformed ({type(exc).__name__}: {exc}); remove the \"results\" entry to open it without them") from None
    session.history = History(history_path_for(path))
    return session


def _check_workspace(path: Path, data: dict) -> None:
    """The fields opening reads, with their types, so a hand-edited file fails in one line."""
    def wrong(key: str, value, expected: str) -> OsrmError:
        found = "missing" if value is None else f"a {type(value).__name__}"
        return OsrmError(f"{path}: workspace field {key} is {found}, expected {expected}")

    if data.get("base") is not None and not isinstance(data["base"], str):
        raise wrong("base", data["base"], "a path or null")
    for key in ("merge", "results"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise wrong(key, data[key], "an object")
    merge = data.get("merge") or {}
    for key, kind, expected in (("method", str, "a name"), ("params", dict, "an object"), ("lambda", (int, float), "a number"),
                                  ("seed", int, "a whole number")):
        if key in merge and (not isinstance(merge[key], kind) or isinstance(merge[key], bool)):
            raise wrong(f"merge.{key}", merge[key], expected)
    references = merge.get("references")
    if references is not None and (not isinstance(references, dict) or not all(isinstance(v, str) for v in references.values())):
        raise wrong("merge.references", references, "an object of task → adapter path")
    if "preview_limit" in data and (not isinstance(data["preview_limit"], int) or data["preview_limit"] < 1):
        raise wrong("preview_limit", data["preview_limit"], "a whole number ≥ 1")
    entries = data.get("adapters", [])
    if not isinstance(entries, list):
        raise wrong("adapters", entries, "a list")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise wrong(f"adapters[{i}]", entry, "an object")
        for key, kind, expected in (("path", str, "a path"), ("label", str, "a name"), ("enabled", bool, "true or false"),
                                      ("coefficient", (int, float), "a number")):
            if not isinstance(entry.get(key), kind) or (kind is not bool and isinstance(entry.get(key), bool)):
                raise wrong(f"adapters[{i}].{key}", entry.get(key), expected)
        if entry.get("task") is not None and not isinstance(entry["task"], str):
            raise wrong(f"adapters[{i}].task", entry["task"], "a task spec")


def _result_dict(result: EvalResult, rel: Callable[[str], str]) -> dict:
    return {"kind": result.kind, "spec": result.spec.to_dict(), "scores": result.scores, "single": result.single,
            "references": {task: rel(path) for task, path in result.references.items()},
            "uncertainty": {task: u.to_dict() for task, u in result.uncertainty.items()}, "partial": result.partial}


def _read_result(data: dict, where: Path) -> EvalResult:
    """A saved result; one saved before intervals and references has neither (the chart then shows none)."""
    return EvalResult(data["kind"], MergeSpec(**data["spec"]), data["scores"], data.get("single", {}),
                      {task: str((where / path).resolve()) for task, path in (data.get("references") or {}).items()},
                      {task: TaskUncertainty.from_dict(u) for task, u in (data.get("uncertainty") or {}).items()},
                      bool(data.get("partial", False)))


def _read_sweep(data: dict) -> SweepResult:
    spec = MergeSpec(**data["spec"])
    if "axes" not in data:  # workspaces written before 2-D sweeps: one axis, one method
        points = [SweepPoint((p["value"],), p["scores"], spec.method) for p in data["points"]]
        return SweepResult([Axis(data["target"], tuple(p.value for p in points))], spec, [spec.method], points)
    axes = [Axis(a["target"], tuple(a["values"])) for a in data["axes"]]
    points = [SweepPoint(tuple(p["values"]), p["scores"], p["method"]) for p in data["points"]]
    return SweepResult(axes, spec, data["methods"], points)
