"""Sweep controls (what to vary, over which range, for which methods) around the
sweep views: a line plot for 1-D sweeps, a heatmap per method and task for 2-D grids; one
status line (points done of the total, time left for the whole sweep, then done, cancelled
or failed), and a warning when the adapters or the merge changed after the sweep shown."""

from __future__ import annotations

import time

from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLabel, QMenu, QPushButton, QSizePolicy, QSpinBox, QStackedWidget,
    QToolButton, QVBoxLayout, QWidget,
)

from osrm_gui.core.atomic import atomic_write_text
from osrm_gui.core.merge import METHODS, get_method
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.sweep import LAMBDA, Axis, SweepResult, check_axes, sweep_values
from osrm_gui.core.tables import rows_to_csv
from osrm_gui.gui.plots.heatmap import Heatmap
from osrm_gui.gui.plots.sweep_plot import SweepPlot
from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.worker_status import WorkerStatusView

NONE = ""
STALE_TEXT = "⚠ Out of date: adapters or merge changed"
STALE_TIP = ("The adapters, their tasks, the preview size or the merge (other than what the sweep varies) changed after this "
             "sweep was computed. Run it again to update it: points already scored are taken from the run history.")


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


def one_line_label(name: str) -> QLabel:
    """A label one line high whatever it says, that never widens the panel: text appearing in it moves nothing."""
    label = QLabel()
    label.setObjectName(name)
    label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
    label.setFixedHeight(label.fontMetrics().height() + 4)
    return label


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
        self.bands = QCheckBox("95 % bands")
        self.bands.setObjectName("sweepBands")
        self.bands.setChecked(True)
        self.bands.setToolTip("Shade each accuracy's 95 % confidence interval (Wilson, from the examples scored per point) "
                              "and the average's, when every task is an accuracy")
        self.status = one_line_label("sweepStatus")
        self.stale_label = one_line_label("sweepStale")
        self.stale_label.setText(STALE_TEXT)
        self.stale_label.setToolTip(STALE_TIP)
        self.stale_label.setStyleSheet("color: #b35900; font-weight: bold")
        self.stale_label.setSizePolicy(QSizePolicy.Maximum, QSizePolicy.Fixed)
        self.stale_label.hide()

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
        actions.addWidget(self.bands)
        actions.addStretch()
        self.show_label = QLabel("Show")  # hidden with the choices it labels (a 1-D sweep of one method plots every task)
        actions.addWidget(self.show_label)
        actions.addWidget(self.quantity)
        actions.addWidget(self.grid_method)
        actions.addWidget(save_image)
        actions.addWidget(save_csv)
        rows.addLayout(actions)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.stale_label)
        rows.addLayout(status_row)

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
        self.stale = False
        self._running = False  # a sweep of this session is being scored (not one restored from a workspace)
        self._began = 0.0
        self._inputs_of_result: tuple | None = None  # what the sweep shown was computed on (besides its merge)
        model.adaptersChanged.connect(self._fill_targets)
        model.baseChanged.connect(self._fill_targets)
        model.mergeChanged.connect(self._update_marker)
        for signal in (model.adaptersChanged, model.baseChanged, model.mergeChanged):
            signal.connect(self._check_stale)
        model.sweepStarted.connect(self._started)
        model.sweepStarted.connect(self.workers.reset)
        model.sweepWorkers.connect(self.workers.show_status)
        model.sweepPoint.connect(self._point)
        model.sweepFinished.connect(self._finished)
        model.jobs.failed.connect(self._failed)
        model.jobs.finished.connect(self._job_ended)
        self.target.currentIndexChanged.connect(self._update_marker)
        self.bands.toggled.connect(self.plot.set_bands_visible)
        self._say("Choose what to vary and over which range, then Run sweep.")
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
        self._running = True
        self._began = time.monotonic()
        self._display(result)
        self._say_progress()

    def _display(self, result: SweepResult, computed_now: bool = True) -> None:
        """Show ``result``; ``computed_now``: on the session's inputs as they are now (else as when it started)."""
        self.result = result
        if computed_now:
            self._inputs_of_result = self._inputs()
        self.plot.start(result, self._accuracy_counts())
        self._fill_pickers(result)
        self.views.setCurrentWidget(self.heatmap if len(result.axes) == 2 else self.plot)
        self._show()
        self._check_stale()

    def _point(self, point) -> None:
        if self.result is None:
            return
        self.plot.add_point(point)  # also appends it to the shared result
        if len(self.result.axes) == 2:
            self._show()
        if self._running:
            self._say_progress()

    def _finished(self, result: SweepResult) -> None:
        if not self._running:  # restored with a workspace: the controls show how it was made
            self._display(result)
            self._show_controls(result)
            self._say(f"Sweep from the workspace: {len(result.points)} / {result.total} points.")
        else:
            if self.result is None or self.result.points != result.points:
                self._display(result, computed_now=False)  # the same points in the axes' order
            self._running = False
            reused = sum(p.reused for p in result.points)
            self._say(f"Sweep done: {len(result.points)} / {result.total} points in {duration(time.monotonic() - self._began)}"
                      + (f" ({reused} from the run history)." if reused else "."))
        self._update_marker()

    def _say(self, text: str) -> None:
        """The status line, whole in its tooltip (a narrow window shows its start)."""
        self.status.setText(text)
        self.status.setToolTip(text)

    def _say_progress(self) -> None:
        """Points done of the whole sweep and the time left for all of it, from the points scored so far
        (those taken from the run history cost nothing and are left out of the rate)."""
        result = self.result
        done, total = len(result.points), result.total
        scored = sum(not p.reused for p in result.points)
        left = total - done
        if not left:
            eta = "finishing…"
        elif scored:
            eta = f"about {duration((time.monotonic() - self._began) / scored * left)} left"
        else:
            eta = "estimating the time left…"
        self._say(f"Sweep: {done} / {total} points · {eta}")

    def _failed(self, label: str, reason: str, _details: str) -> None:
        if self._running and label.startswith("Sweep"):
            self._running = False
            self._say(f"Sweep failed after {len(self.result.points)} / {self.result.total} points: {reason}")

    def _job_ended(self, label: str, outcome: str) -> None:
        if self._running and label.startswith("Sweep") and outcome == "cancelled":
            self._running = False
            self._say(f"Sweep cancelled after {len(self.result.points)} / {self.result.total} points; "
                      "run it again to resume (the points so far are reused).")

    def _show_controls(self, result: SweepResult) -> None:
        """Set the axes and methods controls to what ``result`` swept (its current line then follows)."""
        for controls, axis in zip((self.first, self.second), [*result.axes, None]):
            index = controls.target.findData(NONE if axis is None else axis.target)
            if index < 0:
                continue
            controls.target.setCurrentIndex(index)
            if axis is not None:
                controls.start.setValue(axis.values[0])
                controls.stop.setValue(axis.values[-1])
                controls.count.setValue(max(len(axis.values), controls.count.minimum()))
        for name, action in self.method_actions.items():
            action.setChecked(name in result.methods and name != self.model.session.method)

    # -- staleness -------------------------------------------------------------
    def _inputs(self) -> tuple:
        """What a sweep's scores depend on besides its merge: the base, the enabled adapters (with their tasks) and the preview size."""
        session = self.model.session
        base = session.base.fingerprint if session.base is not None else None
        adapters = tuple((s.label, s.adapter.content_hash, s.task_spec) for s in session.active())
        return base, adapters, session.preview_limit

    def matches_session(self) -> bool:
        """Whether the sweep shown is what sweeping now would compute: same inputs, same method and
        parameters, and the same merge except what the sweep varies."""
        result, session = self.result, self.model.session
        if result is None:
            return True
        if self._inputs() != self._inputs_of_result or session.method not in result.methods:
            return False
        # the sweep's other methods ran with their default parameters
        expected = result.spec.params if session.method == result.spec.method else {}
        try:
            method = get_method(session.method)
            if method.resolve_params(session.params) != method.resolve_params(expected):
                return False
        except ValueError:
            return False
        swept = {axis.target for axis in result.axes}
        now, then = session.spec(), result.spec
        labels = [s.label for s in session.active()]
        then_coefficients = then.coefficients if then.coefficients is not None else [1.0] * len(labels)
        if len(then_coefficients) != len(labels) or now.seed != then.seed or (LAMBDA not in swept and now.lam != then.lam):
            return False
        return all(a == b for label, a, b in zip(labels, now.coefficients, then_coefficients) if label not in swept)

    def _check_stale(self) -> None:
        self.stale = not self.matches_session()
        self.stale_label.setVisible(self.stale)
        self.plot.set_stale(self.stale)

    def _accuracy_counts(self) -> dict[str, int]:
        """Examples scored per point for each task measured by accuracy (a sweep scores the first
        preview-size examples of each task's test split): what the Wilson bands need."""
        limit = self.model.session.preview_limit
        counts = {}
        for task in self._tasks():
            if task.metric != "accuracy":
                continue
            try:
                size = len(task.split("test"))
            except OsrmError:
                continue
            counts[task.name] = min(size, limit) if limit else size
        return counts

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
