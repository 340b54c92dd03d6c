"""OSRM: feature statistics of the tasks, adapters trained from an OSRM (or other)
initialisation with their loss curves, post-hoc projection of trained adapters, and
the demo's comparison of initialisation families."""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget,
    QListWidgetItem, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from osrm_gui.core.session import TrainedAdapter
from osrm_gui.core.osrm.training import INITIALISERS, TrainProgress, TrainSettings
from osrm_gui.gui.plots.sweep_plot import PALETTE
from osrm_gui.gui.dialogs.error_dialog import confirm_replace
from osrm_gui.gui.state import SessionModel


class OsrmPanel(QWidget):
    def __init__(self, model: SessionModel, selected_row, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.selected_row = selected_row  # () -> the adapters table's selected row, or None
        self.tasks = QListWidget()
        self.tasks.setObjectName("osrmTasks")
        self.tasks.setMaximumHeight(110)
        self.samples = QSpinBox(minimum=1, maximum=100000, value=100)
        self.samples.setToolTip("Training examples per task whose features are collected (seeded)")
        compute = QPushButton("Compute statistics")
        compute.setObjectName("computeStatistics")
        compute.clicked.connect(self.compute_statistics)
        self.stats_table = QTableWidget(0, 4)
        self.stats_table.setHorizontalHeaderLabels(["Task", "Examples", "Tokens", "Cache"])
        self.stats_table.verticalHeader().setVisible(False)
        self.stats_table.setMaximumHeight(130)

        self.init = QComboBox()
        self.init.setObjectName("trainInit")
        for name, initialiser in INITIALISERS.items():
            self.init.addItem(name, name)
            self.init.setItemData(self.init.count() - 1, initialiser.doc, Qt.ToolTipRole)
        self.init.setCurrentIndex(self.init.findData("osrm-cov"))
        self.freeze_a = QCheckBox("Freeze A (keep the subspace)")
        self.freeze_a.setToolTip("Train only B and the head, so lora_A stays orthogonal to the other tasks")
        self.a_lr = QDoubleSpinBox(minimum=0.0, maximum=10.0, value=1.0, singleStep=0.1)
        self.a_lr.setToolTip("Learning rate of lora_A relative to the others (e.g. 0.1: A moves less)")
        self.steps = QSpinBox(minimum=1, maximum=100000, value=300)
        self.lr = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=1.0, value=2e-3, singleStep=5e-4)
        self.rank = QSpinBox(minimum=1, maximum=1024, value=8)
        self.out = QLineEdit(str(Path.cwd() / "trained-adapters"))
        browse = QPushButton("…")
        browse.clicked.connect(lambda: self._browse(self.out))
        train = QPushButton("Train adapters for the ticked tasks")
        train.setObjectName("trainAdapters")
        train.clicked.connect(self.train)
        self.loss_plot = pg.PlotWidget(background="w")
        self.loss_plot.setObjectName("lossPlot")
        self.loss_plot.setLabel("bottom", "step")
        self.loss_plot.setLabel("left", "training loss")
        self.loss_plot.addLegend(offset=(-10, 10))
        self.loss_plot.setMinimumHeight(160)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.losses: dict[str, tuple[list[int], list[float]]] = {}

        project = QPushButton("Project the selected adapter (post-hoc OSRM)")
        project.setObjectName("projectAdapter")
        project.setToolTip("ΔW' = ΔW AᵀA with A from the other tasks' statistics; the fine-tuned head is kept")
        project.clicked.connect(self.project)
        self.status = QLabel()
        self.status.setObjectName("osrmStatus")
        self.status.setWordWrap(True)

        stats_box = QGroupBox("1. Feature statistics of the pretrained base")
        stats_layout = QVBoxLayout(stats_box)
        stats_layout.addWidget(QLabel("Tasks (ticked ones are used):"))
        stats_layout.addWidget(self.tasks)
        row = QHBoxLayout()
        row.addWidget(QLabel("samples per task"))
        row.addWidget(self.samples)
        row.addStretch()
        row.addWidget(compute)
        stats_layout.addLayout(row)
        stats_layout.addWidget(self.stats_table)

        train_box = QGroupBox("2. Train one adapter per ticked task")
        form = QFormLayout(train_box)
        form.addRow("Initialisation", self.init)
        form.addRow("", self.freeze_a)
        form.addRow("A learning-rate ×", self.a_lr)
        numbers = QHBoxLayout()
        for label, widget in (("steps", self.steps), ("lr", self.lr), ("rank", self.rank)):
            numbers.addWidget(QLabel(label))
            numbers.addWidget(widget)
        form.addRow(numbers)
        where = QHBoxLayout()
        where.addWidget(self.out, 1)
        where.addWidget(browse)
        form.addRow("Output folder", where)
        form.addRow(train)
        form.addRow(self.loss_plot)

        compare = QPushButton("Demo: compare initialisations…")
        compare.setObjectName("showCompare")
        compare.setToolTip("Results of `osrm demo compare` for the demo suite (peft's default init vs OSRM, over seeds)")
        compare.clicked.connect(self.show_compare)
        board = QPushButton("Demo: merge methods…")
        board.setObjectName("showLeaderboard")
        board.setToolTip("Results of `osrm demo leaderboard`: every merge method on the demo, λ chosen on validation, test reported")
        board.clicked.connect(self.show_leaderboard)
        other = QHBoxLayout()
        other.addWidget(project)
        other.addStretch()
        other.addWidget(compare)
        other.addWidget(board)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(stats_box)
        layout.addWidget(train_box, 1)
        layout.addLayout(other)
        layout.addWidget(self.status)
        model.adaptersChanged.connect(self._fill_tasks)
        model.baseChanged.connect(self._fill_tasks)
        self._fill_tasks()

    def _fill_tasks(self) -> None:
        ticked = self.ticked() if self.tasks.count() else None
        self.tasks.clear()
        for name in self.model.session.tasks_by_name():
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if ticked is None or name in ticked else Qt.Unchecked)
            self.tasks.addItem(item)

    def ticked(self) -> list[str]:
        return [self.tasks.item(i).text() for i in range(self.tasks.count()) if self.tasks.item(i).checkState() == Qt.Checked]

    def _browse(self, field: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder")
        if folder:
            field.setText(folder)

    def compute_statistics(self) -> None:
        names = self.ticked()
        if not names:
            self.status.setText("Tick at least one task.")
            return
        self.model.jobs.start("Feature statistics", lambda: self.model.session.features_job(names, self.samples.value()), self._show_stats)

    def _show_stats(self, features: dict) -> None:
        self.stats_table.setRowCount(len(features))
        for row, (name, f) in enumerate(features.items()):
            tokens = next(iter(f.layers.values())).count
            for column, value in enumerate((name, f.samples, tokens, f.meta.get("cache", ""))):
                self.stats_table.setItem(row, column, QTableWidgetItem(str(value)))
        warnings = [w for f in features.values() for w in f.warnings]
        self.status.setText("Statistics ready" + (": " + "; ".join(warnings) if warnings else f" for {len(features)} task(s)."))

    def settings(self) -> TrainSettings:
        return TrainSettings(rank=self.rank.value(), alpha=2.0 * self.rank.value(), steps=self.steps.value(), lr=self.lr.value(),
                             init=self.init.currentData(), freeze_a=self.freeze_a.isChecked(), a_lr_multiplier=self.a_lr.value(),
                             osrm_samples=self.samples.value(), max_length=64)

    def train(self) -> None:
        names = self.ticked()
        settings = self.settings()
        if not names:
            self.status.setText("Tick the tasks to train adapters for.")
            return
        if settings.init.startswith("osrm") and len(names) < 2:
            self.status.setText("OSRM initialisation needs at least two ticked tasks (each adapter avoids the others' features).")
            return
        existing = [p for p in self.model.session.train_outputs(names, settings, self.out.text()) if p.exists()]
        if existing and not confirm_replace(self, existing):
            self.status.setText("Not trained: those adapter folders are kept.")
            return
        for curve in self.curves.values():
            self.loss_plot.removeItem(curve)
        self.curves, self.losses = {}, {}
        self.status.setText(f"Training {len(names)} adapter(s) with init {settings.init}…")
        force = bool(existing)
        self.model.jobs.start(f"Training ({settings.init})", lambda: self.model.session.train_job(names, settings, self.out.text(), force),
                              self._trained_all, on_event=self._train_event)

    def _train_event(self, event) -> None:
        if isinstance(event, TrainedAdapter):
            self.model.add_adapters([str(event.path)])
            self.status.setText(f"Trained {event.task} (final loss {event.final_loss:.3f}) → {event.path}; added to the adapters.")
            return
        if isinstance(event, TrainProgress) and event.stage.startswith("train:"):
            task = event.stage.split(":", 1)[1]
            steps, losses = self.losses.setdefault(task, ([], []))
            steps.append(event.done)
            losses.append(event.loss)
            if task not in self.curves:
                colour = PALETTE[len(self.curves) % len(PALETTE)]
                self.curves[task] = self.loss_plot.plot([], [], pen=pg.mkPen(colour, width=2), name=task)
            self.curves[task].setData(steps, losses)

    def _trained_all(self, paths) -> None:
        self.status.setText(f"Trained {len(paths)} adapter(s) into {self.out.text()}; they are in the adapters list.")

    def show_compare(self):
        from osrm_gui.gui.dialogs.compare_dialog import CompareDialog

        return self._open_saved("compare.json", "comparison", "osrm demo compare", CompareDialog)

    def show_leaderboard(self):
        from osrm_gui.gui.dialogs.leaderboard_dialog import LeaderboardDialog

        return self._open_saved("leaderboard.json", "leaderboard", "osrm demo leaderboard", LeaderboardDialog)

    def _open_saved(self, name: str, what: str, command: str, dialog_class):
        """A saved demo result in its viewer, or a status line saying how to make it."""
        from osrm_gui.core.paths import demo_dir

        path = demo_dir() / name
        if not path.is_file():
            self.status.setText(f"No {what} saved yet ({path}); make one with `{command} --json {path}`.")
            return None
        dialog = dialog_class(path, self)
        dialog.open()
        return dialog

    def project(self) -> None:
        row = self.selected_row()
        if row is None:
            self.status.setText("Select an adapter in the adapters table first.")
            return

        def done(result):
            self.model.add_adapters([str(result["path"])])
            self.status.setText(f"Projected onto the OSRM subspace: {result['path']} keeps {result['kept']:.1%} of ‖ΔW‖ on average.")

        self.model.jobs.start("Post-hoc OSRM", lambda: self.model.session.project_job(row, "cov", self.samples.value()), done)
