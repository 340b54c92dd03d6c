"""Per-task bar chart: each adapter alone (grey) and the merge (blue), with the average."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from osrm_gui.gui.state import SessionModel

MERGED = (33, 102, 172)
SINGLE = (170, 170, 170)


class ResultsPlot(QWidget):
    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.plot = pg.PlotWidget(background="w")
        self.plot.setObjectName("resultsPlot")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(y=True, alpha=0.3)
        self.plot.setLabel("left", "metric")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.addLegend(offset=(-10, 10))
        self.single_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=SINGLE, name="adapter alone")
        self.merged_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=MERGED, name="merged")
        dashed = pg.mkPen(MERGED, width=2, style=pg.QtCore.Qt.DashLine)
        self.average_line = pg.InfiniteLine(angle=0, pen=dashed)
        for item in (self.single_bars, self.merged_bars, self.average_line):
            self.plot.addItem(item)
        self.plot.plot([], [], pen=dashed, name="merged average")  # the dashed line's legend entry
        self.labels: list[pg.TextItem] = []
        self.summary = QLabel("Loading…")
        self.summary.setObjectName("resultsSummary")
        self.summary.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.plot, 1)
        model.resultChanged.connect(self.refresh)
        model.adaptersChanged.connect(self.refresh)
        model.jobs.busyChanged.connect(lambda _busy: self.refresh())
        self.refresh()

    def _empty_text(self) -> str:
        slots = self.model.slots
        if self.model.jobs.busy:
            return f"{self.model.jobs.current_label}…"
        if not slots:
            return "No adapters yet: drop PEFT LoRA adapter folders on the window (or File ▸ Add adapters…)"
        if not any(s.task is not None and s.enabled for s in slots):
            return "No evaluation data: select an adapter and use Pair data… to choose its task's data"
        return "No results yet: move a coefficient, or Merge ▸ Preview now (Ctrl+R)"

    def values(self) -> dict[str, tuple[float | None, float]]:
        """What the chart shows: task -> (adapter alone, merged)."""
        result = self.model.result
        if result is None:
            return {}
        return {task: (result.single.get(task, {}).get("metric"), s["metric"]) for task, s in result.scores.items()}

    def refresh(self) -> None:
        for label in self.labels:
            self.plot.removeItem(label)
        self.labels = []
        values = self.values()
        result = self.model.result
        if not values:
            self.single_bars.setOpts(x=[], height=[])
            self.merged_bars.setOpts(x=[], height=[])
            self.average_line.hide()
            self.plot.getAxis("bottom").setTicks([[]])
            self.summary.setText(self._empty_text())
            return
        tasks = list(values)
        x = np.arange(len(tasks), dtype=float)
        single = [v[0] if v[0] is not None else 0.0 for v in values.values()]
        merged = [v[1] for v in values.values()]
        self.single_bars.setOpts(x=x - 0.2, height=single)
        self.merged_bars.setOpts(x=x + 0.2, height=merged)
        self.average_line.setValue(result.average)
        self.average_line.show()
        for xi, alone, value in zip(x, single, merged):
            for position, number, colour in ((xi - 0.2, alone, (90, 90, 90)), (xi + 0.2, value, MERGED)):
                label = pg.TextItem(f"{number:.3f}", color=colour, anchor=(0.5, 1.0), fill=pg.mkBrush(255, 255, 255, 200))
                label.setPos(position, number)
                self.plot.addItem(label)
                self.labels.append(label)
        metrics = {s.task.metric for s in self.model.slots if s.task is not None and s.task.name in values}
        self.plot.setLabel("left", metrics.pop() if len(metrics) == 1 else "metric")
        self.plot.getAxis("bottom").setTicks([list(zip(x, tasks))])
        self.plot.setXRange(-0.6, len(tasks) - 0.4, padding=0)
        top = max(1.0, max(merged + single) * 1.08)
        low = min(0.0, min(merged + single))
        self.plot.setYRange(low, top, padding=0)
        n = sum(s["n"] for s in result.scores.values())
        alone = [v for v in single if v]
        normalised = ""
        if len(alone) == len(merged) and all(alone):
            normalised = f", normalised {np.mean(np.array(merged) / np.array(alone)):.3f}"
        spec = result.spec
        own = " Each task runs with its own masked, rescaled update." if spec.method == "emr" else ""
        self.summary.setText(
            f"<b>{'Full evaluation' if result.kind == 'full' else 'Preview'}</b> of {spec.method} (λ={spec.lam:g}) on {n} examples: "
            f"average {result.average:.3f}{normalised}.{own}"
        )
