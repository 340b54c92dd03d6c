"""Outputs appear whole or not at all: write into a temporary sibling, then rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from osrm_gui.core.errors import OsrmError


def read_document(path: str | Path, fmt: str, kind: str) -> dict:
    """A JSON file written by this tool: its contents, or a one-line error naming the file."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise OsrmError(f"{path}: {kind} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OsrmError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else None
        raise OsrmError(f"{path}: not an osrm-gui {kind} (format {found!r}, expected {fmt!r})")
    return data


def refuse_existing(target: str | Path, force: bool) -> None:
    """Fail early, before any work, when an output is there and may not be replaced."""
    target = Path(target)
    if target.exists() and not force:
        raise OsrmError(f"{target}: already exists; pass --force to replace it")


def _replace(tmp: Path, target: Path) -> None:
    if not target.exists():
        tmp.rename(target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    target.rename(old)
    tmp.rename(target)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


@contextmanager
def atomic_dir(target: str | Path, force: bool = False):
    """Yield a temporary folder that becomes ``target`` when the block succeeds."""
    target = Path(target)
    refuse_existing(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace(tmp, target)


@contextmanager
def atomic_file(target: str | Path, force: bool = False):
    """Yield a temporary path that becomes the file ``target`` when the block succeeds."""
    target = Path(target)
    refuse_existing(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _replace(tmp, target)


def atomic_write_text(target: str | Path, text: str, force: bool = False) -> None:
    with atomic_file(target, force) as tmp:
        tmp.write_text(text)
