"""A mutable merge session, the state behind the app: a base, adapter slots
(enabled, coefficient, paired evaluation data), the chosen method, and the
results computed so far. Saved as a JSON workspace with relative paths."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator

from torch import nn

from osrm_gui.core.inputs.adapters import Adapter, load_adapter, validate_adapter
from osrm_gui.core.atomic import atomic_write_text, read_document
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.execution import LOCAL, ExecutorSettings
from osrm_gui.core.merge import get_method
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.inputs.models import BaseModel, load_base
from osrm_gui.core.osrm.others import SHIPPED_STATS
from osrm_gui.core.progress import Progress, Run
from osrm_gui.core.explore.history import History, HistoryPoint, default_history_path, history_path_for
from osrm_gui.core.explore.sweep import Axis, SweepPoint, SweepResult, history_point, run_sweep
from osrm_gui.core.inputs.tasks import Task, align_to_head, resolve_task
from osrm_gui.core.workspace import Workspace

WORKSPACE_FORMAT = "osrm-gui/workspace@1"


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
    single: dict[str, dict] = field(default_factory=dict)  # each task's adapter alone, same examples

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
    device: str | None = None
    last_result: EvalResult | None = None
    single_cache: dict[str, dict] = field(default_factory=dict)  # "adapter hash|task|limit" -> scores
    sweeps: list[SweepResult] = field(default_factory=list)
    history: History | None = None  # where every scored point is recorded (None: the per-user history, opened on first use)
    executor: ExecutorSettings = LOCAL  # where sweeps score their points (an app setting: not saved in the workspace)
    training_tasks: dict[str, tuple[Task, str]] = field(default_factory=dict)  # tasks added to train a new adapter for (no adapter yet)
    _heads: dict[int, nn.Module] = field(default_factory=dict, repr=False)
    _lora_sums: dict = field(default_factory=dict, repr=False)
    _encodings: dict = field(default_factory=dict, repr=False)

    # -- base and adapters ------------------------------------------------
    def load_base(self, path: str | Path | None = None) -> BaseModel:
        base = load_base(path, device=self.device)
        for slot in self.slots:
            validate_adapter(slot.adapter, base)
        self.base, self.base_path = base, (Path(path) if path is not None else None)
        self._heads.clear()
        self._encodings.clear()
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
        scored = [s for s in slots if s.task is not None and s.adapter.head]
        ws = Workspace(self.base, [s.adapter for s in slots], [s.task for s in scored], {s.task.name: s.adapter for s in scored})
        ws.encoding_cache = self._encodings
        heads = {}
        for s in scored:
            if id(s.adapter) not in self._heads:
                self._heads[id(s.adapter)] = self.base.build_head(s.adapter.head)
            heads[s.task.name] = self._heads[id(s.adapter)]
        ws._heads = heads
        ws.lora_sum_cache = self._lora_sums
        return ws

    def evaluate_job(self, full: bool = False) -> Generator[Progress, None, EvalResult]:
        """The merge scored on the preview subset (or everything), with each task's
        adapter alone on the same examples as the reference (cached)."""
        ws = self.workspace()
        limit = None if full else self.preview_limit
        spec = self.spec().resolved(len(ws.adapters))
        single = yield from self._single(ws, limit)
        names = [s.label for s in self.active()]
        scores = yield from ws.score(spec, limit=limit)
        self.run_history().record(history_point(ws, spec, "test", limit, names, scores))
        return EvalResult("full" if full else "preview", spec, scores, single)

    def _single(self, ws: Workspace, limit: int | None) -> Generator[Progress, None, dict]:
        key = lambda task: f"{ws.pairs[task.name].content_hash}|{task.content_hash()}|{limit}"  # noqa: E731
        missing = [t for t in ws.tasks if key(t) not in self.single_cache]
        if missing:
            sub = Workspace(ws.base, ws.adapters, missing, ws.pairs, _heads=ws._heads, encoding_cache=ws.encoding_cache)
            scores = yield from sub.evaluate_single(limit=limit)
            self.single_cache.update({key(t): scores[t.name] for t in missing})
        return {t.name: self.single_cache[key(t)] for t in ws.tasks}

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
            "merge": {"method": self.method, "params": self.params, "lambda": self.lam, "seed": self.seed},
            "preview_limit": self.preview_limit,
            "results": {
                "last": None if self.last_result is None else {"kind": self.last_result.kind, "spec": self.last_result.spec.to_dict(),
                                                               "scores": self.last_result.scores, "single": self.last_result.single},
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
            last = results["last"]
            session.last_result = EvalResult(last["kind"], MergeSpec(**last["spec"]), last["scores"], last.get("single", {}))
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


def _read_sweep(data: dict) -> SweepResult:
    spec = MergeSpec(**data["spec"])
    if "axes" not in data:  # workspaces written before 2-D sweeps: one axis, one method
        points = [SweepPoint((p["value"],), p["scores"], spec.method) for p in data["points"]]
        return SweepResult([Axis(data["target"], tuple(p.value for p in points))], spec, [spec.method], points)
    axes = [Axis(a["target"], tuple(a["values"])) for a in data["axes"]]
    points = [SweepPoint(tuple(p["values"]), p["scores"], p["method"]) for p in data["points"]]
    return SweepResult(axes, spec, data["methods"], points)
