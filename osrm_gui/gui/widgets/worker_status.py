"""The Ray workers of the running sweep or search, one row each: where it runs, how many calls it
finished and what it computes now; below, what happened to them (a death, a re-queue). Hidden
until a job reports workers, so the local executor never shows it."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QPalette
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QPlainTextEdit, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from osrm_gui.core.execution import WorkerStatus
from osrm_gui.core.execution.executor import WorkerState

COLUMNS = ("worker", "where", "done", "working on")
VISIBLE_ROWS = 4  # more workers scroll: the plot under the controls keeps its room
LOG_LINES = 3
STARTING = "starting"  # the executor's "where" until the worker has loaded the workspace


def worker_cells(state: WorkerState) -> tuple[str, str, str, str]:
    name = f"w{state.index + 1}" + (f" (restarted {state.restarts}×)" if state.restarts else "")
    if not state.alive:
        doing = "dead: given up"
    elif state.busy:
        doing = state.busy
    elif state.where == STARTING:
        doing = "loading the model…"
    else:
        doing = "idle"
    return name, state.where, str(state.done), doing


class WorkerStatusView(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("workerStatus")
        self.summary = QLabel()
        self.summary.setObjectName("workerSummary")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("workerTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        self.table.setFocusPolicy(Qt.NoFocus)
        header = self.table.horizontalHeader()
        for column in range(len(COLUMNS) - 1):
            header.setSectionResizeMode(column, QHeaderView.ResizeToContents)
        header.setStretchLastSection(True)
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setObjectName("workerLog")
        self.log.setMaximumBlockCount(200)
        self.log.setFixedHeight(self.fontMetrics().lineSpacing() * LOG_LINES + 12)
        self.log.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        layout.addWidget(self.log)
        self.messages: list[str] = []
        self.status: WorkerStatus | None = None
        self.hide()

    def reset(self) -> None:
        """A new job: no workers yet (and none at all when it runs locally)."""
        self.status = None
        self.messages = []
        self.table.setRowCount(0)
        self.log.clear()
        self.log.hide()
        self.hide()

    def show_status(self, status: WorkerStatus) -> None:
        self.status = status
        if self.table.rowCount() != len(status.workers):
            self.table.setRowCount(len(status.workers))
            self._fit_height()
        dead = QBrush(self.palette().color(QPalette.Disabled, QPalette.Text))
        for row, state in enumerate(status.workers):
            for column, text in enumerate(worker_cells(state)):
                item = self.table.item(row, column)
                if item is None:
                    item = QTableWidgetItem()
                    self.table.setItem(row, column, item)
                if item.text() != text:  # a status arrives a few times a second: repaint only what changed
                    item.setText(text)
                    item.setToolTip(text)
                if not state.alive:
                    item.setForeground(dead)
        alive = sum(w.alive for w in status.workers)
        restarts = sum(w.restarts for w in status.workers)
        parts = [f"{len(status.workers)} Ray worker{'s' * (len(status.workers) != 1)}", f"{sum(w.done for w in status.workers)} done"]
        if alive < len(status.workers):
            parts.append(f"{len(status.workers) - alive} dead")
        if restarts:
            parts.append(f"{restarts} restart{'s' * (restarts != 1)}")
        self.summary.setText(" · ".join(parts))
        self.summary.setToolTip(status.summary())
        if status.message:
            self.messages.append(status.message)
            self.log.appendPlainText(status.message)
            self.log.show()
        self.show()

    def _fit_height(self) -> None:
        rows = min(max(self.table.rowCount(), 1), VISIBLE_ROWS)
        height = self.table.horizontalHeader().sizeHint().height() + rows * self.table.verticalHeader().defaultSectionSize()
        self.table.setFixedHeight(height + 2 * self.table.frameWidth() + 2)

    def rows(self) -> list[tuple[str, ...]]:
        """The texts of the table, row by row."""
        return [tuple(self.table.item(r, c).text() for c in range(self.table.columnCount())) for r in range(self.table.rowCount())]
