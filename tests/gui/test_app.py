"""The app driven as a user would: drops, sliders, method switches, jobs, export, workspaces."""

import json
import subprocess
import sys
import textwrap
import time

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox

from osrm_gui.core.explore.sweep import Axis
from tests.conftest import make_adapter
from tests.gui.conftest import wait_idle


def table_names(win):
    table = win.adapters.table
    return [table.item(r, 1).text() for r in range(table.rowCount())]


def drop(win, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPointF(100, 100), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    win.dropEvent(event)
    return event


def test_opens_with_adapters_and_shows_per_task_results(window):
    assert table_names(window) == ["colour", "animal"]
    shown = window.results.values()
    assert set(shown) == {"colour", "animal"}
    assert all(single is not None for single, _ in shown.values())
    assert "Preview" in window.results.summary.text()
    assert window.device_label.text().endswith("on CPU")


def test_drop_valid_and_invalid_adapters(qtbot, window, tmp_path, tiny_base_dir, other_base_dir):
    good = make_adapter(tiny_base_dir, tmp_path / "extra", None, 2, seed=5)
    wrong = make_adapter(other_base_dir, tmp_path / "wrong-base", None, 2)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    drop(window, [good / "adapter_config.json", wrong, broken])
    qtbot.waitUntil(lambda: "extra" in table_names(window) and window.adapters.refusals.text().count("Refused") == 2, timeout=20000)
    wait_idle(qtbot, window)
    assert table_names(window) == ["colour", "animal", "extra"]
    text = window.adapters.refusals.text()
    assert "broken/adapter_config.json: corrupt JSON" in text
    assert "wrong-base/adapter_model.safetensors" in text and "trained on another base" in text
    assert window.adapters.table.item(2, 2).text() == "— no data —"


def test_drop_the_same_adapter_twice_is_refused(qtbot, window, tiny_adapters):
    drop(window, [tiny_adapters[0]])
    qtbot.waitUntil(lambda: "already loaded" in window.adapters.refusals.text(), timeout=10000)
    assert len(table_names(window)) == 2


def test_slider_release_updates_the_merge(qtbot, window):
    row = window.merge.rows[0]
    with qtbot.waitSignal(window.model.resultChanged, timeout=20000):
        row.slider.setSliderDown(True)
        row.slider.setValue(30)  # dragging: debounced
        row.slider.setValue(40)
        row.slider.setSliderDown(False)
        row.slider.sliderReleased.emit()
    wait_idle(qtbot, window)
    assert window.model.result.spec.coefficients[0] == pytest.approx(0.4)
    assert row.spin.value() == pytest.approx(0.4)


def test_spin_box_and_lambda(qtbot, window):
    with qtbot.waitSignal(window.model.resultChanged, timeout=20000):
        window.merge.lam.spin.setValue(0.0)
    wait_idle(qtbot, window)
    assert window.model.result.spec.lam == 0.0
    assert window.merge.lam.slider.value() == 0


def test_method_switch_shows_its_parameters(qtbot, window):
    picker = window.merge.method
    with qtbot.waitSignal(window.model.resultChanged, timeout=20000):
        picker.setCurrentIndex(picker.findData("ties"))
    wait_idle(qtbot, window)
    density = window.merge.findChild(object, "param:density")
    assert density is not None and density.value() == pytest.approx(0.5)
    assert "density" in density.toolTip().lower() or "entries" in density.toolTip()
    with qtbot.waitSignal(window.model.resultChanged, timeout=20000):
        density.setValue(0.2)
    wait_idle(qtbot, window)
    assert window.model.result.spec.method == "ties" and window.model.result.spec.params["density"] == pytest.approx(0.2)
    # a merge loaded from elsewhere (search's apply best, a history point) with the same method shows its values
    from osrm_gui.core.merge.spec import MergeSpec

    n = len(window.model.session.active())
    window.model.apply_spec(MergeSpec("ties", [1.0] * n, 1.0, {"density": 0.7}), "Apply search result")
    wait_idle(qtbot, window)
    assert density.value() == pytest.approx(0.7) and window.model.session.method_params()["density"] == pytest.approx(0.7)
    window.model.undo.undo()
    wait_idle(qtbot, window)
    assert density.value() == pytest.approx(0.2)
    picker.setCurrentIndex(picker.findData("svd"))
    wait_idle(qtbot, window)
    assert window.merge.findChild(object, "param:rank") is not None
    assert window.merge.findChild(object, "param:density") is None


@pytest.mark.parametrize("method", ["iso_cts", "knots_dare_ties", "emr", "della", "do_merging"])
def test_new_methods_preview_with_human_labelled_parameters(qtbot, window, method):
    from PySide6.QtWidgets import QLabel

    from osrm_gui.core.merge import get_method

    picker = window.merge.method
    with qtbot.waitSignal(window.model.resultChanged, timeout=30000):
        picker.setCurrentIndex(picker.findData(method))
    wait_idle(qtbot, window)
    assert window.model.result.spec.method == method
    labels = {label.text() for label in window.merge.findChildren(QLabel)}
    for param in get_method(method).params:
        assert param.title in labels and window.merge.findChild(object, f"param:{param.name}") is not None
    if method == "emr":
        assert "own masked, rescaled update" in window.results.summary.text()


def test_presets(qtbot, window):
    window.model.set_coefficient(0, 0.2)
    wait_idle(qtbot, window)
    window.model.apply_preset("average")
    wait_idle(qtbot, window)
    spec = window.model.result.spec
    assert (spec.method, spec.lam, spec.coefficients) == ("linear", 1.0, [1.0, 1.0])
    assert window.merge.rows[0].spin.value() == 1.0


def test_cancel_a_long_job_leaves_the_model_clean(qtbot, window):
    base = window.model.session.base
    weights = {n: m.weight.detach().clone() for n, m in base.model.named_modules() if n.endswith("query")}
    window.sweeps.count.setValue(101)
    window.sweeps.start_sweep()
    qtbot.waitUntil(lambda: window.cancel_button.isVisible(), timeout=5000)
    with qtbot.waitSignal(window.model.jobs.finished, timeout=20000) as finished:
        qtbot.mouseClick(window.cancel_button, Qt.LeftButton)
    assert finished.args[1] == "cancelled"
    wait_idle(qtbot, window)
    assert len(window.sweeps.plot.result.points) < 101
    for name, module in base.model.named_modules():
        if name in weights:
            assert module.weight.equal(weights[name]), f"{name} kept a merged delta after cancel"
    assert not window.cancel_button.isVisible()


def test_event_loop_stays_responsive_during_a_job(qtbot, window):
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(10)
    window.sweeps.count.setValue(21)
    started = time.monotonic()
    with qtbot.waitSignal(window.model.sweepFinished, timeout=60000):
        window.sweeps.start_sweep()
    elapsed = time.monotonic() - started
    timer.stop()
    # the GUI thread kept handling events all along: no gap of a whole second between ticks
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) > 5 and max(gaps) < 1.0, (elapsed, max(gaps))


def test_a_failing_job_shows_an_error_and_the_app_keeps_working(qtbot, window, monkeypatch):
    def boom(full=False):
        raise RuntimeError("simulated failure in the merge")
        yield  # pragma: no cover

    monkeypatch.setattr(window.model.session, "evaluate_job", boom)
    with qtbot.waitSignal(window.model.jobs.failed, timeout=10000):
        window.model.set_lambda(0.77)  # settings not scored yet (those already scored are shown again, not scored)
    qtbot.waitUntil(lambda: window.findChild(QMessageBox, "errorDialog") is not None, timeout=5000)
    box = window.findChild(QMessageBox, "errorDialog")
    assert box.text() == "RuntimeError: simulated failure in the merge"
    assert "Traceback" in box.detailedText()
    box.close()
    monkeypatch.undo()
    with qtbot.waitSignal(window.model.resultChanged, timeout=20000):
        window.model.preview()


def test_sweep_fills_the_plot_and_exports(qtbot, window, tmp_path):
    window.sweeps.start.setValue(0.0)
    window.sweeps.stop.setValue(1.0)
    window.sweeps.count.setValue(3)
    window.sweeps.target.setCurrentIndex(window.sweeps.target.findData("animal"))
    with qtbot.waitSignal(window.model.sweepFinished, timeout=60000):
        qtbot.mouseClick(window.sweeps.run, Qt.LeftButton)
    data = window.sweeps.plot.data()
    assert set(data) == {"colour", "animal", "average"}
    assert data["average"][0] == [0.0, 0.5, 1.0]
    assert window.sweeps.plot.marker.value() == pytest.approx(1.0)  # the current coefficient of 'animal'
    window.sweeps.plot.export_csv(str(tmp_path / "s.csv"))
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "coefficient of animal,colour,animal,average"
    assert len(lines) == 4
    window.sweeps.plot.export_image(str(tmp_path / "s.png"))
    window.sweeps.plot.export_image(str(tmp_path / "s.svg"))
    assert (tmp_path / "s.png").stat().st_size > 1000 and "<svg" in (tmp_path / "s.svg").read_text()


def test_undo_remove_and_rename(qtbot, window):
    window.adapters.table.selectRow(0)
    qtbot.mouseClick(window.adapters.remove_button, Qt.LeftButton)
    wait_idle(qtbot, window)
    assert table_names(window) == ["animal"]
    assert list(window.results.values()) == ["animal"]
    window.model.undo.undo()
    wait_idle(qtbot, window)
    assert table_names(window) == ["colour", "animal"]
    window.adapters.table.item(1, 1).setText("beasts")
    assert window.model.slots[1].label == "beasts"
    window.model.undo.undo()
    assert table_names(window) == ["colour", "animal"]


def test_disable_an_adapter(qtbot, window):
    with qtbot.waitSignal(window.model.resultChanged, timeout=20000):
        window.adapters.table.item(1, 0).setCheckState(Qt.Unchecked)
    wait_idle(qtbot, window)
    assert list(window.results.values()) == ["colour"]
    assert not window.merge.rows[1].isEnabled()


def test_export_dialog_writes_full_models_that_reload(qtbot, window, tmp_path):
    dialog = window.export_dialog()
    dialog.path.setText(str(tmp_path / "models"))
    with qtbot.waitSignal(window.model.jobs.finished, timeout=30000):
        qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
    assert "Written to" in dialog.status.text()
    script = textwrap.dedent(f"""
        from transformers import AutoModelForSequenceClassification
        m = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / 'models' / 'animal')!r})
        print(m.config.num_labels)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr[-1000:]
    assert out.stdout.strip().endswith("3")
    dialog.close()


def test_export_dialog_adapter_kind_reports_the_error(qtbot, window, tmp_path):
    window.model.set_method("ties")
    wait_idle(qtbot, window)
    dialog = window.export_dialog()
    dialog.findChild(object, "kind:adapter").setChecked(True)
    assert dialog.rank.isEnabled() and not dialog.exact.isEnabled()
    dialog.rank.setValue(2)
    dialog.path.setText(str(tmp_path / "adapters"))
    with qtbot.waitSignal(window.model.jobs.finished, timeout=30000):
        qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
    assert "worst relative truncation error" in dialog.status.text()
    assert (tmp_path / "adapters" / "colour" / "adapter_config.json").exists()
    dialog.close()


def test_workspace_save_and_reopen(qtbot, window, tmp_path, qapp):
    from osrm_gui.gui.app import build_window, parse_args

    window.model.set_method("ties")
    window.model.set_coefficient(1, 0.7)
    window.model.set_lambda(0.9)
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.model.sweepFinished, timeout=60000):
        window.model.sweep([Axis("lambda", (0.0, 1.0))])
    path = tmp_path / "ws" / "saved.osrm.json"
    window.model.save_workspace(str(path))
    before = window.results.values()
    reopened = build_window(parse_args(["--workspace", str(path)]))
    qtbot.addWidget(reopened)
    wait_idle(qtbot, reopened)
    assert table_names(reopened) == table_names(window)
    assert reopened.merge.method.currentData() == "ties"
    assert reopened.merge.rows[1].spin.value() == pytest.approx(0.7)
    assert reopened.merge.lam.spin.value() == pytest.approx(0.9)
    assert reopened.results.values() == before  # results restored, not recomputed
    assert reopened.sweeps.plot.data()["average"][0] == [0.0, 1.0]
    assert json.loads(path.read_text())["format"] == "osrm-gui/workspace@1"
    from PySide6.QtCore import QSettings

    recent = QSettings(QSettings.IniFormat, QSettings.UserScope, "osrm-gui", "osrm-gui").value("recent")
    assert str(path) in recent


def test_a_slider_moved_during_a_sweep_waits_for_it(qtbot, window):
    window.sweeps.count.setValue(5)
    window.sweeps.start_sweep()
    qtbot.waitUntil(lambda: window.model.jobs.current_label == "Sweep lambda", timeout=5000)
    with qtbot.waitSignal(window.model.sweepFinished, timeout=60000) as finished:
        window.merge.rows[0].spin.setValue(0.3)  # asks for a preview while the sweep runs
    assert len(finished.args[0].points) == 5  # the sweep was not cancelled
    qtbot.waitUntil(lambda: window.model.result.spec.coefficients[0] == pytest.approx(0.3), timeout=20000)


def test_empty_states_say_what_to_do(qtbot, tiny_base_dir):
    from osrm_gui.gui.app import build_window, parse_args

    win = build_window(parse_args(["--base", str(tiny_base_dir)]))
    qtbot.addWidget(win)
    wait_idle(qtbot, win)
    assert "drop PEFT LoRA adapter folders" in win.results.summary.text()
    with pytest.raises(SystemExit):
        parse_args(["--preview-size", "0"])


def test_osrm_panel_statistics_training_and_projection(qtbot, window, tmp_path):
    panel = window.osrm
    window.tabs.setCurrentWidget(panel)
    assert [panel.tasks.item(i).text() for i in range(panel.tasks.count())] == ["colour", "animal"]
    panel.samples.setValue(20)
    with qtbot.waitSignal(window.model.jobs.finished, timeout=30000):
        qtbot.mouseClick(panel.findChild(object, "computeStatistics"), Qt.LeftButton)
    assert panel.stats_table.rowCount() == 2 and panel.stats_table.item(0, 0).text() == "colour"
    panel.steps.setValue(4)
    panel.rank.setValue(4)
    panel.freeze_a.setChecked(True)
    panel.out.setText(str(tmp_path / "trained"))
    panel.init.setCurrentIndex(panel.init.findData("osrm-cov"))
    with qtbot.waitSignal(window.model.jobs.finished, timeout=120000):
        qtbot.mouseClick(panel.findChild(object, "trainAdapters"), Qt.LeftButton)
    qtbot.waitUntil(lambda: len(table_names(window)) == 4, timeout=20000)
    wait_idle(qtbot, window)
    assert table_names(window)[2:] == ["colour-osrm-cov", "animal-osrm-cov"]
    assert window.adapters.table.item(2, 7).text() == "osrm-cov"
    assert set(panel.losses) == {"colour", "animal"} and panel.losses["animal"][0] == [1, 2, 3, 4]
    window.adapters.table.selectRow(0)
    with qtbot.waitSignal(window.model.jobs.finished, timeout=30000):
        qtbot.mouseClick(panel.findChild(object, "projectAdapter"), Qt.LeftButton)
    qtbot.waitUntil(lambda: len(table_names(window)) == 5, timeout=20000)
    assert "keeps" in panel.status.text()
    assert window.adapters.table.item(4, 7).text() == "post-hoc osrm-cov"


def test_compare_dialog_shows_the_saved_comparison(qtbot, tmp_path):
    from osrm_gui.core.explore.compare import LAMBDAS, FamilyRun, save_runs
    from osrm_gui.gui.dialogs.compare_dialog import CompareDialog

    def run(family, seed, level):
        grid = {f"{lam:g}": {"a": level * lam, "b": level} for lam in LAMBDAS}
        return FamilyRun(family, seed, {"a": 0.9, "b": 0.8}, grid, {"a": 0.7, "b": 0.6}, 0.5 * level, [], grid)

    runs = [run("peft-default", s, 0.5 + 0.01 * s) for s in range(3)] + [run("osrm-cov-frozen", s, 0.6) for s in range(3)]
    save_runs(runs, tmp_path / "compare.json", {"command": "osrm demo compare", "families": {"peft-default": "x", "osrm-cov-frozen": "y"}})
    dialog = CompareDialog(tmp_path / "compare.json")
    qtbot.addWidget(dialog)
    assert dialog.table.rowCount() == 2
    assert dialog.table.item(0, 0).text() == "peft-default" and "±" in dialog.table.item(0, 2).text()
    curves = [item for item in dialog.plot.listDataItems()]
    assert [c.name() for c in curves] == ["peft-default", "osrm-cov-frozen"]
    assert list(curves[1].getData()[1]) == pytest.approx([(0.6 * lam + 0.6) / 2 for lam in LAMBDAS])


def test_adapter_by_hub_id_and_the_downloads_setting(qtbot, window, tmp_path, tiny_base_dir, hub_cache, monkeypatch):
    from PySide6.QtWidgets import QInputDialog, QPushButton

    from osrm_gui.core.inputs import hub
    from osrm_gui.gui.main_window import HUB_DOWNLOADS
    from tests.conftest import add_to_hub_cache

    monkeypatch.setattr(hub._Policy, "online", False)
    monkeypatch.setattr(hub._Policy, "owns_variable", False)
    add_to_hub_cache(hub_cache, "acme/extra-lora", make_adapter(tiny_base_dir, tmp_path / "extra", None, 2, seed=7))
    answer = ["acme/extra-lora"]
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *args, **kwargs: (answer[0], True)))
    qtbot.mouseClick(window.adapters.findChild(QPushButton, "addFromHub"), Qt.LeftButton)
    qtbot.waitUntil(lambda: "extra-lora" in table_names(window), timeout=20000)
    wait_idle(qtbot, window)
    answer[0] = "acme/not-downloaded"
    window.add_adapter_hub_dialog()
    qtbot.waitUntil(lambda: "Refused" in window.adapters.refusals.text(), timeout=10000)
    refusal = window.adapters.refusals.text()
    assert "acme/not-downloaded: no local folder of that name" in refusal and "Traceback" not in refusal
    assert table_names(window) == ["colour", "animal", "extra-lora"]
    window.hub_downloads.trigger()
    assert hub.downloads_allowed() and window.settings.value(HUB_DOWNLOADS, type=bool)
    window.hub_downloads.trigger()
    assert not hub.downloads_allowed() and not window.settings.value(HUB_DOWNLOADS, type=bool)
    # the base by id: the session reloads on it, adapters kept
    add_to_hub_cache(hub_cache, "acme/tiny-bert", tiny_base_dir)
    answer[0] = "acme/tiny-bert"
    window.open_base_hub_dialog()
    qtbot.waitUntil(lambda: window.device_label.text().startswith("tiny-bert on"), timeout=30000)
    wait_idle(qtbot, window)
    assert window.model.session.base.hub_id.startswith("acme/tiny-bert@") and len(table_names(window)) == 3


def test_leaderboard_dialog_sorts_methods_by_their_numbers(qtbot, tmp_path):
    from osrm_gui.core.explore.leaderboard import MethodRun, save
    from osrm_gui.gui.dialogs.leaderboard_dialog import LeaderboardDialog

    def run(method, family, seed, average):
        return MethodRun(method, family, seed, 0.4, {"0.4": average}, {"a": average, "b": average}, {"a": 0.9, "b": 0.9}, 0.2, 1000)

    runs = [run(m, f, s, base + 0.01 * s + (0.05 if f == "osrm-cov" else 0))
            for m, base in (("ties", 0.70), ("iso_c", 0.60), ("emr", 0.80)) for f in ("peft-default", "osrm-cov") for s in range(3)]
    save(runs, tmp_path / "leaderboard.json", {"command": "osrm demo leaderboard"})
    dialog = LeaderboardDialog(tmp_path / "leaderboard.json")
    qtbot.addWidget(dialog)
    table = dialog.table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert table.rowCount() == 6 and headers[:4] == ["method", "family", "seeds", "test average"]
    table.sortItems(3, Qt.DescendingOrder)
    assert [table.item(r, 0).text() for r in range(2)] == ["emr", "emr"] and table.item(0, 1).text() == "osrm-cov"
    assert table.item(5, 0).text() == "iso_c"
    verdicts = {dialog.margins.item(r, 0).text(): dialog.margins.item(r, 3).text() for r in range(dialog.margins.rowCount())}
    assert verdicts == {"ties": "yes", "iso_c": "yes", "emr": "yes"}
