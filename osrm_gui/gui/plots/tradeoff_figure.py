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
from PySide6.QtCore import QPointF, QRectF

from osrm_gui.gui.plots.plot_style import plain_numbers, plot_axes

REFERENCE_COLOURS = {"peft-default": (170, 60, 40), "osrm-cov": (33, 102, 172)}
OTHER = (90, 90, 90)
FRONT = (40, 150, 70)
X_LABEL = "single-task accuracy (test, mean over tasks)"
Y_LABEL = "merged normalised accuracy (TA, λ by validation)"
LEGEND_TEXT = "bars: ± 1 std over seeds; squares: the references; green: the Pareto front"
KNOB_PREFIX = "osrm-cov-"  # the study's knobs all train from osrm-cov: on the plot k4 says osrm-cov-k4, in a crowd
NAMES_TEXT = "k, pen, a: osrm-cov with that subspace budget k, penalty β or A learning-rate multiplier"


def point_name(family: str) -> str:
    """A setting's name on the plot: the study's knob settings without their common osrm-cov- prefix."""
    return family.removeprefix(KNOB_PREFIX) or family


def names_note(points: list) -> str:
    """:data:`NAMES_TEXT` when some point is named short on the plot, else ""."""
    return NAMES_TEXT if any(point_name(p.family) != p.family for p in points) else ""


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
    labels = []
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
        label = pg.TextItem(point_name(p.family), color=colour, anchor=LABEL_ANCHORS[0])
        label.setPos(p.single, p.merged)
        plot.addItem(label)
        labels.append((label, p))
    xs = [p.single for p in points] + [p.single + s * p.single_std for p in points for s in (-1, 1) if not math.isnan(p.single_std)]
    ys = [p.merged for p in points] + [p.merged + s * p.merged_std for p in points for s in (-1, 1) if not math.isnan(p.merged_std)]
    pad_x, pad_y = max(np.ptp(xs), 0.01) * 0.08, max(np.ptp(ys), 0.01) * 0.08
    plot.setXRange(min(xs) - pad_x, max(xs) + 3 * pad_x, padding=0)  # room on the right for the labels
    plot.setYRange(min(ys) - pad_y, max(ys) + 2 * pad_y, padding=0)
    # the references and the front get the best places, then left to right
    labels.sort(key=lambda item: (item[1].family not in REFERENCE_COLOURS, item[1].family not in front, item[1].single))
    view = plot.getPlotItem().getViewBox()
    view._pareto_labels = labels
    if not getattr(view, "_places_labels", False):  # the labels' pixel room changes with the plot's size and range
        view.sigResized.connect(lambda box: place_labels(box, box._pareto_labels))
        view.sigRangeChanged.connect(lambda box, *_: place_labels(box, box._pareto_labels))
        view._places_labels = True
    place_labels(view, labels)


# Where a point's name may go, as TextItem anchors (the fraction of the text box at the point):
# above right first, then below right, above left, below left, level beside, a line further up or down.
LABEL_ANCHORS = ((0, 1), (0, 0), (1, 1), (1, 0), (-0.08, 0.5), (1.08, 0.5), (0, 2), (0, -1), (1, 2), (1, -1))
MARKER_PX = 7  # half a marker's side and a little: a name must not cover another setting's point


def _overlap(a: QRectF, b: QRectF) -> float:
    inter = a.intersected(b)
    return inter.width() * inter.height() if not inter.isEmpty() else 0.0


def place_labels(view: pg.ViewBox, labels: list) -> None:
    """Give each (TextItem, point) label the first of :data:`LABEL_ANCHORS` where, in pixels, its
    text covers no name placed before it, no point and nothing outside the view (else the place
    that covers least): in a crowded corner of the plot the names of near settings no longer
    run into each other."""
    bounds = view.sceneBoundingRect()
    if bounds.width() < 10 or not labels:  # not laid out yet
        return
    centres = [view.mapViewToScene(QPointF(p.single, p.merged)) for _, p in labels]
    markers = [QRectF(c.x() - MARKER_PX, c.y() - MARKER_PX, 2 * MARKER_PX, 2 * MARKER_PX) for c in centres]
    placed = []
    for (label, _), centre in zip(labels, centres):
        size = label.textItem.boundingRect().size()
        best, best_rect, best_cost = None, None, math.inf
        for anchor in LABEL_ANCHORS:
            rect = QRectF(centre.x() - anchor[0] * size.width(), centre.y() - anchor[1] * size.height(), size.width(), size.height())
            cost = sum(_overlap(rect, other) for other in placed) + sum(_overlap(rect, m) for m in markers if not m.contains(centre))
            cost += rect.width() * rect.height() - _overlap(rect, bounds)
            if cost < best_cost:
                best, best_rect, best_cost = anchor, rect, cost
            if cost == 0:
                break
        label.setAnchor(best)
        placed.append(best_rect)


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
    note = names_note(points)
    names = f"<br>{note}" if note else ""
    plot.setTitle(f"{len(points)} setting(s), up to {max(p.seeds for p in points)} seed(s) each; {LEGEND_TEXT}{names}", color="k")
    if names:
        plot.getPlotItem().layout.setRowFixedHeight(0, 44)  # pyqtgraph sizes the title's row for one line
        plot.getPlotItem().setContentsMargins(0, 8, 0, 0)
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
