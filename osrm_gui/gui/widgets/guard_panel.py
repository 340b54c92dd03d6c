"""The guard against a bad contributor, on the session's current merge (method, parameters, λ,
coefficients): a data-free pre-screen of the enabled adapters (norms, cosines, sign conflicts,
overlaps), and a leave-one-out analysis — the merge scored with every adapter and without each one,
Δ = score(all) − score(without) per task in a heatmap (red: including the adapter costs that task)
— then a verdict per adapter with its reasons; a flagged adapter can be disabled (undoable)."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDoubleSpinBox, QPushButton, QSpinBox, QSplitter, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

from osrm_gui.core.analysis.prescreen import PreScreen, prescreen
from osrm_gui.core.atomic import atomic_write_text
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.guard import DEFAULT_TAU, REFERENCES, GuardResult, LeftOut, check_tau, guard, own_tasks
from osrm_gui.core.tables import rows_to_csv
from osrm_gui.gui.plots.heatmap import Heatmap
from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.fitting import flow
from osrm_gui.gui.widgets.job_panel import JobPanel, save_button

PRESCREEN_JOB = "Guard pre-screen"
LEAVE_ONE_OUT_JOB = "Guard leave-one-out"
FLAGGED = QColor(255, 214, 214)
INTRO = ("Check the current merge for a bad contributor: a data-free pre-screen of the adapters, then the merge "
         "scored without each adapter (Δ > 0: including it helps that task).")


def _diverging() -> pg.ColorMap:
    """CET-D1 reversed, as a copy (pyqtgraph hands out one shared map per name): red below 0, blue above."""
    positions, colours = pg.colormap.get("CET-D1").getStops(mode="byte")
    return pg.ColorMap(1.0 - positions[::-1], colours[::-1])


def _text(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _fill(table: QTableWidget, rows: list[dict], flagged: list[bool] | None = None) -> None:
    columns = list(rows[0]) if rows else []
    table.clear()
    table.setColumnCount(len(columns))
    table.setHorizontalHeaderLabels(columns)
    table.setRowCount(len(rows))
    bold = QFont()
    bold.setBold(True)
    for r, row in enumerate(rows):
        for c, key in enumerate(columns):
            item = QTableWidgetItem(_text(row[key]))
            item.setToolTip(str(row[key]))
            if flagged and flagged[r]:
                item.setBackground(QBrush(FLAGGED))
                item.setFont(bold)
            table.setItem(r, c, item)
    table.resizeColumnsToContents()
    table.horizontalHeader().setStretchLastSection(True)


def _table(name: str) -> QTableWidget:
    table = QTableWidget(0, 0)
    table.setObjectName(name)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectRows)
    table.setSelectionMode(QAbstractItemView.SingleSelection)
    table.verticalHeader().hide()
    return table


class GuardPanel(JobPanel):
    job_labels = (PRESCREEN_JOB, LEAVE_ONE_OUT_JOB)

    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(model, INTRO, parent)
        self.status.setObjectName("guardStatus")
        self.cancel_button.setObjectName("cancelGuard")
        self.screen: PreScreen | None = None
        self.result: GuardResult | None = None
        self.flags: list[bool] = []  # per verdict row (= per adapter of the run)
        self.reasons: list[str] = []  # per verdict row, said in full when the row is selected
        self._slots: list = []  # the enabled adapters' slots when the job started, in its order
        self._tasks: list[str] = []
        self._deltas = np.zeros((0, 0))  # adapters × tasks, NaN until scored

        self.split = QComboBox()
        self.split.setObjectName("guardSplit")
        self.split.addItems(["validation", "test"])
        self.split.setToolTip("Where the merges are scored: validation (the default) keeps test for reporting the merge that results")
        self.tau = QDoubleSpinBox(minimum=0.0, maximum=1.0, value=DEFAULT_TAU, decimals=3, singleStep=0.005)
        self.tau.setObjectName("guardTau")
        self.tau.setToolTip("Flag an adapter whose inclusion lowers the other tasks by more than τ on average, or one task by more "
                            "than 2τ (metric units: 0.01 is one accuracy point)")
        self.limit = QSpinBox(minimum=0, maximum=1_000_000, value=0, specialValueText="all")
        self.limit.setObjectName("guardLimit")
        self.limit.setToolTip("Examples scored per task (all: the whole split)")
        self.reference = QComboBox()
        self.reference.setObjectName("guardReference")
        self.reference.addItems(list(REFERENCES))
        self.reference.setToolTip("A loss measured against the other adapters' median Δ on the task (others), or against 0 (zero)")
        self.prescreen_button = QPushButton("Pre-screen")
        self.prescreen_button.setObjectName("runPrescreen")
        self.prescreen_button.setToolTip("Fast and data-free: norms, cosines, sign conflicts and overlaps of the enabled adapters")
        self.prescreen_button.clicked.connect(self.start_prescreen)
        self.loo_button = QPushButton("Leave-one-out")
        self.loo_button.setObjectName("runLeaveOneOut")
        self.loo_button.setToolTip("Score the current merge with every adapter and without each one (N + 1 merges)")
        self.loo_button.clicked.connect(self.start_leave_one_out)
        self.disable_button = QPushButton("Disable flagged")
        self.disable_button.setObjectName("disableFlagged")
        self.disable_button.setToolTip("Disable the selected flagged adapter (or the first one flagged); undo with Ctrl+Z")
        self.disable_button.clicked.connect(self.disable_flagged)

        self.screen_table = _table("prescreenTable")
        self.heatmap = Heatmap(number_format="{:+.3f}")
        self.heatmap.setObjectName("guardHeatmap")
        self.heatmap.colorbar.setColorMap(_diverging())
        self.heatmap.set_axis_titles("left out", "task")
        self.verdicts = _table("verdictTable")
        self.verdicts.itemSelectionChanged.connect(self._enable)
        self.verdicts.itemSelectionChanged.connect(self._explain)
        save_plot = save_button(self, "Save plot…", [
            ("Δ heatmap", "guard-deltas.png", "PNG image (*.png);;SVG image (*.svg)", self.heatmap.export_image)])
        save_csv = save_button(self, "Save CSV…", [
            ("Pre-screen", "guard-prescreen.csv", "CSV (*.csv)", self.export_prescreen_csv),
            ("Δ per adapter and task", "guard-deltas.csv", "CSV (*.csv)", self.export_deltas_csv),
            ("Verdicts", "guard-verdicts.csv", "CSV (*.csv)", self.export_verdicts_csv),
        ])

        # rows that wrap in a narrow window instead of widening the tab
        first = flow(("Split", self.split), ("τ", self.tau), ("examples", self.limit), ("against", self.reference))
        second = flow(self.prescreen_button, self.loo_button, self.cancel_button, self.disable_button, save_plot, save_csv)
        views = QSplitter(Qt.Vertical)
        for widget in (self.screen_table, self.heatmap, self.verdicts):
            views.addWidget(widget)
        views.setSizes([120, 260, 140])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(first)
        layout.addLayout(second)
        layout.addWidget(self.status)
        layout.addWidget(views, 1)
        model.jobs.busyChanged.connect(self._enable)
        model.adaptersChanged.connect(self._enable)
        self._enable()

    # -- starting ----------------------------------------------------------------------
    def _workspace(self):
        ws = self.model.session.workspace()
        if len(ws.adapters) < 2:
            raise OsrmError(f"the guard compares adapters with each other, so it needs 2 enabled adapters or more ({len(ws.adapters)} enabled)")
        return ws

    def _begin(self) -> None:
        self._slots = list(self.model.session.active())
        self.screen, self.result, self.flags, self.reasons = None, None, [], []
        self.screen_table.setRowCount(0)
        self.verdicts.setRowCount(0)

    def start_prescreen(self) -> None:
        def prepare():
            ws = self._workspace()
            self._begin()
            self.heatmap.clear_matrix()
            self.status.setText(f"Pre-screening {len(ws.adapters)} adapters…")
            return prescreen(ws.adapters)

        self.run_job(PRESCREEN_JOB, prepare, self._screened)

    def start_leave_one_out(self) -> None:
        session = self.model.session
        split, limit, reference = self.split.currentText(), self.limit.value() or None, self.reference.currentText()

        def prepare():
            tau = check_tau(self.tau.value())
            ws = self._workspace()
            own_tasks(ws)  # every adapter needs its task: said in one line now
            spec = session.spec()
            self._begin()
            self._tasks = [t.name for t in ws.tasks]
            self._deltas = np.full((len(ws.adapters), len(self._tasks)), math.nan)
            self._draw_deltas()
            self.status.setText(f"Scoring {spec.method} (λ {spec.lam:g}) with all {len(ws.adapters)} adapters and without each, "
                                f"on {split}…")
            return guard(ws, spec, split, tau, limit, reference=reference)

        self.run_job(LEAVE_ONE_OUT_JOB, prepare, self._judged, self._event)

    # -- results -----------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return [slot.label for slot in self._slots]

    def _event(self, event) -> None:
        if isinstance(event, PreScreen):
            self._show_screen(event)
        elif isinstance(event, LeftOut):
            self._deltas[event.index] = [event.deltas.get(t, math.nan) for t in self._tasks]
            self._draw_deltas()
            self.status.setText(f"Scored without {self.labels[event.index]} ({event.index + 1} of {event.total})")

    def _draw_deltas(self) -> None:
        finite = self._deltas[np.isfinite(self._deltas)]
        span = max(float(np.abs(finite).max()) if finite.size else 0.0, 2 * self.tau.value(), 1e-3)
        self.heatmap.set_matrix(self._deltas, self.labels, self._tasks, title="Δ = score(all) − score(without)", levels=(-span, span))

    def _show_screen(self, screen: PreScreen) -> None:
        self.screen = screen
        rows = [{**row, "adapter": label} for row, label in zip(screen.rows(), self.labels)]
        _fill(self.screen_table, rows, [a.flagged for a in screen.adapters])

    def _screened(self, screen: PreScreen) -> None:
        self._show_screen(screen)
        self.flags = [a.flagged for a in screen.adapters]
        self.reasons = ["; ".join(a.reasons) for a in screen.adapters]
        _fill(self.verdicts, [{"adapter": label, "verdict": "flagged (pre-screen)" if a.flagged else "pass", "why": "; ".join(a.reasons)}
                              for label, a in zip(self.labels, screen.adapters)], self.flags)
        flagged = [label for label, flag in zip(self.labels, self.flags) if flag]
        self.status.setText(f"Pre-screen flags {', '.join(flagged)}; run leave-one-out to see what they cost the merge" if flagged
                            else f"Pre-screen: no adapter stands out among the {len(self.labels)}")
        self._enable()

    def _judged(self, result: GuardResult) -> None:
        self.result = result
        self._deltas = result.delta_matrix()
        self._draw_deltas()
        self.flags = [v.flagged for v in result.verdicts]
        self.reasons = ["; ".join(v.prescreen + v.leave_one_out) for v in result.verdicts]
        rows = [{**row, "adapter": label} for row, label in zip(result.verdict_rows(), self.labels)]
        _fill(self.verdicts, rows, self.flags)
        flagged = [label for label, flag in zip(self.labels, self.flags) if flag]
        self.status.setText(f"Flagged: {', '.join(flagged)} (τ {result.tau:g} on {result.split})" if flagged
                            else f"No adapter flagged (τ {result.tau:g} on {result.split})")
        self._enable()

    def job_finished(self, label: str, outcome: str) -> None:
        if outcome == "cancelled":
            self.status.setText("Cancelled; the adapters scored so far stay in the heatmap.")
        elif outcome == "failed":
            self.status.setText("The guard failed (see the error).")

    def _explain(self) -> None:
        """The selected verdict's reasons in full (the table's column is too narrow for most)."""
        rows = self.verdicts.selectionModel().selectedRows()
        if rows and rows[0].row() < len(self.reasons):
            row = rows[0].row()
            self.status.setText(f"{self.labels[row]}: {self.reasons[row] or 'passes'}")

    # -- acting on a verdict -----------------------------------------------------------------
    def _target(self) -> int | None:
        """The verdict row to act on: the selected one when flagged, else the first flagged."""
        selected = self.verdicts.selectionModel().selectedRows() if self.verdicts.selectionModel() else []
        if selected:
            row = selected[0].row()
            return row if row < len(self.flags) and self.flags[row] else None
        return next((i for i, flag in enumerate(self.flags) if flag), None)

    def _enable(self) -> None:
        target = self._target()
        enabled = target is not None and any(s is self._slots[target] for s in self.model.session.active())
        self.disable_button.setEnabled(not self.model.jobs.busy and enabled)

    def disable_flagged(self) -> None:
        target = self._target()
        if target is None:
            self.say("No flagged adapter to disable")
            return
        slot = self._slots[target]
        row = next((i for i, s in enumerate(self.model.slots) if s is slot), None)  # by identity: slots hold tensors
        if row is None:
            self.say(f"{slot.label} was removed since the guard ran")
            return
        self.model.set_enabled(row, False)
        self.say(f"Disabled {slot.label}; undo with Ctrl+Z")
        self._enable()

    def export_prescreen_csv(self, path: str) -> None:
        screen = self.result.prescreen if self.result else self.screen
        atomic_write_text(path, rows_to_csv(screen.rows() if screen else []), force=True)

    def export_deltas_csv(self, path: str) -> None:
        atomic_write_text(path, rows_to_csv(self.result.delta_rows() if self.result else []), force=True)

    def export_verdicts_csv(self, path: str) -> None:
        atomic_write_text(path, rows_to_csv(self.result.verdict_rows() if self.result else []), force=True)
