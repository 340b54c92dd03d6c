"""Automatic ▸ Guard on the app: the pre-screen table flags an outsized adapter, which can be
disabled (undoably); leave-one-out fills the Δ heatmap adapter by adapter, with the session's
current merge; cancelling stops; too few adapters are refused in one line."""

from __future__ import annotations

import math
import shutil

import numpy as np
from PySide6.QtCore import Qt
from safetensors.torch import load_file, save_file

from osrm_gui.core.explore.guard import LeftOut
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.workspace import open_workspace
from osrm_gui.gui.widgets.guard_panel import FLAGGED, LEAVE_ONE_OUT_JOB, PRESCREEN_JOB, GuardPanel
from tests.conftest import make_adapter
from tests.gui.conftest import wait_idle


def panel_of(window) -> GuardPanel:
    window.tabs.setCurrentWidget(window.automatic)
    window.automatic.setCurrentWidget(window.automatic.guard)
    return window.automatic.guard


def click(qtbot, window, button, label, outcome="done"):
    with qtbot.waitSignal(window.model.jobs.finished, timeout=60000) as finished:
        qtbot.mouseClick(button, Qt.LeftButton)
    assert finished.args == [label, outcome]
    wait_idle(qtbot, window)


def column(table, name):
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    c = headers.index(name)
    return [table.item(r, c).text() for r in range(table.rowCount())]


def outsized_adapter(tiny_base_dir, tiny_tasks, folder):
    """A third random adapter with its B factors 20 times larger, serving a copy of the colour task."""
    shutil.copy(tiny_tasks["colour"], folder / "outsized.csv")
    bad = make_adapter(tiny_base_dir, folder / "outsized", folder / "outsized.csv", num_labels=2, seed=5, rank=4)
    weights = load_file(bad / "adapter_model.safetensors")
    save_file({k: v * 20 if "lora_B" in k else v for k, v in weights.items()}, bad / "adapter_model.safetensors")
    return bad


def test_prescreen_flags_an_outsized_adapter_which_can_be_disabled_and_undone(qtbot, window, tiny_base_dir, tiny_tasks, tmp_path):
    window.model.add_adapters([str(outsized_adapter(tiny_base_dir, tiny_tasks, tmp_path))])
    qtbot.waitUntil(lambda: len(window.model.slots) == 3, timeout=30000)
    wait_idle(qtbot, window)
    panel = panel_of(window)
    click(qtbot, window, panel.prescreen_button, PRESCREEN_JOB)

    labels = [s.label for s in window.model.slots]
    assert column(panel.screen_table, "adapter") == labels
    # the norms shown are the adapters' ‖ΔW‖_F, computed here from the dense updates
    for slot, shown in zip(window.model.slots, column(panel.screen_table, "norm")):
        dense = math.sqrt(sum(float((layer.delta() ** 2).sum()) for layer in slot.adapter.layers.values()))
        assert math.isclose(float(shown), dense, rel_tol=1e-3)
    norms = [float(v) for v in column(panel.screen_table, "norm")]
    ratio = norms[2] / float(np.median(norms[:2]))
    assert math.isclose(float(column(panel.screen_table, "norm ratio")[2]), ratio, rel_tol=1e-3) and ratio > 3
    # the verdicts: only the outsized one flagged, highlighted, with its reason
    assert column(panel.verdicts, "verdict") == ["pass", "pass", "flagged (pre-screen)"]
    assert "norm" in column(panel.verdicts, "why")[2]
    assert panel.verdicts.item(2, 0).background().color() == FLAGGED and panel.verdicts.item(0, 0).background().color() != FLAGGED
    assert "outsized" in panel.status.text()

    # selecting a row that passed leaves nothing to disable; the flagged row can be disabled, and undone
    panel.verdicts.selectRow(0)
    assert not panel.disable_button.isEnabled()
    panel.verdicts.selectRow(2)
    assert panel.disable_button.isEnabled()
    assert panel.status.text() == f"{labels[2]}: {column(panel.verdicts, 'why')[2]}"  # its reasons in full
    qtbot.mouseClick(panel.disable_button, Qt.LeftButton)
    wait_idle(qtbot, window)
    assert [s.enabled for s in window.model.slots] == [True, True, False] and not panel.disable_button.isEnabled()
    window.model.undo.undo()
    wait_idle(qtbot, window)
    assert [s.enabled for s in window.model.slots] == [True, True, True]

    panel.export_prescreen_csv(str(tmp_path / "prescreen.csv"))
    assert (tmp_path / "prescreen.csv").read_text().splitlines()[0].startswith("adapter,layers,norm,norm ratio")


def test_leave_one_out_uses_the_current_merge_and_fills_the_heatmap_adapter_by_adapter(qtbot, window, tiny_base_dir, tiny_adapters, tmp_path):
    window.merge.rows[0].spin.setValue(0.7)
    window.merge.lam.spin.setValue(0.8)
    wait_idle(qtbot, window)
    panel = panel_of(window)
    panel.limit.setValue(24)
    shown = []
    original = panel._event

    def seen(event):
        original(event)
        if isinstance(event, LeftOut):
            shown.append(int(np.isfinite(panel.heatmap.matrix()).sum()))

    panel._event = seen
    click(qtbot, window, panel.loo_button, LEAVE_ONE_OUT_JOB)
    result = panel.result
    tasks = [s.task.name for s in window.model.session.active()]
    assert result.spec == MergeSpec("task_arithmetic", [0.7, 1.0], 0.8, {}, 0) and result.split == "validation"
    assert shown == [1, 2]  # each adapter's row appeared as it was scored (one other task each)
    matrix = panel.heatmap.matrix()
    assert np.array_equal(np.isnan(matrix), np.eye(2, dtype=bool)) and np.allclose(matrix, result.delta_matrix(), equal_nan=True)
    assert panel.heatmap.labels() == ([s.label for s in window.model.slots], tasks)
    low, high = panel.heatmap.colorbar.levels()
    assert math.isclose(low, -high) and high >= np.nanmax(np.abs(matrix))  # diverging, centred at 0
    # Δ of the colour adapter on the animal task, against the animal adapter merged alone at its coefficient
    alone = run_to_end(open_workspace(tiny_base_dir, [tiny_adapters[1]], device="cpu").score(MergeSpec("task_arithmetic", [1.0], 0.8),
                                                                                              "validation", 24))
    assert math.isclose(matrix[0, 1], result.with_all["animal"] - alone["animal"]["metric"], abs_tol=1e-12)
    assert column(panel.verdicts, "adapter") == [s.label for s in window.model.slots]
    assert column(panel.verdicts, "verdict") == [v.status for v in result.verdicts]
    panel.export_deltas_csv(str(tmp_path / "deltas.csv"))
    assert (tmp_path / "deltas.csv").read_text().splitlines()[0].startswith("left out,")


def test_cancel_and_too_few_adapters(qtbot, window):
    panel = panel_of(window)
    failures = []
    window.model.jobs.failed.connect(lambda *args: failures.append(args))
    with qtbot.waitSignal(window.model.jobs.finished, timeout=60000) as finished:
        qtbot.mouseClick(panel.loo_button, Qt.LeftButton)
        qtbot.mouseClick(panel.cancel_button, Qt.LeftButton)
    assert finished.args == [LEAVE_ONE_OUT_JOB, "cancelled"]
    wait_idle(qtbot, window)
    assert panel.status.text().startswith("Cancelled") and panel.result is None
    window.model.set_enabled(1, False)
    wait_idle(qtbot, window)
    click(qtbot, window, panel.prescreen_button, PRESCREEN_JOB)
    assert "2 enabled adapters or more (1 enabled)" in panel.status.text() and "\n" not in panel.status.text()
    assert window.statusBar().currentMessage() == panel.status.text() and not failures
