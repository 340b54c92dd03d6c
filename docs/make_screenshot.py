"""Make docs/screenshot.png: the app on the demo after a λ sweep, in a real X window;
and docs/subspaces.png: the Subspaces tab with the demo's interference matrix.

Run it through `make screenshot` (Xvfb), not offscreen: it refuses other platforms.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from screenshot_window import demo_window, grab, settle, wait  # noqa: E402


def main(out: str, subspaces_out: str) -> int:
    app, window = demo_window("run `make screenshot`")
    model = window.model
    window.tabs.setCurrentWidget(window.sweeps)
    window.sweeps.count.setValue(11)
    window.sweeps.start_sweep()
    wait(app, lambda: not model.jobs.busy and model.session.sweeps)
    model.set_lambda(0.5)
    wait(app, lambda: not model.jobs.busy and not model._debounce.isActive())
    settle(app)
    grab(out)

    panel = window.subspaces
    window.tabs.setCurrentWidget(panel)
    panel.metric_box.setCurrentIndex(panel.metric_box.findData("interference"))
    panel.compute_button.click()
    wait(app, lambda: not model.jobs.busy and panel.result is not None)
    settle(app)
    grab(subspaces_out)
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*(sys.argv[1:3] if len(sys.argv) > 2 else ("docs/screenshot.png", "docs/subspaces.png"))))
