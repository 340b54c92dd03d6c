"""What every docs/make_*screenshot*.py script needs: the app on the demo in a real X window
(1280×800 at the screen's corner) with throw-away settings and run history, and ways to wait
for it and grab it."""

from __future__ import annotations

import os
import sys
import tempfile
import time

from PySide6.QtCore import QSettings
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication


def wait(app, predicate, timeout=1800.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the app")
        app.processEvents()
        time.sleep(0.01)


def settle(app):
    for _ in range(50):
        app.processEvents()
        time.sleep(0.02)


def grab(out: str, widget=None) -> None:
    """The window's 1280×800, or ``widget``'s frame (a dialog), as the X server shows it."""
    screen = QGuiApplication.primaryScreen().grabWindow(0)
    (screen.copy(widget.frameGeometry()) if widget is not None else screen.copy(0, 0, 1280, 800)).save(out)
    print(f"wrote {out}")


def demo_window(run_hint: str = "run it under xvfb-run"):
    """(app, window) once the demo workspace has loaded and its first evaluation is done."""
    # throw-away settings and run history: the screenshots must not depend on (or change) anyone's
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, tempfile.mkdtemp())
    os.environ["OSRM_GUI_DATA"] = tempfile.mkdtemp()
    app = QApplication(sys.argv[:1])
    if QGuiApplication.platformName() != "xcb":
        raise SystemExit(f"needs a real X display (xcb), got {QGuiApplication.platformName()!r}: {run_hint}")
    from osrm_gui.gui.app import build_window, parse_args

    window = build_window(parse_args([]))
    window.resize(1280, 800)
    window.move(0, 0)
    window.show()
    wait(app, lambda: window.model.result is not None and not window.model.jobs.busy)
    return app, window
