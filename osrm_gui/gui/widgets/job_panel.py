"""What the panels that run their own job share: a status line, a Cancel button that is live while
one of their jobs runs, refusals of bad settings said in one line (status and status bar) instead
of an error dialog, Save-as buttons with a menu entry per view, and the Ray workers of a job that runs
on them (in a :class:`WorkerStatusView` the panel places, when its jobs may run on Ray)."""

from __future__ import annotations

from typing import Callable, Generator

from PySide6.QtWidgets import QFileDialog, QLabel, QMenu, QPushButton, QToolButton, QWidget

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.execution import WorkerStatus
from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.worker_status import WorkerStatusView

REFUSED = object()  # what a refused job returns: nothing ran


def _refused() -> Generator:
    return REFUSED
    yield  # a generator that ends at once, so the job slot finishes it as any other job


def save_button(parent: QWidget, text: str, entries: list[tuple[str, str, str, Callable[[str], None]]]) -> QToolButton:
    """A button with a menu: per entry (menu text, default file name, file filter, writer of a path),
    a save dialog and then the writer. One entry: a plain click."""
    button = QToolButton(parent, text=text, popupMode=QToolButton.InstantPopup)
    menu = QMenu(button)
    for label, default, filter_, write in entries:
        def ask(checked=False, label=label, default=default, filter_=filter_, write=write):
            path, _ = QFileDialog.getSaveFileName(parent, label, default, filter_)
            if path:
                write(path)
        menu.addAction(label, ask)
    button.setMenu(menu)
    return button


class JobPanel(QWidget):
    """A panel whose jobs carry the labels in ``job_labels``."""

    job_labels: tuple[str, ...] = ()

    def __init__(self, model: SessionModel, intro: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.status = QLabel(intro)
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self._refused = False
        # set by panels whose jobs may run on Ray, and placed in their layout (unplaced, it would be a stray window)
        self.workers: WorkerStatusView | None = None
        model.jobs.started.connect(self._started)
        model.jobs.finished.connect(self._finished)

    @property
    def running(self) -> bool:
        return self.model.jobs.current_label in self.job_labels

    def run_job(self, label: str, prepare: Callable[[], Generator], on_result: Callable, on_event: Callable | None = None) -> None:
        """Start ``prepare()``'s generator in the job slot. ``prepare`` runs on the GUI thread once the
        slot is free (no other job uses the model then); an OsrmError it raises is a refusal."""
        def factory():
            self._refused = False
            try:
                return prepare()
            except OsrmError as exc:
                self._refused = True
                self.say(str(exc))
                return _refused()

        def event(event):
            if isinstance(event, WorkerStatus):
                self._worker_status(event)
            if on_event is not None:
                on_event(event)

        self.model.jobs.start(label, factory, lambda result: None if result is REFUSED else on_result(result), event)

    def _worker_status(self, status: WorkerStatus) -> None:
        if self.workers is not None:
            self.workers.show_status(status)
        if status.message:  # a death and a re-queue: said in the status bar too
            self.model.message.emit(status.message)

    def cancel(self) -> None:
        if self.running:
            self.model.jobs.cancel()

    def say(self, text: str) -> None:
        """One line in the panel's status and the window's status bar."""
        self.status.setText(text)
        self.model.message.emit(text)

    def _started(self, label: str) -> None:
        if label in self.job_labels:
            self.cancel_button.setEnabled(True)
            if self.workers is not None:
                self.workers.reset()

    def _finished(self, label: str, outcome: str) -> None:
        if label not in self.job_labels:
            return
        self.cancel_button.setEnabled(False)
        if not self._refused:
            self.job_finished(label, outcome)

    def job_finished(self, label: str, outcome: str) -> None:
        """One of this panel's jobs ended ("done", "cancelled" or "failed"; refusals are not told)."""
