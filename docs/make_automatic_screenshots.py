"""Make docs/automatic-adamerging.png, docs/automatic-search.png and docs/automatic-guard.png: the
Automatic tab on the demo after a short run of each panel, in a real X window at 1280×800.

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python docs/make_automatic_screenshots.py [docs]

Short settings, for a busy two-core machine: AdaMerging layer-wise for 30 steps on 32 inputs per
task, a search of 8 trials, the guard on the whole validation split (a few minutes in all).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from screenshot_window import demo_window, grab, settle, wait  # noqa: E402


def main(folder: str) -> int:
    app, window = demo_window()
    model = window.model

    def idle():
        return not model.jobs.busy and not model._debounce.isActive() and model.result is not None

    def run(button):
        button.click()
        settle(app)
        wait(app, idle)
        settle(app)

    def shot(name):
        grab(os.path.join(folder, f"automatic-{name}.png"))

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
