"""2-D and multi-method sweeps in the app, the run history table, the Pareto view, resume."""

import csv

import numpy as np
import pytest
from PySide6.QtCore import Qt

from osrm_gui.core.progress import run_to_end
from osrm_gui.core.explore.sweep import Axis
from tests.gui.conftest import set_axis, wait_idle


def tick_method(panel, name):
    panel.method_actions[name].setChecked(True)


def table_column(table, header):
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    column = headers.index(header)
    return [table.item(r, column).text() for r in range(table.rowCount())]


def test_grid_for_two_methods_fills_heatmaps_and_the_history(qtbot, window, tmp_path):
    panel = window.sweeps
    set_axis(panel.first, "colour", 0.0, 1.0, 2)
    set_axis(panel.second, "animal", 0.0, 1.0, 3)
    tick_method(panel, "ties")
    before = window.history.table.rowCount()
    with qtbot.waitSignal(window.model.sweepFinished, timeout=90000) as finished:
        qtbot.mouseClick(panel.run, Qt.LeftButton)
    result = finished.args[0]
    assert panel.views.currentWidget() is panel.heatmap
    assert [panel.grid_method.itemText(i) for i in range(panel.grid_method.count())] == ["task_arithmetic", "ties"]
    shown = panel.heatmap.matrix()
    assert shown.shape == (2, 3) and not np.isnan(shown).any()
    # the cell (colour=1, animal=0.5) of TIES' 'animal' map is the score of that merge computed on its own
    panel.grid_method.setCurrentText("ties")
    panel.quantity.setCurrentText("animal")
    session = window.model.session
    session.method, session.params = "ties", {}
    session.slots[0].coefficient, session.slots[1].coefficient = 1.0, 0.5
    alone = run_to_end(session.workspace().score(session.spec(), limit=session.preview_limit))
    assert panel.heatmap.matrix()[1, 1] == pytest.approx(alone["animal"]["metric"])
    # every point is in the history table; (1, 1) for task arithmetic is the opening preview's, reused
    wait_idle(qtbot, window)
    assert [p.reused for p in result.points].count(True) == 1
    assert window.history.table.rowCount() == before + 11
    assert table_column(window.history.table, "method").count("ties") == 6
    panel.export_csv(str(tmp_path / "grid.csv"))
    rows = list(csv.DictReader(open(tmp_path / "grid.csv")))
    assert len(rows) == 12 and rows[0]["method"] == "task_arithmetic"


def test_one_axis_several_methods_draws_a_line_per_method(qtbot, window):
    panel = window.sweeps
    set_axis(panel.first, "lambda", 0.0, 1.0, 3)
    tick_method(panel, "linear")
    with qtbot.waitSignal(window.model.sweepFinished, timeout=60000):
        panel.start_sweep()
    data = panel.plot.data()
    assert set(data) == {"task_arithmetic", "linear"}
    assert data["linear"][0] == [0.0, 0.5, 1.0]
    panel.quantity.setCurrentText("colour")
    assert panel.plot.getAxis("left").labelText == "colour"


def test_a_cancelled_sweep_resumes_from_the_history(qtbot, window):
    panel = window.sweeps
    set_axis(panel.first, "lambda", 0.0, 1.0, 41)
    seen = []
    window.model.sweepPoint.connect(seen.append)
    panel.start_sweep()
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=30000)
    window.model.jobs.cancel()
    wait_idle(qtbot, window)
    done = len(seen)
    assert done < 41
    seen.clear()
    with qtbot.waitSignal(window.model.sweepFinished, timeout=120000):
        panel.start_sweep()
    # the points already scored come first, both times: λ = 1 (the merge the opening preview scored), then
    # those the cancelled run scored
    assert [p.reused for p in seen] == [True] * done + [False] * (41 - done)
    assert 1.0 in [p.value for p in seen[:done]]


def test_a_history_point_loads_into_the_merge_and_undo_restores(qtbot, window):
    with qtbot.waitSignal(window.model.sweepFinished, timeout=60000):
        window.model.sweep([Axis("animal", (0.25,))], ["ties"])
    wait_idle(qtbot, window)
    history = window.history
    rows = [r for r in range(history.table.rowCount()) if history.points[history.table.item(r, 0).data(Qt.UserRole)].method == "ties"]
    history.table.selectRow(rows[0])
    assert history.load.isEnabled()
    qtbot.mouseClick(history.load, Qt.LeftButton)
    assert window.merge.method.currentData() == "ties"
    assert window.merge.rows[1].spin.value() == pytest.approx(0.25)
    window.model.undo.undo()
    assert window.merge.method.currentData() == "task_arithmetic"
    assert window.merge.rows[1].spin.value() == pytest.approx(1.0)
    wait_idle(qtbot, window)


def test_pareto_front_and_history_next_to_a_saved_workspace(qtbot, window, tmp_path):
    from osrm_gui.gui.app import build_window, parse_args

    with qtbot.waitSignal(window.model.sweepFinished, timeout=60000):
        window.model.sweep([Axis("colour", (0.0, 0.5, 1.0))])
    wait_idle(qtbot, window)
    history = window.history
    assert (history.x.currentText(), history.y.currentText()) == ("colour", "animal")  # two tasks by default
    xy = [(p.scores["colour"], p.scores["animal"]) for p in history.points]
    front = history.plot.front
    assert front and all(not any(o[0] >= xy[i][0] and o[1] >= xy[i][1] and o != xy[i] for o in xy) for i in front)
    count = history.table.rowCount()
    path = tmp_path / "ws" / "saved.osrm.json"
    window.model.save_workspace(str(path))
    assert (tmp_path / "ws" / "saved.osrm.history.sqlite").is_file()
    reopened = build_window(parse_args(["--workspace", str(path)]))
    qtbot.addWidget(reopened)
    wait_idle(qtbot, reopened)
    assert reopened.history.table.rowCount() >= count  # what was recorded survives the reopen
    assert str(tmp_path / "ws" / "saved.osrm.history.sqlite") in reopened.history.summary.text()


def test_the_status_bar_counts_a_sweeps_points_not_each_points_evaluation(qtbot, window):
    panel = window.sweeps
    set_axis(panel.first, "lambda", 0.0, 1.0, 4)
    formats = []
    window.model.jobs.progress.connect(lambda *_: formats.append(window.progress.format()))
    with qtbot.waitSignal(window.model.sweepFinished, timeout=120000):
        panel.start_sweep()
    assert formats and all(f.startswith("sweep ") for f in formats), sorted(set(formats))
