"""Continual merging (OPCM): the enabled adapters arrive one at a time, in several random orders
or the current one, and after each arrival every task whose adapter has arrived is scored; the
plot shows each task and the average against the number of adapters merged so far."""

from __future__ import annotations

import math

from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFileDialog, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from osrm_gui.core.atomic import atomic_write_text
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.continual import ArrivalScores, ContinualResult, continual_run, random_orders
from osrm_gui.core.merge.opcm import ALPHA
from osrm_gui.core.tables import rows_to_csv
from osrm_gui.gui.plots.continual_plot import ContinualPlot
from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.fitting import flow

JOB_LABEL = "Continual merge (OPCM)"
RANDOM, CURRENT = "random", "current"
MAX_ORDERS = 100


class ContinualPanel(QWidget):
    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.result: ContinualResult | None = None

        self.source = QComboBox()
        self.source.setObjectName("continualSource")
        self.source.addItem("random orders", RANDOM)
        self.source.addItem("the current order", CURRENT)
        self.count = QSpinBox(minimum=1, maximum=MAX_ORDERS, value=3)
        self.count.setObjectName("continualOrders")
        self.count.setToolTip("How many different random arrival orders to average over (the paper reports the mean over several)")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.seed.setObjectName("continualSeed")
        self.alpha = QDoubleSpinBox(minimum=ALPHA.minimum, maximum=ALPHA.maximum, value=ALPHA.default, singleStep=0.05, decimals=2)
        self.alpha.setObjectName("continualAlpha")
        self.alpha.setToolTip(ALPHA.doc)
        self.split = QComboBox()
        self.split.setObjectName("continualSplit")
        self.split.addItems(["test", "validation"])
        self.limit = QSpinBox(minimum=0, maximum=1_000_000, value=model.session.preview_limit or 0, specialValueText="all")
        self.limit.setObjectName("continualLimit")
        self.limit.setToolTip("Examples scored per task at each step (all: the whole split)")
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("runContinual")
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelContinual")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        save_image = QPushButton("Save plot…")
        save_image.clicked.connect(self._save_image)
        save_csv = QPushButton("Save CSV…")
        save_csv.clicked.connect(self._save_csv)
        self.status = QLabel("Merge the enabled adapters one at a time (OPCM) and score each task after every arrival.")
        self.status.setObjectName("continualStatus")
        self.status.setWordWrap(True)
        self.plot = ContinualPlot()

        # rows that wrap in a narrow window instead of widening the tab
        first = flow(("Arrive in", self.source), ("how many", self.count), ("seed", self.seed), ("α", self.alpha))
        second = flow(("Split", self.split), ("examples per task", self.limit), self.run_button, self.cancel_button, save_image, save_csv)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(first)
        layout.addLayout(second)
        layout.addWidget(self.status)
        layout.addWidget(self.plot, 1)

        self.source.currentIndexChanged.connect(self._enable)
        model.adaptersChanged.connect(self._enable)
        model.baseChanged.connect(self._enable)
        model.jobs.started.connect(self._job_started)
        model.jobs.finished.connect(self._job_finished)
        self._enable()

    # -- controls ----------------------------------------------------------------------
    def _enable(self) -> None:
        random = self.source.currentData() == RANDOM
        n = len(self.model.session.active())
        self.count.setMaximum(max(1, min(MAX_ORDERS, math.factorial(n) if n <= 10 else MAX_ORDERS)))
        self.count.setEnabled(random)
        self.seed.setEnabled(random)

    def orders(self) -> list[list[int]]:
        n = len(self.model.session.active())
        if self.source.currentData() == CURRENT:
            return [list(range(n))]
        return random_orders(n, self.count.value(), self.seed.value())

    def start(self) -> None:
        session = self.model.session
        slots = session.active()
        if session.base is None or not slots:
            self._say("Load a base model and enable adapters first.")
            return
        try:
            orders = self.orders()
        except OsrmError as exc:
            self._say(str(exc))
            return
        alpha, split, limit = self.alpha.value(), self.split.currentText(), self.limit.value() or None
        names = [s.label for s in slots]

        def job():
            ws = session.workspace()
            run = continual_run(ws, orders, alpha, split, limit, names=names)  # checks everything before the first step
            self.result = ContinualResult(orders, names, [t.name for t in ws.tasks], alpha, split, limit)
            self.plot.start(self.result)
            self.status.setText(f"Merging in {len(orders)} order{'s' if len(orders) > 1 else ''}…")
            return run

        self.model.jobs.start(JOB_LABEL, job, self._done, on_event=self._event)

    def cancel(self) -> None:
        if self.model.jobs.current_label == JOB_LABEL:
            self.model.jobs.cancel()

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.model.message.emit(text)

    # -- results -----------------------------------------------------------------------
    def _event(self, event) -> None:
        if isinstance(event, ArrivalScores) and self.result is not None:
            self.result.add(event)
            self.plot.redraw()
            self.status.setText(f"Order {event.order + 1} of {len(self.result.orders)}: {event.step} of {self.result.steps} merged "
                                f"(+{event.adapter})")

    def _done(self, result: ContinualResult) -> None:
        self.result = result
        self.plot.start(result)
        final = result.curve(None)
        if final.steps:
            spread = f" ± {final.std[-1]:.4f}" if len(result.orders) > 1 else ""
            self.status.setText(f"All {result.steps} merged: average {final.mean[-1]:.4f}{spread} over {len(result.orders)} "
                                f"order{'s' if len(result.orders) > 1 else ''} (α = {result.alpha:g}, {result.split})")

    def _job_started(self, label: str) -> None:
        if label == JOB_LABEL:
            self.cancel_button.setEnabled(True)

    def _job_finished(self, label: str, outcome: str) -> None:
        if label != JOB_LABEL:
            return
        self.cancel_button.setEnabled(False)
        if outcome == "cancelled" and self.result is not None:
            scored = sum(len(curve) for curve in self.result.curves)
            self.status.setText(f"Cancelled after {scored} of {len(self.result.orders) * self.result.steps} steps; "
                                "the points scored so far stay on the plot.")
        elif outcome == "failed":
            self.status.setText("The continual merge failed (see the error).")

    def _save_image(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save plot", "continual.png", "PNG image (*.png);;SVG image (*.svg)")
        if path:
            self.plot.export_image(path)

    def _save_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save numbers", "continual.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def export_csv(self, path: str) -> None:
        atomic_write_text(path, rows_to_csv(self.result.csv_rows() if self.result else []), force=True)
