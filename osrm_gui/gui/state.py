"""The session model: the one place the app's state lives. Widgets change it
through its methods and observe it through its signals; the heavy work it
starts runs in the job slot, off the GUI thread."""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack
from superqt.utils import create_worker

from osrm_gui.core.device import describe_device
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.execution import ExecutorSettings, WorkerStatus
from osrm_gui.core.merge import METHODS
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import Progress
from osrm_gui.core.session import AdapterSlot, EvalResult, MergeSession, open_session
from osrm_gui.core.explore.history import History, HistoryDamaged, HistoryPoint, default_history_path, history_path_for, set_aside
from osrm_gui.core.explore.sweep import Axis, SweepPoint, SweepResult
from osrm_gui.gui.workers import JobSlot, one_line

PREVIEW_DEBOUNCE_MS = 250
RESULTS_KEPT = 64  # recent previews a slider can come back to without scoring them again


class SessionModel(QObject):
    baseChanged = Signal()
    adaptersChanged = Signal()  # rows added, removed, renamed, enabled
    mergeChanged = Signal()  # method, parameters, coefficients, λ
    resultChanged = Signal()  # a preview (its first pass, then the full one) or a full evaluation arrived
    updatingChanged = Signal(bool)  # the numbers shown are (about to be) recomputed for changed settings
    sweepStarted = Signal(object)  # SweepResult (empty)
    sweepPoint = Signal(object)  # SweepPoint
    sweepFinished = Signal(object)  # SweepResult
    sweepWorkers = Signal(object)  # WorkerStatus of a sweep on Ray: each worker's state, and what just happened
    executorChanged = Signal(object)  # ExecutorSettings: where sweeps and searches run from now on
    historyChanged = Signal()  # a scored point was recorded in the run history
    adapterRefused = Signal(str, str)  # path, reason
    message = Signal(str)
    workspacePathChanged = Signal(str)

    def __init__(self, session: MergeSession | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session or MergeSession()
        self.jobs = JobSlot(self)
        self.undo = QUndoStack(self)
        self.workspace_path: Path | None = None
        self.auto_preview = True
        self._loaders: list = []
        # asked (on the GUI thread) whether a damaged or foreign run history may be set aside; None: never
        self.confirm_history_reset: Callable[[HistoryDamaged], bool] | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._debounce = QTimer(self, singleShot=True, interval=PREVIEW_DEBOUNCE_MS)
        self._debounce.timeout.connect(self.preview)
        self.updating = False
        self._results: OrderedDict[str, EvalResult] = OrderedDict()  # result key -> final preview
        self._wanted: str | None = None  # the key of the settings whose numbers should be shown
        self._requested: str | None = None  # the key of the latest preview job started, until it ends
        self._token: object | None = None  # that job's token, and the token of the preview job running
        self._running_token: object | None = None
        self.jobs.finished.connect(self._job_finished)
        self.jobs.busyChanged.connect(self._jobs_busy)

    # -- reading state -------------------------------------------------------
    @property
    def slots(self) -> list[AdapterSlot]:
        return self.session.slots

    @property
    def result(self) -> EvalResult | None:
        return self.session.last_result

    @property
    def executor(self) -> ExecutorSettings:
        return self.session.executor

    @property
    def device_text(self) -> str:
        return describe_device(self.session.base.device) if self.session.base else "no model"

    # -- loading ---------------------------------------------------------------
    def open_demo(self, family: str = "peft-default") -> None:
        from osrm_gui.core.inputs.demo_set import demo_adapter_paths

        # the same merge `osrm demo run` (and so `make run`) prints: task arithmetic at λ = 0.5
        self.open_paths(None, [str(p) for p in demo_adapter_paths(family=family)], lam=0.5)

    def open_paths(self, base: str | None, adapters: list[str], lam: float | None = None) -> None:
        """Load a base (None: the embedded MiniLM) and adapters, replacing the session."""
        def job():
            session = MergeSession(device=self.session.device, preview_limit=self.session.preview_limit,
                                   lam=self.session.lam if lam is None else lam)
            yield Progress("load", 0, len(adapters) + 1, "base model")
            session.load_base(base)
            refused = []
            for i, path in enumerate(adapters, 1):
                try:
                    session.add_slot(session.read_adapter(path))
                except OsrmError as exc:
                    refused.append((path, str(exc)))
                yield Progress("load", i + 1, len(adapters) + 1, Path(path).name)
            return session, refused

        self.jobs.start("Loading model and adapters", job, self._install_session)

    def open_workspace(self, path: str) -> None:
        if history_path_for(path).exists():
            self._usable_history(history_path_for(path))  # a damaged one may be set aside before the job opens it

        def done(session):
            self._install_session((session, []))
            self.workspace_path = Path(path)
            self.workspacePathChanged.emit(path)
            self.message.emit(f"Opened {path}")

        self.jobs.start("Opening workspace", lambda: open_session(path, self.session.device), done)

    def save_workspace(self, path: str) -> None:
        target = history_path_for(path)
        if target.exists() and self._usable_history(target) is None:
            return  # the status bar says why; nothing is written
        self.session.save(path)
        self.workspace_path = Path(path)
        self.workspacePathChanged.emit(path)
        self.historyChanged.emit()  # the history now lives next to the workspace
        self.message.emit(f"Saved workspace to {path}")

    def _install_session(self, loaded) -> None:
        session, refused = loaded
        session.executor = self.session.executor  # an app setting: a new session or an opened workspace keeps it
        self.session = session
        self._ensure_history()
        self.undo.clear()
        self.baseChanged.emit()
        self.adaptersChanged.emit()
        self.mergeChanged.emit()
        self.resultChanged.emit()
        for result in session.sweeps:
            self.sweepFinished.emit(result)
        for path, reason in refused:
            self.adapterRefused.emit(path, reason)
        self._wanted = self._requested = None
        if (session.last_result is None or session.last_result.partial) and session.active():
            self.preview()

    def add_adapters(self, paths: list[str]) -> None:
        """Validate each adapter in the background; refuse bad ones without touching the rest."""
        for path in paths:
            worker = create_worker(self.session.read_adapter, path, _start_thread=False, _ignore_errors=True)
            worker.returned.connect(self._adapter_read)
            worker.errored.connect(lambda exc, p=path: self.adapterRefused.emit(p, one_line(exc)))
            worker.finished.connect(lambda w=worker: self._loaders.remove(w) if w in self._loaders else None)
            self._loaders.append(worker)
            worker.start()

    def _adapter_read(self, slot: AdapterSlot) -> None:
        if any(s.path.resolve() == slot.path.resolve() for s in self.slots):
            self.adapterRefused.emit(str(slot.path), f"{slot.path}: already loaded")
            return
        self.undo.push(_AddAdapter(self, slot))
        self.message.emit(f"Added adapter {slot.label}")

    # -- editing (undoable) ---------------------------------------------------
    def remove_adapter(self, row: int) -> None:
        self.undo.push(_RemoveAdapter(self, row))

    def rename_adapter(self, row: int, label: str) -> None:
        if label and label != self.slots[row].label:
            self.undo.push(_SetSlot(self, row, "label", label, f"Rename {self.slots[row].label}"))

    def set_enabled(self, row: int, enabled: bool) -> None:
        if enabled != self.slots[row].enabled:
            self.undo.push(_SetSlot(self, row, "enabled", enabled, ("Enable " if enabled else "Disable ") + self.slots[row].label))

    def pair_task(self, row: int, spec: str) -> None:
        self.session.pair_task(row, spec)
        self.adaptersChanged.emit()
        self._changed(immediate=True)

    def set_coefficient(self, row: int, value: float, final: bool = True) -> None:
        self.slots[row].coefficient = float(value)
        self._changed(immediate=final)

    def set_lambda(self, value: float, final: bool = True) -> None:
        self.session.lam = float(value)
        self._changed(immediate=final)

    def set_method(self, name: str) -> None:
        if name not in METHODS:
            raise OsrmError(f"unknown merge method {name!r}")
        if name != self.session.method:
            self.session.method = name
            self.session.params = {}
            self._changed(immediate=True)

    def set_param(self, name: str, value) -> None:
        self.session.params[name] = value
        self._changed(immediate=True)

    def apply_preset(self, preset: str) -> None:
        """'average': linear with equal weights; 'task_arithmetic': sum at λ = 1."""
        self.session.method = "linear" if preset == "average" else "task_arithmetic"
        self.session.params = {}
        self.session.lam = 1.0
        for slot in self.slots:
            slot.coefficient = 1.0
        self._changed(immediate=True)

    def set_reference(self, task: str, path: str) -> None:
        """Compare ``task``'s merged score with the adapter at ``path`` alone (one of those serving it);
        the merge is then scored through that adapter's head on the task."""
        current = self.session.reference_slots().get(task)
        if current is not None and current.path.resolve() == Path(path).resolve():
            return
        self.session.set_reference(task, path)
        self.message.emit(f"{task} is now compared with {Path(path).name} alone")
        self._changed(immediate=True)

    def set_preview_limit(self, limit: int) -> None:
        self.session.preview_limit = int(limit)
        self.session._encodings.clear()
        self._changed(immediate=True)

    def set_executor(self, settings: ExecutorSettings) -> None:
        """Where the next sweeps and searches run (a running one keeps its own). Nothing connects
        here: a Ray executor starts or joins its cluster inside the job, off the GUI thread."""
        self.session.executor = settings
        self.executorChanged.emit(settings)

    def _changed(self, immediate: bool) -> None:
        self.mergeChanged.emit()
        if not self.auto_preview:
            return
        self._set_updating(True)
        if immediate:
            self._debounce.stop()
            self.preview()
        else:
            self._debounce.start()

    # -- jobs ------------------------------------------------------------------
    def preview(self) -> None:
        """Score the current settings on the preview examples: a first pass on a few examples per task,
        then all of them. Settings scored before are shown again without scoring; settings being scored
        are not started again."""
        if self.session.base is None or not self.session.active():
            self._set_updating(False)
            return
        self._ensure_history()
        key = self._wanted = self.session.result_key()
        known = self._results.get(key) if key is not None else None
        if known is not None:
            self._results.move_to_end(key)
            self._drop_stale_preview()
            self._show(known)
            return
        if key is not None and key == self._requested:
            return  # already being scored: a slider released where it was dragged to
        self._requested = key
        self._token = token = object()
        self._set_updating(True)

        def start():
            self._running_token = token
            return self.session.evaluate_job(full=False)

        # a preview replaces an older preview, but waits for a sweep, an export or a full evaluation
        preempt = self.jobs.current_label in (None, "Preview")
        self.jobs.start("Preview", start, self._preview_ready, on_event=self._preview_event, preempt=preempt)

    def _drop_stale_preview(self) -> None:
        """The settings went back to numbers already known: a preview of others running or waiting is
        replaced by one that does nothing (a sweep or an export is left alone)."""
        if self._requested is not None:
            self._requested = self._token = None
            self.jobs.start("Preview", _nothing, preempt=self.jobs.current_label == "Preview")

    def _preview_event(self, event) -> None:
        if isinstance(event, EvalResult) and event.key == self._wanted:
            self._show(event)  # the first pass, refined next

    def _preview_ready(self, result: EvalResult) -> None:
        if result.key is not None:
            self._results[result.key] = result
            while len(self._results) > RESULTS_KEPT:
                self._results.popitem(last=False)
        self.historyChanged.emit()
        if result.key == self._wanted:
            self._show(result)

    def _show(self, result: EvalResult) -> None:
        self.session.last_result = result
        self._set_updating(False)
        self.resultChanged.emit()

    def _set_updating(self, updating: bool) -> None:
        if updating != self.updating:
            self.updating = updating
            self.updatingChanged.emit(updating)

    def _job_finished(self, label: str, outcome: str) -> None:
        if label == "Preview" and self._running_token is not None and self._running_token is self._token:
            self._requested = self._token = None  # the latest preview asked for is over
            if outcome != "done":
                self._set_updating(False)  # cancelled or failed: the numbers shown stay, and are not being updated
        if label == "Preview":
            self._running_token = None

    def _jobs_busy(self, busy: bool) -> None:
        if not busy:  # nothing runs or waits: no preview is coming
            self._requested = self._token = None
            if not self._debounce.isActive():
                self._set_updating(False)

    def full_evaluation(self) -> None:
        self._ensure_history()
        self.jobs.start("Full evaluation", lambda: self.session.evaluate_job(full=True), self._result_ready)

    def _result_ready(self, result: EvalResult) -> None:
        self._wanted = None  # asked for explicitly: shown whatever the settings are now
        self._show(result)
        self.historyChanged.emit()

    def sweep(self, axes: list[Axis], methods: list[str] | None = None) -> None:
        """Score a 1-D line or 2-D grid of merges (for each of ``methods``); points already in
        the run history are taken from it, so re-running a cancelled sweep resumes it."""
        methods = methods or [self.session.method]
        self._ensure_history()

        def start():
            generator = self.session.sweep_job(axes, methods=methods)
            self.sweepStarted.emit(SweepResult(list(axes), self.session.spec(), list(methods)))
            return generator

        def done(result: SweepResult):
            self.session.sweeps.append(result)
            self.sweepFinished.emit(result)

        self.jobs.start("Sweep " + " × ".join(a.target for a in axes), start, done, on_event=self._sweep_event)

    def _sweep_event(self, event) -> None:
        if isinstance(event, SweepPoint):
            self.sweepPoint.emit(event)
            if not event.reused:
                self.historyChanged.emit()
        elif isinstance(event, WorkerStatus):
            self.sweepWorkers.emit(event)
            if event.message:  # a death and a re-queue: said in the status bar too
                self.message.emit(event.message)

    def run_history(self) -> History:
        """The session's run history, opened here on the GUI thread (see _ensure_history)."""
        self._ensure_history()
        return self.session.history

    def history_points(self) -> list[HistoryPoint]:
        if self.session.base is None:
            return []
        self._ensure_history()
        try:
            return self.session.history_points()
        except OsrmError as exc:  # damaged since it was opened, or locked
            self.message.emit(str(exc))
            return []

    # -- the run history -----------------------------------------------------------
    def _ensure_history(self) -> None:
        """Open the session's history here, not in a job: a damaged one is then set aside with the
        user's consent, or replaced by a temporary one, instead of failing every preview."""
        if self.session.history is None:
            history = self._usable_history(default_history_path(), then="; this session's points go to a temporary history")
            # not `or`: a History is as falsy as it is empty
            self.session.history = history if history is not None else self._scratch_history()

    def _usable_history(self, path: Path, then: str = "") -> History | None:
        """The run history at ``path``, a fresh one there when the user lets a damaged or foreign
        file be set aside; None when it cannot be used (the status bar says why, and ``then``)."""
        try:
            return History(path)
        except HistoryDamaged as exc:
            if self.confirm_history_reset is not None and self.confirm_history_reset(exc):
                return self._fresh_history(exc.path)
            self.message.emit(f"{exc}{then}")
        except OsrmError as exc:
            self.message.emit(f"{exc}{then}")
        return None

    def _fresh_history(self, path: Path) -> History | None:
        try:
            moved = set_aside(path)
            history = History(path)
        except (OSError, OsrmError) as exc:
            self.message.emit(f"{path}: cannot start a fresh run history ({one_line(exc)})")
            return None
        self.message.emit(f"Moved the damaged run history to {moved.name}; a fresh one starts")
        return history

    def _scratch_history(self) -> History:
        """Where this session's points go when its run history cannot be used: gone at exit."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="osrm-gui-history-")
        return History(Path(self._scratch.name) / "history.sqlite")

    def apply_point(self, point: HistoryPoint) -> None:
        """Load a recorded point's method, parameters, λ and coefficients into the merge (undoable)."""
        labels = [s.label for s in self.session.active()]
        hashes = [s.adapter.content_hash for s in self.session.active()]
        if point.adapter_hashes != hashes:
            self.message.emit("That point was scored with other adapters; it cannot be loaded into this merge")
            return
        self.undo.push(_ApplyPoint(self, point, labels))

    def apply_spec(self, spec: MergeSpec, text: str, adapter_hashes: list[str] | None = None) -> None:
        """Load a merge found by a job (method, parameters, λ, a coefficient per enabled adapter) into
        the merge, undoably; ``adapter_hashes``: the adapters it was found with, refused when they changed."""
        active = self.session.active()
        if adapter_hashes is not None and adapter_hashes != [s.adapter.content_hash for s in active]:
            self.message.emit("That merge was found with other adapters; it cannot be loaded into this merge")
            return
        if spec.method not in METHODS or len(spec.coefficients or ()) != len(active):
            self.message.emit(f"A {spec.method} merge of {len(spec.coefficients or ())} adapters cannot be loaded into this merge")
            return
        self.undo.push(_ApplyPoint(self, spec, [s.label for s in active], text))

    def export(self, kind: str, out: str, rank: int | None, force: bool, on_done) -> None:
        self.jobs.start(f"Export ({kind})", lambda: self.session.export_job(kind, out, rank, force), on_done)


def _nothing():
    return
    yield  # a generator that ends at once: a job that only replaces another


class _AddAdapter(QUndoCommand):
    def __init__(self, model: SessionModel, slot: AdapterSlot):
        super().__init__(f"Add {slot.label}")
        self.model, self.slot = model, slot

    def redo(self):
        self.model.session.add_slot(self.slot)
        self.model.adaptersChanged.emit()
        self.model._changed(immediate=True)

    def undo(self):
        self.model.session.remove(self.model.slots.index(self.slot))
        self.model.adaptersChanged.emit()
        self.model._changed(immediate=True)


class _RemoveAdapter(QUndoCommand):
    def __init__(self, model: SessionModel, row: int):
        super().__init__(f"Remove {model.slots[row].label}")
        self.model, self.row, self.slot = model, row, model.slots[row]

    def redo(self):
        self.model.session.remove(self.row)
        self.model.adaptersChanged.emit()
        self.model._changed(immediate=True)

    def undo(self):
        self.model.slots.insert(self.row, self.slot)
        self.model.adaptersChanged.emit()
        self.model._changed(immediate=True)


class _ApplyPoint(QUndoCommand):
    def __init__(self, model: SessionModel, point: HistoryPoint | MergeSpec, labels: list[str], text: str | None = None):
        super().__init__(text or f"Load point {point.id} ({point.method})")
        self.model = model
        session = model.session
        self.new = (point.method, dict(point.params), point.lam, point.seed, dict(zip(labels, point.coefficients)))
        self.old = (session.method, dict(session.params), session.lam, session.seed, {s.label: s.coefficient for s in session.active()})

    def _set(self, state):
        session = self.model.session
        session.method, params, session.lam, session.seed, coefficients = state
        session.params = dict(params)
        for slot in session.active():
            slot.coefficient = coefficients.get(slot.label, slot.coefficient)
        self.model._changed(immediate=True)

    def redo(self):
        self._set(self.new)

    def undo(self):
        self._set(self.old)


class _SetSlot(QUndoCommand):
    def __init__(self, model: SessionModel, row: int, attribute: str, value, text: str):
        super().__init__(text)
        self.model, self.row, self.attribute = model, row, attribute
        self.new, self.old = value, getattr(model.slots[row], attribute)

    def _set(self, value):
        setattr(self.model.slots[self.row], self.attribute, value)
        self.model.adaptersChanged.emit()
        if self.attribute == "enabled":
            self.model._changed(immediate=True)

    def redo(self):
        self._set(self.new)

    def undo(self):
        self._set(self.old)
