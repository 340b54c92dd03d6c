"""Make docs/screenshot.png: the app on the demo after a λ sweep, in a real X window;
and docs/subspaces.png: the Subspaces tab with the demo's interference matrix.

Run it through `make screenshot` (Xvfb), not offscreen: it refuses other platforms.
"""

from __future__ import annotations

import sys
import time

from PySide6.QtCore import QSettings
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication


def wait(app, predicate, timeout=600.0):
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


def main(out: str, subspaces_out: str) -> int:
    import os
    import tempfile

    # throw-away settings and run history: the screenshot must not depend on (or change) anyone's
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, tempfile.mkdtemp())
    os.environ["OSRM_GUI_DATA"] = tempfile.mkdtemp()
    app = QApplication(sys.argv[:1])
    if QGuiApplication.platformName() != "xcb":
        raise SystemExit(f"needs a real X display (xcb), got {QGuiApplication.platformName()!r}: run `make screenshot`")
    from osrm_gui.gui.app import build_window, parse_args

    window = build_window(parse_args([]))
    window.resize(1280, 800)
    window.move(0, 0)
    window.show()
    model = window.model
    wait(app, lambda: model.result is not None and not model.jobs.busy)
    window.tabs.setCurrentWidget(window.sweeps)
    window.sweeps.count.setValue(11)
    window.sweeps.start_sweep()
    wait(app, lambda: not model.jobs.busy and model.session.sweeps)
    model.set_lambda(0.5)
    wait(app, lambda: not model.jobs.busy and not model._debounce.isActive())
    settle(app)
    QGuiApplication.primaryScreen().grabWindow(0).copy(0, 0, 1280, 800).save(out)
    print(f"wrote {out}")

    panel = window.subspaces
    window.tabs.setCurrentWidget(panel)
    panel.metric_box.setCurrentIndex(panel.metric_box.findData("interference"))
    panel.compute_button.click()
    wait(app, lambda: not model.jobs.busy and panel.result is not None)
    settle(app)
    QGuiApplication.primaryScreen().grabWindow(0).copy(0, 0, 1280, 800).save(subspaces_out)
    print(f"wrote {subspaces_out}")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*(sys.argv[1:3] if len(sys.argv) > 2 else ("docs/screenshot.png", "docs/subspaces.png"))))
