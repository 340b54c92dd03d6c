"""Where the app finds its bundled resources (demo adapters, icons)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resources_dir() -> Path:
    override = os.environ.get("OSRM_GUI_RESOURCES")
    if override:
        return Path(override)
    source_tree = Path(__file__).resolve().parents[2] / "resources"
    if source_tree.is_dir():
        return source_tree
    return Path(sys.prefix) / "share" / "osrm-gui" / "resources"


def demo_dir() -> Path:
    return resources_dir() / "demo"
