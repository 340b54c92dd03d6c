"""The trade-off study's Pareto plot, from the runs `osrm demo tradeoff --json` writes:
x = single-task accuracy, y = task arithmetic's normalised accuracy at the λ chosen on validation,
one point per setting (mean over seeds) with ± one standard deviation over seeds as error bars,
labelled; the Pareto front is drawn as a line, peft-default and osrm-cov in their own colours.
:func:`draw_pareto` draws it into any plot (the app's trade-off dialog); run as a module, it
saves it as an image:

    QT_QPA_PLATFORM=offscreen python -m osrm_gui.gui.plots.tradeoff_figure STUDY.json docs/tradeoff.png

`osrm demo tradeoff --plot FILE.png` runs this module in a child process (the CLI itself never
imports Qt, and an installed package has it as well as a checkout).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile

import numpy as np
import pyqtgraph as pg

from osrm_gui.gui.plots.plot_style import plain_numbers, plot_axes

REFERENCE_COLOURS = {"peft-default": (170, 60, 40), "osrm-cov": (33, 102, 172)}
OTHER = (90, 90, 90)
FRONT = (40, 150, 70)
X_LABEL = "single-task accuracy (test, mean over tasks)"
Y_LABEL = "merged normalised accuracy (TA, λ by validation)"
LEGEND_TEXT = "bars: ± 1 std over seeds; squares: the references; green: the Pareto front"


def pareto_plot() -> pg.PlotWidget:
    """An empty plot with the Pareto plot's axes (plain numbers, black on white)."""
    plot = pg.PlotWidget(background="w", axisItems=plot_axes())
    plain_numbers(plot.plotItem)
    plot.showGrid(x=True, y=True, alpha=0.3)
    plot.setLabel("bottom", X_LABEL, color="k")
    plot.setLabel("left", Y_LABEL, color="k")
    for axis in ("left", "bottom"):
        plot.getAxis(axis).setTextPen("k")
        plot.getAxis(axis).setPen("k")
    return plot


def _tip(point):
    def tip(x, y, data):
        spread = "" if math.isnan(point.single_std) else f" ± {point.single_std:.3f}"
        merged_spread = "" if math.isnan(point.merged_std) else f" ± {point.merged_std:.3f}"
        return (f"{point.family} ({point.seeds} seed{'s' if point.seeds != 1 else ''})\n"
                f"single-task {point.single:.3f}{spread}\nmerged normalised {point.merged:.3f}{merged_spread}")
    return tip


def draw_pareto(plot: pg.PlotWidget, points: list, front: list[str]) -> None:
    """``points`` (:func:`~osrm_gui.core.explore.tradeoff.pareto_points`) into ``plot``, the settings
    in ``front`` (:func:`~osrm_gui.core.explore.tradeoff.non_dominated`) outlined and joined; the view
    fits them with room on the right for their names. Hovering a point tells its numbers."""
    plot.clear()
    if not points:
        return
    front = set(front)
    on_front = sorted((p for p in points if p.family in front), key=lambda p: p.single)
    if len(on_front) > 1:
        plot.plot([p.single for p in on_front], [p.merged for p in on_front], pen=pg.mkPen(FRONT, width=2, style=pg.QtCore.Qt.DashLine))
    for p in points:
        colour = REFERENCE_COLOURS.get(p.family, OTHER)
        if not math.isnan(p.single_std):  # one seed: no spread, no bars
            # no beams: a beam's length is in data units, and the two axes' scales differ
            plot.addItem(pg.ErrorBarItem(x=np.array([p.single]), y=np.array([p.merged]), width=2 * p.single_std,
                                         height=2 * p.merged_std, beam=0, pen=pg.mkPen(colour, width=1.5)))
        symbol = "s" if p.family in REFERENCE_COLOURS else "o"
        plot.addItem(pg.ScatterPlotItem([p.single], [p.merged], size=11, symbol=symbol, brush=pg.mkBrush(colour), hoverable=True,
                                        tip=_tip(p), pen=pg.mkPen(FRONT, width=2.5) if p.family in front else pg.mkPen(colour)))
        label = pg.TextItem(p.family, color=colour, anchor=(0, 1))
        label.setPos(p.single, p.merged)
        plot.addItem(label)
    xs = [p.single for p in points] + [p.single + s * p.single_std for p in points for s in (-1, 1) if not math.isnan(p.single_std)]
    ys = [p.merged for p in points] + [p.merged + s * p.merged_std for p in points for s in (-1, 1) if not math.isnan(p.merged_std)]
    pad_x, pad_y = max(np.ptp(xs), 0.01) * 0.08, max(np.ptp(ys), 0.01) * 0.08
    plot.setXRange(min(xs) - pad_x, max(xs) + 3 * pad_x, padding=0)  # room on the right for the labels
    plot.setYRange(min(ys) - pad_y, max(ys) + 2 * pad_y, padding=0)


def main(data: str, out: str) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the core's imports: drawing never downloads
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from osrm_gui.core.explore.compare import load_runs
    from osrm_gui.core.explore.tradeoff import non_dominated, pareto_points

    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, tempfile.mkdtemp())
    app = QApplication(sys.argv[:1])  # noqa: F841 - widgets need it alive
    _, runs = load_runs(data)
    points = pareto_points(runs)
    front = non_dominated(points)
    plot = pareto_plot()
    plot.setTitle(f"{len(points)} setting(s), up to {max(p.seeds for p in points)} seed(s) each; {LEGEND_TEXT}", color="k")
    draw_pareto(plot, points, front)
    plot.resize(1100, 800)
    plot.show()
    for _ in range(20):
        app.processEvents()
    if not plot.grab().save(out):  # what the widget shows, at its size (the image exporter's upscaling misplaces axis titles)
        sys.exit(f"could not write {out}")
    on_front = sorted((p for p in points if p.family in front), key=lambda p: p.single)
    print(f"wrote {out}: {len(points)} settings; Pareto front (green outline, dashed): {', '.join(p.family for p in on_front)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m osrm_gui.gui.plots.tradeoff_figure STUDY.json OUT.png")
    sys.exit(main(sys.argv[1], sys.argv[2]))
