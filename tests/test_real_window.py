"""The app in a real X window (xcb under Xvfb, the X server's own mouse, real XDND): see
tests/xvfb/run_real_window.py. Skipped where there is no Xvfb."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "xvfb" / "run_real_window.py"
SKIPPED = 77  # the script's word for "this X server cannot be driven"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("xvfb-run") and shutil.which("Xvfb")), reason="needs Xvfb (Debian: xvfb)"),
]


def test_every_tab_fits_and_the_mouse_and_drops_work_in_a_real_window(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "HF_HUB_OFFLINE": "1"}
    command = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", sys.executable, str(SCRIPT), "--out", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=360)
    output = result.stdout[-6000:] + result.stderr[-3000:]
    if result.returncode == SKIPPED:
        pytest.skip(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0, output
