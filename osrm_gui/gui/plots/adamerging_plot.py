"""AdaMerging's training curves against the step: the summed prediction entropy (the loss) and each
task's part above, the labelled validation average (display only, every few steps) below."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg

from osrm_gui.gui.plots.image_export import save_svg
from osrm_gui.gui.plots.plot_style import plain_numbers, plot_axes
from osrm_gui.gui.plots.sweep_plot import PALETTE, curve_points

TOTAL = "entropy (sum)"
VALIDATION = "validation average"


class AdaMergingCurves(pg.GraphicsLayoutWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setBackground("w")
        self.setObjectName("adamergingCurves")
        # the legend in a row of its own, above the plots: inside one it would hide the curves' start
        self.legend = pg.LegendItem(colCount=5, labelTextColor=(0, 0, 0), labelTextSize="8pt")
        self.addItem(self.legend, row=0, col=0)
        self.entropy = self.addPlot(row=1, col=0, axisItems=plot_axes())
        self.validation = self.addPlot(row=2, col=0, axisItems=plot_axes())
        self.validation.setXLink(self.entropy)
        self.entropy.setLabel("left", "entropy")
        self.validation.setLabel("left", "validation")
        self.validation.setLabel("bottom", "step")
        for plot in (self.entropy, self.validation):
            plot.showGrid(x=True, y=True, alpha=0.3)
            plain_numbers(plot)
            plot.getAxis("left").setWidth(52)  # both y axes equally wide, so the steps line up
        self.ci.layout.setRowStretchFactor(1, 3)
        self.ci.layout.setRowStretchFactor(2, 2)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.steps: list[int] = []
        self.values: dict[str, list[float]] = {}

    def start(self, tasks: list[str]) -> None:
        """A new run: an empty line per task, one for their sum, and the validation average."""
        for plot in (self.entropy, self.validation):
            plot.clear()
        self.legend.clear()
        self.curves, self.steps = {}, []
        self.values = {name: [] for name in [TOTAL, *tasks, VALIDATION]}
        for i, name in enumerate(tasks):
            pen = pg.mkPen(PALETTE[i % len(PALETTE)], width=1.5)
            self.curves[name] = self.entropy.plot([], [], pen=pen)
        self.curves[TOTAL] = self.entropy.plot([], [], pen=pg.mkPen((0, 0, 0), width=2.5))
        self.curves[VALIDATION] = self.validation.plot([], [], pen=pg.mkPen((0, 0, 0), width=2), symbol="o", symbolSize=6,
                                                       symbolBrush=(0, 0, 0))
        for name in [TOTAL, *tasks]:
            self.legend.addItem(self.curves[name], name)

    def add_step(self, step: int, entropy: float, task_entropy: tuple[float, ...], validation: float | None) -> None:
        self.steps.append(step)
        tasks = [name for name in self.values if name not in (TOTAL, VALIDATION)]
        self.values[TOTAL].append(entropy)
        for name, value in zip(tasks, task_entropy):
            self.values[name].append(value)
        self.values[VALIDATION].append(math.nan if validation is None else validation)
        self.redraw()

    def redraw(self) -> None:
        x = np.asarray(self.steps, dtype=float)
        for name, curve in self.curves.items():
            y = np.asarray(self.values[name], dtype=float)
            if name == VALIDATION:  # scored every few steps only: the line joins the scored ones
                curve.setData(x[~np.isnan(y)], y[~np.isnan(y)])
            else:
                curve.setData(x[: len(y)], y)

    def data(self) -> dict[str, tuple[list[float], list[float]]]:
        """The plotted lines: name -> (steps, values)."""
        return curve_points(self.curves)

    def rows(self) -> list[dict]:
        """One row per step: the entropies and the validation average (empty where not scored)."""
        names = list(self.values)
        return [{"step": step, **{name: ("" if math.isnan(self.values[name][i]) else self.values[name][i]) for name in names}}
                for i, step in enumerate(self.steps)]

    def export_image(self, path: str) -> None:
        """PNG (both plots) at twice the widget's width, or SVG when ``path`` ends in .svg."""
        if str(path).lower().endswith(".svg"):
            save_svg(self, str(path))
            return
        from pyqtgraph.exporters import ImageExporter

        exporter = ImageExporter(self.ci)
        exporter.parameters()["width"] = max(800, int(self.width() * 2))
        exporter.export(str(path))
