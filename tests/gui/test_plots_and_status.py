"""Plots that read like a scientific tool's (plain-number axes, an x range fixed before the points
arrive, 95 % bands, legends beside the data, hover read-outs that leave with the mouse, tick labels
with their descenders), the sweep's status line and its staleness after a reopened workspace
changes, the OSRM tab's status after a cancel or a failure, and the trade-off study's dialog."""

from __future__ import annotations

import json
import re

import pyqtgraph as pg
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication, QLabel

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore import tradeoff
from osrm_gui.core.explore.compare import FamilyRun, save_runs
from osrm_gui.core.explore.sweep import Axis, SweepPoint, SweepResult
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.gui.plots.plot_style import AXES
from osrm_gui.gui.plots.sweep_plot import SweepPlot, wilson_interval
from tests.gui.conftest import set_axis, wait_idle

LAMBDAS = tuple(round(0.1 * i, 1) for i in range(11))


def sweep_result(values=LAMBDAS, methods=("task_arithmetic",)) -> SweepResult:
    return SweepResult([Axis("lambda", tuple(values))], MergeSpec(), list(methods))


def point(value, colour=None, animal=None, method="task_arithmetic") -> SweepPoint:
    return SweepPoint((value,), {"colour": 0.5 + 0.3 * value if colour is None else colour,
                                 "animal": 0.9 - 0.2 * value if animal is None else animal}, method)


def shown_plot(qtbot, widget, width=700, height=480):
    qtbot.addWidget(widget)
    widget.resize(width, height)
    widget.show()
    qtbot.waitExposed(widget)
    for _ in range(5):
        QApplication.processEvents()
    return widget


def plot_items(widget) -> list[pg.PlotItem]:
    if isinstance(widget, pg.PlotWidget):
        return [widget.getPlotItem()]
    return [item for item in widget.ci.items if isinstance(item, pg.PlotItem)]


def data_rect(plot: pg.PlotWidget):
    """The scene rectangle the data are drawn in."""
    return plot.getPlotItem().vb.sceneBoundingRect()


# -- axes -------------------------------------------------------------------------------


def test_no_plot_of_the_sweep_and_osrm_views_scales_its_axes_with_an_si_prefix(qtbot):
    from osrm_gui.gui.plots.adamerging_plot import AdaMergingCurves
    from osrm_gui.gui.plots.continual_plot import ContinualPlot
    from osrm_gui.gui.plots.search_plot import ImportancePlot, SearchPlot
    from osrm_gui.gui.plots.tradeoff_figure import pareto_plot
    from osrm_gui.gui.plots.train_curves import TrainCurves

    curves = TrainCurves()
    qtbot.addWidget(curves)
    widgets = [SweepPlot(), ContinualPlot(), SearchPlot(), ImportancePlot(), AdaMergingCurves(), pareto_plot()]
    for widget in widgets:
        qtbot.addWidget(widget)
    for widget in [*widgets, curves.loss_plot, curves.energy_plot]:
        for item in plot_items(widget):
            assert all(not item.getAxis(name).autoSIPrefix for name in AXES), type(widget).__name__
    # what the issue saw: a λ sweep whose points so far end below 0.001 read "global λ (x0.001)", ticks 0–800
    plot = shown_plot(qtbot, SweepPlot())
    plot.start(sweep_result([0.0, 0.0002, 0.0004, 0.0006, 0.0008]))
    plot.add_point(point(0.0))
    plot.add_point(point(0.0002))
    QApplication.processEvents()
    assert "(x" not in plot.getAxis("bottom").labelString() and "global λ" in plot.getAxis("bottom").labelString()
    assert plot.getAxis("bottom").autoSIPrefixScale == 1.0 and plot.getAxis("left").autoSIPrefixScale == 1.0


def test_the_sweep_x_axis_spans_the_sweep_before_any_point_arrives(qtbot):
    plot = shown_plot(qtbot, SweepPlot())
    plot.start(sweep_result())
    QApplication.processEvents()
    (x0, x1), _ = plot.viewRange()
    assert -0.1 < x0 < 0.0 and 1.0 < x1 < 1.1  # the whole 0–1 range, a little padding
    for value in (0.1, 0.0, 0.5):  # as they stream in, out of order
        plot.add_point(point(value))
        QApplication.processEvents()
        assert plot.viewRange()[0] == [x0, x1]
    assert plot.getAxis("bottom").labelText == "global λ"


def test_horizontal_tick_labels_keep_their_descenders(qtbot):
    from osrm_gui.gui.plots.plot_style import plot_axes

    def lowest_ink(widget) -> int:
        """How many pixel rows from the bottom the lowest non-background pixel sits (0: on the edge)."""
        image = widget.grab().toImage()
        for row in range(image.height() - 1, -1, -1):
            if any(QColor(image.pixel(x, row)).lightness() < 200 for x in range(image.width())):
                return image.height() - 1 - row
        return image.height()

    def plot_of(axes):
        plot = pg.PlotWidget(background="w", **({"axisItems": axes} if axes else {}))
        # two lines with descenders (as a task over its adapter's name), no axis title under them
        plot.getAxis("bottom").setTicks([[(0.5, "word-pos\ngypsy jpg"), (1.5, "typology\nreview-or-plot")]])
        plot.plot([0, 1, 2], [1, 2, 3])
        return shown_plot(qtbot, plot, 400, 200)

    assert lowest_ink(plot_of(None)) == 0  # pyqtgraph's own axis: the second line's g, p and y are cut at the edge
    assert lowest_ink(plot_of(plot_axes())) >= 2


def test_a_confidence_band_around_each_accuracy_of_a_sweep():
    low, high = wilson_interval(0.8, 100)
    assert (low, high) == pytest.approx((0.7112, 0.8666), abs=1e-4)  # Wilson's 95 % interval, by hand
    assert wilson_interval(1.0, 12)[1] == 1.0 and wilson_interval(1.0, 12)[0] < 1.0  # never empty at 1
    plot = SweepPlot()
    plot.start(sweep_result([0.0, 0.5, 1.0]), counts={"colour": 100})  # animal's metric is not an accuracy here
    for value in (0.0, 0.5, 1.0):
        plot.add_point(point(value))
    lows, highs = plot.band_data()["colour"]
    ys = plot.data()["colour"][1]
    assert len(lows) == 3 and all(a < y < b for a, y, b in zip(lows, ys, highs))
    assert lows[0] == pytest.approx(wilson_interval(0.5, 100)[0])
    assert plot.band_data()["animal"] == ([], []) and plot.band_data()["average"] == ([], [])  # not known: none drawn


# -- legends and read-outs ---------------------------------------------------------------------


@pytest.mark.parametrize("width", [360, 700])
def test_legends_sit_beside_the_data_not_over_it(qtbot, tmp_path, width):
    from osrm_gui.core.explore.compare import LAMBDAS as COMPARE_LAMBDAS
    from osrm_gui.core.explore.continual import ContinualResult
    from osrm_gui.gui.dialogs.compare_dialog import CompareDialog
    from osrm_gui.gui.plots.continual_plot import ContinualPlot
    from osrm_gui.gui.plots.search_plot import SearchPlot
    from osrm_gui.gui.plots.train_curves import TrainCurves

    sweep = shown_plot(qtbot, SweepPlot(), width)
    sweep.start(sweep_result(), counts={"colour": 100, "animal": 100})
    for value in LAMBDAS:  # lines through every corner of the view
        sweep.add_point(point(value, colour=1.0 - value, animal=value))
    curves = TrainCurves()
    for step in range(5):
        curves.add("colour", step, 1.0 / (step + 1), float("nan"))
        curves.add("animal", step, 0.5, float("nan"))
    shown_plot(qtbot, curves, width)
    grid = {f"{lam:g}": {"a": lam, "b": 1 - lam} for lam in COMPARE_LAMBDAS}
    save_runs([FamilyRun(f, 0, {"a": 1.0, "b": 1.0}, grid, {"a": 0.5, "b": 0.5}, 0.1, [], grid) for f in ("x", "y")],
              tmp_path / "compare.json", {"command": "test"})
    dialog = shown_plot(qtbot, CompareDialog(tmp_path / "compare.json"), width + 100, 600)
    continual = shown_plot(qtbot, ContinualPlot(), width)
    continual.start(ContinualResult([[0, 1], [1, 0]], ["colour", "animal"], ["colour", "animal"], 1.0))
    for plot in (sweep, continual, shown_plot(qtbot, SearchPlot(), width), dialog.plot):
        QApplication.processEvents()
        legend = plot.getPlotItem().legend
        assert legend is not None and legend.items, type(plot).__name__
        box = legend.sceneBoundingRect()
        assert not box.intersects(data_rect(plot)), type(plot).__name__
        assert box.right() <= plot.width() and box.bottom() <= plot.height(), type(plot).__name__  # and not cut off itself
        assert data_rect(plot).right() <= plot.width(), type(plot).__name__  # nor widening the plot past its widget
    # a training's loss and energy plots share one legend, under both, so their step axes line up
    assert "colour" in curves.legend.text() and "animal" in curves.legend.text()
    assert curves.legend.y() >= max(curves.loss_plot.geometry().bottom(), curves.energy_plot.geometry().bottom())
    assert curves.loss_plot.getPlotItem().legend is None


def test_the_hover_readout_has_a_background_stays_in_view_and_leaves_with_the_mouse(qtbot):
    plot = shown_plot(qtbot, SweepPlot())
    plot.start(sweep_result(), counts={"colour": 100, "animal": 100})
    for value in LAMBDAS:
        plot.add_point(point(value))
    QApplication.processEvents()
    vb = plot.getPlotItem().vb
    plot.scene().sigMouseMoved.emit(vb.mapViewToScene(QPointF(0.98, 0.7)))  # at the right edge: the text opens leftwards
    QApplication.processEvents()
    readout = plot.readout
    assert readout.isVisible() and "λ = 1" in readout.toPlainText() and "[" in readout.toPlainText()  # with the 95 % interval
    assert readout.fill.color().alpha() > 200 and readout.border.style() != Qt.NoPen
    assert data_rect(plot).contains(readout.sceneBoundingRect())
    QApplication.sendEvent(plot, QEvent(QEvent.Leave))
    assert not readout.isVisible()
    plot.scene().sigMouseMoved.emit(QPointF(1, 1))  # over the axes, outside the data: nothing to read
    assert not readout.isVisible()


# -- the sweep's status and staleness (in the app) --------------------------------------------


def test_the_sweep_status_counts_the_whole_sweep_and_says_done(qtbot, window):
    panel = window.sweeps
    set_axis(panel.first, "lambda", 0.0, 1.0, 4)
    seen, ranges, geometry = [], [], []

    def record(*_):
        seen.append(panel.status.text())
        ranges.append(panel.plot.viewRange()[0])
        geometry.append((panel.plot.geometry(), panel.status.geometry()))

    window.model.sweepStarted.connect(record)  # connected after the panel: it has updated by then
    window.model.sweepPoint.connect(record)
    with qtbot.waitSignal(window.model.sweepFinished, timeout=60000):
        qtbot.mouseClick(panel.run, Qt.LeftButton)
    record()
    wait_idle(qtbot, window)
    progress = seen[:-1]
    assert len(progress) == 5, seen
    for done, text in enumerate(progress):
        assert re.fullmatch(rf"Sweep: {done} / 4 points · (about .+ left|estimating the time left…|finishing…)", text), text
    assert seen[-1].startswith("Sweep done: 4 / 4 points in ") and panel.status.text() == seen[-1]
    assert all(r == ranges[0] for r in ranges) and ranges[0][0] < 0 and ranges[0][1] > 1  # fixed from the first moment
    assert all(g == geometry[0] for g in geometry)  # nothing moved as the texts changed
    lows, highs = panel.plot.band_data()["colour"]  # the tiny tasks are scored by accuracy: bands from 12 examples
    assert len(lows) == 4 and highs[0] - lows[0] > 0.2


def test_a_cancelled_sweep_says_so_and_how_to_resume(qtbot, window):
    panel = window.sweeps
    set_axis(panel.first, "lambda", 0.0, 1.0, 41)
    with qtbot.waitSignal(window.model.sweepPoint, timeout=30000):
        panel.start_sweep()
    with qtbot.waitSignal(window.model.jobs.finished, timeout=30000):
        window.model.jobs.cancel()
    assert re.fullmatch(r"Sweep cancelled after \d+ / 41 points; run it again to resume .*", panel.status.text())


def test_a_reopened_sweep_matches_its_controls_and_goes_stale_when_the_merge_changes(qtbot, window, tmp_path):
    from osrm_gui.gui.app import build_window, parse_args

    panel = window.sweeps
    set_axis(panel.first, "animal", 0.0, 2.0, 3)
    with qtbot.waitSignal(window.model.sweepFinished, timeout=60000):
        panel.start_sweep()
    wait_idle(qtbot, window)
    assert not panel.stale
    set_axis(panel.first, "lambda", 0.0, 1.0, 5)  # the controls moved on, the sweep shown did not
    path = tmp_path / "ws" / "sweep.osrm.json"
    window.model.save_workspace(str(path))

    reopened = build_window(parse_args(["--workspace", str(path)]))
    qtbot.addWidget(reopened)
    reopened.show()
    wait_idle(qtbot, reopened)
    again = reopened.sweeps
    assert again.result is not None and [p.value for p in again.result.points] == [0.0, 1.0, 2.0]
    assert (again.target.currentData(), again.start.value(), again.stop.value(), again.count.value()) == ("animal", 0.0, 2.0, 3)
    animal = [s.label for s in reopened.model.slots].index("animal")
    assert again.plot.marker.value() == pytest.approx(reopened.model.slots[animal].coefficient)
    assert again.plot.getAxis("bottom").labelText == "coefficient of animal"
    assert not again.stale and not again.stale_label.isVisibleTo(again)
    assert again.status.text().startswith("Sweep from the workspace: 3 / 3 points")

    reopened.model.set_coefficient(animal, 1.5, final=False)  # what the sweep varies: the current line moves, the sweep holds
    assert not again.stale and again.plot.marker.value() == pytest.approx(1.5)
    reopened.model.set_lambda(0.3, final=False)  # the merge it was computed on changed
    assert again.stale and again.stale_label.isVisibleTo(again) and again.plot.curves["average"].opacity() < 1
    reopened.model.set_lambda(window.model.session.lam, final=False)
    assert not again.stale and again.plot.curves["average"].opacity() == 1
    reopened.model.set_enabled(1 - animal, False)  # an adapter left the merge
    assert again.stale
    reopened.model.undo.undo()
    assert not again.stale
    reopened.model.jobs.cancel()
    reopened.model.jobs.wait(20)


# -- the OSRM tab's status --------------------------------------------------------------------


def test_the_osrm_status_says_a_training_was_cancelled_or_statistics_failed(qtbot, window, tmp_path, monkeypatch):
    panel = window.osrm
    panel.out.setText(str(tmp_path / "trained"))
    panel.steps.setValue(2000)
    assert panel.train_button.isEnabled(), panel.reason.text()
    panel.train()
    assert panel.status.text().startswith("Training 2 adapter(s)")
    qtbot.waitUntil(lambda: (window.model.jobs.current_label or "").startswith("Training"), timeout=10000)
    with qtbot.waitSignal(window.model.jobs.finished, timeout=30000):
        window.model.jobs.cancel()
    assert panel.status.text() == "Training cancelled."

    def broken(names, samples):
        raise OsrmError("colour.csv: simulated unreadable task data")
        yield  # pragma: no cover

    monkeypatch.setattr(window.model.session, "features_job", broken)
    with qtbot.waitSignal(window.model.jobs.finished, timeout=10000):
        panel.compute_statistics()
    assert panel.status.text() == "Statistics failed: colour.csv: simulated unreadable task data"
    wait_idle(qtbot, window)

    # the trade-off study's results are one click away, or the status says how to make them
    monkeypatch.setenv("OSRM_GUI_RESOURCES", str(tmp_path / "resources"))
    assert panel.show_tradeoff() is None and "osrm demo tradeoff --json" in panel.status.text()
    study_file(tmp_path / "resources" / "demo" / "tradeoff.json")
    dialog = panel.show_tradeoff()
    assert dialog is not None and dialog.table.rowCount() == 3
    dialog.close()
    (tmp_path / "resources" / "demo" / "tradeoff.json").write_text("{not json")
    assert panel.show_tradeoff() is None and re.fullmatch(r".*tradeoff\.json: not a file `osrm demo tradeoff --json` writes .*",
                                                          panel.status.text())


# -- the trade-off study's dialog ----------------------------------------------------------------


def study_file(path, settings=(("peft-default", 0.85, 0.90), ("osrm-cov", 0.85, 0.92), ("osrm-cov-k4", 0.83, 0.97)), seeds=2):
    """A study as `osrm demo tradeoff --json` saves it (synthetic runs with every trade-off field)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = []
    for family, single, merged in settings:
        for seed in range(seeds):
            s = single + 0.01 * seed
            curve = {f"{lam:g}": {"a": merged * s * (1 - abs(lam - 0.7)), "b": merged * s} for lam in tradeoff.FINE_LAMBDAS}
            validation = {f"{lam:g}": {"a": 1 - abs(lam - 0.7), "b": 0.5} for lam in tradeoff.FINE_LAMBDAS}
            runs.append(FamilyRun(family, seed, {"a": s, "b": s}, curve, {"a": 0.7, "b": 0.7}, 0.8, [], validation,
                                  {"1": {"a": 0.7, "b": 0.7}}, {"a": 0.7, "b": 0.7}, 0.9, "test", {}))
    save_runs(runs, path, {"command": "osrm demo tradeoff (synthetic)", "families": {"osrm-cov-k4": "budget 4"}})
    return runs


def items_of(plot, kind):
    return [item for item in plot.getPlotItem().items if isinstance(item, kind)]


def test_the_tradeoff_dialog_shows_a_whole_study(qtbot, tmp_path):
    from osrm_gui.gui.dialogs.tradeoff_dialog import TradeoffDialog

    study_file(tmp_path / "tradeoff.json")
    dialog = shown_plot(qtbot, TradeoffDialog(tmp_path / "tradeoff.json"), 1100, 760)
    table = dialog.table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers[:3] == ["setting", "seeds", "single"] and table.rowCount() == 3
    assert "±" in table.item(0, 2).text() and table.item(2, 0).toolTip() == "budget 4"
    assert [p.family for p in dialog.points] == ["peft-default", "osrm-cov", "osrm-cov-k4"]
    assert len(items_of(dialog.plot, pg.ScatterPlotItem)) == 3 and len(items_of(dialog.plot, pg.ErrorBarItem)) == 3
    assert "osrm-cov-k4" in dialog.front
    assert dialog.margins.isVisibleTo(dialog) and dialog.margins.rowCount() == 1
    assert "Does any setting beat peft-default and osrm-cov on both axes? no: no setting beats" in dialog.verdict.text()
    assert all(not dialog.plot.getAxis(name).autoSIPrefix for name in AXES)


CROWDED = (("peft-default", 0.847, 0.889), ("osrm-cov", 0.849, 0.919), ("osrm-cov-pen1", 0.848, 0.921),
           ("osrm-cov-pen10", 0.848, 0.930), ("osrm-cov-pen100", 0.847, 0.950), ("osrm-cov-pen1000", 0.843, 0.944),
           ("osrm-cov-a0.1", 0.826, 0.939), ("osrm-cov-a0.01", 0.822, 0.941), ("osrm-cov-k16", 0.797, 0.956),
           ("osrm-cov-k8", 0.78, 0.95), ("osrm-cov-k4", 0.739, 0.943), ("osrm-cov-k2", 0.71, 0.946), ("osrm-cov-k1", 0.69, 0.947))


@pytest.mark.parametrize("size", [(1100, 760), (900, 640)])
def test_the_names_of_near_settings_do_not_run_into_each_other(qtbot, tmp_path, size):
    from osrm_gui.gui.dialogs.tradeoff_dialog import TradeoffDialog
    from osrm_gui.gui.plots.tradeoff_figure import LABEL_ANCHORS

    study_file(tmp_path / "tradeoff.json", CROWDED, seeds=1)
    dialog = shown_plot(qtbot, TradeoffDialog(tmp_path / "tradeoff.json"), *size)
    labels = items_of(dialog.plot, pg.TextItem)
    # the knob settings by their knob (the hover tip and the table keep the full name)
    assert sorted(label.toPlainText() for label in labels) == sorted(f.removeprefix("osrm-cov-") for f, *_ in CROWDED)

    def rects():
        return [label.mapRectToScene(label.textItem.mapRectToParent(label.textItem.boundingRect())) for label in labels]

    def clashes():
        boxes = rects()
        return [(labels[i].toPlainText(), labels[j].toPlainText()) for i in range(len(boxes)) for j in range(i)
                if boxes[i].intersects(boxes[j])]

    view = dialog.plot.getPlotItem().getViewBox().sceneBoundingRect()
    assert clashes() == [] and all(view.contains(r) for r in rects())
    for label in labels:  # every name beside its point, as the first place would put it: the crowd overlaps
        label.setAnchor(LABEL_ANCHORS[0])
    assert clashes()


@pytest.mark.parametrize("size", [(1024, 700), (800, 600)])
def test_the_plot_caption_keeps_all_its_lines_below_the_plot(qtbot, tmp_path, size):
    """In a small window a splitter gave the plot's wrapped caption room for one line: its
    second line was drawn over the plot's axis title (seen at 1024×700 in a real window)."""
    from osrm_gui.gui.dialogs.tradeoff_dialog import TradeoffDialog

    study_file(tmp_path / "tradeoff.json", CROWDED, seeds=2)
    dialog = shown_plot(qtbot, TradeoffDialog(tmp_path / "tradeoff.json"), *size)
    caption = dialog.plot.parentWidget().caption
    assert caption.heightForWidth(caption.width()) > caption.fontMetrics().height() * 1.5  # it does wrap here
    assert caption.height() >= caption.heightForWidth(caption.width())
    assert caption.geometry().top() > dialog.plot.geometry().bottom()
    assert dialog.plot.height() >= dialog.plot.minimumHeight()


def test_the_tradeoff_dialog_shows_a_partial_study_without_a_made_up_verdict(qtbot, tmp_path):
    from osrm_gui.gui.dialogs.tradeoff_dialog import TradeoffDialog

    study_file(tmp_path / "one-seed.json", seeds=1)  # stopped after the first seed
    dialog = shown_plot(qtbot, TradeoffDialog(tmp_path / "one-seed.json"), 1000, 700)
    assert dialog.table.rowCount() == 3 and "±" not in dialog.table.item(0, 2).text()
    assert len(items_of(dialog.plot, pg.ScatterPlotItem)) == 3 and not items_of(dialog.plot, pg.ErrorBarItem)  # no spread, no bars
    assert "No verdict yet" in dialog.verdict.text() and "one seed" in dialog.verdict.text()
    assert not dialog.margins.isVisibleTo(dialog)
    header = dialog.findChild(QLabel, "tradeoffHeader").text()
    assert "partial study" not in header  # no plan saved beyond the runs: nothing to call missing

    meta = json.loads((tmp_path / "one-seed.json").read_text())
    (tmp_path / "planned.json").write_text(json.dumps({**meta, "meta": {**meta["meta"], "seeds": [0, 1, 2]}}))
    dialog = TradeoffDialog(tmp_path / "planned.json")
    qtbot.addWidget(dialog)
    header = dialog.findChild(QLabel, "tradeoffHeader").text()
    assert "<b>Partial study: 3 of 9 adapter sets measured; not yet: " in header and "peft-default (seeds 1, 2)" in header

    study_file(tmp_path / "no-reference.json", settings=(("osrm-cov-k4", 0.83, 0.97), ("osrm-cov-k8", 0.84, 0.95)))
    dialog = TradeoffDialog(tmp_path / "no-reference.json")
    qtbot.addWidget(dialog)
    assert dialog.table.rowCount() == 2 and "the study has no peft-default or osrm-cov runs" in dialog.verdict.text()

    with pytest.raises(OsrmError, match=r"missing\.json: no such file; make it with `osrm demo tradeoff --json "):
        TradeoffDialog(tmp_path / "missing.json")
    (tmp_path / "cut.json").write_text((tmp_path / "one-seed.json").read_text()[:300])  # cut short while written by hand
    with pytest.raises(OsrmError, match=r"cut\.json: not a file `osrm demo tradeoff --json` writes \(JSONDecodeError"):
        TradeoffDialog(tmp_path / "cut.json")
    grid = {f"{lam:g}": {"a": 0.5, "b": 0.5} for lam in (0, 0.5, 1)}
    save_runs([FamilyRun("peft-default", 0, {"a": 1.0, "b": 1.0}, grid, {"a": 0.5, "b": 0.5}, 0.1, [], grid)],
              tmp_path / "compare.json", {"command": "osrm demo compare"})
    with pytest.raises(OsrmError, match=r"compare\.json: no run in it has the trade-off study's measures"):
        TradeoffDialog(tmp_path / "compare.json")


def test_a_category_label_is_broken_then_shortened_to_fit(qapp):
    from PySide6.QtGui import QFont, QFontMetrics

    from osrm_gui.gui.plots.plot_style import fit_label

    font = QFont()
    metrics = QFontMetrics(font)
    text = "moral-foundation\nalone: moral-foundation"
    whole = max(metrics.horizontalAdvance(line) for line in text.split("\n"))
    assert fit_label(text, whole, font) == text
    broken = fit_label(text, metrics.horizontalAdvance("moral-foundation") + 1, font)
    assert broken == "moral-foundation\nalone:\nmoral-foundation"
    for width in (60, 30, 5):
        fitted = fit_label(text, width, font)
        assert "…" in fitted and all(metrics.horizontalAdvance(line) <= max(width, metrics.horizontalAdvance("…") + 1)
                                     for line in fitted.split("\n"))
