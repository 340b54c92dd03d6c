import pytest
from PySide6.QtCore import QSettings


@pytest.fixture(autouse=True)
def isolated_history(tmp_path_factory, monkeypatch):
    """Each test starts with an empty run history, so no sweep point comes from another test."""
    monkeypatch.setenv("OSRM_GUI_DATA", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory):
    """The app's QSettings go to a temporary folder: a user's real settings are never touched."""
    folder = tmp_path_factory.mktemp("settings")
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(folder))
    yield folder


@pytest.fixture(autouse=True)
def collect_on_the_gui_thread(qapp):
    """As in the app: no automatic garbage collection in worker threads while Qt objects are alive."""
    from osrm_gui.gui.gc_guard import MainThreadCollector

    collector = MainThreadCollector()
    yield
    collector.stop()


def open_window(qtbot, base, adapters, preview_size: int = 12):
    """The app on ``base`` and ``adapters`` (small previews: 12 examples, one pass), shown, once its first evaluation is done."""
    from osrm_gui.gui.app import build_window, parse_args

    win = build_window(parse_args(["--base", str(base), "--preview-size", str(preview_size), *map(str, adapters)]))
    qtbot.addWidget(win)
    win.show()
    wait_idle(qtbot, win)
    return win


@pytest.fixture()
def window(qtbot, tiny_base_dir, tiny_adapters):
    win = open_window(qtbot, tiny_base_dir, tiny_adapters)
    assert win.model.result is not None
    yield win
    win.model.jobs.cancel()
    win.model.jobs.wait(20)


def wait_idle(qtbot, win, timeout=30000):
    qtbot.waitUntil(lambda: not win.model.jobs.busy and not win.model._debounce.isActive() and not win.model._loaders, timeout=timeout)


def set_axis(controls, target, start, stop, count):
    """One sweep axis's controls (a sweep panel's ``first`` or ``second``)."""
    controls.target.setCurrentIndex(controls.target.findData(target))
    controls.start.setValue(start)
    controls.stop.setValue(stop)
    controls.count.setValue(count)
