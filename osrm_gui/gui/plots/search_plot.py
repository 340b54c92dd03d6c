"""The merge search's views: every trial's objective against its number — complete trials in
colour, pruned ones grey at the last value they reported, infeasible ones hollow — with the best
so far as a step line; and Optuna's parameter importances as horizontal bars."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg

from osrm_gui.core.explore.search import SearchTrial
from osrm_gui.gui.plots.image_export import export_plot
from osrm_gui.gui.plots.plot_style import LegendBelow, plain_numbers, plot_axes

COMPLETE = (31, 119, 180)
PRUNED = (170, 170, 170)
BEST = (214, 39, 40)
NAME_CHARS = 20  # longer parameter names are shortened in the middle on the bar chart's axis


def _short(name: str) -> str:
    return name if len(name) <= NAME_CHARS else f"{name[: NAME_CHARS // 2 - 1]}…{name[-(NAME_CHARS // 2):]}"


def _params(trial: SearchTrial) -> str:
    return "\n".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in trial.params.items())


class SearchPlot(pg.PlotWidget):
    def __init__(self, parent=None):
        super().__init__(parent, background="w", axisItems=plot_axes())
        self.setObjectName("searchPlot")
        plain_numbers(self.plotItem)
        self.showGrid(x=True, y=True, alpha=0.3)
        self.setLabel("bottom", "trial")
        self.legend = LegendBelow(self)  # where it hides no trial
        self.complete = pg.ScatterPlotItem(size=9, pen=pg.mkPen(COMPLETE), brush=pg.mkBrush(*COMPLETE), hoverable=True, tip=self._tip,
                                           name="complete")
        self.pruned = pg.ScatterPlotItem(size=7, pen=pg.mkPen(PRUNED), brush=pg.mkBrush(*PRUNED), hoverable=True, tip=self._tip,
                                         name="pruned (last value)")
        self.best_line = pg.PlotDataItem(pen=pg.mkPen(BEST, width=2), stepMode="left", name="best so far")
        for item in (self.complete, self.pruned, self.best_line):
            self.addItem(item)  # named: the legend lists it
        self.complete.setZValue(2)
        self.trials: dict[int, SearchTrial] = {}
        self.start("objective")

    def start(self, objective: str) -> None:
        """A new run: no trials; ``objective`` names the y axis (the first objective with two)."""
        self.trials = {}
        self.setLabel("left", objective)
        self.redraw()

    def add_trial(self, trial: SearchTrial) -> None:
        self.trials[trial.number] = trial
        self.redraw()

    def set_trials(self, trials: list[SearchTrial]) -> None:
        """Every trial of the study (a resumed study brings its earlier ones)."""
        self.trials = {t.number: t for t in trials}
        self.redraw()

    def redraw(self) -> None:
        trials = sorted(self.trials.values(), key=lambda t: t.number)
        for item, state in ((self.complete, "complete"), (self.pruned, "pruned")):
            shown = [t for t in trials if t.state == state and t.values]
            spots = [{"pos": (t.number, t.values[0]), "data": t.number,
                      **({"brush": pg.mkBrush(255, 255, 255)} if t.feasible is False else {})} for t in shown]
            item.setData(spots)
        x, y = self.best_so_far()
        self.best_line.setData(np.asarray(x, dtype=float), np.asarray(y, dtype=float))

    def best_so_far(self) -> tuple[list[int], list[float]]:
        """The best complete, feasible value after each trial from the first one that completed."""
        x, y, best = [], [], -math.inf
        for t in sorted(self.trials.values(), key=lambda t: t.number):
            if t.state == "complete" and t.values and t.feasible is not False:
                best = max(best, t.values[0])
            if best > -math.inf:
                x.append(t.number)
                y.append(best)
        return x, y

    def points(self, state: str) -> list[tuple[int, float]]:
        """The plotted (trial, value) of ``state`` ("complete" or "pruned")."""
        item = self.complete if state == "complete" else self.pruned
        return [(int(p.pos().x()), float(p.pos().y())) for p in item.points()]

    def _tip(self, x, y, data):
        trial = self.trials.get(data)
        if trial is None:
            return ""
        infeasible = ", infeasible" if trial.feasible is False else ""
        return f"trial {trial.number} ({trial.state}{infeasible}): {y:.4f}\n{trial.examples} examples\n{_params(trial)}"

    def export_image(self, path: str) -> None:
        export_plot(self, path)


class ImportancePlot(pg.PlotWidget):
    def __init__(self, parent=None):
        super().__init__(parent, background="w", axisItems=plot_axes())
        self.setObjectName("importancePlot")
        plain_numbers(self.plotItem)
        self.setMouseEnabled(x=False, y=False)
        self.setMenuEnabled(False)
        self.hideButtons()
        self.plotItem.invertY(True)  # the most important on top
        self.bars = pg.BarGraphItem(x0=[], y=[], height=0.6, width=[], brush=pg.mkBrush(*COMPLETE))
        self.addItem(self.bars)
        # a message in the view, not a title: a title wider than the view would widen the plot past its widget
        self.note = pg.TextItem("", color=(90, 90, 90), anchor=(0.5, 0.5))
        self.addItem(self.note)
        self.values: dict[str, float] = {}
        self.show_importances({})

    def show_importances(self, importances: dict[str, float], note: str = "") -> None:
        """Bars, largest first; ``note`` says why there are none."""
        self.values = dict(sorted(importances.items(), key=lambda kv: -kv[1]))
        names = list(self.values)
        self.bars.setOpts(x0=np.zeros(len(names)), y=np.arange(len(names), dtype=float), width=np.asarray(list(self.values.values())),
                          height=0.6)
        self.getAxis("left").setTicks([[(i, _short(name)) for i, name in enumerate(names)]])
        self.setLabel("bottom", "parameter importance")
        high = max([*self.values.values(), 0.1])
        self.note.setText("" if names else note)
        self.note.setPos(high / 2, (max(len(names), 1) - 1) / 2)
        self.setYRange(-0.5, max(len(names), 1) - 0.5, padding=0.05)
        self.setXRange(0, high, padding=0.05)

    def export_image(self, path: str) -> None:
        export_plot(self, path)
