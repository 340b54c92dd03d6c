"""Automatic ▸ AdaMerging on the app: entropy and validation curves and the λ heatmap fill as steps
arrive; a task-wise result loads into the merge (undoable) and exports; cancelling stops; bad
settings are refused in one line."""

from __future__ import annotations

import json
import math

import numpy as np
from PySide6.QtCore import QPoint, Qt

from osrm_gui.core.explore.adamerging import AdaMergingStep
from osrm_gui.gui.plots.adamerging_plot import TOTAL, VALIDATION
from osrm_gui.gui.widgets.adamerging_panel import JOB_LABEL, AdaMergingPanel
from tests.conftest import make_adapter
from tests.gui.conftest import wait_idle


def panel_of(window) -> AdaMergingPanel:
    window.tabs.setCurrentWidget(window.automatic)
    window.automatic.setCurrentWidget(window.automatic.adamerging)
    assert window.tabs.tabText(window.tabs.currentIndex()) == "Automatic"
    return window.automatic.adamerging


def run(qtbot, window, panel, outcome="done"):
    with qtbot.waitSignal(window.model.jobs.finished, timeout=60000) as finished:
        qtbot.mouseClick(panel.run_button, Qt.LeftButton)
    assert finished.args == [JOB_LABEL, outcome]
    wait_idle(qtbot, window)


def test_task_wise_run_streams_curves_and_heatmap_then_applies_undoably_and_exports(qtbot, window, tmp_path):
    panel = panel_of(window)
    panel.steps.setValue(5)
    panel.limit.setValue(24)
    panel.lr.setValue(0.05)
    streamed, shown = [], []
    original = panel._event

    def seen(event):
        original(event)
        if isinstance(event, AdaMergingStep):
            streamed.append(event)
            shown.append((len(panel.curves.data()[TOTAL][0]), panel.heatmap.matrix().copy()))

    panel._event = seen
    session = window.model.session
    before = (session.method, session.lam, [s.coefficient for s in session.active()])
    assert not panel.apply_button.isEnabled() and not panel.export_button.isEnabled()
    run(qtbot, window, panel)

    result = panel.result
    tasks = [s.task.name for s in session.active()]
    assert result.tasks == tasks and result.mode == "task" and len(result.history) == 5
    # the curves: one point per step as it arrived, the total the sum of the tasks' lines
    assert [n for n, _ in shown] == [1, 2, 3, 4, 5]
    data = panel.curves.data()
    assert data[TOTAL] == ([1.0, 2.0, 3.0, 4.0, 5.0], [e.entropy for e in streamed])
    for k in range(5):
        assert math.isclose(sum(data[t][1][k] for t in tasks), data[TOTAL][1][k], rel_tol=1e-9)
    # steps // 10 = 0 → validation scored every step, each point the mean of the tasks' metrics
    assert data[VALIDATION][1] == [e.validation for e in streamed] and all(0 <= v <= 1 for v in data[VALIDATION][1])
    # the heatmap followed λ: after each step it showed that step's coefficients (one column, task-wise)
    for (_, matrix), event in zip(shown, streamed):
        assert np.allclose(matrix[:, 0], np.nanmean(np.array(event.coefficients), axis=1))
    assert panel.heatmap.labels() == (tasks, ["all layers"])
    learned = panel.heatmap.matrix()[:, 0]
    assert np.allclose(learned, result.merged.spec.coefficients) and not np.allclose(learned, 0.3)  # λ moved from its start
    assert "entropy" in panel.status.text() and "5 steps" in panel.status.text()

    # apply as merge: concat at the learned λ, shown in the merge panel; undo restores the merge
    assert panel.apply_button.isEnabled()
    qtbot.mouseClick(panel.apply_button, Qt.LeftButton)
    wait_idle(qtbot, window)
    assert session.method == "concat" and session.lam == 1.0
    assert np.allclose([s.coefficient for s in session.active()], learned)
    assert window.merge.method.currentData() == "concat"
    assert math.isclose(window.merge.rows[0].spin.value(), round(learned[0], 2))
    window.model.undo.undo()
    wait_idle(qtbot, window)
    assert (session.method, session.lam, [s.coefficient for s in session.active()]) == before

    # export as a recipe through the export dialog: concat with the learned coefficients
    dialog = panel.export_dialog()
    recipe = next(b for b in dialog.group.buttons() if b.property("kind") == "recipe")
    assert recipe.isEnabled()
    recipe.setChecked(True)
    dialog.path.setText(str(tmp_path / "ada.recipe.json"))
    with qtbot.waitSignal(window.model.jobs.finished, timeout=60000) as finished:
        qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
    assert finished.args[1] == "done"
    written = json.loads((tmp_path / "ada.recipe.json").read_text())
    assert "ada.recipe.json" in dialog.status.text()
    assert written["merge"]["method"] == "concat" and np.allclose(written["merge"]["coefficients"], learned)
    dialog.close()

    panel.export_curves_csv(str(tmp_path / "curves.csv"))
    panel.export_coefficients_csv(str(tmp_path / "lambda.csv"))
    lines = (tmp_path / "curves.csv").read_text().splitlines()
    assert lines[0].startswith("step,") and len(lines) == 6
    assert (tmp_path / "lambda.csv").read_text().splitlines()[0] == ",all layers"


def test_layer_wise_plus_streams_blocks_then_cancel_stops_it(qtbot, window):
    panel = panel_of(window)
    panel.mode.setCurrentIndex(panel.mode.findData("layer"))
    qtbot.mouseClick(panel.plus, Qt.LeftButton, pos=QPoint(6, panel.plus.height() // 2))  # on the box
    assert panel.plus.isChecked() and panel.view.isVisibleTo(panel)
    panel.steps.setValue(10_000)
    panel.limit.setValue(16)
    panel.show_validation.setChecked(False)
    with qtbot.waitSignal(window.model.jobs.finished, timeout=60000) as finished:
        qtbot.mouseClick(panel.run_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: len(panel.curves.steps) >= 2, timeout=30000)
        assert panel.cancel_button.isEnabled()
        qtbot.mouseClick(panel.cancel_button, Qt.LeftButton)
    assert finished.args == [JOB_LABEL, "cancelled"]
    wait_idle(qtbot, window)
    steps = len(panel.curves.steps)
    assert 2 <= steps < 10_000 and panel.status.text() == f"Cancelled after {steps} steps; nothing to apply or export."
    assert panel.result is None and not panel.apply_button.isEnabled() and not panel.export_button.isEnabled()
    assert panel.curves.data()[VALIDATION] == ([], [])  # not asked for
    # the tiny BERT's two blocks, each λ the mean of that block's query and value
    rows, columns = panel.heatmap.labels()
    assert columns == ["block 0", "block 1"]
    blocks = panel.heatmap.matrix()
    panel.view.setCurrentIndex(panel.view.findData("layers"))
    rows, layers = panel.heatmap.labels()
    per_layer = panel.heatmap.matrix()
    assert len(layers) == 4 and all(".0." in n for n in layers[:2]) and all(".1." in n for n in layers[2:])
    assert np.allclose(blocks, np.stack([np.nanmean(per_layer[:, :2], axis=1), np.nanmean(per_layer[:, 2:], axis=1)], axis=1), equal_nan=True)

    # run to the end: a layer-wise ++ result is no merge the panel can hold, and no recipe
    panel.steps.setValue(2)
    run(qtbot, window, panel)
    assert panel.result.label == "AdaMerging++ (layer-wise)" and not panel.result.replayable
    assert not panel.apply_button.isEnabled() and panel.export_button.isEnabled()
    dialog = panel.export_dialog()
    recipe = next(b for b in dialog.group.buttons() if b.property("kind") == "recipe")
    adapter = next(b for b in dialog.group.buttons() if b.property("kind") == "adapter")
    adapter.setChecked(True)
    assert not recipe.isEnabled() and not dialog.exact.isEnabled() and dialog.rank.isEnabled()  # dense updates need a rank
    dialog.close()


def test_a_test_pool_and_a_regression_task_are_refused_in_one_line(qtbot, window, tmp_path, tiny_base_dir):
    panel = panel_of(window)
    failures = []
    window.model.jobs.failed.connect(lambda *args: failures.append(args))
    messages = []
    window.model.message.connect(messages.append)
    panel.pool.setCurrentText("test")
    run(qtbot, window, panel)
    assert "pool 'test'" in panel.status.text() and "validation or train" in panel.status.text()
    assert "\n" not in panel.status.text() and messages[-1] == panel.status.text()
    assert window.statusBar().currentMessage() == panel.status.text()
    assert panel.result is None and not failures

    # an adapter whose task is a regression: AdaMerging needs a softmax head
    csv = tmp_path / "score.csv"
    csv.write_text("text,label\n" + "\n".join(f"{w} very good,{i % 5 / 4}" for i, w in enumerate(["red", "cat", "dog", "fish"] * 10)) + "\n")
    adapter = make_adapter(tiny_base_dir, tmp_path / "score", csv, num_labels=1, seed=3)
    (adapter / "osrm_adapter.json").write_text(json.dumps({"task": "score", "task_spec": f"{csv}@regression"}))
    window.model.add_adapters([str(adapter)])
    qtbot.waitUntil(lambda: len(window.model.slots) == 3, timeout=30000)
    wait_idle(qtbot, window)
    panel.pool.setCurrentText("validation")
    run(qtbot, window, panel)
    assert "regression" in panel.status.text() and "\n" not in panel.status.text() and not failures
