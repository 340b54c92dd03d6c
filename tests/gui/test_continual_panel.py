"""The Continual tab on the app: OPCM over random orders, a line per task plus the average,
points streaming in as they are scored, and cancelling."""

from __future__ import annotations

import math

from PySide6.QtCore import Qt

from osrm_gui.core.explore.continual import ArrivalScores
from osrm_gui.gui.widgets.continual_panel import JOB_LABEL, ContinualPanel
from tests.gui.conftest import wait_idle


def panel_of(window) -> ContinualPanel:
    panel = window.findChild(ContinualPanel)
    window.tabs.setCurrentWidget(panel)
    assert window.tabs.tabText(window.tabs.currentIndex()) == "Continual"
    return panel


def test_two_random_orders_draw_a_line_per_task_and_the_average(qtbot, window):
    panel = panel_of(window)
    panel.count.setValue(2)
    panel.limit.setValue(12)
    streamed = []
    shown_while_running = []

    def seen(event):
        if isinstance(event, ArrivalScores):
            streamed.append(event)
            shown_while_running.append(sum(len(x) for x, _ in panel.plot.data().values()))

    original = panel._event
    panel._event = lambda event: (original(event), seen(event))  # the job calls the panel's handler
    with qtbot.waitSignal(window.model.jobs.finished, timeout=60000) as finished:
        qtbot.mouseClick(panel.run_button, Qt.LeftButton)
    assert finished.args == [JOB_LABEL, "done"]
    wait_idle(qtbot, window)

    result = panel.result
    tasks = [s.task.name for s in window.model.session.active()]
    assert sorted(result.tasks) == sorted(tasks) and len(result.orders) == 2
    assert sorted(map(tuple, result.orders)) == [(0, 1), (1, 0)]  # 2 adapters: both orders
    data = panel.plot.data()
    assert set(data) == {*tasks, "average"}
    # each task arrives first in one order and second in the other: a point at both steps
    for name in [*tasks, "average"]:
        steps, means = data[name]
        assert steps == [1.0, 2.0] and all(0.0 <= m <= 1.0 for m in means)
    # step 2 averages both orders' scores; step 1 of a task has a single order (no spread)
    errors = panel.plot.errors()
    for name in tasks:
        assert errors[name][0] == 0.0 and not math.isnan(errors[name][1])
    final = [s for s in streamed if s.step == 2]
    expected = sum(sum(s.scores.values()) / len(s.scores) for s in final) / len(final)
    assert math.isclose(data["average"][1][-1], expected)
    # the points streamed in: the plot grew with each scored step, before the job returned
    assert len(streamed) == 4 and shown_while_running == sorted(shown_while_running) and shown_while_running[0] < shown_while_running[-1]
    assert "average" in panel.status.text() and "2 orders" in panel.status.text()


def test_current_order_and_cancel(qtbot, window):
    panel = panel_of(window)
    panel.source.setCurrentIndex(panel.source.findData("current"))
    assert not panel.count.isEnabled()
    panel.limit.setValue(12)
    with qtbot.waitSignal(window.model.jobs.finished, timeout=60000) as finished:
        qtbot.mouseClick(panel.run_button, Qt.LeftButton)
        assert panel.cancel_button.isEnabled()
        qtbot.mouseClick(panel.cancel_button, Qt.LeftButton)
    assert finished.args == [JOB_LABEL, "cancelled"]
    wait_idle(qtbot, window)
    assert not panel.cancel_button.isEnabled()
    assert panel.status.text().startswith("Cancelled after")
    assert panel.result.orders == [[0, 1]]
    # run again to the end: one order, no spread
    with qtbot.waitSignal(window.model.jobs.finished, timeout=60000) as finished:
        qtbot.mouseClick(panel.run_button, Qt.LeftButton)
    assert finished.args == [JOB_LABEL, "done"]
    wait_idle(qtbot, window)
    data = panel.plot.data()
    first = window.model.session.active()[0].task.name
    second = window.model.session.active()[1].task.name
    assert data[first][0] == [1.0, 2.0] and data[second][0] == [2.0] and data["average"][0] == [1.0, 2.0]
    assert all(e == 0.0 for values in panel.plot.errors().values() for e in values)


def test_more_orders_than_exist_cannot_be_asked(qtbot, window):
    panel = panel_of(window)
    assert panel.count.maximum() == 2  # 2 adapters have 2 orders
