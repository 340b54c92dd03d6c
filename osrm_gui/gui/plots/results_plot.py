"""Per-task bar chart: each task's reference adapter alone (grey, named under the task) and the
merge (blue), with 95 % intervals as error bars and the average; above it, a headline that says
when the merge and the adapter alone are not distinguishable on these examples."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from osrm_gui.core.session import EvalResult
from osrm_gui.gui.plots.plot_style import LegendBelow, fit_label, plain_numbers, plot_axes
from osrm_gui.gui.state import SessionModel

MERGED = (33, 102, 172)
SINGLE = (170, 170, 170)
SINGLE_TEXT = (90, 90, 90)
DIMMED = 0.35  # opacity of numbers being recomputed
BAR = 0.38


class ResultsPlot(QWidget):
    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        # plain-number axes whose tick labels (a task over its reference's name) keep their descenders
        self.plot = pg.PlotWidget(background="w", axisItems=plot_axes())
        self.plot.setObjectName("resultsPlot")
        plain_numbers(self.plot.getPlotItem())
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(y=True, alpha=0.3)
        self.plot.setLabel("left", "metric")
        self.legend = LegendBelow(self.plot)  # under the bars, never over them
        self.single_bars = pg.BarGraphItem(x=[], height=[], width=BAR, brush=SINGLE, name="adapter alone (named under each task)")
        self.merged_bars = pg.BarGraphItem(x=[], height=[], width=BAR, brush=MERGED, name="merged")
        self.single_errors = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), beam=0.1, pen=pg.mkPen(SINGLE_TEXT, width=1.5))
        self.merged_errors = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), beam=0.1, pen=pg.mkPen((15, 50, 95), width=1.5))
        dashed = pg.mkPen(MERGED, width=2, style=pg.QtCore.Qt.DashLine)
        self.average_line = pg.InfiniteLine(angle=0, pen=dashed)
        for item in (self.single_bars, self.merged_bars, self.single_errors, self.merged_errors, self.average_line):
            self.plot.addItem(item)
        self.plot.plot([], [], pen=dashed, name="merged average")  # the dashed line's legend entry
        self.labels: list[pg.TextItem] = []
        self.tick_texts: list[tuple[float, str]] = []  # each task's whole label, fitted to the width on resize
        self.plot.getViewBox().sigResized.connect(self._fit_ticks)
        self.summary = QLabel("Loading…")
        self.summary.setObjectName("resultsSummary")
        self.summary.setWordWrap(True)
        self.reference_row = QWidget()
        self.reference_row.setObjectName("referenceRow")
        self.reference_layout = QHBoxLayout(self.reference_row)
        self.reference_layout.setContentsMargins(0, 0, 0, 0)
        self.reference_combos: dict[str, QComboBox] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.reference_row)
        layout.addWidget(self.plot, 1)
        model.resultChanged.connect(self.refresh)
        model.adaptersChanged.connect(self.refresh)
        model.updatingChanged.connect(lambda _updating: self.refresh())
        model.jobs.busyChanged.connect(lambda _busy: self.refresh())
        self.refresh()

    # -- what is shown (read by tests) ---------------------------------------------------------
    def values(self) -> dict[str, tuple[float | None, float]]:
        """What the chart shows: task -> (adapter alone, merged)."""
        result = self.model.result
        if result is None:
            return {}
        return {task: (result.single.get(task, {}).get("metric"), s["metric"]) for task, s in result.scores.items()}

    def intervals(self) -> dict[str, tuple[tuple[float, float] | None, tuple[float, float]]]:
        """task -> (the adapter alone's 95 % interval, the merge's), for the tasks that have them."""
        result = self.model.result
        if result is None:
            return {}
        return {task: (u.single, u.merged) for task, u in result.uncertainty.items()}

    def reference_names(self) -> dict[str, str]:
        """task -> the name of the adapter behind its grey bar (its label in the adapters table)."""
        result = self.model.result
        return {} if result is None else {task: self._adapter_name(path) for task, path in result.references.items()}

    def dimmed(self) -> bool:
        return self.merged_bars.opacity() < 1.0

    def _adapter_name(self, path: str) -> str:
        for slot in self.model.slots:
            if slot.path.resolve() == Path(path).resolve():
                return slot.label
        return Path(path).name  # no longer loaded

    # -- drawing -----------------------------------------------------------------------------
    def _empty_text(self) -> str:
        slots = self.model.slots
        if self.model.jobs.busy:
            return f"{self.model.jobs.current_label}…"
        if not slots:
            return "No adapters yet: drop PEFT LoRA adapter folders on the window (or File ▸ Add adapters…)"
        if not any(s.task is not None and s.enabled for s in slots):
            return "No evaluation data: select an adapter and use Pair data… to choose its task's data"
        return "No results yet: move a coefficient, or Merge ▸ Preview now (Ctrl+R)"

    def refresh(self) -> None:
        self._refresh_references()
        for label in self.labels:
            self.plot.removeItem(label)
        self.labels = []
        values = self.values()
        result = self.model.result
        if not values:
            self.single_bars.setOpts(x=[], height=[])
            self.merged_bars.setOpts(x=[], height=[])
            for errors in (self.single_errors, self.merged_errors):
                errors.setData(x=np.zeros(0), y=np.zeros(0))
            self.average_line.hide()
            self.tick_texts = []
            self._fit_ticks()
            self.summary.setText(self._empty_text())
            self.summary.setToolTip("")
            return
        tasks = list(values)
        x = np.arange(len(tasks), dtype=float)
        single = [v[0] if v[0] is not None else 0.0 for v in values.values()]
        merged = [v[1] for v in values.values()]
        self.single_bars.setOpts(x=x - 0.2, height=single)
        self.merged_bars.setOpts(x=x + 0.2, height=merged)
        known = [result.uncertainty.get(t) for t in tasks]
        single_tops = self._error_bars(self.single_errors, x - 0.2, single, [u.single if u else None for u in known])
        merged_tops = self._error_bars(self.merged_errors, x + 0.2, merged, [u.merged if u else None for u in known])
        self.average_line.setValue(result.average)
        self.average_line.show()
        for xi, alone, value, alone_top, merged_top in zip(x, single, merged, single_tops, merged_tops):
            for position, number, top, colour in ((xi - 0.2, alone, alone_top, SINGLE_TEXT), (xi + 0.2, value, merged_top, MERGED)):
                label = pg.TextItem(f"{number:.3f}", color=colour, anchor=(0.5, 1.0), fill=pg.mkBrush(255, 255, 255, 200))
                label.setPos(position, top)
                self.plot.addItem(label)
                self.labels.append(label)
        metrics = {s.task.metric for s in self.model.slots if s.task is not None and s.task.name in values}
        self.plot.setLabel("left", f"{metrics.pop() if len(metrics) == 1 else 'metric'}, with its 95 % interval")
        names = self.reference_names()
        self.tick_texts = [(xi, f"{task}\nalone: {names[task]}" if task in names else task) for xi, task in zip(x, tasks)]
        self.plot.setXRange(-0.6, len(tasks) - 0.4, padding=0)
        self._fit_ticks()
        top = max(1.0, max(merged_tops + single_tops) * 1.1)
        low = min(0.0, min(merged + single))
        self.plot.setYRange(low, top, padding=0)
        opacity = DIMMED if self.model.updating else 1.0
        for item in (self.single_bars, self.merged_bars, self.single_errors, self.merged_errors, self.average_line, *self.labels):
            item.setOpacity(opacity)
        self.summary.setText(self._headline(result, merged, single))
        self.summary.setToolTip(self._details(result, names))

    def _fit_ticks(self) -> None:
        """Each task's label within its share of the plot's width (tasks one unit apart), refitted on resize."""
        axis = self.plot.getAxis("bottom")
        texts = self.tick_texts
        if not texts:
            axis.setTicks([[]])
            return
        view = self.plot.getViewBox()
        span = view.viewRange()[0]
        if view.width() <= 0:  # not laid out yet: the resize that follows fits them
            axis.setTicks([texts])
            return
        pixels_per_task = view.width() / max(span[1] - span[0], 1e-9)
        font = axis.style["tickFont"] or self.plot.font()
        axis.setTicks([[(xi, fit_label(text, pixels_per_task - 8, font)) for xi, text in texts]])

    def _error_bars(self, item: pg.ErrorBarItem, x: np.ndarray, heights: list[float], intervals: list) -> list[float]:
        """Draw the intervals known (a result saved without them has none); the top of each bar or interval."""
        shown = [i for i, interval in enumerate(intervals) if interval]
        if shown:
            low = np.array([intervals[i][0] for i in shown])
            high = np.array([intervals[i][1] for i in shown])
            y = np.array([heights[i] for i in shown])
            # an interval around the score; a bootstrap one need not contain it, so never a negative length
            item.setData(x=x[shown], y=y, top=np.maximum(high - y, 0), bottom=np.maximum(y - low, 0))
        else:
            item.setData(x=np.zeros(0), y=np.zeros(0))
        return [max(heights[i], intervals[i][1]) if intervals[i] else heights[i] for i in range(len(heights))]

    def _headline(self, result: EvalResult, merged: list[float], single: list[float]) -> str:
        spec = result.spec
        n = sum(s["n"] for s in result.scores.values())
        per_task = sorted({s["n"] for s in result.scores.values()})
        examples = f"{n} examples" + (f" ({per_task[0]} per task)" if len(per_task) == 1 and len(result.scores) > 1 else "")
        if result.partial:
            after = "refining…" if self.model.jobs.busy else "not refined: scored on these examples only"
            title = f"<b>First look</b> ({after})"
        else:
            title = f"<b>{'Full evaluation' if result.kind == 'full' else 'Preview'}</b>"
        normalised = ""
        if len(result.references) == len(merged) and all(single):
            normalised = f", normalised {np.mean(np.array(merged) / np.array(single)):.3f} (each task against the adapter named under it)"
        own = " Each task runs with its own masked, rescaled update." if spec.method == "emr" else ""
        text = f"{title} of {spec.method} (λ={spec.lam:g}) on {examples}: average {result.average:.3f}{normalised}.{own}{self._verdict(result)}"
        return f"<i>updating…</i> {text}" if self.model.updating else text

    @staticmethod
    def _verdict(result: EvalResult) -> str:
        """Which tasks' merged and single scores a paired test cannot tell apart on these examples."""
        tested = {task: u.comparison for task, u in result.uncertainty.items() if u.comparison is not None}
        if not tested:
            return ""
        same = [html.escape(task) for task, c in tested.items() if not c.distinguishable]
        if not same:
            return " Every task's merged score differs from its adapter alone beyond chance (paired tests, 95 %)."
        if len(same) == len(tested):
            return " <b>On these examples, merged and alone are not distinguishable</b> for any task (paired tests, 95 %)."
        return f" <b>Not distinguishable from the adapter alone</b> on these examples: {', '.join(same)} (paired tests, 95 %)."

    @staticmethod
    def _details(result: EvalResult, names: dict[str, str]) -> str:
        """Per task: both scores with their intervals and the paired test (the headline's tooltip)."""
        lines = []
        for task, scores in result.scores.items():
            u = result.uncertainty.get(task)
            line = f"{task}: merged {scores['metric']:.3f}"
            if u is not None:
                line += f" [{u.merged[0]:.3f}, {u.merged[1]:.3f}]"
            if task in result.single:
                line += f", {names.get(task, 'adapter')} alone {result.single[task]['metric']:.3f}"
                if u is not None and u.single is not None:
                    line += f" [{u.single[0]:.3f}, {u.single[1]:.3f}]"
            if u is not None and u.comparison is not None:
                line += f"; {u.comparison.test} p = {u.comparison.p_value:.3g}"
            lines.append(html.escape(line))
        return "<br>".join(lines + ["95 % intervals: Wilson for accuracy, bootstrap (1000 resamples) otherwise."])

    # -- choosing each task's reference ---------------------------------------------------------
    def _refresh_references(self) -> None:
        """A combo per task that several enabled adapters serve, set to the one its grey bar shows."""
        session = self.model.session
        chosen = session.reference_slots()
        wanted = {task: session.serving(task) for task in chosen}
        wanted = {task: slots for task, slots in wanted.items() if len(slots) > 1}
        signature = {task: [(str(s.path), s.label) for s in slots] for task, slots in wanted.items()}
        if signature != getattr(self, "_reference_signature", None):
            self._reference_signature = signature
            while self.reference_layout.count():
                widget = self.reference_layout.takeAt(0).widget()
                if widget is not None:
                    widget.deleteLater()
            self.reference_combos = {}
            if wanted:
                self.reference_layout.addWidget(QLabel("Compare with:"))
            for task, slots in wanted.items():
                combo = QComboBox()
                combo.setObjectName(f"reference:{task}")
                combo.setToolTip(f"Several adapters serve {task}: its grey bar, its normalised score and the head that scores "
                                 "the merge on it come from this one")
                for slot in slots:
                    combo.addItem(slot.label, str(slot.path))
                combo.activated.connect(lambda index, t=task, c=combo: self.model.set_reference(t, c.itemData(index)))
                self.reference_layout.addWidget(QLabel(f"{task}:"))
                self.reference_layout.addWidget(combo)
                self.reference_combos[task] = combo
            self.reference_layout.addStretch(1)
        self.reference_row.setVisible(bool(wanted))
        for task, combo in self.reference_combos.items():
            index = combo.findData(str(chosen[task].path))
            if index >= 0 and index != combo.currentIndex():
                combo.blockSignals(True)
                combo.setCurrentIndex(index)
                combo.blockSignals(False)
