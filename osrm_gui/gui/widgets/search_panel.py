"""Merge search with Optuna: methods, λ, coefficients (optionally per group of layers) and the
methods' own parameters, chosen on validation with Hyperband pruning and the best reported on test.
Trials stream into a plot; the best ones fill a table and Optuna's importances a bar chart; the best
point loads into the merge (undoable). Studies live next to the run history, so the same search
run again continues its study."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDoubleSpinBox, QGridLayout, QHBoxLayout, QLabel, QMenu, QPushButton, QSpinBox, QSplitter,
    QTableWidget, QTableWidgetItem, QToolButton, QVBoxLayout, QWidget,
)

from osrm_gui.core.atomic import atomic_write_text
from osrm_gui.core.explore.search import SearchResult, SearchTrial, TrialEvent, best_trial_rows, default_storage_path, search
from osrm_gui.core.explore.search_space import SearchSpace
from osrm_gui.core.merge import METHODS
from osrm_gui.core.tables import rows_to_csv
from osrm_gui.gui.plots.search_plot import ImportancePlot, SearchPlot
from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.job_panel import JobPanel, save_button
from osrm_gui.gui.widgets.worker_status import WorkerStatusView

JOB_LABEL = "Merge search"
DEFAULT_METHODS = ("task_arithmetic", "ties")
SAMPLER_NAMES = {"tpe": "TPE", "cmaes": "CMA-ES", "nsga2": "NSGA-II", "random": "random"}
TOP = 10
INTRO = ("Search methods, λ and coefficients with Optuna on the validation split (poor trials are pruned early); "
         "the best is scored once on test. Running the same search again continues its study.")


def _text(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class SearchPanel(JobPanel):
    job_labels = (JOB_LABEL,)

    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(model, INTRO, parent)
        self.status.setObjectName("searchStatus")
        self.cancel_button.setObjectName("cancelSearch")
        self.result: SearchResult | None = None
        self.objectives: tuple[str, ...] = ()
        self._hashes: list[str] = []
        self.workers = WorkerStatusView()

        self.methods = QToolButton(popupMode=QToolButton.InstantPopup)
        self.methods.setObjectName("searchMethods")
        menu = QMenu(self.methods)
        self.method_actions = {}
        for name, method in METHODS.items():
            action = menu.addAction(method.label)
            action.setCheckable(True)
            action.setChecked(name in DEFAULT_METHODS)
            action.setData(name)
            action.toggled.connect(self._methods_changed)
            self.method_actions[name] = action
        self.methods.setMenu(menu)
        self.sampler = QComboBox()
        self.sampler.setObjectName("searchSampler")
        for name, text in SAMPLER_NAMES.items():
            self.sampler.addItem(text, name)
        self.sampler.setToolTip("TPE (default); CMA-ES: continuous spaces only (one method); NSGA-II: the mean and the worst task, "
                                "no pruning; random: the baseline")
        self.trials = QSpinBox(minimum=0, maximum=100_000, value=30, specialValueText="no limit")
        self.trials.setObjectName("searchTrials")
        self.trials.setToolTip("New trials in this run (no limit: until the time budget)")
        self.timeout = QSpinBox(minimum=0, maximum=7 * 24 * 3600, value=0, suffix=" s", specialValueText="none")
        self.timeout.setObjectName("searchTimeout")
        self.timeout.setToolTip("Start no trial after this many seconds")
        self.groups = QSpinBox(minimum=1, maximum=64, value=1)
        self.groups.setObjectName("searchGroups")
        self.groups.setToolTip("A coefficient per adapter and group of consecutive blocks (weighted-sum methods only; 1: one per adapter)")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.seed.setObjectName("searchSeed")
        self.fraction = QDoubleSpinBox(minimum=0.0, maximum=1.0, value=0.0, singleStep=0.05, specialValueText="off")
        self.fraction.setObjectName("searchMinFraction")
        self.fraction.setToolTip("Constraint: no task below this fraction of its adapter's own validation score")
        self.chunk = QSpinBox(minimum=1, maximum=100_000, value=32)
        self.chunk.setObjectName("searchChunk")
        self.chunk.setToolTip("Validation examples per task per fidelity step: a trial may be pruned after each")

        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("runSearch")
        self.run_button.clicked.connect(self.start)
        self.apply_button = QPushButton("Apply best")
        self.apply_button.setObjectName("applyBest")
        self.apply_button.setToolTip("Load the best point's method, parameters, λ and coefficients into the merge (undo with Ctrl+Z)")
        self.apply_button.clicked.connect(self.apply_best)
        self.plot = SearchPlot()
        self.importance = ImportancePlot()
        self.table = QTableWidget(0, 0)
        self.table.setObjectName("searchBest")
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.verticalHeader().hide()
        save_plot = save_button(self, "Save plot…", [
            ("Trials", "search-trials.png", "PNG image (*.png);;SVG image (*.svg)", self.plot.export_image),
            ("Parameter importances", "search-importances.png", "PNG image (*.png);;SVG image (*.svg)", self.importance.export_image),
        ])
        save_csv = save_button(self, "Save CSV…", [
            ("Every trial", "search-trials.csv", "CSV (*.csv)", self.export_trials_csv),
            ("Best trials", "search-best.csv", "CSV (*.csv)", self.export_best_csv),
            ("Parameter importances", "search-importances.csv", "CSV (*.csv)", self.export_importances_csv),
        ])

        grid = QGridLayout()
        cells = [("Methods", self.methods), ("sampler", self.sampler), ("trials", self.trials), ("Time budget", self.timeout),
                 ("layer groups", self.groups), ("seed", self.seed), ("Min task fraction", self.fraction), ("examples per step", self.chunk)]
        for i, (text, widget) in enumerate(cells):
            row, col = divmod(i, 3)
            grid.addWidget(QLabel(text), row, 2 * col, Qt.AlignRight)
            grid.addWidget(widget, row, 2 * col + 1)
        grid.setColumnStretch(6, 1)
        actions = QHBoxLayout()
        for widget in (self.run_button, self.cancel_button, self.apply_button):
            actions.addWidget(widget)
        actions.addStretch()
        actions.addWidget(save_plot)
        actions.addWidget(save_csv)
        below = QSplitter(Qt.Horizontal)
        below.addWidget(self.table)
        below.addWidget(self.importance)
        below.setSizes([420, 280])
        views = QSplitter(Qt.Vertical)
        views.addWidget(self.plot)
        views.addWidget(below)
        views.setSizes([300, 220])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(grid)
        layout.addLayout(actions)
        layout.addWidget(self.status)
        layout.addWidget(self.workers)
        layout.addWidget(views, 1)
        model.jobs.busyChanged.connect(self._enable)
        self._methods_changed()
        self._enable()

    # -- controls ----------------------------------------------------------------------
    def selected_methods(self) -> list[str]:
        return [name for name, action in self.method_actions.items() if action.isChecked()]

    def _methods_changed(self) -> None:
        chosen = self.selected_methods()
        self.methods.setText(chosen[0] if len(chosen) == 1 else f"{len(chosen)} methods")
        self.methods.setToolTip("Merge methods the search chooses among: " + (", ".join(chosen) or "none"))

    def _enable(self) -> None:
        result = self.result
        self.apply_button.setEnabled(result is not None and result.best_point is not None and not self.running)

    def space(self) -> SearchSpace:
        return SearchSpace(tuple(self.selected_methods()), layer_groups=self.groups.value())

    def start(self) -> None:
        session = self.model.session
        space, sampler, seed, chunk = self.space(), self.sampler.currentData(), self.seed.value(), self.chunk.value()
        trials, timeout = self.trials.value() or None, float(self.timeout.value()) or None
        fraction = self.fraction.value() or None
        history = self.model.run_history()
        storage = default_storage_path(history.path)

        def prepare():
            ws = session.workspace()
            # every refusal (no budget, CMA-ES over categories, a foreign study…) is raised here, in one line
            job = search(ws, space, sampler, trials, timeout, seed, storage, chunk=chunk, min_task_fraction=fraction, history=history,
                         executor=session.executor)
            self._hashes = [a.content_hash for a in ws.adapters]
            self.result = None
            self.objectives = ("normalised mean", "normalised worst task") if sampler == "nsga2" else ("normalised mean",)
            self.plot.start(self.objectives[0])
            self.importance.show_importances({}, "importances after the run")
            self._fill_table([])
            budget = " and ".join(x for x in (f"{trials} trials" if trials else "", f"{timeout:g} s" if timeout else "") if x)
            where = f" on {session.executor.describe()}" if session.executor.remote else ""
            self.status.setText(f"Searching {', '.join(space.methods)} with {SAMPLER_NAMES[sampler]} for {budget}{where}; study kept in {storage}")
            self._enable()
            return _with_importances(job)

        self.run_job(JOB_LABEL, prepare, self._done, self._event)

    # -- results -----------------------------------------------------------------------
    def _event(self, event) -> None:
        if not isinstance(event, TrialEvent):
            return
        self.plot.add_trial(event.trial)
        self._fill_table(list(self.plot.trials.values()))
        self.model.historyChanged.emit()  # each scored trial is a run-history point
        best = f"best {event.best.values[0]:.4f} (trial {event.best.number})" if event.best else "no complete trial yet"
        of = f" of {event.total}" if event.total else ""
        self.status.setText(f"Trial {event.trial.number} {event.trial.state} ({event.done}{of} this run); {best}")

    def _done(self, outcome) -> None:
        result, importances = outcome
        self.result, self.objectives = result, result.objectives
        self.plot.set_trials(result.trials)
        self._fill_table(result.trials, result.pareto)
        self.importance.show_importances(importances, "" if importances else "too few complete trials for importances")
        states = [t.state for t in result.trials]
        counts = f"{len(states)} trials ({states.count('complete')} complete, {states.count('pruned')} pruned, {states.count('fail')} failed)"
        if result.best is None:
            self.status.setText(f"{counts}: none completed, nothing to apply.")
            return
        test = f", test {sum(result.test.values()) / len(result.test):.4f}" if result.test else ""
        validation = sum(result.validation.values()) / max(len(result.validation), 1)
        self.status.setText(f"Study {result.study_name}: {counts}. Best: trial {result.best.number}, {result.best_point.summary()}; "
                            f"validation {validation:.4f}{test}")

    def job_finished(self, label: str, outcome: str) -> None:
        if outcome == "cancelled":
            self.status.setText(f"Cancelled after {len(self.plot.trials)} trials; they stay in the study, and running the same "
                                "search again continues it.")
        elif outcome == "failed":
            self.status.setText("The search failed (see the error).")
        self._enable()

    def best_rows(self, trials: list[SearchTrial], pareto: list[int] | None = None) -> list[dict]:
        return best_trial_rows(trials, self.objectives, pareto, TOP)

    def _fill_table(self, trials: list[SearchTrial], pareto: list[int] | None = None) -> None:
        rows = self.best_rows(trials, pareto)
        columns = list(rows[0]) if rows else ["trial", *self.objectives, "examples", "point"]
        self.table.clear()
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(columns):
                item = QTableWidgetItem(_text(row[key]))
                item.setToolTip(str(row[key]))
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)

    def shown_rows(self) -> list[list[str]]:
        """The texts of the best-trials table, row by row."""
        return [[self.table.item(r, c).text() for c in range(self.table.columnCount())] for r in range(self.table.rowCount())]

    # -- using the result ----------------------------------------------------------------
    def apply_best(self) -> None:
        result = self.result
        if result is None or result.best_point is None:
            self.say("No best point yet: run a search to the end first")
            return
        if result.best_point.group_coefficients is not None:
            self.say("The best point has a coefficient per layer group, which the merge panel cannot hold; "
                     "search with 1 layer group to apply, or export it with `osrm search --json`")
            return
        self.model.apply_spec(result.best_spec, f"Apply search best (trial {result.best.number}, {result.best_spec.method})", self._hashes)

    def export_trials_csv(self, path: str) -> None:
        rows = self.result.rows() if self.result else [
            {"trial": t.number, "state": t.state, "value": t.values[0] if t.values else None, "examples": t.examples, **t.params}
            for t in sorted(self.plot.trials.values(), key=lambda t: t.number)]
        atomic_write_text(path, rows_to_csv(rows), force=True)

    def export_best_csv(self, path: str) -> None:
        trials = self.result.trials if self.result else list(self.plot.trials.values())
        atomic_write_text(path, rows_to_csv(self.best_rows(trials, self.result.pareto if self.result else None)), force=True)

    def export_importances_csv(self, path: str) -> None:
        rows = [{"parameter": k, "importance": v} for k, v in self.importance.values.items()]
        atomic_write_text(path, rows_to_csv(rows), force=True)


def _with_importances(job):
    """The search job, returning its result with Optuna's importances (computed here, off the GUI thread)."""
    result = yield from job
    return result, result.importances()
