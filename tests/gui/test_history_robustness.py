"""The app with a damaged or foreign run history: it offers to set the file aside and start a
fresh one, or keeps working on a temporary one; and recent workspaces survive a restart."""

import shutil
from pathlib import Path
from typing import ClassVar

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox

from osrm_gui.core.explore.history import History, default_history_path, history_path_for
from osrm_gui.gui.main_window import MainWindow, recent_workspaces, remember_workspace
from osrm_gui.gui.state import SessionModel
from tests.core.test_history_robustness import damaged, foreign
from tests.gui.conftest import open_window, wait_idle


@pytest.fixture()
def answers(monkeypatch):
    """QMessageBox.question answered without a person: ``answers.reply`` each time, every question kept."""
    class Answers:
        reply = QMessageBox.Yes
        asked: ClassVar[list[str]] = []

    def question(parent, title, text, *args, **kwargs):
        Answers.asked.append(text)
        return Answers.reply

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return Answers


def set_aside_files(path):
    return sorted(path.parent.glob(f"{path.name}.damaged-*"))


@pytest.mark.parametrize("spoil", [damaged, foreign])
def test_a_damaged_history_is_moved_aside_when_the_user_agrees(qtbot, tiny_base_dir, tiny_adapters, answers, spoil):
    path = default_history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    contents = spoil(path).read_bytes()
    win = open_window(qtbot, tiny_base_dir, tiny_adapters)
    assert len(answers.asked) == 1 and str(path) in answers.asked[0]
    [moved] = set_aside_files(path)
    assert moved.read_bytes() == contents
    assert win.model.result is not None  # the preview ran, and was recorded in the fresh history
    assert win.model.session.history.path == path and len(History(path)) >= 1
    assert win.history.table.rowCount() >= 1


def test_a_damaged_history_is_left_alone_when_the_user_declines(qtbot, tiny_base_dir, tiny_adapters, answers):
    answers.reply = QMessageBox.No
    path = default_history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    contents = damaged(path).read_bytes()
    win = open_window(qtbot, tiny_base_dir, tiny_adapters)
    assert len(answers.asked) == 1
    assert path.read_bytes() == contents and set_aside_files(path) == []
    assert win.model.result is not None  # previews go on, into a temporary history
    assert win.model.session.history.path != path and len(win.model.session.history) >= 1
    win.model.preview()
    wait_idle(qtbot, win)
    assert len(answers.asked) == 1  # asked once, not at every preview


def test_a_workspace_with_a_damaged_history_opens_after_moving_it_aside(qtbot, tiny_base_dir, tiny_adapters, answers, tmp_path):
    win = open_window(qtbot, tiny_base_dir, tiny_adapters)
    workspace = tmp_path / "w.osrm.json"
    win.model.save_workspace(str(workspace))
    path = history_path_for(workspace)
    damaged(path)
    win.model.open_workspace(str(workspace))
    wait_idle(qtbot, win)
    assert len(answers.asked) == 1 and len(set_aside_files(path)) == 1
    assert win.model.workspace_path == workspace and win.model.session.history.path == path
    win.model.set_lambda(0.3)  # settings not scored yet (those scored before are shown again, not scored)
    wait_idle(qtbot, win)
    assert len(History(path)) >= 1  # the fresh history records


def test_saving_next_to_a_damaged_history_writes_nothing_when_declined(qtbot, tiny_base_dir, tiny_adapters, answers, tmp_path):
    answers.reply = QMessageBox.No
    win = open_window(qtbot, tiny_base_dir, tiny_adapters)
    workspace = tmp_path / "w.osrm.json"
    contents = foreign(history_path_for(workspace)).read_bytes()
    win.model.save_workspace(str(workspace))
    assert not workspace.exists() and history_path_for(workspace).read_bytes() == contents


# -- recent workspaces -----------------------------------------------------------------------

def restarted(settings: QSettings, tmp_path) -> QSettings:
    """The same settings file as the next start of the app reads it. Qt caches a file it wrote
    for the rest of the process, so the copy goes under a new name."""
    settings.sync()
    copy = tmp_path / f"restart-{len(list(tmp_path.glob('restart-*')))}.ini"
    if Path(settings.fileName()).exists():  # Qt writes no file for settings that hold nothing
        shutil.copyfile(settings.fileName(), copy)
    return QSettings(str(copy), QSettings.IniFormat)


@pytest.mark.parametrize("paths", [
    ["/work/one.osrm.json"], ["/work/a, b.osrm.json"], ["/work/one.osrm.json", "/work/two, 2.osrm.json"], [],
], ids=["one", "one with a comma", "two", "none"])
def test_recent_workspaces_round_trip_through_an_ini_file(tmp_path, paths):
    settings = QSettings(str(tmp_path / "osrm-gui.ini"), QSettings.IniFormat)
    for path in reversed(paths):
        remember_workspace(settings, path)
    assert recent_workspaces(restarted(settings, tmp_path)) == paths


def test_a_single_recent_workspace_written_by_an_older_version_is_one_item(tmp_path):
    ini = tmp_path / "old.ini"
    ini.write_text("[General]\nrecent=/work/only.osrm.json\n")
    assert recent_workspaces(QSettings(str(ini), QSettings.IniFormat)) == ["/work/only.osrm.json"]


def test_the_recent_menu_after_a_restart_has_one_item_per_workspace(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "osrm-gui.ini"), QSettings.IniFormat)
    remember_workspace(settings, "/work/only.osrm.json")
    win = MainWindow(SessionModel(), restarted(settings, tmp_path))
    qtbot.addWidget(win)
    assert [a.text() for a in win.recent_menu.actions()] == ["/work/only.osrm.json"]
    win._remember("/work/second.osrm.json")
    assert recent_workspaces(restarted(win.settings, tmp_path)) == ["/work/second.osrm.json", "/work/only.osrm.json"]
