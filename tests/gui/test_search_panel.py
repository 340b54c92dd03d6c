"""Automatic ▸ Search on the app: trials stream into the plot and the best-trials table, the
importances fill after the run, the best point loads into the merge (undoable), the study resumes
from its storage next to the run history, cancelling stops, and bad settings are refused in one line."""

from __future__ import annotations

import math

from PySide6.QtCore import Qt

from osrm_gui.core.explore.search import TrialEvent, default_storage_path
from osrm_gui.gui.widgets.search_panel import JOB_LABEL, SearchPanel
from tests.gui.conftest import wait_idle


def panel_of(window) -> SearchPanel:
    window.tabs.setCurrentWidget(window.automatic)
    window.automatic.setCurrentWidget(window.automatic.search)
    return window.automatic.search


def run(qtbot, window, panel, outcome="done"):
    with qtbot.waitSignal(window.model.jobs.finished, timeout=120000) as finished:
        qtbot.mouseClick(panel.run_button, Qt.LeftButton)
    assert finished.args == [JOB_LABEL, outcome]
    wait_idle(qtbot, window)


def test_trials_stream_in_the_best_applies_undoably_and_the_study_resumes(qtbot, window, tmp_path):
    panel = panel_of(window)
    assert panel.selected_methods() == ["task_arithmetic", "ties"] and panel.methods.text() == "2 methods"
    panel.trials.setValue(5)
    panel.chunk.setValue(6)
    streamed, plotted = [], []
    original = panel._event

    def seen(event):
        original(event)
        if isinstance(event, TrialEvent):
            streamed.append(event)
            plotted.append(len(panel.plot.points("complete")) + len(panel.plot.points("pruned")))

    panel._event = seen
    session = window.model.session
    before = (session.method, dict(session.params), session.lam, [s.coefficient for s in session.active()])
    assert not panel.apply_button.isEnabled()
    run(qtbot, window, panel)

    result = panel.result
    assert [e.trial.number for e in streamed] == [0, 1, 2, 3, 4] and plotted == [1, 2, 3, 4, 5]  # one more point per trial, live
    assert len(result.trials) == 5
    # every trial at its value: complete in colour, pruned grey at its last reported value
    for state in ("complete", "pruned"):
        assert sorted(panel.plot.points(state)) == sorted((t.number, t.values[0]) for t in result.trials if t.state == state)
    # the best-so-far line: the running maximum of the complete trials, from the first one
    best, expected = -math.inf, []
    for t in result.trials:
        if t.state == "complete":
            best = max(best, t.values[0])
        if best > -math.inf:
            expected.append((t.number, best))
    x, y = panel.plot.best_line.getData()
    assert list(zip(map(int, x), y)) == expected and expected[-1][1] == result.best.values[0]
    # the table: complete trials, best first
    rows = panel.shown_rows()
    complete = sorted((t for t in result.trials if t.state == "complete"), key=lambda t: -t.values[0])
    assert [int(r[0]) for r in rows] == [t.number for t in complete] and rows[0][0] == str(result.best.number)
    importances = result.importances()  # computed again, here
    assert importances and panel.importance.values == importances
    assert list(panel.importance.bars.opts["width"]) == sorted(importances.values(), reverse=True)
    assert list(panel.importance.values) == sorted(importances, key=lambda k: -importances[k])  # largest on top
    assert f"Best: trial {result.best.number}" in panel.status.text() and "test" in panel.status.text()

    # apply best: method, parameters, λ and coefficients; the merge panel shows them; undo restores
    spec = result.best_spec
    qtbot.mouseClick(panel.apply_button, Qt.LeftButton)
    wait_idle(qtbot, window)
    assert (session.method, session.params, session.lam) == (spec.method, spec.params, spec.lam)
    assert [s.coefficient for s in session.active()] == list(spec.coefficients)
    assert window.merge.method.currentData() == spec.method and math.isclose(window.merge.lam.spin.value(), round(spec.lam, 2))
    window.model.undo.undo()
    wait_idle(qtbot, window)
    assert (session.method, session.params, session.lam, [s.coefficient for s in session.active()]) == before

    # the study lives next to the run history: the same search again continues it
    assert default_storage_path(window.model.run_history().path).is_file()
    panel.trials.setValue(2)
    run(qtbot, window, panel)
    assert panel.result.study_name == result.study_name and [t.number for t in panel.result.trials] == list(range(7))
    assert len(panel.plot.trials) == 7
    panel.export_trials_csv(str(tmp_path / "trials.csv"))
    lines = (tmp_path / "trials.csv").read_text().splitlines()
    assert lines[0].startswith("trial,state,normalised mean") and len(lines) == 8


def test_cancel_stops_the_search_and_bad_settings_are_refused_in_one_line(qtbot, window):
    panel = panel_of(window)
    failures = []
    window.model.jobs.failed.connect(lambda *args: failures.append(args))
    panel.trials.setValue(10_000)
    panel.chunk.setValue(4)
    with qtbot.waitSignal(window.model.jobs.finished, timeout=120000) as finished:
        qtbot.mouseClick(panel.run_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: len(panel.plot.trials) >= 1, timeout=60000)
        qtbot.mouseClick(panel.cancel_button, Qt.LeftButton)
    assert finished.args == [JOB_LABEL, "cancelled"]
    wait_idle(qtbot, window)
    assert panel.status.text().startswith(f"Cancelled after {len(panel.plot.trials)} trials")
    assert panel.result is None and not panel.apply_button.isEnabled()

    panel.sampler.setCurrentIndex(panel.sampler.findData("cmaes"))  # CMA-ES cannot choose among two methods
    run(qtbot, window, panel)
    assert "CMA-ES" in panel.status.text() and "\n" not in panel.status.text()
    assert window.statusBar().currentMessage() == panel.status.text()
    panel.sampler.setCurrentIndex(panel.sampler.findData("tpe"))
    panel.trials.setValue(0)  # no trial limit and no time budget
    run(qtbot, window, panel)
    assert "budget" in panel.status.text() and not failures

    # a coefficient per layer group: the merge panel holds one per adapter, so the best is not applied
    panel.trials.setValue(1)
    panel.groups.setValue(2)
    for name, action in panel.method_actions.items():
        action.setChecked(name == "task_arithmetic")
    assert panel.methods.text() == "task_arithmetic"
    run(qtbot, window, panel)
    assert panel.result.best_point.group_coefficients is not None and panel.apply_button.isEnabled()
    method = window.model.session.method, window.model.undo.count()
    qtbot.mouseClick(panel.apply_button, Qt.LeftButton)
    assert "layer group" in panel.status.text() and (window.model.session.method, window.model.undo.count()) == method
