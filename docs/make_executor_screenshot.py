"""Make docs/executor-dialog.png (Settings ▸ Where sweeps and searches run, set to two Ray workers)
and docs/executor-sweep.png (a λ sweep of two methods on the demo, scored by those two workers on a
Ray instance the app starts itself; one worker is killed midway, so the panel shows its restart and
the re-queued points).

Run it under Xvfb, not offscreen (it refuses other platforms), with Ray installed:
    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python docs/make_executor_screenshot.py
"""

from __future__ import annotations

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from screenshot_window import demo_window, grab, settle, wait  # noqa: E402


def worker_pids(status) -> dict[int, int]:
    """Worker index -> pid, for the workers that said where they run ("NODE-IP pid N")."""
    return {w.index: int(w.where.rsplit(" ", 1)[1]) for w in status.workers if " pid " in w.where}


def main(dialog_out: str, sweep_out: str) -> int:
    app, window = demo_window()
    model = window.model

    dialog = window.executor_dialog()
    dialog.ray.setChecked(True)
    dialog.workers.setValue(2)
    dialog.threads.setValue(1)
    settle(app)
    grab(dialog_out, dialog)
    dialog.accept()
    settle(app)

    panel = window.sweeps
    window.tabs.setCurrentWidget(panel)
    panel.count.setValue(11)
    panel.method_actions["ties"].setChecked(True)
    panel.start_sweep()
    # both workers loaded and a few points in: kill one, as a lost node would be
    wait(app, lambda: panel.workers.status is not None and len(worker_pids(panel.workers.status)) == 2
         and len(panel.result.points) >= 4)
    killed = worker_pids(panel.workers.status)[1]
    os.kill(killed, signal.SIGKILL)
    # the re-queue said, and the replacement loaded and at work
    wait(app, lambda: panel.workers.messages and worker_pids(panel.workers.status).get(1, killed) != killed
         and panel.workers.status.workers[1].busy)
    settle(app)
    grab(sweep_out, window)
    wait(app, lambda: not model.jobs.busy)
    print(panel.workers.summary.text(), "|", " / ".join(panel.workers.messages))
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*(sys.argv[1:3] if len(sys.argv) > 2 else ("docs/executor-dialog.png", "docs/executor-sweep.png"))))
