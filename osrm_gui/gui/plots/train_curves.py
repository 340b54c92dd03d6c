"""Curves of a training run, one colour per adapter: the loss, and beside it the other tasks'
energy share in row(A) on a log scale (it spans decades), its start value marked so the drift
out of the initial subspace reads as a rise above a dashed line."""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from osrm_gui.gui.plots.plot_style import PlotAxis, plain_numbers, plot_axes
from osrm_gui.gui.plots.sweep_plot import PALETTE

UNKNOWN = "others' energy: unknown (no other tasks' statistics)"
KNOWN = "others' energy share in row(A)"
MIN_DECADES = 1.2
FLOOR = 1e-12  # an exact 0 still shows, at the bottom of the log axis


def percent(share: float) -> str:
    return f"{100 * share:.2g}%"


class ShareAxis(PlotAxis):
    """A log axis labelled in percent, naming only the 1, 2 and 5 of each decade (all nine crowd it)."""

    def logTickStrings(self, values, scale, spacing):
        labels = []
        for value in values:
            share = 10.0 ** value * scale
            mantissa = round(share / 10.0 ** math.floor(math.log10(share) + 1e-9))
            labels.append(percent(share) if mantissa in (1, 2, 5) else "")
        return labels


class TrainCurves(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.loss_plot = pg.PlotWidget(background="w", axisItems=plot_axes())
        self.loss_plot.setObjectName("lossPlot")
        self.loss_plot.setTitle("training loss", size="9pt")
        self.energy_plot = pg.PlotWidget(background="w", axisItems=plot_axes(left=ShareAxis("left")))
        self.energy_plot.setObjectName("energyPlot")
        self.energy_plot.setLogMode(False, True)
        self.energy_plot.setToolTip("The other tasks' feature energy in row(A), as a share of all of A's energy:\n"
                                    "what their inputs see of this adapter when merged. The dot and the dashed line\n"
                                    "mark the start; a subspace budget or a penalty keeps the curve near it.")
        for plot in (self.loss_plot, self.energy_plot):
            plot.setLabel("bottom", "step")
            plot.setMinimumHeight(150)
            plot.setMinimumWidth(270)  # room for the log axis's percent labels and five step ticks at 1024×700
            plot.getAxis("left").setWidth(52)  # both plots' axes line up, whatever their tick labels
            plain_numbers(plot.plotItem)
        # one legend under both (a colour is the same adapter in each), outside them: over the data it
        # would hide the loss's start, and under one plot only it would lift that plot's step axis
        self.legend = QLabel()
        self.legend.setObjectName("trainLegend")
        self.legend.setWordWrap(True)
        plots = QHBoxLayout()
        plots.setContentsMargins(0, 0, 0, 0)
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.energy_plot)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(plots, 1)
        layout.addWidget(self.legend)
        self.losses: dict[str, tuple[list[int], list[float]]] = {}
        self.energies: dict[str, tuple[list[int], list[float]]] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._energy_items: dict[str, tuple[pg.PlotDataItem, pg.PlotDataItem, pg.PlotDataItem]] = {}
        self._colours: dict[str, tuple] = {}
        self.clear()

    def clear(self) -> None:
        for curve in self.curves.values():
            self.loss_plot.removeItem(curve)
        for items in self._energy_items.values():
            for item in items:
                self.energy_plot.removeItem(item)
        self.losses, self.energies, self.curves, self._energy_items, self._colours = {}, {}, {}, {}, {}
        self.legend.setText("")
        self.energy_plot.setTitle(KNOWN, size="9pt")

    def add(self, task: str, step: int, loss: float, energy: float) -> None:
        """One training step of one adapter; a NaN energy (no other tasks known) is left out."""
        if task not in self.curves:
            self.curves[task] = self.loss_plot.plot([], [], pen=pg.mkPen(self._colour(task), width=2), name=task)
        steps, losses = self.losses.setdefault(task, ([], []))
        steps.append(step)
        losses.append(loss)
        self.curves[task].setData(steps, losses)
        if math.isfinite(energy):
            self._add_energy(task, step, max(energy, FLOOR))
        if not self.energies:
            self.energy_plot.setTitle(UNKNOWN, size="9pt")

    def mark_start(self, task: str, energy: float) -> None:
        """The share before the first step (known once the adapter is written): the curve starts there."""
        steps = self.energies.get(task, ([], []))[0]
        if math.isfinite(energy) and (not steps or steps[0] != 0):
            self._add_energy(task, 0, max(energy, FLOOR), front=True)

    def start_and_end(self, task: str) -> tuple[float, float] | None:
        """The first and last energy share drawn for an adapter (None: unknown)."""
        values = self.energies.get(task, ([], []))[1]
        return (values[0], values[-1]) if values else None

    def _colour(self, task: str):
        if task not in self._colours:
            self._colours[task] = PALETTE[len(self._colours) % len(PALETTE)]
            self.legend.setText("&nbsp;&nbsp; ".join(f"<span style='color: #{r:02x}{g:02x}{b:02x}'>━━</span>&nbsp;{name}"
                                                     for name, (r, g, b) in self._colours.items()))
        return self._colours[task]

    def _add_energy(self, task: str, step: int, energy: float, front: bool = False) -> None:
        if task not in self._energy_items:
            colour = self._colour(task)
            self.energy_plot.setTitle(KNOWN, size="9pt")
            start_line = self.energy_plot.plot([], [], pen=pg.mkPen(colour, width=1, style=Qt.DashLine))
            start_dot = self.energy_plot.plot([], [], pen=None, symbol="o", symbolSize=8, symbolBrush=colour, symbolPen=colour)
            curve = self.energy_plot.plot([], [], pen=pg.mkPen(colour, width=2))
            self._energy_items[task] = (curve, start_line, start_dot)
        steps, values = self.energies.setdefault(task, ([], []))
        steps.insert(0 if front else len(steps), step)
        values.insert(0 if front else len(values), energy)
        curve, start_line, start_dot = self._energy_items[task]
        curve.setData(steps, values)
        start_line.setData([steps[0], steps[-1]], [values[0], values[0]])
        start_dot.setData(steps[:1], values[:1])
        self._fit_decades()

    def _fit_decades(self) -> None:
        """At least a decade in view: a log axis shows no tick inside a narrower range, and a share
        that barely moves (as under a budget) should look flat, not fill the plot."""
        values = [v for _, vs in self.energies.values() for v in vs]
        low, high = math.log10(min(values)), math.log10(max(values))
        if high - low >= MIN_DECADES:
            self.energy_plot.enableAutoRange(axis="y")
        else:
            middle = (low + high) / 2
            self.energy_plot.setYRange(middle - MIN_DECADES / 2, middle + MIN_DECADES / 2, padding=0)
