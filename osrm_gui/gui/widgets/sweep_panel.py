"""Sweep controls (what to vary, over which range, for which methods) around the
sweep views: a line plot for 1-D sweeps, a heatmap per method and task for 2-D grids."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLabel, QMenu, QPushButton, QSpinBox, QStackedWidget, QToolButton,
    QVBoxLayout, QWidget,
)

from osrm_gui.core.atomic import atomic_write_text
from osrm_gui.core.merge import METHODS
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.sweep import LAMBDA, Axis, SweepResult, check_axes, sweep_values
from osrm_gui.core.tables import rows_to_csv
from osrm_gui.gui.plots.heatmap import Heatmap
from osrm_gui.gui.plots.sweep_plot import SweepPlot
from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.worker_status import WorkerStatusView

NONE = ""


class _AxisControls:
    def __init__(self, name: str, optional: bool):
        self.optional = optional
        self.target = QComboBox()
        self.target.setObjectName(name)
        self.start = QDoubleSpinBox(minimum=-5, maximum=5, value=0.0, singleStep=0.1)
        self.stop = QDoubleSpinBox(minimum=-5, maximum=5, value=1.0, singleStep=0.1)
        self.count = QSpinBox(minimum=2, maximum=101, value=11 if not optional else 5)
        self.target.currentIndexChanged.connect(self._enable)

    def widgets(self, first_label: str):
        return ((first_label, self.target), ("from", self.start), ("to", self.stop), ("points", self.count))

    def fill(self, labels: list[str]) -> None:
        current = self.target.currentData()
        self.target.blockSignals(True)
        self.target.clear()
        if self.optional:
            self.target.addItem("nothing (1-D sweep)", NONE)
        self.target.addItem("global λ", LAMBDA)
        for label in labels:
            self.target.addItem(f"coefficient of {label}", label)
        self.target.setCurrentIndex(max(self.target.findData(current), 0))
        self.target.blockSignals(False)
        self._enable()

    def _enable(self) -> None:
        active = self.target.currentData() != NONE
        for widget in (self.start, self.stop, self.count):
            widget.setEnabled(active)

    def axis(self) -> Axis | None:
        if self.target.currentData() in (NONE, None):
            return None
        return Axis(self.target.currentData(), tuple(sweep_values(self.start.value(), self.stop.value(), self.count.value())))


class SweepPanel(QWidget):
    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.first = _AxisControls("sweepTarget", optional=False)
        self.second = _AxisControls("sweepSecondTarget", optional=True)
        # kept as attributes: the 1-D controls are what most users touch
        self.target, self.start, self.stop, self.count = self.first.target, self.first.start, self.first.stop, self.first.count
        self.methods = QToolButton(text="Methods", popupMode=QToolButton.InstantPopup)
        self.methods.setObjectName("sweepMethods")
        self.methods.setToolTip("Run the same points for several merge methods (others than the current one use their default parameters)")
        menu = QMenu(self.methods)
        self.method_actions = {}
        for name, method in METHODS.items():
            action = menu.addAction(method.label)
            action.setCheckable(True)
            action.setData(name)
            self.method_actions[name] = action
        self.methods.setMenu(menu)
        self.run = QPushButton("Run sweep")
        self.run.setObjectName("runSweep")
        self.run.setToolTip("Points already in the run history are reused, so re-running a cancelled sweep resumes it")
        self.run.clicked.connect(self.start_sweep)
        self.quantity = QComboBox()
        self.quantity.setObjectName("sweepQuantity")
        self.quantity.setToolTip("What the plot shows when several methods or a 2-D grid were swept")
        self.grid_method = QComboBox()
        self.grid_method.setObjectName("sweepGridMethod")
        self.quantity.currentIndexChanged.connect(self._show)
        self.grid_method.currentIndexChanged.connect(self._show)
        save_image = QPushButton("Save plot…")
        save_image.clicked.connect(self._save_image)
        save_csv = QPushButton("Save CSV…")
        save_csv.clicked.connect(self._save_csv)

        rows = QVBoxLayout()
        for controls, label in ((self.first, "Vary"), (self.second, "and")):
            row = QHBoxLayout()
            for text, widget in controls.widgets(label):
                row.addWidget(QLabel(text))
                row.addWidget(widget)
            row.addStretch()
            rows.addLayout(row)
        actions = QHBoxLayout()
        actions.addWidget(self.methods)
        actions.addWidget(self.run)
        actions.addStretch()
        self.show_label = QLabel("Show")  # hidden with the choices it labels (a 1-D sweep of one method plots every task)
        actions.addWidget(self.show_label)
        actions.addWidget(self.quantity)
        actions.addWidget(self.grid_method)
        actions.addWidget(save_image)
        actions.addWidget(save_csv)
        rows.addLayout(actions)

        self.plot = SweepPlot()
        self.heatmap = Heatmap()
        self.heatmap.setObjectName("sweepHeatmap")
        self.views = QStackedWidget()
        self.views.addWidget(self.plot)
        self.views.addWidget(self.heatmap)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(rows)
        layout.addWidget(self.views, 1)
        self.workers = WorkerStatusView()  # a sweep on Ray: its workers under the plot (hidden when local)
        layout.addWidget(self.workers)
        self.result: SweepResult | None = None
        model.adaptersChanged.connect(self._fill_targets)
        model.baseChanged.connect(self._fill_targets)
        model.mergeChanged.connect(self._update_marker)
        model.sweepStarted.connect(self._started)
        model.sweepStarted.connect(self.workers.reset)
        model.sweepWorkers.connect(self.workers.show_status)
        model.sweepPoint.connect(self._point)
        model.sweepFinished.connect(self._finished)
        self.target.currentIndexChanged.connect(self._update_marker)
        self._fill_targets()

    # -- controls --------------------------------------------------------------
    def _fill_targets(self) -> None:
        labels = [slot.label for slot in self.model.session.active()]
        self.first.fill(labels)
        self.second.fill(labels)
        self._update_marker()

    def selected_methods(self) -> list[str]:
        """The current method first, then every other ticked one."""
        current = self.model.session.method
        return [current] + [name for name, action in self.method_actions.items() if action.isChecked() and name != current]

    def current_value(self) -> float:
        target = self.target.currentData()
        if target == LAMBDA:
            return self.model.session.lam
        for slot in self.model.slots:
            if slot.label == target:
                return slot.coefficient
        return 0.0

    def _update_marker(self) -> None:
        self.plot.set_current(self.current_value())

    def start_sweep(self) -> None:
        axes = [a for a in (self.first.axis(), self.second.axis()) if a is not None]
        try:
            check_axes(axes)  # said in the status bar, before any job starts
        except OsrmError as exc:
            self.model.message.emit(str(exc))
            return
        self.model.sweep(axes, self.selected_methods())

    # -- results ---------------------------------------------------------------
    def _started(self, result: SweepResult) -> None:
        self.result = result
        self.plot.start(result)
        self._fill_pickers(result)
        self.views.setCurrentWidget(self.heatmap if len(result.axes) == 2 else self.plot)
        self._show()

    def _point(self, point) -> None:
        if self.result is None:
            return
        self.plot.add_point(point)  # also appends it to the shared result
        if len(self.result.axes) == 2:
            self._show()

    def _finished(self, result: SweepResult) -> None:
        if self.result is None or self.result.points != result.points:
            self._started(result)
        self._update_marker()

    def _fill_pickers(self, result: SweepResult) -> None:
        tasks = [t for t in (result.points[0].scores if result.points else [])] or [t.name for t in self._tasks()]
        for combo, items in ((self.quantity, ["average", *tasks]), (self.grid_method, result.methods)):
            combo.blockSignals(True)
            current = combo.currentText()
            combo.clear()
            combo.addItems(items)
            combo.setCurrentIndex(max(combo.findText(current), 0))
            combo.blockSignals(False)
        grid = len(result.axes) == 2
        self.quantity.setVisible(grid or len(result.methods) > 1)
        self.grid_method.setVisible(grid and len(result.methods) > 1)
        self.show_label.setVisible(grid or len(result.methods) > 1)

    def _tasks(self):
        return [s.task for s in self.model.session.active() if s.task is not None]

    def _show(self) -> None:
        result = self.result
        if result is None:
            return
        quantity = self.quantity.currentText() or "average"
        if len(result.axes) == 1:
            if self.plot.show_quantity != quantity:
                self.plot.set_quantity(quantity)
            return
        method = self.grid_method.currentText() or result.methods[0]
        first, second = result.axes
        # a short title: a long one would widen the plot past the window
        self.heatmap.set_matrix(
            result.grid(method, quantity), [f"{v:.3g}" for v in first.values], [f"{v:.3g}" for v in second.values],
            title=f"{quantity} — {method}",
        )
        self.heatmap.set_axis_titles(first.label, second.label)

    def _save_image(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save plot", "sweep.png", "PNG image (*.png);;SVG image (*.svg)")
        if path:
            self.views.currentWidget().export_image(path)

    def _save_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save numbers", "sweep.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def export_csv(self, path: str) -> None:
        atomic_write_text(path, rows_to_csv(self.result.rows() if self.result else []), force=True)
