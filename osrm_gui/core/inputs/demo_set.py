"""The bundled demo adapters: their manifest and one folder of adapters per initialisation family."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.paths import demo_dir

MANIFEST = "manifest.json"
BASELINE = "peft-default"  # the family in adapters/ (the manifest's top-level "tasks")


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def read_manifest(folder: Path | None = None) -> dict:
    path = (folder or demo_dir()) / MANIFEST
    if not path.is_file():
        raise OsrmError(f"{path}: no demo manifest; build the demo adapters with `osrm demo build`")
    return json.loads(path.read_text())


def adapters_folder(family: str) -> str:
    return "adapters" if family == BASELINE else f"adapters-{family}"


def demo_families(folder: Path | None = None) -> list[str]:
    return [BASELINE, *read_manifest(folder).get("families", {})]


def demo_adapter_paths(folder: Path | None = None, family: str = BASELINE) -> list[Path]:
    folder = folder or demo_dir()
    manifest = read_manifest(folder)
    if family == BASELINE:
        entries = manifest["tasks"]
    else:
        try:
            entries = manifest["families"][family]["tasks"]
        except KeyError:
            raise OsrmError(f"the demo has no {family!r} adapters (it has: {', '.join(demo_families(folder))}); build them with `osrm demo build --family {family}`") from None
    return [folder / entry["adapter"] for entry in entries.values()]
