"""Settings ▸ Where sweeps and searches run: the dialog refuses a malformed choice in one line,
applies the choice to the session, keeps it in the app's settings and brings it back at start,
without starting Ray; a sweep (and a search) on two Ray workers scores what the local one scores,
while the panel shows each worker."""

from __future__ import annotations

import inspect
import sys

import pytest
from PySide6.QtWidgets import QDialogButtonBox

from osrm_gui.core.execution import LOCAL, ExecutorSettings, WorkerStatus
from osrm_gui.core.explore.history import History
from osrm_gui.core.explore.search import search
from osrm_gui.core.session import MergeSession
from osrm_gui.gui.app import settings as app_settings
from osrm_gui.gui.dialogs import executor_dialog
from osrm_gui.gui.dialogs.executor_dialog import INSTALL_RAY, SETTINGS_KEY, saved_executor
from osrm_gui.gui.main_window import MainWindow
from osrm_gui.gui.state import SessionModel
from tests.gui.conftest import wait_idle

TWO = ExecutorSettings("ray", workers=2, threads_per_worker=1)


def ray_started() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


@pytest.fixture()
def bare_window(qtbot):
    """A window on an empty session: what the settings need, without loading a model."""
    win = MainWindow(SessionModel(), app_settings())
    qtbot.addWidget(win)
    return win


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (make test installs it)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_the_dialog_refuses_a_bad_address_inline_and_the_choice_is_applied_kept_and_restored(qtbot, bare_window, monkeypatch):
    monkeypatch.setattr(executor_dialog, "ray_installed", lambda: True)
    win = bare_window
    assert win.model.executor == LOCAL and win.executor_button.text() == "Runs: local (this process)"
    dialog = win.executor_dialog()
    ok = dialog.buttons.button(QDialogButtonBox.Ok)
    assert dialog.local.isChecked() and not dialog.ray_fields.isEnabled() and ok.isEnabled()
    dialog.ray.setChecked(True)
    assert dialog.ray_fields.isEnabled() and "a local Ray instance" in dialog.summary.text()
    dialog.address.setText("ray://head-node")  # no port
    assert not ok.isEnabled() and not dialog.error.isHidden()
    assert "ray://HOST:PORT" in dialog.error.text() and "\n" not in dialog.error.text()
    dialog.accept()  # Enter in the address field: refused, the dialog stays
    assert dialog.isVisible() and win.model.executor == LOCAL
    for address in ("auto", "ray://10.0.0.2:10001"):
        dialog.address.setText(address)
        assert ok.isEnabled() and dialog.error.isHidden()
    dialog.workers.setValue(3)
    dialog.threads.setValue(2)
    dialog.gpus.setValue(0.5)
    assert dialog.summary.text().endswith("3 workers × 2 threads, 0.5 GPU each")
    dialog.accept()

    chosen = ExecutorSettings("ray", "ray://10.0.0.2:10001", workers=3, gpus_per_worker=0.5, threads_per_worker=2)
    assert win.model.executor == chosen and win.model.session.executor == chosen
    assert win.executor_button.text() == f"Runs: {chosen.describe()}"
    assert not ray_started()  # choosing Ray connects nothing: a job does, off the GUI thread
    # kept in the app's settings and back at the next start
    assert saved_executor(app_settings()) == (chosen, None)
    again = MainWindow(SessionModel(), app_settings())
    qtbot.addWidget(again)
    assert again.model.executor == chosen
    reopened = again.executor_dialog()
    assert reopened.ray.isChecked() and reopened.address.text() == "ray://10.0.0.2:10001" and reopened.threads.value() == 2
    reopened.reject()
    # a session loaded later (a model, a workspace) runs where the app says
    again.model._install_session((MergeSession(), []))
    assert again.model.session.executor == chosen


def test_a_blank_thread_count_shares_the_cpus_and_a_garbled_setting_falls_back_to_local(qtbot, bare_window, monkeypatch):
    monkeypatch.setattr(executor_dialog, "ray_installed", lambda: True)
    dialog = bare_window.executor_dialog()
    dialog.ray.setChecked(True)
    dialog.workers.setValue(2)
    assert dialog.threads.text() == "CPUs shared out" and dialog.settings().threads_per_worker is None
    dialog.accept()
    assert bare_window.model.executor == ExecutorSettings("ray", workers=2)

    store = app_settings()
    store.setValue(SETTINGS_KEY, '{"kind": "slurm"}')
    executor, problem = saved_executor(store)
    assert executor == LOCAL and "slurm" in problem and "\n" not in problem
    window = MainWindow(SessionModel(), store)
    qtbot.addWidget(window)
    assert window.model.executor == LOCAL and "slurm" in window.statusBar().currentMessage()


def test_without_ray_the_ray_option_says_how_to_install_it(qtbot, bare_window, monkeypatch):
    monkeypatch.setattr(executor_dialog, "ray_installed", lambda: False)
    bare_window.model.set_executor(TWO)  # saved while Ray was there
    dialog = bare_window.executor_dialog()
    assert not dialog.ray.isEnabled() and dialog.local.isChecked()
    assert not dialog.missing.isHidden() and INSTALL_RAY in dialog.missing.text()
    dialog.reject()
    assert bare_window.model.executor == TWO  # cancelled: nothing changes


def _sweep(qtbot, window):
    with qtbot.waitSignal(window.model.sweepFinished, timeout=120000) as finished:
        window.sweeps.start_sweep()
    wait_idle(qtbot, window)
    return finished.args[0]


def test_a_sweep_on_two_ray_workers_scores_what_the_local_sweep_scores_and_shows_each_worker(qtbot, window, local_ray, tmp_path):
    panel = window.sweeps
    window.tabs.setCurrentWidget(panel)
    panel.target.setCurrentIndex(panel.target.findData("lambda"))
    panel.start.setValue(0.0)
    panel.stop.setValue(1.0)
    panel.count.setValue(4)
    local = _sweep(qtbot, window)
    assert panel.workers.isHidden()  # the local executor has no workers to show

    window.model.session.history = History(tmp_path / "fresh.sqlite")  # nothing reused: every point scored on the workers
    window.model.set_executor(TWO)
    seen = []
    window.model.sweepWorkers.connect(lambda status: seen.append(panel.workers.rows()))
    remote = _sweep(qtbot, window)

    assert [(p.method, p.values, p.scores) for p in remote.points] == [(p.method, p.values, p.scores) for p in local.points]
    assert not any(p.reused for p in remote.points)
    assert not panel.workers.isHidden() and panel.workers.summary.text() == "2 Ray workers · 4 done"
    rows = panel.workers.rows()
    assert [r[0] for r in rows] == ["w1", "w2"] and all(" pid " in r[1] for r in rows)
    assert sum(int(r[2]) for r in rows) == 4 and all(r[3] == "idle" for r in rows)
    # while it ran, the table said what each worker computed
    assert any(r[3].startswith("task_arithmetic lambda=") for shown in seen for r in shown)

    window.model.set_executor(LOCAL)  # the next sweep hides the workers again
    panel.count.setValue(3)
    _sweep(qtbot, window)
    assert panel.workers.isHidden()


@pytest.mark.skipif("executor" not in inspect.signature(search).parameters, reason="search() takes no executor yet")
def test_a_search_on_two_ray_workers_shows_each_worker(qtbot, window, local_ray):
    window.tabs.setCurrentWidget(window.automatic)
    panel = window.automatic.search
    window.automatic.setCurrentWidget(panel)
    panel.trials.setValue(3)
    panel.chunk.setValue(6)
    window.model.set_executor(TWO)
    statuses = []
    original = panel._event
    panel._event = lambda event: (statuses.append(event) if isinstance(event, WorkerStatus) else None, original(event))
    with qtbot.waitSignal(window.model.jobs.finished, timeout=120000) as finished:
        panel.start()
    assert finished.args[1] == "done", panel.status.text()
    wait_idle(qtbot, window)
    assert statuses and not panel.workers.isHidden()
    assert [r[0] for r in panel.workers.rows()] == ["w1", "w2"]
    assert panel.result is not None and len(panel.result.trials) == 3
