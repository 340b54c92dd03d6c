"""Metric against the number of adapters merged so far (continual merging): a line per task plus
the average over the tasks arrived, each point the mean over the arrival orders with ±1 std
error bars; points appear as they are scored."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from osrm_gui.core.explore.continual import ContinualResult
from osrm_gui.gui.plots.image_export import export_plot
from osrm_gui.gui.plots.plot_style import LegendBelow, plain_numbers, plot_axes
from osrm_gui.gui.plots.sweep_plot import PALETTE, curve_points

AVERAGE = "average"


class ContinualPlot(pg.PlotWidget):
    def __init__(self, parent=None):
        super().__init__(parent, background="w", axisItems=plot_axes())
        self.setObjectName("continualPlot")
        plain_numbers(self.plotItem)
        self.showGrid(x=True, y=True, alpha=0.3)
        self.setLabel("left", "metric")
        self.setLabel("bottom", "adapters merged so far")
        self.legend = LegendBelow(self)
        self.result: ContinualResult | None = None
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.error_bars: dict[str, pg.ErrorBarItem] = {}

    def start(self, result: ContinualResult) -> None:
        """A new run: empty lines for each task and the average, filled by :meth:`redraw`."""
        for item in [*self.curves.values(), *self.error_bars.values()]:
            self.removeItem(item)
        self.curves, self.error_bars = {}, {}
        self.legend.clear()
        self.result = result
        self.getAxis("bottom").setTicks([[(step, str(step)) for step in range(1, result.steps + 1)]])
        self.setXRange(0.8, max(result.steps, 1) + 0.2, padding=0)
        for i, name in enumerate([*result.tasks, AVERAGE]):
            average = name == AVERAGE
            colour = (0, 0, 0) if average else PALETTE[i % len(PALETTE)]
            pen = pg.mkPen(colour, width=3 if average else 2)
            self.curves[name] = self.plot([], [], pen=pen, symbol="o", symbolSize=7, symbolBrush=pen.color(), name=name)
            empty = np.zeros(0)
            bars = pg.ErrorBarItem(x=empty, y=empty, top=empty, bottom=empty, beam=0.08, pen=pg.mkPen(colour, width=1))
            self.addItem(bars)
            self.error_bars[name] = bars
        self.redraw()

    def redraw(self) -> None:
        """Every line from the result as it is now (a run adds to it as steps are scored)."""
        if self.result is None:
            return
        for name, curve in self.curves.items():
            line = self.result.curve(None if name == AVERAGE else name)
            x, y, std = (np.asarray(v, dtype=float) for v in (line.steps, line.mean, line.std))
            curve.setData(x, y)
            self.error_bars[name].setData(x=x, y=y, top=std, bottom=std)

    def data(self) -> dict[str, tuple[list[float], list[float]]]:
        """The plotted lines: name -> (steps, means)."""
        return curve_points(self.curves)

    def errors(self) -> dict[str, list[float]]:
        """The error bars' half-heights (the std over the orders), per line."""
        return {name: list(map(float, bars.opts["top"])) if bars.opts["top"] is not None else [] for name, bars in self.error_bars.items()}

    def export_image(self, path: str) -> None:
        export_plot(self, path)
