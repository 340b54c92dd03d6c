"""Make docs/automatic-adamerging.png, docs/automatic-search.png and docs/automatic-guard.png: the
Automatic tab on the demo after a short run of each panel, in a real X window at 1280×800.

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python docs/make_automatic_screenshots.py [docs]

Short settings, for a busy two-core machine: AdaMerging layer-wise for 30 steps on 32 inputs per
task, a search of 8 trials, the guard on the whole validation split (a few minutes in all).
"""

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


def main(folder: str) -> int:
    # throw-away settings and run history: the screenshots must not depend on (or change) anyone's
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, tempfile.mkdtemp())
    os.environ["OSRM_GUI_DATA"] = tempfile.mkdtemp()
    app = QApplication(sys.argv[:1])
    if QGuiApplication.platformName() != "xcb":
        raise SystemExit(f"needs a real X display (xcb), got {QGuiApplication.platformName()!r}: run it under xvfb-run")
    from osrm_gui.gui.app import build_window, parse_args

    window = build_window(parse_args([]))
    window.resize(1280, 800)
    window.move(0, 0)
    window.show()
    model = window.model

    def idle():
        return not model.jobs.busy and not model._debounce.isActive() and model.result is not None

    def run(button):
        button.click()
        settle(app)
        wait(app, idle)
        settle(app)

    def shot(name):
        path = os.path.join(folder, f"automatic-{name}.png")
        QGuiApplication.primaryScreen().grabWindow(0).copy(0, 0, 1280, 800).save(path)
        print(f"wrote {path}")

    wait(app, idle)
    automatic = window.automatic
    window.tabs.setCurrentWidget(automatic)

    panel = automatic.adamerging
    automatic.setCurrentWidget(panel)
    panel.mode.setCurrentIndex(panel.mode.findData("layer"))
    panel.steps.setValue(30)
    panel.limit.setValue(32)
    panel.lr.setValue(0.01)
    run(panel.run_button)
    shot("adamerging")

    panel = automatic.search
    automatic.setCurrentWidget(panel)
    panel.trials.setValue(8)
    panel.chunk.setValue(16)
    run(panel.run_button)
    shot("search")

    panel = automatic.guard
    automatic.setCurrentWidget(panel)
    run(panel.prescreen_button)
    run(panel.loo_button)
    flagged = [i for i, flag in enumerate(panel.flags) if flag]
    if flagged:
        panel.verdicts.selectRow(flagged[0])  # its reasons in full, in the status line
        settle(app)
    shot("guard")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs"))
