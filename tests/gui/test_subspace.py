"""The heatmap widget on its own, and the subspace-analysis panel on the app's model."""

import csv
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from osrm_gui.core.analysis import pairwise as analysis
from osrm_gui.core.progress import run_to_end
from osrm_gui.gui.plots.heatmap import NAN_COLOUR, Heatmap
from osrm_gui.gui.state import SessionModel
from osrm_gui.core.analysis.pairwise import off_diagonal_mean
from osrm_gui.gui.widgets.subspace_panel import STALE_TEXT, SubspacePanel
from tests.gui.conftest import wait_idle

MATRIX = np.array([[1.0, 0.25], [np.nan, 0.5], [0.75, 0.0]])


@pytest.fixture()
def heatmap(qtbot):
    heat = Heatmap()
    qtbot.addWidget(heat)
    heat.resize(500, 400)
    heat.show()
    heat.set_matrix(MATRIX, ["first", "second", "third"], ["left", "right"], title="demo", levels=(0, 1))
    qtbot.waitUntil(lambda: heat.plotItem.vb.width() > 100)
    return heat


def widget_point(heat, i, j, dx=0.5, dy=0.5):
    scene = heat.plotItem.vb.mapViewToScene(QPointF(j + dx, i + dy))
    return heat.mapFromScene(scene), scene


def test_heatmap_shows_the_matrix_with_its_labels_top_down(heatmap):
    np.testing.assert_array_equal(heatmap.matrix(), MATRIX)
    assert heatmap.cell_value(2, 0) == 0.75 and math.isnan(heatmap.cell_value(1, 0))
    assert heatmap.tick_labels("left") == ["first", "second", "third"]
    assert heatmap.tick_labels("bottom") == ["left", "right"]
    assert heatmap.cell_texts() == [["1.00", "0.25"], ["–", "0.50"], ["0.75", "0.00"]]
    assert widget_point(heatmap, 0, 0)[0].y() < widget_point(heatmap, 2, 0)[0].y()  # row 0 on top
    assert heatmap.plotItem.titleLabel.text == "demo"


def test_heatmap_nan_cells_are_grey(heatmap):
    image = heatmap.grab().toImage()
    corner = widget_point(heatmap, 1, 0, dx=0.2, dy=0.2)[0]  # away from the number in the middle
    ratio = heatmap.devicePixelRatioF()
    colour = image.pixelColor(int(corner.x() * ratio), int(corner.y() * ratio))
    assert (colour.red(), colour.green(), colour.blue()) == NAN_COLOUR
    other = widget_point(heatmap, 0, 0, dx=0.2, dy=0.2)[0]
    assert image.pixelColor(int(other.x() * ratio), int(other.y() * ratio)).getRgb()[:3] != NAN_COLOUR


def test_heatmap_hover_reads_out_the_cell(heatmap):
    heatmap.scene().sigMouseMoved.emit(widget_point(heatmap, 2, 1)[1])
    assert heatmap.readout_text() == "third × right\n0"
    heatmap.scene().sigMouseMoved.emit(widget_point(heatmap, 1, 0)[1])
    assert heatmap.readout_text() == "second × left\nno value (NaN)"
    heatmap.scene().sigMouseMoved.emit(QPointF(-50, -50))
    assert heatmap.readout_text() == ""


def test_heatmap_elides_long_labels_skips_numbers_of_big_matrices_and_checks_shapes(heatmap):
    long = "encoder.layer.11.attention.self.query-with-a-long-tail"
    heatmap.set_matrix(np.arange(90.0).reshape(9, 10), [long] + [f"r{i}" for i in range(8)], [f"c{j}" for j in range(10)])
    shown = heatmap.tick_labels("left")[0]
    assert "…" in shown and len(shown) < len(long)
    assert heatmap.labels()[0][0] == long and heatmap.cell_texts() == []
    heatmap.show_readout(0, 3)
    assert heatmap.readout_text() == f"{long} × c3\n3"
    with pytest.raises(ValueError, match="row and column labels"):
        heatmap.set_matrix(np.zeros((2, 2)), ["a"], ["b", "c"])
    heatmap.clear_matrix()
    assert heatmap.matrix().shape == (0, 0) and heatmap.tick_labels("left") == [] and heatmap.cell_texts() == []


def test_heatmap_exports_png_svg_and_csv(heatmap, tmp_path):
    heatmap.export_image(str(tmp_path / "h.png"))
    heatmap.export_image(str(tmp_path / "h.svg"))
    heatmap.export_csv(str(tmp_path / "h.csv"))
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "h.png").stat().st_size > 1000
    assert ET.parse(tmp_path / "h.svg").getroot().tag.endswith("svg")
    rows = list(csv.reader((tmp_path / "h.csv").open()))
    assert rows[0] == ["", "left", "right"] and [r[0] for r in rows[1:]] == ["first", "second", "third"]
    np.testing.assert_array_equal(np.array([[float(v) for v in r[1:]] for r in rows[1:]]), MATRIX)


# -- the panel -----------------------------------------------------------------------------
def test_panel_controls_without_adapters(qtbot):
    panel = SubspacePanel(SessionModel())
    qtbot.addWidget(panel)
    assert [panel.metric_box.itemData(i) for i in range(panel.metric_box.count())] == list(analysis.METRICS)
    assert panel.metric_box.itemText(0) == analysis.METRICS["row_overlap"].label
    assert panel.metric_box.itemData(0, Qt.ToolTipRole) == analysis.METRICS["row_overlap"].description
    assert not panel.density.isEnabled()
    panel.metric_box.setCurrentIndex(panel.metric_box.findData("sign_conflict"))
    assert panel.density.isEnabled()
    panel.compute()
    assert panel.summary.text() == "Enable at least two adapters to compare them."
    assert not panel.save_csv_button.isEnabled()


@pytest.fixture()
def panel(qtbot, window):
    panel = SubspacePanel(window.model)
    qtbot.addWidget(panel)
    panel.resize(1000, 500)
    panel.show()
    return panel


def compute(qtbot, window, panel, metric):
    panel.metric_box.setCurrentIndex(panel.metric_box.findData(metric))
    panel.compute()
    wait_idle(qtbot, window)
    assert panel.result_metric == metric, panel.summary.text()


def test_row_overlap_heatmap_layers_depth_plot_and_exports(qtbot, window, panel, tmp_path):
    compute(qtbot, window, panel, "row_overlap")
    adapters = [s.adapter for s in window.model.session.active()]
    expected = analysis.pairwise(adapters, "row_overlap")
    shown = panel.heatmap.matrix()
    np.testing.assert_allclose(np.diag(shown), 1.0)
    np.testing.assert_allclose(shown, analysis.aggregate(expected))
    assert panel.heatmap.labels() == (["colour", "animal"], ["colour", "animal"])
    assert panel.heatmap.plotItem.getAxis("bottom").labelText == "adapter j"
    assert panel.heatmap.cell_texts()[0][0] == "1.00"

    layers = [panel.layer_box.itemText(i) for i in range(panel.layer_box.count())]
    assert layers == ["all layers (mean)", "all layers (max)", "query (mean)", "value (mean)", *expected]
    panel.layer_box.setCurrentIndex(1)
    np.testing.assert_allclose(panel.heatmap.matrix(), analysis.aggregate(expected, "max"))
    panel.layer_box.setCurrentIndex(3)
    np.testing.assert_allclose(panel.heatmap.matrix(), analysis.by_layer_type(expected)["value"])
    one = list(expected)[1]
    panel.layer_box.setCurrentIndex(panel.layer_box.findText(one))
    np.testing.assert_allclose(panel.heatmap.matrix(), expected[one])
    assert one in panel.heatmap.plotItem.titleLabel.text

    lines = panel.depth.data()
    assert set(lines) == {"query", "value"}
    query = sorted(n for n in expected if n.endswith("query"))
    assert lines["query"][0] == [0.0, 1.0]
    assert lines["query"][1] == pytest.approx([off_diagonal_mean(expected[n]) for n in query])
    assert set(panel.depth.fidelity_data()) == {"query", "value"}  # task arithmetic: every layer merged
    mean = np.mean([off_diagonal_mean(m) for m in expected.values()])
    assert f"off-diagonal mean over 4 layers = {mean:.4g}" in panel.summary.text()
    assert not panel.stale and panel.stale_label.isHidden()

    panel.heatmap.export_image(str(tmp_path / "h.svg"))
    panel.depth.export_image(str(tmp_path / "d.png"))
    panel.depth.export_image(str(tmp_path / "d.svg"))
    panel.export_csv(str(tmp_path / "all.csv"))
    assert all((tmp_path / name).stat().st_size > 500 for name in ("h.svg", "d.png", "d.svg"))
    rows = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert len(rows) == 4 * 2 * 2 and list(rows[0]) == ["layer", "metric", "adapter_i", "adapter_j", "value"]
    assert float(next(r for r in rows if r["layer"] == one and r["adapter_i"] == "colour" and r["adapter_j"] == "animal")["value"]) == \
        pytest.approx(expected[one][0, 1])


def test_interference_from_feature_statistics(qtbot, window, panel):
    compute(qtbot, window, panel, "interference")
    session = window.model.session
    grams = run_to_end(session.workspace().adapter_grams())
    expected = analysis.aggregate(analysis.interference([s.adapter for s in session.active()], grams))
    np.testing.assert_allclose(panel.heatmap.matrix(), expected)
    np.testing.assert_allclose(np.diag(panel.heatmap.matrix()), 1.0)
    assert panel.heatmap.plotItem.getAxis("left").labelText == "adapter i (its ΔW)"
    assert panel.heatmap.plotItem.getAxis("bottom").labelText == "task j (its inputs)"
    assert panel.summary.text().startswith("Interference: off-diagonal mean over 4 layers")


def test_results_go_stale_and_failures_are_shown(qtbot, window, panel):
    compute(qtbot, window, panel, "cosine")
    assert not panel.stale
    window.model.set_coefficient(0, 0.5)
    assert panel.stale and not panel.stale_label.isHidden() and panel.stale_label.text() == STALE_TEXT
    wait_idle(qtbot, window)
    compute(qtbot, window, panel, "cosine")
    assert not panel.stale and panel.stale_label.isHidden()
    window.model.slots[1].task = None  # as if its data had moved away
    panel.metric_box.setCurrentIndex(panel.metric_box.findData("interference"))
    panel.compute()
    wait_idle(qtbot, window)
    assert panel.summary.text() == "Analysis failed: Interference needs every adapter's task data; pair data with animal"
    assert panel.result_metric == "cosine"  # the last good result stays
