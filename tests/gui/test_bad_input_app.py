"""The app's side of the bad-input guarantees: the same one-line reason the CLI gives, no
traceback for a bad input, and a question before replacing a folder."""

import json
import shutil

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from osrm_gui.cli import main
from tests.gui.conftest import wait_idle
from tests.gui.test_app import drop


def cli_reason(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    return capsys.readouterr().err.strip().removeprefix("osrm: error: ")


@pytest.mark.parametrize("damage", [
    lambda f: (f / "adapter_config.json").write_text(json.dumps({**json.loads((f / "adapter_config.json").read_text()), "lora_alpha": "sixteen"})),
    lambda f: (f / "adapter_config.json").write_text(json.dumps({**json.loads((f / "adapter_config.json").read_text()), "r": 0})),
    lambda f: (f / "osrm_adapter.json").write_text("[1, 2]"),
], ids=["alpha-word", "rank-zero", "metadata-array"])
def test_a_dropped_bad_adapter_shows_the_cli_reason(qtbot, window, tmp_path, tiny_base_dir, tiny_adapters, capsys, damage):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_adapters[0], bad)
    damage(bad)
    expected = cli_reason(capsys, ["info", "--base", tiny_base_dir, bad])
    drop(window, [bad])
    qtbot.waitUntil(lambda: "Refused" in window.adapters.refusals.text(), timeout=10000)
    assert window.adapters.refusals.text().strip() == f"Refused: {expected}"
    assert "Error:" not in window.adapters.refusals.text()  # no exception class names


@pytest.mark.parametrize("edit", [
    lambda d: d.update(adapters="colour"),
    lambda d: d["adapters"][0].pop("label"),
    lambda d: d.update(merge=[1, 2]),
], ids=["adapters-string", "label-missing", "merge-list"])
def test_a_malformed_workspace_shows_one_line_and_no_traceback(qtbot, window, tmp_path, edit):
    path = tmp_path / "ws.osrm.json"
    window.model.session.save(path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with qtbot.waitSignal(window.model.jobs.failed, timeout=20000) as failed:
        window.model.open_workspace(str(path))
    label, reason, details = failed.args
    assert reason.startswith(f"{path}: workspace field") and "\n" not in reason
    assert details == ""
    qtbot.waitUntil(lambda: window.findChild(QMessageBox, "errorDialog") is not None, timeout=5000)
    box = window.findChild(QMessageBox, "errorDialog")
    assert box.text() == reason and box.detailedText() == ""
    box.close()


@pytest.mark.parametrize("answer", [QMessageBox.No, QMessageBox.Yes])
def test_exporting_onto_an_existing_folder_asks_first(qtbot, window, tmp_path, monkeypatch, answer):
    out = tmp_path / "models"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    asked = []
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *args, **kwargs: asked.append(args) or answer))
    dialog = window.export_dialog()
    dialog.path.setText(str(out))
    if answer == QMessageBox.No:
        qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
        assert asked and "Not exported" in dialog.status.text() and (out / "keep.txt").exists()
    else:
        with qtbot.waitSignal(window.model.jobs.finished, timeout=30000):
            qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
        assert asked and "Written to" in dialog.status.text()
        assert not (out / "keep.txt").exists() and (out / "colour" / "config.json").is_file()
    dialog.close()
    wait_idle(qtbot, window)


def test_training_onto_existing_folders_asks_first(qtbot, window, tmp_path, monkeypatch):
    panel = window.osrm
    panel.out.setText(str(tmp_path))
    for i in range(panel.tasks.count()):
        panel.tasks.item(i).setCheckState(Qt.Checked)
    settings = panel.settings()
    names = panel.ticked()
    for folder in window.model.session.train_outputs(names, settings, str(tmp_path)):
        folder.mkdir()
        (folder / "keep.txt").write_text("mine")
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *args, **kwargs: QMessageBox.No))
    panel.train()
    assert "Not trained" in panel.status.text() and not window.model.jobs.busy
    assert all((f / "keep.txt").exists() for f in window.model.session.train_outputs(names, settings, str(tmp_path)))
