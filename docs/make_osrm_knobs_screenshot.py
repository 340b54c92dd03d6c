"""Make docs/osrm-knobs.png: the OSRM tab on the demo after training one more adapter (word-pos)
against the three other loaded adapters' tasks with a subspace budget, its loss curve and beside it
the other tasks' energy share in row(A).

Run it under Xvfb, not offscreen (it refuses other platforms); about a minute on a laptop CPU:
    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python docs/make_osrm_knobs_screenshot.py
"""

from __future__ import annotations

import os
import sys
import tempfile

from PySide6.QtCore import Qt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from screenshot_window import demo_window, grab, settle, wait  # noqa: E402

TASK = "word-pos"


def main(out: str) -> int:
    app, window = demo_window()
    model = window.model

    panel = window.osrm
    window.tabs.setCurrentWidget(panel)
    for i in range(panel.tasks.count()):  # one more adapter for one task, against the loaded set
        item = panel.tasks.item(i)
        item.setCheckState(Qt.Checked if item.text() == TASK else Qt.Unchecked)
    assert panel.against.isChecked(), "training against the loaded adapters should be on by default"
    panel.init.setCurrentIndex(panel.init.findData("osrm-cov"))
    panel.options.budget.setCurrentIndex(panel.options.budget.findData(16))
    panel.options.penalty.setValue(0.001)
    panel.steps.setValue(20)
    panel.out.setText(tempfile.mkdtemp(prefix="osrm-knobs-"))
    assert panel.train_button.isEnabled(), panel.reason.text()
    panel.train()
    wait(app, lambda: not model.jobs.busy and TASK in panel.energies and panel.energies[TASK][0][0] == 0)
    wait(app, lambda: not model.jobs.busy and not model._loaders)
    settle(app)
    grab(out)
    print(panel.status.text())
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/osrm-knobs.png"))
