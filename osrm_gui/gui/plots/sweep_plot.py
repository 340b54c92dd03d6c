"""Metric against a merge coefficient: a line per task plus the average (or, when
several methods were swept, a line per method for one chosen quantity), points
appearing as they are computed, a marker at the current setting, hover read-out."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt

from osrm_gui.core.atomic import atomic_write_text
from osrm_gui.core.explore.sweep import SweepPoint, SweepResult
from osrm_gui.core.tables import rows_to_csv
from osrm_gui.gui.plots.image_export import export_plot

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)]



def curve_points(curves: dict) -> dict[str, tuple[list[float], list[float]]]:
    """What each named curve plots, as plain lists (empty for a curve not drawn yet)."""
    out = {}
    for name, curve in curves.items():
        x, y = curve.getData()
        out[name] = ([] if x is None else list(map(float, x)), [] if y is None else list(map(float, y)))
    return out

class SweepPlot(pg.PlotWidget):
    def __init__(self, parent=None):
        super().__init__(parent, background="w")
        self.setObjectName("sweepPlot")
        self.showGrid(x=True, y=True, alpha=0.3)
        self.setLabel("left", "metric")
        self.getAxis("left").enableAutoSIPrefix(False)
        self.getAxis("bottom").enableAutoSIPrefix(False)  # "global λ (x0.001)" while the points so far end below 1
        self.legend = self.addLegend(offset=(-10, -10))
        self.marker = pg.InfiniteLine(angle=90, pen=pg.mkPen((0, 0, 0), width=1, style=Qt.DashLine), label="current", labelOpts={"position": 0.95, "color": (0, 0, 0)})
        self.addItem(self.marker)
        self.readout = pg.TextItem("", color=(0, 0, 0), anchor=(0, 1), fill=pg.mkBrush(255, 255, 255, 220))
        self.readout.setZValue(10)
        self.addItem(self.readout)
        self.readout.hide()
        self.result: SweepResult | None = None
        self.show_quantity = "average"  # with several methods: which task (or the average) each method's line shows
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._hover = pg.SignalProxy(self.scene().sigMouseMoved, rateLimit=30, slot=self._moved)

    def start(self, result: SweepResult) -> None:
        self.result = result
        for curve in self.curves.values():
            self.removeItem(curve)
        self.curves = {}
        self.legend.clear()
        self.setLabel("bottom", "global λ" if result.target == "lambda" else result.axis)
        if len(result.methods) > 1:
            self.setLabel("left", self.show_quantity)
        else:
            self.setLabel("left", "metric")
        for point in result.points:
            self._draw(point)

    def set_quantity(self, quantity: str) -> None:
        """With several methods: show ``quantity`` (a task name or "average") for each."""
        self.show_quantity = quantity
        if self.result is not None:
            self.start(self.result)

    @property
    def overlay(self) -> bool:
        return self.result is not None and len(self.result.methods) > 1

    def add_point(self, point: SweepPoint) -> None:
        if self.result is None:
            return
        if point not in self.result.points:
            self.result.points.append(point)
        self._draw(point)

    def _draw(self, point: SweepPoint) -> None:
        if self.overlay:
            self._draw_method(point.method)
            return
        # along the axis, not in the order they came: reused points come first, and Ray workers finish out of order
        points = sorted(self.result.points, key=lambda p: p.value)
        xs = [p.value for p in points]
        for i, name in enumerate([*point.scores, "average"]):
            if name not in self.curves:
                average = name == "average"
                pen = pg.mkPen((0, 0, 0) if average else PALETTE[i % len(PALETTE)], width=3 if average else 2)
                self.curves[name] = self.plot([], [], pen=pen, symbol="o", symbolSize=6, symbolBrush=pen.color(), name=name)
            ys = [p.average if name == "average" else p.scores.get(name) for p in points]
            self.curves[name].setData(xs, ys)

    def _draw_method(self, method: str) -> None:
        points = sorted((p for p in self.result.points if p.method == method), key=lambda p: p.value)
        if method not in self.curves:
            pen = pg.mkPen(PALETTE[self.result.methods.index(method) % len(PALETTE)], width=2)
            self.curves[method] = self.plot([], [], pen=pen, symbol="o", symbolSize=6, symbolBrush=pen.color(), name=method)
        quantity = self.show_quantity
        ys = [p.average if quantity == "average" else p.scores.get(quantity, float("nan")) for p in points]
        self.curves[method].setData([p.value for p in points], ys)

    def set_current(self, value: float) -> None:
        self.marker.setValue(value)

    def data(self) -> dict[str, tuple[list[float], list[float]]]:
        """The plotted lines: name -> (x, y)."""
        return curve_points(self.curves)

    def _moved(self, event) -> None:
        position = event[0]
        if self.result is None or not self.result.points or not self.sceneBoundingRect().contains(position):
            self.readout.hide()
            return
        x = self.plotItem.vb.mapSceneToView(position).x()
        point = min(self.result.points, key=lambda p: abs(p.value - x))
        lines = [f"{'λ' if self.result.target == 'lambda' else self.result.target} = {point.value:g}"]
        if self.overlay:
            at = [p for p in self.result.points if p.value == point.value]
            quantity = self.show_quantity
            lines += [f"{p.method}: {p.average if quantity == 'average' else p.scores[quantity]:.3f}" for p in at]
        else:
            lines += [f"{t}: {v:.3f}" for t, v in point.scores.items()] + [f"average: {point.average:.3f}"]
        self.readout.setText("\n".join(lines))
        self.readout.setPos(point.value, point.average)
        self.readout.show()

    def export_image(self, path: str) -> None:
        export_plot(self, path)

    def export_csv(self, path: str) -> None:
        atomic_write_text(path, rows_to_csv(self.result.rows() if self.result else []), force=True)
