"""AdaMerging: learn the merge coefficients λ of the enabled adapters by minimising the entropy of
each task's predictions on unlabelled inputs. The entropy (and, every tenth of the run, the
labelled validation average, for display) streams into a plot and λ into a heatmap, task × layer
group; a task-wise result loads into the merge (concat at the learned λ, undoable), any result exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QPushButton, QSpinBox, QSplitter, QVBoxLayout, QWidget,
)
from PySide6.QtCore import Qt

from osrm_gui.core.atomic import atomic_write_text
from osrm_gui.core.explore.adamerging import AdaMergingResult, AdaMergingStep, adamerge
from osrm_gui.core.explore.guard import own_tasks
from osrm_gui.core.merge.learnable_lora import adapted_layers
from osrm_gui.core.tables import rows_to_csv
from osrm_gui.gui.dialogs.adamerging_export_dialog import AdaMergingExportDialog
from osrm_gui.gui.plots.adamerging_plot import AdaMergingCurves
from osrm_gui.gui.plots.heatmap import Heatmap
from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.fitting import flow
from osrm_gui.gui.widgets.job_panel import JobPanel, save_button

JOB_LABEL = "AdaMerging"
BLOCKS, LAYERS = "blocks", "layers"
INTRO = ("Learn a λ per adapter (or per adapter and layer) by minimising the entropy of each task's predictions "
         "on its inputs (labels unread), then load or export the merge.")


class AdaMergingPanel(JobPanel):
    job_labels = (JOB_LABEL,)

    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(model, INTRO, parent)
        self.status.setObjectName("adamergingStatus")
        self.cancel_button.setObjectName("cancelAdaMerging")
        self.result: AdaMergingResult | None = None
        self._run: dict | None = None  # the running job's rows, columns, adapters and settings
        self._hashes: list[str] = []
        self._coefficients: np.ndarray | None = None  # λ after the last step, adapters × layers

        self.mode = QComboBox()
        self.mode.setObjectName("adamergingMode")
        self.mode.addItem("task-wise", "task")
        self.mode.addItem("layer-wise", "layer")
        self.mode.setToolTip("One λ per adapter, or one per adapter and adapted module")
        self.plus = QCheckBox("++")
        self.plus.setObjectName("adamergingPlus")
        self.plus.setToolTip("AdaMerging++: trim each task vector first as TIES does (the merged updates become dense)")
        self.steps = QSpinBox(minimum=1, maximum=100_000, value=100)
        self.steps.setObjectName("adamergingSteps")
        self.lr = QDoubleSpinBox(minimum=1e-5, maximum=1.0, value=1e-3, decimals=5, singleStep=1e-3)
        self.lr.setObjectName("adamergingLr")
        self.lr.setToolTip("Adam's learning rate")
        self.init = QDoubleSpinBox(minimum=-2.0, maximum=2.0, value=0.3, singleStep=0.05)
        self.init.setObjectName("adamergingInit")
        self.init.setToolTip("λ every coefficient starts from")
        self.pool = QComboBox()
        self.pool.setObjectName("adamergingPool")
        self.pool.addItems(["validation", "train", "test"])
        self.pool.setToolTip("The split whose inputs (never its labels) λ learns from; test is refused: results are reported on it")
        self.clamp = QCheckBox("clamp to [0, 1]")
        self.clamp.setObjectName("adamergingClamp")
        self.clamp.setChecked(True)
        self.batch = QSpinBox(minimum=1, maximum=1024, value=16)
        self.batch.setObjectName("adamergingBatch")
        self.batch.setToolTip("Inputs per task per step")
        self.limit = QSpinBox(minimum=0, maximum=1_000_000, value=0, specialValueText="all")
        self.limit.setObjectName("adamergingLimit")
        self.limit.setToolTip("Only the first N examples per task: of the pool, and of the validation scored for display")
        self.show_validation = QCheckBox("score validation")
        self.show_validation.setObjectName("adamergingValidation")
        self.show_validation.setChecked(True)
        self.show_validation.setToolTip("Score the labelled validation split every tenth of the run, for the plot only "
                                        "(it never feeds back into λ)")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.seed.setObjectName("adamergingSeed")

        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("runAdaMerging")
        self.run_button.clicked.connect(self.start)
        self.apply_button = QPushButton("Apply as merge")
        self.apply_button.setObjectName("applyAdaMerging")
        self.apply_button.setToolTip("Set the merge to concat at the learned λ (task-wise results only; undo with Ctrl+Z)")
        self.apply_button.clicked.connect(self.apply)
        self.export_button = QPushButton("Export…")
        self.export_button.setObjectName("exportAdaMerging")
        self.export_button.clicked.connect(self.export_dialog)
        self.view = QComboBox()
        self.view.setObjectName("adamergingView")
        self.view.addItem("per block", BLOCKS)
        self.view.addItem("per layer", LAYERS)
        self.view.setToolTip("Layer-wise λ: averaged over each transformer block's modules, or every module")
        self.view.currentIndexChanged.connect(self._draw_coefficients)

        self.curves = AdaMergingCurves()
        self.heatmap = Heatmap(number_format="{:.2f}")
        self.heatmap.setObjectName("adamergingHeatmap")
        save_plot = save_button(self, "Save plot…", [
            ("Training curves", "adamerging-curves.png", "PNG image (*.png);;SVG image (*.svg)", self.curves.export_image),
            ("Coefficient heatmap", "adamerging-coefficients.png", "PNG image (*.png);;SVG image (*.svg)", self.heatmap.export_image),
        ])
        save_csv = save_button(self, "Save CSV…", [
            ("Training curves", "adamerging-curves.csv", "CSV (*.csv)", self.export_curves_csv),
            ("Coefficients", "adamerging-coefficients.csv", "CSV (*.csv)", self.export_coefficients_csv),
        ])

        # rows that wrap in a narrow window instead of widening the tab
        grid = flow(("Mode", self.mode), self.plus, ("steps", self.steps), ("lr", self.lr), ("initial λ", self.init),
                    ("Pool", self.pool), self.clamp, ("batch", self.batch), ("examples", self.limit), ("seed", self.seed))
        actions = flow(self.show_validation, self.run_button, self.cancel_button, self.apply_button, self.export_button, save_plot, save_csv)
        coefficients = QWidget()
        above = QHBoxLayout()
        above.addStretch()
        above.addWidget(self.view)
        below = QVBoxLayout(coefficients)
        below.setContentsMargins(0, 0, 0, 0)
        below.setSpacing(0)
        below.addLayout(above)
        below.addWidget(self.heatmap, 1)
        views = QSplitter(Qt.Vertical)
        views.addWidget(self.curves)
        views.addWidget(coefficients)
        views.setSizes([300, 220])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(grid)
        layout.addLayout(actions)
        layout.addWidget(self.status)
        layout.addWidget(views, 1)
        self.mode.currentIndexChanged.connect(self._enable)
        model.adaptersChanged.connect(self._enable)
        model.jobs.busyChanged.connect(self._enable)
        self._enable()

    # -- controls ----------------------------------------------------------------------
    def _enable(self) -> None:
        done = self.result is not None and not self.running
        self.apply_button.setEnabled(done and self.result.replayable)
        self.export_button.setEnabled(done)
        layer_wise = (self._run or {}).get("mode", self.mode.currentData()) == "layer"
        self.view.setVisible(layer_wise)

    def settings(self) -> dict:
        steps = self.steps.value()
        return {"mode": self.mode.currentData(), "plus": self.plus.isChecked(), "steps": steps, "lr": self.lr.value(),
                "init": self.init.value(), "batch_size": self.batch.value(), "clamp": self.clamp.isChecked(), "pool": self.pool.currentText(),
                "eval_every": max(1, steps // 10) if self.show_validation.isChecked() else 0, "seed": self.seed.value(),
                "limit": self.limit.value() or None}

    def start(self) -> None:
        session = self.model.session
        settings = self.settings()

        def prepare():
            ws = session.workspace()
            job = adamerge(ws, **settings)  # every refusal (test pool, regression task, no task) is raised here, in one line
            rows = own_tasks(ws)
            self._run = {**settings, "rows": rows, "adapters": [a.name for a in ws.adapters], "layers": adapted_layers(ws.adapters)}
            self._hashes = [a.content_hash for a in ws.adapters]
            self.result, self._coefficients = None, None
            self.curves.start(rows)
            self.heatmap.clear_matrix()
            self._enable()
            self.status.setText(f"Learning λ on the {settings['pool']} inputs of {len(rows)} tasks…")
            return job

        self.run_job(JOB_LABEL, prepare, self._done, self._event)

    # -- results -----------------------------------------------------------------------
    def _event(self, event) -> None:
        if not isinstance(event, AdaMergingStep) or self._run is None:
            return
        self.curves.add_step(event.step, event.entropy, event.task_entropy, event.validation)
        self._coefficients = np.array(event.coefficients, dtype=float)
        self._draw_coefficients()
        shown = f"; validation {event.validation:.4f}" if event.validation is not None else ""
        self.status.setText(f"Step {event.step} of {event.total}: entropy {event.entropy:.4f}{shown}")

    def _table(self) -> AdaMergingResult | None:
        """The result, or while running one built from the last step's λ (for its grouping)."""
        if self.result is not None:
            return self.result
        run = self._run
        if run is None or self._coefficients is None:
            return None
        return AdaMergingResult(run["mode"], run["plus"], run["rows"], run["adapters"], run["layers"], self._coefficients, [], None)

    def _draw_coefficients(self) -> None:
        table = self._table()
        if table is None:
            return
        if table.mode == "layer" and self.view.currentData() == LAYERS:
            columns, matrix = table.layers, table.coefficients
        else:
            columns, matrix = table.grouped()
        clamped = (self._run or table.settings).get("clamp", False)
        self.heatmap.set_matrix(matrix, table.tasks, columns, title=f"λ, {table.label}", levels=(0.0, 1.0) if clamped else None)

    def _done(self, result: AdaMergingResult) -> None:
        self.result = result
        self._draw_coefficients()
        history = result.history
        lam = ", ".join(f"{t} {v:.3f}" for t, v in zip(result.tasks, result.task_coefficients()))
        change = f"entropy {history[0].entropy:.4f} → {history[-1].entropy:.4f}; " if history else ""
        self.status.setText(f"{result.label}: {len(history)} steps in {result.seconds:.1f} s; {change}λ {lam}")

    def job_finished(self, label: str, outcome: str) -> None:
        if outcome == "cancelled":
            self.status.setText(f"Cancelled after {len(self.curves.steps)} steps; nothing to apply or export.")
        elif outcome == "failed":
            self.status.setText("AdaMerging failed (see the error).")
        self._enable()

    # -- using the result ----------------------------------------------------------------
    def _same_adapters(self) -> bool:
        if self._hashes != [s.adapter.content_hash for s in self.model.session.active()]:
            self.say("The enabled adapters changed since AdaMerging ran; run it again")
            return False
        return True

    def apply(self) -> None:
        result = self.result
        if result is None or not result.replayable:
            self.say("Only a task-wise AdaMerging (without ++) is a merge the panel can hold; export the others")
            return
        if self._same_adapters():
            self.model.apply_spec(result.merged.spec, f"Apply {result.label} λ", self._hashes)

    def export_dialog(self) -> AdaMergingExportDialog | None:
        if self.result is None or not self._same_adapters():
            return None
        dialog = AdaMergingExportDialog(self.model, self.result, self, str(Path.cwd()))
        dialog.open()
        return dialog

    def export_curves_csv(self, path: str) -> None:
        atomic_write_text(path, rows_to_csv(self.curves.rows()), force=True)

    def export_coefficients_csv(self, path: str) -> None:
        self.heatmap.export_csv(path)
