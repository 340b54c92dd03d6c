"""OSRM: feature statistics of the tasks, adapters trained from an OSRM (or other)
initialisation (optionally against the loaded adapters' tasks) with their loss and
other-task energy curves, post-hoc projection of trained adapters, and the demo's
comparison of initialisation families."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListWidget,
    QListWidgetItem, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.adapters import METADATA_FILE
from osrm_gui.core.osrm.others import SHIPPED_STATS
from osrm_gui.core.session import LoadedStatistics, TrainedAdapter
from osrm_gui.core.osrm.training import TrainProgress, TrainSettings
from osrm_gui.gui.dialogs.error_dialog import confirm_replace, show_error
from osrm_gui.gui.plots.train_curves import TrainCurves, percent
from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.fitting import flow
from osrm_gui.gui.widgets.train_options import TrainOptions

def drift_text(start_end: tuple[float, float]) -> str:
    start, end = start_end
    return f"{percent(start)} → {percent(end)}" + (f" (×{end / start:.3g})" if start > 0 else "")


TASK_FILTER = "Task data (*.csv *.tsv *.jsonl *.json *.parquet)"  # also the main window's "Pair data…"
# this panel's jobs (by the start of their label) and what the status line calls them
JOBS = {"Feature statistics": "Statistics", "Training (": "Training", "Post-hoc OSRM": "Projection"}


def job_name(label: str) -> str | None:
    return next((name for prefix, name in JOBS.items() if label.startswith(prefix)), None)


class OsrmPanel(QWidget):
    def __init__(self, model: SessionModel, selected_row, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.selected_row = selected_row  # () -> the adapters table's selected row, or None
        self.tasks = QListWidget()
        self.tasks.setObjectName("osrmTasks")
        self.tasks.setMaximumHeight(96)
        self.tasks.itemChanged.connect(self._check)
        add_task = QPushButton("Add a task to train…")
        add_task.setObjectName("addTrainingTask")
        add_task.setToolTip("Data of a task no loaded adapter has yet: its new adapter can be trained against the loaded ones")
        add_task.clicked.connect(self.add_task_dialog)
        self.samples = QSpinBox(minimum=1, maximum=100000, value=100)
        self.samples.setToolTip("Training examples per task whose features are collected (seeded)")
        compute = QPushButton("Compute statistics")
        compute.setObjectName("computeStatistics")
        compute.clicked.connect(self.compute_statistics)
        self.stats_table = QTableWidget(0, 4)
        self.stats_table.setHorizontalHeaderLabels(["Task", "Examples", "Tokens", "Cache"])
        self.stats_table.verticalHeader().setVisible(False)
        self.stats_table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.stats_table.setMaximumHeight(96)

        self.options = TrainOptions()
        self.options.changed.connect(self._check)
        # the knobs, as before they moved into TrainOptions
        self.init, self.freeze_a, self.a_lr = self.options.init, self.options.freeze_a, self.options.a_lr
        self.steps, self.lr, self.rank = self.options.steps, self.options.lr, self.options.rank
        self.against = QCheckBox("Against the loaded adapters' tasks")
        self.against.setObjectName("trainAgainstLoaded")
        self.against.setToolTip(
            "Each new adapter also avoids the tasks of the enabled adapters, ticked or not: the statistics shipped in "
            f"their folder ({SHIPPED_STATS}; their data need not be shared) or else their task data. "
            "This is how one more adapter joins a merged set.")
        self.against.setEnabled(False)  # until adapters are loaded (then it is ticked)
        self.against.toggled.connect(self._check)
        self.against_summary = QLabel()
        self.against_summary.setObjectName("againstSummary")
        self.against_summary.setStyleSheet("color: #555")
        self.out = QLineEdit(str(Path.cwd() / "trained-adapters"))
        browse = QPushButton("…")
        browse.clicked.connect(lambda: self._browse(self.out))
        self.train_button = QPushButton("Train adapters for the ticked tasks")
        self.train_button.setObjectName("trainAdapters")
        self.train_button.clicked.connect(self.train)
        self.reason = QLabel()
        self.reason.setObjectName("trainBlocked")
        self.reason.setStyleSheet("color: #b00020")
        self.plots = TrainCurves()
        self.loss_plot = self.plots.loss_plot

        project = QPushButton("Project the selected adapter (post-hoc OSRM)")
        project.setObjectName("projectAdapter")
        project.setToolTip("ΔW' = ΔW AᵀA with A from the other tasks' statistics; the fine-tuned head is kept")
        project.clicked.connect(self.project)
        self.status = QLabel()
        self.status.setObjectName("osrmStatus")
        self.status.setWordWrap(True)

        stats_box = QGroupBox("1. Feature statistics of the pretrained base")
        tasks_side = QVBoxLayout()
        tasks_side.addWidget(QLabel("Tasks (ticked ones are used):"))
        tasks_side.addWidget(self.tasks)
        tasks_side.addWidget(add_task, 0, Qt.AlignLeft)
        stats_side = QVBoxLayout()
        row = QHBoxLayout()
        row.addWidget(QLabel("samples per task"))
        row.addWidget(self.samples)
        row.addStretch()
        row.addWidget(compute)
        stats_side.addLayout(row)
        stats_side.addWidget(self.stats_table)
        stats_layout = QHBoxLayout(stats_box)
        stats_layout.addLayout(tasks_side, 1)
        stats_layout.addLayout(stats_side, 1)

        train_box = QGroupBox("2. Train one adapter per ticked task")
        form = QFormLayout(train_box)
        form.addRow(self.options)
        against = QHBoxLayout()
        against.addWidget(self.against)
        against.addWidget(self.against_summary, 1)
        form.addRow(against)
        where = QHBoxLayout()
        where.addWidget(self.out, 1)
        where.addWidget(browse)
        form.addRow("Output folder", where)
        go = QHBoxLayout()
        go.addWidget(self.reason, 1)
        go.addWidget(self.train_button)
        form.addRow(go)
        form.addRow(self.plots)

        compare = QPushButton("Demo: compare initialisations…")
        compare.setObjectName("showCompare")
        compare.setToolTip("Results of `osrm demo compare` for the demo suite (peft's default init vs OSRM, over seeds)")
        compare.clicked.connect(self.show_compare)
        board = QPushButton("Demo: merge methods…")
        board.setObjectName("showLeaderboard")
        board.setToolTip("Results of `osrm demo leaderboard`: every merge method on the demo, λ chosen on validation, test reported")
        board.clicked.connect(self.show_leaderboard)
        study = QPushButton("Demo: trade-off study…")
        study.setObjectName("showTradeoff")
        study.setToolTip("Results of `osrm demo tradeoff`: single-task accuracy against merged accuracy per training setting, "
                         "the Pareto front and the verdict")
        study.clicked.connect(self.show_tradeoff)
        # the buttons wrap onto more rows when the tab is narrow (1024 px) instead of widening it
        other = flow(project)
        demos = flow(compare, board, study)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(stats_box)
        layout.addWidget(train_box, 1)
        layout.addLayout(other)
        layout.addLayout(demos)
        layout.addWidget(self.status)
        model.adaptersChanged.connect(self._fill_tasks)
        model.baseChanged.connect(self._fill_tasks)
        # a failed or cancelled job says so here, instead of leaving "Training 2 adapter(s)…" up
        model.jobs.failed.connect(self._job_failed)
        model.jobs.finished.connect(self._job_ended)
        self._trained_now: list[str] = []  # the adapters the running training has written so far
        self._fill_tasks()

    @property
    def losses(self) -> dict[str, tuple[list[int], list[float]]]:
        return self.plots.losses

    @property
    def energies(self) -> dict[str, tuple[list[int], list[float]]]:
        return self.plots.energies

    def _fill_tasks(self) -> None:
        ticked = self.ticked() if self.tasks.count() else None
        self.tasks.blockSignals(True)
        self.tasks.clear()
        for name in self.model.session.trainable_tasks():
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if ticked is None or name in ticked else Qt.Unchecked)
            self.tasks.addItem(item)
        self.tasks.blockSignals(False)
        # on by default once adapters are loaded; the user's choice stands while they stay loaded
        loaded = bool(self.model.session.active())
        if loaded and not self.against.isEnabled():
            self.against.setChecked(True)
        self.against.setEnabled(loaded)
        if not loaded:
            self.against.setChecked(False)
        self._check()

    def ticked(self) -> list[str]:
        return [self.tasks.item(i).text() for i in range(self.tasks.count()) if self.tasks.item(i).checkState() == Qt.Checked]

    def add_task_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Data of the task to train an adapter for", "", TASK_FILTER)
        if path:
            try:
                self.add_task(path)
            except OsrmError as exc:
                show_error(self, "Cannot use this data", str(exc))

    def add_task(self, spec: str) -> None:
        """A new task joins the list, ticked alone: its adapter is trained against the loaded set."""
        task = self.model.session.add_training_task(spec)
        self._fill_tasks()
        for i in range(self.tasks.count()):
            self.tasks.item(i).setCheckState(Qt.Checked if self.tasks.item(i).text() == task.name else Qt.Unchecked)
        if self.against.isEnabled():
            self.against.setChecked(True)
        self.status.setText(f"Added task {task.name}: ticked alone, so its adapter is trained against the loaded adapters' tasks."
                            if self.against.isChecked() else f"Added task {task.name}.")

    def _browse(self, field: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder")
        if folder:
            field.setText(folder)

    def compute_statistics(self) -> None:
        names = self.ticked()
        if not names:
            self.status.setText("Tick at least one task.")
            return
        self.status.setText(f"Computing the statistics of {len(names)} task(s)…")
        self.model.jobs.start("Feature statistics", lambda: self.model.session.features_job(names, self.samples.value()), self._show_stats)

    def _show_stats(self, features: dict) -> None:
        self.stats_table.setRowCount(len(features))
        for row, (name, f) in enumerate(features.items()):
            tokens = next(iter(f.layers.values())).count
            for column, value in enumerate((name, f.samples, tokens, f.meta.get("cache", ""))):
                self.stats_table.setItem(row, column, QTableWidgetItem(str(value)))
        warnings = [w for f in features.values() for w in f.warnings]
        self.status.setText("Statistics ready" + (": " + "; ".join(warnings) if warnings else f" for {len(features)} task(s)."))

    # -- training ----------------------------------------------------------------------
    def _offers(self) -> list[LoadedStatistics]:
        """What the loaded adapters add to the ticked tasks when training against them (those of a
        ticked task add nothing: its data is in already)."""
        if not self.against.isChecked():
            return []
        names = set(self.ticked())
        return [offer for offer in self.model.session.loaded_statistics() if offer.task not in names]

    def settings(self) -> TrainSettings:
        known = self.model.session.trainable_tasks()
        names = self.ticked()
        specs = [known[n][1] for n in names]
        offers = [o for o in self._offers() if o.usable]
        specs += [o.spec for o in offers if o.spec is not None and o.spec not in specs]
        stats = [str(o.stats) for o in offers if o.stats is not None]
        return self.options.settings(osrm_samples=self.samples.value(), osrm_tasks=specs or None, against_stats=stats or None)

    def blocker(self) -> str:
        """Why Train cannot start now, in one line ('' when it can)."""
        names = self.ticked()
        if not names:
            return "Tick the tasks to train adapters for."
        settings = self.settings()
        try:
            settings.check()
        except OsrmError as exc:
            return str(exc)
        others = len(names) > 1 or any(o.usable for o in self._offers())
        if settings.init.startswith("osrm") and not others:
            return "OSRM initialisation needs another task: tick a second one, or train against the loaded adapters' tasks."
        if (settings.subspace_budget or settings.subspace_penalty) and not others:
            return "The subspace budget and the penalty need another task's statistics: tick a second task or train against the loaded adapters."
        return self._budget_too_large(settings)

    def _budget_too_large(self, settings: TrainSettings) -> str:
        """m = k·r directions must fit in the narrowest adapted layer's input (training would stop there)."""
        from osrm_gui.core.inputs.models import linear_shape
        from osrm_gui.core.osrm.features import target_layers

        base = self.model.session.base
        if settings.subspace_budget is None or base is None:
            return ""
        try:
            d_in = min(linear_shape(module)[1] for module in target_layers(base, settings.targets or base.default_targets).values())
        except (OsrmError, ValueError):
            return ""  # no adapted layer to measure: training says what is wrong
        m = settings.subspace_budget * settings.rank
        if m <= d_in:
            return ""
        return f"Subspace budget {settings.subspace_budget}: m = k·rank = {m} exceeds the layers' input size {d_in}; use k ≤ {d_in // settings.rank}."

    def _check(self, *_) -> None:
        reason = self.blocker()
        self.reason.setText(reason)
        self.reason.setToolTip(reason)
        self.train_button.setEnabled(not reason)
        self._summarise_against()

    def _summarise_against(self) -> None:
        offers = self._offers()
        data = sum(o.spec is not None for o in offers)
        shipped = sum(o.stats is not None for o in offers)
        lost = [o.label for o in offers if not o.usable]
        parts = ([f"{data} from task data"] if data else []) + ([f"{shipped} from shipped statistics"] if shipped else [])
        text = f"adds {data + shipped} other task(s): " + ", ".join(parts) if parts else ("no other adapter loaded" if self.against.isChecked() else "")
        if lost:
            text += f"; {', '.join(lost)} skipped (no task data, no {SHIPPED_STATS})"
        self.against_summary.setText(text)

    def train(self) -> None:
        reason = self.blocker()
        if reason:
            self.status.setText(reason)
            return
        names = self.ticked()
        settings = self.settings()
        existing = [p for p in self.model.session.train_outputs(names, settings, self.out.text()) if p.exists()]
        if existing and not confirm_replace(self, existing):
            self.status.setText("Not trained: those adapter folders are kept.")
            return
        self.plots.clear()
        self._trained_now = []
        self.status.setText(f"Training {len(names)} adapter(s) with init {settings.init}…")
        force = bool(existing)
        self.model.jobs.start(f"Training ({settings.init})", lambda: self.model.session.train_job(names, settings, self.out.text(), force),
                              self._trained_all, on_event=self._train_event)

    def _train_event(self, event) -> None:
        if isinstance(event, TrainedAdapter):
            self._trained_now.append(event.task)
            self.model.add_adapters([str(event.path)])
            recorded = json.loads((event.path / METADATA_FILE).read_text()).get("other_energy") or {}  # just written by the job
            self.plots.mark_start(event.task, float(recorded.get("start", "nan")))
            drift = self.plots.start_and_end(event.task)
            energy = f"; others' energy {drift_text(drift)}" if drift else ""
            self.status.setText(f"Trained {event.task} (final loss {event.final_loss:.3f}{energy}) → {event.path}; added to the adapters.")
            return
        if isinstance(event, TrainProgress) and event.stage.startswith("train:"):
            self.plots.add(event.stage.split(":", 1)[1], event.done, event.loss, event.other_energy)

    def _trained_all(self, paths) -> None:
        drifts = {task: self.plots.start_and_end(task) for task in self.losses}
        energy = ", ".join(f"{task} {drift_text(d)}" for task, d in drifts.items() if d)
        self.status.setText(f"Trained {len(paths)} adapter(s) into {self.out.text()}; they are in the adapters list."
                            + (f" Others' energy share in row(A), start → end: {energy}." if energy else ""))

    def show_compare(self):
        from osrm_gui.gui.dialogs.compare_dialog import CompareDialog

        return self._open_saved("compare.json", "comparison", "osrm demo compare", CompareDialog)

    def show_leaderboard(self):
        from osrm_gui.gui.dialogs.leaderboard_dialog import LeaderboardDialog

        return self._open_saved("leaderboard.json", "leaderboard", "osrm demo leaderboard", LeaderboardDialog)

    def show_tradeoff(self):
        from osrm_gui.gui.dialogs.tradeoff_dialog import TradeoffDialog

        return self._open_saved("tradeoff.json", "trade-off study", "osrm demo tradeoff", TradeoffDialog)

    def _open_saved(self, name: str, what: str, command: str, dialog_class):
        """A saved demo result in its viewer, or a status line saying how to make it (or what is wrong with it)."""
        from osrm_gui.core.paths import demo_dir

        path = demo_dir() / name
        if not path.is_file():
            self.status.setText(f"No {what} saved yet ({path}); make one with `{command} --json {path}`.")
            return None
        try:
            dialog = dialog_class(path, self)
        except OsrmError as exc:
            self.status.setText(str(exc))
            return None
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

        self.status.setText(f"Projecting {self.model.slots[row].label} onto the OSRM subspace…")
        self.model.jobs.start("Post-hoc OSRM", lambda: self.model.session.project_job(row, "cov", self.samples.value()), done)

    # -- how this panel's jobs ended ------------------------------------------------------
    def _job_failed(self, label: str, reason: str, _details: str) -> None:
        name = job_name(label)
        if name is not None:
            self.status.setText(f"{name} failed: {reason}" + self._kept(name))

    def _job_ended(self, label: str, outcome: str) -> None:
        name = job_name(label)
        if name is not None and outcome == "cancelled":
            self.status.setText(f"{name} cancelled." + self._kept(name))

    def _kept(self, name: str) -> str:
        """What a stopped training leaves: the adapters it finished are in the list already."""
        if name != "Training" or not self._trained_now:
            return ""
        return f" The adapter(s) trained before it stopped ({', '.join(self._trained_now)}) are in the adapters list."
