"""Metric against a merge coefficient: a line per task plus the average (or, when
several methods were swept, a line per method for one chosen quantity), points
appearing as they are computed on an x axis fixed to the sweep's own range, 95 %
confidence bands where the metric is an accuracy, a marker at the current setting,
the legend under the plot, a hover read-out."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

from osrm_gui.core.atomic import atomic_write_text
from osrm_gui.core.explore.sweep import SweepPoint, SweepResult
from osrm_gui.core.metrics.confidence import Z
from osrm_gui.core.metrics.confidence import wilson_interval as wilson
from osrm_gui.core.tables import rows_to_csv
from osrm_gui.gui.plots.image_export import export_plot
from osrm_gui.gui.plots.plot_style import HoverReadout, LegendBelow, plain_numbers, plot_axes

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)]
BAND_ALPHA = 30
STALE_OPACITY = 0.35


def wilson_interval(p: float, n: int) -> tuple[float, float]:
    """95 % Wilson interval of an accuracy ``p`` measured on ``n`` examples (p·n of them right), as the
    previews' intervals are; NaN where either is unknown."""
    if not n or not math.isfinite(p):
        return float("nan"), float("nan")
    return wilson(round(p * n), n)


def average_interval(scores: dict[str, float], counts: dict[str, int], z: float = Z) -> tuple[float, float]:
    """95 % interval of the mean of independent accuracies (normal approximation: their variances add);
    NaN unless every task's accuracy and example count are known."""
    if not scores or any(task not in counts for task in scores):
        return float("nan"), float("nan")
    mean = float(np.mean(list(scores.values())))
    variance = sum(p * (1 - p) / counts[t] for t, p in scores.items()) / len(scores) ** 2
    half = z * math.sqrt(variance)
    return max(0.0, mean - half), min(1.0, mean + half)


def curve_points(curves: dict) -> dict[str, tuple[list[float], list[float]]]:
    """What each named curve plots, as plain lists (empty for a curve not drawn yet)."""
    out = {}
    for name, curve in curves.items():
        x, y = curve.getData()
        out[name] = ([] if x is None else list(map(float, x)), [] if y is None else list(map(float, y)))
    return out


class _Band:
    """A shaded interval around one line (two invisible edges and the fill between them)."""

    def __init__(self, plot: pg.PlotWidget, colour):
        self.low, self.high = pg.PlotCurveItem(), pg.PlotCurveItem()
        self.fill = pg.FillBetweenItem(self.low, self.high, brush=pg.mkBrush(*colour, BAND_ALPHA))
        self.fill.setZValue(-1)  # under every line
        plot.addItem(self.fill)

    def set(self, xs: list[float], lows: list[float], highs: list[float]) -> None:
        keep = [i for i, (a, b) in enumerate(zip(lows, highs)) if math.isfinite(a) and math.isfinite(b)]
        self.low.setData([xs[i] for i in keep], [lows[i] for i in keep])
        self.high.setData([xs[i] for i in keep], [highs[i] for i in keep])
        self.fill.setVisible(len(keep) > 1)

    def bounds(self) -> tuple[list[float], list[float]]:
        return tuple([] if edge.getData()[1] is None else list(map(float, edge.getData()[1])) for edge in (self.low, self.high))


class SweepPlot(pg.PlotWidget):
    def __init__(self, parent=None):
        super().__init__(parent, background="w", axisItems=plot_axes())
        self.setObjectName("sweepPlot")
        plain_numbers(self.plotItem)
        self.showGrid(x=True, y=True, alpha=0.3)
        self.setLabel("left", "metric")
        self.setLabel("bottom", "value")
        self.legend = LegendBelow(self)
        self.marker = pg.InfiniteLine(angle=90, pen=pg.mkPen((0, 0, 0), width=1, style=Qt.DashLine), label="current",
                                      labelOpts={"position": 0.95, "color": (0, 0, 0), "fill": pg.mkBrush(255, 255, 255, 200)})
        self.addItem(self.marker, ignoreBounds=True)
        self.readout = HoverReadout(self)
        self.result: SweepResult | None = None
        self.show_quantity = "average"  # with several methods: which task (or the average) each method's line shows
        self.counts: dict[str, int] = {}  # accuracy task -> examples per point: what its confidence band needs
        self.show_bands = True
        self.stale = False
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.bands: dict[str, _Band] = {}
        # not rate-limited: a delayed move arriving after the mouse left would show the read-out again
        self.scene().sigMouseMoved.connect(self._moved)

    def start(self, result: SweepResult, counts: dict[str, int] | None = None) -> None:
        """Show ``result`` (its points so far; more come through :meth:`add_point`). ``counts``:
        examples per point of each accuracy task, for the 95 % bands (None: keep the last ones)."""
        self.result = result
        if counts is not None:
            self.counts = dict(counts)
        for item in [*self.curves.values(), *(b.fill for b in self.bands.values())]:
            self.removeItem(item)
        self.curves, self.bands = {}, {}
        self.legend.clear()
        self.setLabel("bottom", "global λ" if result.target == "lambda" else result.axis)
        self.setLabel("left", self.show_quantity if len(result.methods) > 1 else "metric")
        self._fix_x_range(result.axes[0].values)
        for point in result.points:
            self._draw(point)
        self.set_stale(self.stale)

    def _fix_x_range(self, values) -> None:
        """The sweep's whole range from the start: the axis neither rescales nor changes units as points arrive."""
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        if high == low:
            low, high = low - 0.5, high + 0.5
        self.setXRange(low, high, padding=0.04)
        self.enableAutoRange(axis="x", enable=False)
        self.enableAutoRange(axis="y", enable=True)

    def set_quantity(self, quantity: str) -> None:
        """With several methods: show ``quantity`` (a task name or "average") for each."""
        self.show_quantity = quantity
        if self.result is not None:
            self.start(self.result)

    def set_bands_visible(self, visible: bool) -> None:
        self.show_bands = visible
        if self.result is not None:
            self.start(self.result)

    def set_stale(self, stale: bool) -> None:
        """Fade the lines of a sweep whose adapters or merge changed since (the panel says why)."""
        self.stale = stale
        for item in [*self.curves.values(), *(b.fill for b in self.bands.values())]:
            item.setOpacity(STALE_OPACITY if stale else 1.0)

    @property
    def overlay(self) -> bool:
        return self.result is not None and len(self.result.methods) > 1

    def add_point(self, point: SweepPoint) -> None:
        if self.result is None:
            return
        if point not in self.result.points:
            self.result.points.append(point)
        self._draw(point)

    def interval(self, point: SweepPoint, quantity: str) -> tuple[float, float]:
        """95 % interval of ``quantity`` (a task or "average") at ``point``; NaN where not known."""
        if quantity == "average":
            return average_interval(point.scores, self.counts)
        if quantity in self.counts and quantity in point.scores:
            return wilson_interval(point.scores[quantity], self.counts[quantity])
        return float("nan"), float("nan")

    def _line(self, name: str, colour, width: float) -> pg.PlotDataItem:
        if name not in self.curves:
            pen = pg.mkPen(colour, width=width)
            self.curves[name] = self.plot([], [], pen=pen, symbol="o", symbolSize=6, symbolBrush=pen.color(), symbolPen=pen.color(), name=name)
            self.bands[name] = _Band(self, colour)
            self.curves[name].setOpacity(STALE_OPACITY if self.stale else 1.0)
            self.bands[name].fill.setOpacity(STALE_OPACITY if self.stale else 1.0)
        return self.curves[name]

    def _set_line(self, name: str, points: list[SweepPoint], quantity: str) -> None:
        xs = [p.value for p in points]
        ys = [p.average if quantity == "average" else p.scores.get(quantity, float("nan")) for p in points]
        self.curves[name].setData(xs, ys)
        intervals = [self.interval(p, quantity) for p in points]
        self.bands[name].set(xs, [i[0] for i in intervals], [i[1] for i in intervals])
        if not self.show_bands:
            self.bands[name].fill.setVisible(False)

    def _draw(self, point: SweepPoint) -> None:
        if self.overlay:
            self._draw_method(point.method)
            return
        # along the axis, not in the order they came: reused points come first, and Ray workers finish out of order
        points = sorted(self.result.points, key=lambda p: p.value)
        for i, name in enumerate([*point.scores, "average"]):
            average = name == "average"
            self._line(name, (0, 0, 0) if average else PALETTE[i % len(PALETTE)], 3 if average else 2)
            self._set_line(name, points, name)

    def _draw_method(self, method: str) -> None:
        points = sorted((p for p in self.result.points if p.method == method), key=lambda p: p.value)
        self._line(method, PALETTE[self.result.methods.index(method) % len(PALETTE)], 2)
        self._set_line(method, points, self.show_quantity)

    def set_current(self, value: float) -> None:
        self.marker.setValue(value)

    def data(self) -> dict[str, tuple[list[float], list[float]]]:
        """The plotted lines: name -> (x, y)."""
        return curve_points(self.curves)

    def band_data(self) -> dict[str, tuple[list[float], list[float]]]:
        """The shaded 95 % intervals: name -> (lower edges, upper edges), empty where none is known."""
        return {name: band.bounds() for name, band in self.bands.items()}

    def _moved(self, position) -> None:
        if self.result is None or not self.result.points or not self.plotItem.vb.sceneBoundingRect().contains(position):
            self.readout.hide()
            return
        x = self.plotItem.vb.mapSceneToView(position).x()
        point = min(self.result.points, key=lambda p: abs(p.value - x))
        lines = [f"{'λ' if self.result.target == 'lambda' else self.result.target} = {point.value:g}"]
        if self.overlay:
            at = [p for p in self.result.points if p.value == point.value]
            lines += [f"{p.method}: {self._with_interval(p, self.show_quantity)}" for p in at]
            quantity = self.show_quantity
            y = point.average if quantity == "average" else point.scores.get(quantity, point.average)
        else:
            lines += [f"{t}: {self._with_interval(point, t)}" for t in point.scores] + [f"average: {self._with_interval(point, 'average')}"]
            y = point.average
        if any(math.isfinite(v) for name in [*point.scores, "average"] for v in self.interval(point, name)):
            lines.append("[ ]: 95 % interval")
        self.readout.show_at(point.value, y, "\n".join(lines))

    def _with_interval(self, point: SweepPoint, quantity: str) -> str:
        value = point.average if quantity == "average" else point.scores.get(quantity, float("nan"))
        low, high = self.interval(point, quantity)
        return f"{value:.3f}" + (f" [{low:.2f}, {high:.2f}]" if math.isfinite(low) else "")

    def export_image(self, path: str) -> None:
        export_plot(self, path)

    def export_csv(self, path: str) -> None:
        atomic_write_text(path, rows_to_csv(self.result.rows() if self.result else []), force=True)
