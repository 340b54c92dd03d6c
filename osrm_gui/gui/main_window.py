"""The main window: adapters and merge controls on the left, results and sweeps on the right."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog, QInputDialog, QLabel, QMainWindow, QMessageBox, QProgressBar, QPushButton, QToolButton, QVBoxLayout,
    QWidget,
)

from osrm_gui import __version__
from osrm_gui.core.execution import ExecutorSettings
from osrm_gui.core.explore.history import HistoryDamaged
from osrm_gui.core.inputs import hub
from osrm_gui.gui.dialogs.error_dialog import show_error
from osrm_gui.gui.dialogs.executor_dialog import ExecutorDialog, remember_executor, saved_executor
from osrm_gui.gui.dialogs.export_dialog import ExportDialog
from osrm_gui.gui.plots.results_plot import ResultsPlot
from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.adapters_panel import AdaptersPanel
from osrm_gui.gui.widgets.automatic_panel import AutomaticPanel
from osrm_gui.gui.widgets.continual_panel import ContinualPanel
from osrm_gui.gui.widgets.fitting import ScrollingTabs, ShareSplitter, scrolling
from osrm_gui.gui.widgets.history_panel import HistoryPanel
from osrm_gui.gui.widgets.merge_panel import MergePanel
from osrm_gui.gui.widgets.osrm_panel import TASK_FILTER, OsrmPanel
from osrm_gui.gui.widgets.subspace_panel import SubspacePanel
from osrm_gui.gui.widgets.sweep_panel import SweepPanel

MAX_RECENT = 8
RECENT = "recent"
SPLITTERS = ("window/splitter", "window/left_splitter")
# the left panels' share of the window's width, and the adapters table's of their height;
# kept when the window is resized, until the user drags a handle
LEFT_SHARE, TABLE_SHARE = 0.46, 0.4
HUB_DOWNLOADS = "hub/downloads"


def recent_workspaces(settings: QSettings) -> list[str]:
    """The remembered workspace files, newest first."""
    value = settings.value(RECENT)
    # An INI file keeps a one-item list as a plain string, and reads it back as one: iterated,
    # it would give an entry per character. (An empty list reads back as None.)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        value = [value]
    return [str(p) for p in value if p]


def remember_workspace(settings: QSettings, path: str) -> list[str]:
    """Put ``path`` first among the recent workspaces; the new list."""
    recent = [path, *(p for p in recent_workspaces(settings) if p != path)][:MAX_RECENT]
    settings.setValue(RECENT, recent)
    return recent


def dropped_adapter_paths(mime) -> list[str]:
    """Folders, or adapter_config.json files, among dropped URLs."""
    paths = []
    for url in mime.urls():
        if url.isLocalFile():
            path = Path(url.toLocalFile())
            paths.append(str(path.parent if path.name == "adapter_config.json" else path))
    return paths


class MainWindow(QMainWindow):
    def __init__(self, model: SessionModel, settings: QSettings):
        super().__init__()
        self.model = model
        self.settings = settings
        self.setWindowTitle("osrm-gui")
        self.setAcceptDrops(True)
        self.adapters = AdaptersPanel(model)
        self.merge = MergePanel(model)
        self.results = ResultsPlot(model)
        self.sweeps = SweepPanel(model)
        self.osrm = OsrmPanel(model, self.adapters._selected)
        self.history = HistoryPanel(model)
        self.subspaces = SubspacePanel(model)
        self.left = left = ShareSplitter(Qt.Vertical, (TABLE_SHARE, 1 - TABLE_SHARE))
        left.addWidget(_titled("Adapters", self.adapters))
        left.addWidget(_titled("Merge", scrolling(self.merge)))
        # every page scrolls when the window is smaller than it needs, never cut or wider than the screen
        self.tabs = ScrollingTabs()
        self.tabs.addTab(self.results, "Per-task metrics")
        self.tabs.addTab(self.sweeps, "Coefficient sweep")
        self.tabs.addTab(ContinualPanel(model), "Continual")
        self.automatic = AutomaticPanel(model)
        self.tabs.addTab(self.automatic, "Automatic")
        self.tabs.addTab(self.history, "History")
        self.tabs.addTab(self.subspaces, "Subspaces")
        self.tabs.addTab(self.osrm, "OSRM")
        self.splitter = ShareSplitter(Qt.Horizontal, (LEFT_SHARE, 1 - LEFT_SHARE))
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.tabs)
        self.setCentralWidget(self.splitter)
        self._build_status_bar()
        self._build_menus()
        self.adapters.addRequested.connect(self.add_adapters_dialog)
        self.adapters.hubRequested.connect(self.add_adapter_hub_dialog)
        self.adapters.pairRequested.connect(self.pair_data_dialog)
        model.jobs.failed.connect(lambda label, reason, details: show_error(self, f"{label} failed", reason, details))
        model.message.connect(lambda text: self.statusBar().showMessage(text, 5000))
        model.adapterRefused.connect(lambda path, reason: self.statusBar().showMessage(f"Refused: {reason}", 8000))
        model.baseChanged.connect(self._base_changed)
        model.workspacePathChanged.connect(self._remember)
        model.executorChanged.connect(self._executor_changed)
        model.confirm_history_reset = self.confirm_history_reset
        executor, problem = saved_executor(settings)
        model.set_executor(executor)
        if problem:
            self.statusBar().showMessage(problem, 10000)
        self.resize(1280, 800)
        geometry = settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        for key, splitter in zip(SPLITTERS, (self.splitter, self.left)):
            state = settings.value(key)
            if state is not None:
                splitter.restoreState(state)

    # -- building ---------------------------------------------------------------
    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.device_label = QLabel("loading model…")
        self.device_label.setObjectName("deviceLabel")
        self.job_label = QLabel("")
        self.job_label.setObjectName("jobLabel")
        self.progress = QProgressBar()
        self.progress.setObjectName("jobProgress")
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        self.eta = QLabel("")
        self.eta.setMinimumWidth(self.eta.fontMetrics().horizontalAdvance("9999 s left"))  # Cancel does not jump as it changes
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelJob")
        self.cancel_button.clicked.connect(self.model.jobs.cancel)
        self.cancel_button.hide()
        # where sweeps and searches run; a click changes it
        self.executor_button = QToolButton(autoRaise=True)
        self.executor_button.setObjectName("executorButton")
        self.executor_button.clicked.connect(self.executor_dialog)
        self._show_executor(self.model.executor)
        for widget in (self.job_label, self.progress, self.eta, self.cancel_button):
            bar.addPermanentWidget(widget)
        bar.addPermanentWidget(self.executor_button)
        bar.addPermanentWidget(self.device_label)
        jobs = self.model.jobs
        jobs.started.connect(self._job_started)
        jobs.progress.connect(self._job_progress)
        jobs.finished.connect(self._job_finished)

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        file = self.menuBar().addMenu("&File")
        self._action(file, "Open &base model…", self.open_base_dialog, "Ctrl+B", "Load a local Hugging Face model folder")
        self._action(file, "&Add adapters…", self.add_adapters_dialog, QKeySequence.Open, "Add PEFT LoRA adapter folders")
        self._action(file, "Open base from the H&ub…", self.open_base_hub_dialog, None, "A Hugging Face Hub id, org/name[@revision]")
        self._action(file, "Add adapter from the Hu&b…", self.add_adapter_hub_dialog, None, "A Hugging Face Hub id, org/name[@revision]")
        self._action(file, "Add &task data…", self._pair_selected, "Ctrl+T", "Choose the evaluation data of the selected adapter")
        file.addSeparator()
        self._action(file, "Open &workspace…", self.open_workspace_dialog, "Ctrl+Shift+O")
        self._action(file, "&Save workspace", self.save_workspace, QKeySequence.Save)
        self._action(file, "Save workspace &as…", self.save_workspace_as, QKeySequence.SaveAs)
        self.recent_menu = file.addMenu("&Recent workspaces")
        self._fill_recent()
        self._action(file, "Open &demo", self.model.open_demo, None, "The embedded MiniLM with the demo adapters")
        from osrm_gui.core.inputs.demo_set import demo_families

        for family in demo_families()[1:]:
            self._action(file, f"Open demo ({family} adapters)", lambda checked=False, f=family: self.model.open_demo(f), None,
                         f"The demo tasks with the adapters of the {family} family")
        file.addSeparator()
        self._action(file, "&Export…", self.export_dialog, "Ctrl+E", "Write the merge as models, adapters or a recipe")
        file.addSeparator()
        self._action(file, "&Quit", self.close, QKeySequence.Quit)
        edit = self.menuBar().addMenu("&Edit")
        undo = self.model.undo.createUndoAction(self, "&Undo")
        undo.setShortcut(QKeySequence.Undo)
        redo = self.model.undo.createRedoAction(self, "&Redo")
        redo.setShortcut(QKeySequence.Redo)
        edit.addAction(undo)
        edit.addAction(redo)
        settings_menu = self.menuBar().addMenu("&Settings")
        self.hub_downloads = self._action(settings_menu, "Allow Hub &downloads", self.set_hub_downloads, None,
                                          "Fetch Hub ids missing from the local Hugging Face cache (off: cache only, no network)")
        self.hub_downloads.setObjectName("allowHubDownloads")
        self.hub_downloads.setCheckable(True)
        self.hub_downloads.setChecked(hub.downloads_allowed())
        self._action(settings_menu, "Where sweeps and searches &run…", self.executor_dialog, None,
                     "In this process, or side by side on the workers of a Ray cluster").setObjectName("executorSettings")
        merge = self.menuBar().addMenu("&Merge")
        self._action(merge, "&Preview now", self.model.preview, "Ctrl+R")
        self._action(merge, "&Full evaluation", self.model.full_evaluation, "Ctrl+Shift+R")
        self._action(merge, "&Sweep", lambda: (self.tabs.setCurrentWidget(self.sweeps), self.sweeps.start_sweep()), "Ctrl+Shift+S")
        self._action(merge, "&Cancel job", self.model.jobs.cancel, "Esc")
        help_menu = self.menuBar().addMenu("&Help")
        self._action(help_menu, "&About", lambda: QMessageBox.about(self, "About osrm-gui", f"osrm-gui {__version__}: a workbench for merging "
                                                                      "LoRA adapters. Every action here also runs headless: see `osrm --help`."))

    # -- jobs in the status bar -------------------------------------------------
    def _job_started(self, label: str) -> None:
        self.job_label.setText(label)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.eta.setText("")

    def _job_progress(self, stage: str, done: int, total: int, message: str, eta: float) -> None:
        if self.job_label.text().startswith("Sweep") and stage != "sweep":
            return  # a sweep's bar counts its points: each point's own evaluation would make it jump back and forth
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"{stage.split(':')[0]} %v/%m")
        self.eta.setText(f"{eta:.0f} s left" if eta >= 1 else "")

    def _job_finished(self, label: str, outcome: str) -> None:
        if self.model.jobs.busy:
            return
        self.progress.hide()
        self.cancel_button.hide()
        self.eta.setText("")
        self.job_label.setText("" if outcome == "done" else f"{label}: {outcome}")

    def _base_changed(self) -> None:
        base = self.model.session.base
        self.device_label.setText(f"{base.name} on {self.model.device_text}" if base else "no model")

    # -- files -------------------------------------------------------------------
    def open_base_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Base model folder (Hugging Face format)")
        if folder:
            self.model.open_paths(folder, [str(s.path) for s in self.model.slots])

    def add_adapters_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Adapter folder (PEFT LoRA)")
        if folder:
            self.model.add_adapters([folder])

    def _ask_hub_id(self, title: str) -> str | None:
        text, ok = QInputDialog.getText(self, title, "Hugging Face Hub id (org/name or org/name@revision):")
        text = text.strip()
        if not ok or not text:
            return None
        if hub.parse_hub_id(text) is None:
            show_error(self, title, f"{text!r} is not a Hub id: expected org/name or org/name@revision")
            return None
        return text

    def open_base_hub_dialog(self) -> None:
        repo = self._ask_hub_id("Open base from the Hub")
        if repo:
            self.model.open_paths(repo, [str(s.path) for s in self.model.slots])

    def add_adapter_hub_dialog(self) -> None:
        repo = self._ask_hub_id("Add adapter from the Hub")
        if repo:
            self.model.add_adapters([repo])

    def set_hub_downloads(self, allowed: bool) -> None:
        hub.configure(online=allowed)
        self.settings.setValue(HUB_DOWNLOADS, allowed)
        self.statusBar().showMessage("Hub ids missing from the local cache will be downloaded" if allowed
                                     else "Hub ids resolve from the local cache only", 5000)

    def executor_dialog(self) -> ExecutorDialog:
        dialog = ExecutorDialog(self.model.executor, self)
        dialog.accepted.connect(lambda: self.model.set_executor(dialog.settings()))
        dialog.open()
        return dialog

    def _executor_changed(self, executor: ExecutorSettings) -> None:
        remember_executor(self.settings, executor)
        self._show_executor(executor)

    def _show_executor(self, executor: ExecutorSettings) -> None:
        self.executor_button.setText(f"Runs: {executor.describe()}")
        self.executor_button.setToolTip("Where sweeps and searches run: click to change (Settings ▸ Where sweeps and searches run…)")

    def pair_data_dialog(self, row: int) -> None:
        if not self.model.slots:
            return
        path, _ = QFileDialog.getOpenFileName(self, f"Evaluation data for {self.model.slots[row].label}", "", TASK_FILTER)
        if path:
            try:
                self.model.pair_task(row, path)
            except Exception as exc:  # noqa: BLE001 - shown to the user, the session stays as it was
                show_error(self, "Cannot use this data", str(exc))

    def _pair_selected(self) -> None:
        row = self.adapters._selected()
        if row is None:
            self.statusBar().showMessage("Select an adapter in the table first, then add its task data", 6000)
            return
        self.pair_data_dialog(row)

    def open_workspace_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open workspace", "", "osrm-gui workspace (*.json)")
        if path:
            self.model.open_workspace(path)

    def save_workspace(self) -> None:
        if self.model.workspace_path is None:
            self.save_workspace_as()
        else:
            self.model.save_workspace(str(self.model.workspace_path))

    def save_workspace_as(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save workspace", "workspace.osrm.json", "osrm-gui workspace (*.json)")
        if path:
            self.model.save_workspace(path)

    def export_dialog(self) -> ExportDialog:
        dialog = ExportDialog(self.model, self, str(Path.cwd()))
        dialog.open()
        return dialog

    def _remember(self, path: str) -> None:
        remember_workspace(self.settings, path)
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = recent_workspaces(self.settings)
        for path in recent:
            self._action(self.recent_menu, path, lambda checked=False, p=path: self.model.open_workspace(p))
        self.recent_menu.setEnabled(bool(recent))

    def confirm_history_reset(self, error: HistoryDamaged) -> bool:
        """Whether a damaged or foreign run history may be moved aside for a fresh one."""
        answer = QMessageBox.question(
            self, "Run history unusable",
            f"{error.path} cannot be used as the run history: {error.problem}.\n\n"
            f"Move it aside (renamed to {error.path.name}.damaged-DATE-TIME) and start a fresh history?",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes,
        )
        return answer == QMessageBox.Yes

    # -- drag and drop -------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        paths = dropped_adapter_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self.adapters.show_drop_target(len(paths))

    def dragLeaveEvent(self, event) -> None:
        self.adapters.show_drop_target(0)

    def dropEvent(self, event) -> None:
        self.adapters.show_drop_target(0)
        paths = dropped_adapter_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self.model.add_adapters(paths)

    def closeEvent(self, event) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        for key, splitter in zip(SPLITTERS, (self.splitter, self.left)):
            self.settings.setValue(key, splitter.saveState())
        self.settings.setValue("preview_size", self.model.session.preview_limit)
        self.model.jobs.cancel()
        self.model.jobs.wait(10)
        super().closeEvent(event)


def _titled(title: str, widget: QWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(6, 6, 6, 6)
    label = QLabel(f"<b>{title}</b>")
    layout.addWidget(label)
    layout.addWidget(widget, 1)
    return box
