"""One job slot: core generators run on a worker thread, one at a time.

Starting a job while another runs cancels the running one and starts the new
one once the old has stopped (the model is never used by two threads at once).
Progress, partial results and errors arrive as queued Qt signals.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Callable, Generator

from PySide6.QtCore import QObject, Signal
from superqt.utils import GeneratorWorker, create_worker

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.progress import Progress


class JobError(Exception):
    """A job's failure: a one-line reason for people, the traceback for details."""

    def __init__(self, reason: str, details: str):
        super().__init__(reason)
        self.reason = reason
        self.details = details


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    return reason if isinstance(exc, OsrmError) else f"{type(exc).__name__}: {reason}"


def _details(exc: BaseException) -> str:
    """A bad input is said in its one line; only a failure of ours carries a traceback for a bug report."""
    return "" if isinstance(exc, OsrmError) else traceback.format_exc()


def _guarded(generator: Generator):
    # superqt treats a RuntimeError from the job as "worker deleted" and drops it;
    # wrapping every failure keeps torch's RuntimeErrors visible to the user.
    try:
        return (yield from generator)
    except GeneratorExit:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none kills the app
        raise JobError(one_line(exc), _details(exc)) from exc


class _ClosingWorker(GeneratorWorker):
    """Closes the job's generator on the worker thread when cancelled, so its
    clean-up (restoring the base weights, removing temporary files) runs there."""

    def work(self):
        try:
            return super().work()
        finally:
            self._gen.close()


@dataclass
class _Job:
    label: str
    factory: Callable[[], Generator]
    on_result: Callable | None
    on_event: Callable | None


class JobSlot(QObject):
    started = Signal(str)
    progress = Signal(str, int, int, str, float)  # stage, done, total, message, eta seconds (-1: unknown)
    finished = Signal(str, str)  # label, outcome: "done", "cancelled" or "failed"
    failed = Signal(str, str, str)  # label, reason, details
    busyChanged = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._worker: GeneratorWorker | None = None
        self._current: _Job | None = None
        self._pending: _Job | None = None
        self._stage_started: dict[str, float] = {}
        self._outcome = "done"

    @property
    def busy(self) -> bool:
        return self._worker is not None

    @property
    def current_label(self) -> str | None:
        return self._current.label if self._current else None

    def start(self, label: str, factory: Callable[[], Generator], on_result: Callable | None = None, on_event: Callable | None = None,
              preempt: bool = True) -> None:
        """Run ``factory()``'s generator. A running job is cancelled first, unless
        ``preempt`` is false: then the new job waits for it (replacing any other waiting job)."""
        job = _Job(label, factory, on_result, on_event)
        if self._worker is not None:
            self._pending = job
            if not preempt:
                return
            self._outcome = "cancelled"
            self._worker.quit()
            return
        self._launch(job)

    def cancel(self) -> None:
        self._pending = None
        if self._worker is not None:
            self._outcome = "cancelled"
            self._worker.quit()

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Block until no job runs (for tests and shutdown)."""
        from PySide6.QtCore import QCoreApplication

        deadline = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < deadline:
            QCoreApplication.processEvents()
            time.sleep(0.005)
        return not self.busy

    def _launch(self, job: _Job) -> None:
        self._current = job
        self._outcome = "done"
        self._stage_started = {}
        try:
            generator = job.factory()
        except Exception as exc:  # noqa: BLE001 - a job that cannot even start is reported the same way
            self._current = None
            self.failed.emit(job.label, one_line(exc), _details(exc))
            self.finished.emit(job.label, "failed")
            return
        worker = create_worker(_guarded, generator, _start_thread=False, _worker_class=_ClosingWorker, _ignore_errors=True)
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.started.emit(job.label)
        self.busyChanged.emit(True)
        worker.start()

    def _on_yielded(self, event) -> None:
        # One worker at a time (a new one starts only after the old finished),
        # and queued signals keep their order, so every event belongs to _current.
        if self._current is None:
            return
        if isinstance(event, Progress):
            now = time.monotonic()
            began = self._stage_started.setdefault(event.stage, now)
            eta = (now - began) / event.done * (event.total - event.done) if event.done else -1.0
            self.progress.emit(event.stage, event.done, event.total, event.message, eta)
        if self._current.on_event is not None:  # views that draw progress (loss curves) see it too
            self._current.on_event(event)

    def _on_returned(self, result) -> None:
        if self._current is not None and self._current.on_result is not None:
            self._current.on_result(result)

    def _on_errored(self, exc) -> None:
        if self._current is None:
            return
        self._outcome = "failed"
        reason = exc.reason if isinstance(exc, JobError) else one_line(exc)
        details = exc.details if isinstance(exc, JobError) else "".join(traceback.format_exception(exc))
        self.failed.emit(self._current.label, reason, details)

    def _on_finished(self) -> None:
        label = self._current.label if self._current else ""
        self._worker, self._current = None, None
        self.finished.emit(label, self._outcome)
        pending, self._pending = self._pending, None
        if pending is not None:
            self._launch(pending)
        else:
            self.busyChanged.emit(False)
