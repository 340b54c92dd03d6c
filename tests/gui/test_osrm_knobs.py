"""The OSRM tab's training knobs (subspace budget, penalty, A learning rate), training a new
adapter against the loaded ones (their task data or their shipped statistics), the reasons that
keep Train disabled, and the other tasks' energy curve drawn beside the loss."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from PySide6.QtCore import Qt

from osrm_gui.core.osrm.others import SHIPPED_STATS
from tests.conftest import write_task_csv
from tests.gui.conftest import open_window, wait_idle


def tick_only(panel, *names):
    for i in range(panel.tasks.count()):
        item = panel.tasks.item(i)
        item.setCheckState(Qt.Checked if item.text() in names else Qt.Unchecked)


def train(qtbot, window, panel):
    assert panel.train_button.isEnabled(), panel.reason.text()
    before = window.adapters.table.rowCount()
    with qtbot.waitSignal(window.model.jobs.finished, timeout=120000):
        qtbot.mouseClick(panel.train_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.adapters.table.rowCount() > before, timeout=20000)
    wait_idle(qtbot, window)


@pytest.fixture()
def shipped_window(qtbot, tmp_path, tiny_base_dir, tiny_adapters):
    """colour as loaded, and a copy of the animal adapter that ships its task's statistics."""
    from osrm_gui.core.inputs.models import load_base
    from osrm_gui.core.inputs.tasks import resolve_task
    from osrm_gui.core.osrm.features import cached_features, save_features
    from osrm_gui.core.progress import Run

    animal = shutil.copytree(tiny_adapters[1], tmp_path / "shipped" / "animal")
    spec = json.loads((animal / "osrm_adapter.json").read_text())["task_spec"]
    run = Run(cached_features(load_base(tiny_base_dir, dtype="float32"), resolve_task(spec), None, 100, 64))
    for _ in run:
        pass
    save_features(run.result, animal / SHIPPED_STATS)
    win = open_window(qtbot, tiny_base_dir, [tiny_adapters[0], animal])
    yield win
    win.model.jobs.cancel()
    win.model.jobs.wait(20)


def test_the_knobs_build_the_settings(window):
    panel = window.osrm
    options = panel.options
    assert panel.init.currentData() == "osrm-cov" and options.budget.isEnabled()
    options.budget.setCurrentIndex(options.budget.findData(4))
    options.penalty.stepBy(1)
    assert options.penalty.value() == pytest.approx(1e-4)  # from 0 (off) to the grid's first step
    options.penalty.lineEdit().setText("0.01")
    options.penalty.interpretText()
    options.a_lr.stepBy(-2)
    assert options.a_lr.value() == pytest.approx(0.1)
    options.a_lr.stepBy(-2)
    settings = panel.settings()
    assert (settings.subspace_budget, settings.subspace_penalty, settings.a_lr_multiplier) == (4, pytest.approx(0.01), pytest.approx(0.01))
    assert settings.init == "osrm-cov" and settings.rank == panel.rank.value() and settings.against_stats is None
    assert sorted(s.rsplit("/", 1)[-1] for s in settings.osrm_tasks) == ["animal.csv", "colour.csv"]
    assert panel.train_button.isEnabled() and panel.reason.text() == ""
    names = window.model.session.train_outputs(["colour"], settings, "/out")
    assert names[0].name == "colour-osrm-cov-k4-beta0.01-alr0.01"

    # the budget is the osrm-cov init's: off (and disabled) with any other
    panel.init.setCurrentIndex(panel.init.findData("peft-default"))
    assert not options.budget.isEnabled() and panel.settings().subspace_budget is None
    assert "m = k·r" in options.budget.toolTip() and "k = 1 is like freezing A" in options.budget.toolTip()
    # A's learning rate is moot while A is frozen
    panel.freeze_a.setChecked(True)
    assert not options.a_lr.isEnabled()


def test_the_penalty_box_walks_decades_and_takes_typed_values(qtbot):
    from osrm_gui.gui.widgets.train_options import PENALTY_GRID, LogSpinBox

    box = LogSpinBox(PENALTY_GRID, 0.0, zero_text="0 (off)")
    qtbot.addWidget(box)
    assert box.text() == "0 (off)"
    box.stepBy(3)
    assert box.value() == pytest.approx(1e-3) and box.text() == "0.001"
    box.stepBy(-1)
    assert box.value() == pytest.approx(3e-4)
    box.stepBy(-5)
    assert box.value() == 0.0
    box.lineEdit().selectAll()
    qtbot.keyClicks(box.lineEdit(), "2e-3")  # through the validator, as typed
    box.interpretText()
    assert box.value() == pytest.approx(2e-3)
    box.stepBy(1)
    assert box.value() == pytest.approx(3e-3)


def test_invalid_combinations_disable_train_with_the_reason(window):
    panel = window.osrm
    options = panel.options
    tick_only(panel, "colour")
    assert panel.against.isChecked()  # on by default: adapters are loaded
    assert panel.train_button.isEnabled()
    settings = panel.settings()
    # the one ticked task is trained against the loaded animal adapter's task data
    assert [s.rsplit("/", 1)[-1] for s in settings.osrm_tasks] == ["colour.csv", "animal.csv"]
    assert "adds 1 other task(s): 1 from task data" in panel.against_summary.text()

    panel.against.setChecked(False)
    assert not panel.train_button.isEnabled() and "OSRM initialisation needs another task" in panel.reason.text()
    panel.init.setCurrentIndex(panel.init.findData("peft-default"))
    assert panel.train_button.isEnabled()  # a plain adapter needs no other task
    options.penalty.setValue(0.1)
    assert not panel.train_button.isEnabled() and "penalty need another task" in panel.reason.text()
    options.penalty.setValue(0.0)

    # m = k·r must fit in the layers' input (the tiny base's 32): r = 4 allows k ≤ 8
    panel.against.setChecked(True)
    panel.init.setCurrentIndex(panel.init.findData("osrm-cov"))
    panel.rank.setValue(4)
    options.budget.setCurrentIndex(options.budget.findData(16))
    assert not panel.train_button.isEnabled() and "m = k·rank = 64" in panel.reason.text()
    options.budget.setCurrentIndex(options.budget.findData(8))
    assert panel.train_button.isEnabled()

    # a reason from TrainSettings.check() is shown as it is
    panel.init.setCurrentIndex(panel.init.findData("gaussian"))
    options.budget.setEnabled(True)
    panel._check()
    assert not panel.train_button.isEnabled() and "--subspace-budget needs --init osrm-cov" in panel.reason.text()

    tick_only(panel)
    assert not panel.train_button.isEnabled() and panel.reason.text() == "Tick the tasks to train adapters for."


def test_a_new_task_trains_against_shipped_statistics_and_draws_the_energy(qtbot, shipped_window, tmp_path):
    window = shipped_window
    panel = window.osrm
    window.tabs.setCurrentWidget(panel)
    size = write_task_csv(tmp_path / "size.csv", {"cat": "small", "dog": "big", "red": "small", "blue": "big"}, seed=3)
    panel.add_task(str(size))
    assert panel.ticked() == ["size"] and panel.against.isChecked()
    settings = panel.settings()
    shipped = str(tmp_path / "shipped" / "animal" / SHIPPED_STATS)
    # the animal adapter offers its shipped statistics instead of its data; colour its data
    assert settings.against_stats == [shipped]
    assert [s.rsplit("/", 1)[-1] for s in settings.osrm_tasks] == ["size.csv", "colour.csv"]
    assert "adds 2 other task(s): 1 from task data, 1 from shipped statistics" in panel.against_summary.text()

    panel.steps.setValue(3)
    panel.rank.setValue(2)
    panel.options.budget.setCurrentIndex(panel.options.budget.findData(2))
    panel.options.penalty.setValue(0.01)
    panel.out.setText(str(tmp_path / "trained"))
    train(qtbot, window, panel)

    folder = tmp_path / "trained" / "size-osrm-cov-k2-beta0.01"
    meta = json.loads((folder / "osrm_adapter.json").read_text())
    assert meta["against"]["stats_files"] == [shipped] and sorted(meta["against"]["tasks"]) == ["animal", "colour"]
    assert meta["settings"]["subspace_budget"] == 2 and meta["settings"]["subspace_penalty"] == pytest.approx(0.01)
    # one point per step, and the recorded start (before the first step) at step 0, marked
    steps, energies = panel.energies["size"]
    assert steps == [0, 1, 2, 3] and all(math.isfinite(e) and 0 < e < 1 for e in energies)
    assert (energies[0], energies[-1]) == (pytest.approx(meta["other_energy"]["start"]), pytest.approx(meta["other_energy"]["end"]))
    curve, start_line, start_dot = panel.plots._energy_items["size"]
    assert list(start_dot.getOriginalDataset()[0]) == [0] and list(start_dot.getOriginalDataset()[1]) == pytest.approx(energies[:1])
    assert list(start_line.getOriginalDataset()[1]) == pytest.approx([energies[0]] * 2)
    assert panel.plots.energy_plot.plotItem.titleLabel.text == "others' energy share in row(A)"
    assert "energy share in row(A), start → end: size" in panel.status.text()


def test_without_other_tasks_the_energy_is_unknown_not_drawn(qtbot, window, tmp_path):
    panel = window.osrm
    tick_only(panel, "colour")
    panel.against.setChecked(False)
    panel.init.setCurrentIndex(panel.init.findData("peft-default"))
    panel.steps.setValue(2)
    panel.rank.setValue(2)
    panel.out.setText(str(tmp_path / "alone"))
    train(qtbot, window, panel)
    assert panel.losses["colour"][0] == [1, 2] and panel.energies == {}
    assert "unknown" in panel.plots.energy_plot.plotItem.titleLabel.text
    assert "energy" not in panel.status.text()


def test_the_energy_axis_reads_in_percent_naming_1_2_and_5(qapp):
    from osrm_gui.gui.plots.train_curves import ShareAxis

    shares = (1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 0.07, 0.1)
    assert ShareAxis("left").logTickStrings([math.log10(x) for x in shares], 1, None) == ["0.01%", "0.02%", "", "0.05%", "0.1%", "", "10%"]
