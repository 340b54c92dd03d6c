"""Layouts that fit (offscreen; tests/test_real_window.py checks a real window): sliders that
line up, the drop target lit while a drag hovers, splitters that keep their shares, pages
that scroll, plots and rows of controls that give way in a narrow window."""

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent, QDropEvent
from PySide6.QtWidgets import QPushButton, QScrollArea, QStyle, QStyleOptionSlider, QWidget

from osrm_gui.gui.main_window import LEFT_SHARE
from osrm_gui.gui.plots.heatmap import Heatmap
from osrm_gui.gui.widgets.fitting import FlowLayout, flow
from tests.gui.conftest import wait_idle

LONG_NAME = "a-rather-long-adapter-name-from-a-hub-repository"


def handle_x(slider, panel) -> int:
    """Where the slider's handle is, in the panel's coordinates."""
    option = QStyleOptionSlider()
    slider.initStyleOption(option)
    handle = slider.style().subControlRect(QStyle.CC_Slider, option, QStyle.SC_SliderHandle, slider)
    return slider.mapTo(panel, handle.center()).x()


def test_sliders_of_adapters_line_up_whatever_their_names(qtbot, window):
    window.model.rename_adapter(0, LONG_NAME)
    qtbot.waitUntil(lambda: window.merge.rows[0].label.toolTip() == LONG_NAME)
    panel = window.merge
    rows = [*panel.rows, panel.lam]

    def lefts_and_widths():
        return {row.slider.mapTo(panel, QPoint(0, 0)).x() for row in rows}, {row.slider.width() for row in rows}

    qtbot.waitUntil(lambda: all(len(found) == 1 for found in lefts_and_widths()))  # once the rebuilt rows are laid out
    assert min(lefts_and_widths()[0]) > 0
    assert panel.rows[0].label.text() != LONG_NAME and "…" in panel.rows[0].label.text()  # elided, whole in the tooltip
    for row in panel.rows:
        row.set_value(0.5)
    assert len({handle_x(row.slider, panel) for row in panel.rows}) == 1  # the same value at the same x


def _mime(paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def test_drop_target_is_lit_while_a_drag_hovers(window, tiny_adapters):
    mime = _mime(tiny_adapters)
    enter = QDragEnterEvent(QPoint(100, 100), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    assert window.adapters.drop_count == 2 and window.adapters.drop_mark.isVisible()
    assert "Release to add 2 adapters" in window.adapters.hint.text() and window.adapters.hint.isVisible()
    window.dragLeaveEvent(QDragLeaveEvent())
    assert window.adapters.drop_count == 0 and not window.adapters.drop_mark.isVisible()
    assert not window.adapters.hint.isVisible()  # adapters are loaded: no hint


def test_a_dropped_file_is_not_an_adapter_folder(qtbot, window, tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_text("not an adapter")
    mime = _mime([plain])  # kept: the events only point to it
    window.dragEnterEvent(QDragEnterEvent(QPoint(100, 100), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))
    window.dropEvent(QDropEvent(QPointF(100, 100), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))
    assert not window.adapters.drop_mark.isVisible()
    qtbot.waitUntil(lambda: "not an adapter folder" in window.adapters.refusals.text(), timeout=10000)
    assert "not found" not in window.adapters.refusals.text()
    wait_idle(qtbot, window)


def test_main_split_keeps_its_shares_on_resize_until_the_user_drags_it(qtbot, window):
    splitter = window.splitter
    for width in (1280, 1024):
        window.resize(width, 700)
        qtbot.waitUntil(lambda: abs(sum(splitter.sizes()) + splitter.handleWidth() - window.centralWidget().width()) <= 2)
        left, right = splitter.sizes()
        assert left / (left + right) == pytest.approx(LEFT_SHARE, abs=0.02)
    splitter.setSizes([300, sum(splitter.sizes()) - 300])
    splitter.splitterMoved.emit(300, 1)  # what a drag of the handle says
    share = splitter.shares[0]
    window.resize(1280, 800)
    qtbot.waitUntil(lambda: splitter.sizes()[0] > 300)
    assert splitter.sizes()[0] / sum(splitter.sizes()) == pytest.approx(share, abs=0.02)


def test_every_page_scrolls_instead_of_setting_the_window_minimum(window):
    tabs = window.tabs
    for i in range(tabs.count()):
        page = tabs.widget(i)
        assert isinstance(page.parentWidget().parentWidget().parentWidget(), QScrollArea)
        tabs.setCurrentWidget(page)
        assert tabs.currentIndex() == i and tabs.currentWidget() is page and tabs.indexOf(page) == i
    least = window.minimumSizeHint()
    assert least.width() <= 1024 and least.height() <= 700


def test_a_long_heatmap_title_wraps_inside_the_plot(qtbot):
    heat = Heatmap()
    qtbot.addWidget(heat)
    heat.resize(300, 300)
    heat.show()
    title = "Input subspace overlap (A) — base_model.model.bert.encoder.layer.11.attention.self.query"
    heat.set_matrix(np.eye(3), ["a", "b", "c"], ["x", "y", "z"], title=title)
    qtbot.waitUntil(lambda: heat.plotItem.vb.width() > 50)
    assert heat.plotItem.titleLabel.text == title  # whole, on several lines
    assert heat.plotItem.sceneBoundingRect().width() <= heat.viewport().width() + 1
    assert heat.minimumSizeHint().width() < 300


def test_a_row_of_controls_wraps_when_narrow(qtbot):
    host = QWidget()
    qtbot.addWidget(host)
    buttons = [QPushButton(f"button number {i}") for i in range(6)]
    row = flow(*buttons)
    host.setLayout(row)
    assert isinstance(row, FlowLayout)
    one_line = row.heightForWidth(row.sizeHint().width())
    assert row.heightForWidth(row.minimumSize().width()) >= 5 * one_line  # one a line
    assert row.minimumSize().width() == max(b.sizeHint().width() for b in buttons)
