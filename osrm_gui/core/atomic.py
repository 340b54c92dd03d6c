"""Every output goes through here, so every output is whole or absent.

Each is written into a temporary sibling and renamed when complete. Before any work: an
existing output needs ``force``, and an output may never be one of the command's inputs, inside
one, or around one. While writing, an OS error (read-only folder, full disk, file-size limit) is
one line naming the path, and nothing is left behind. Temporary siblings carry the writer's
process id, so a later write to the same place removes those a killed process left.
Finished outputs get the permissions the user's umask gives any new file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from osrm_gui.core.errors import OsrmError

_TMP_MARK = ".osrm-tmp-"
_STALE = re.compile(r"^\.(?P<name>.+)\.osrm-(?:tmp|old)-(?P<pid>\d+)(?:-\w+)?$")


def read_document(path: str | Path, fmt: str, kind: str) -> dict:
    """A JSON file written by this tool: its contents, or a one-line error naming the file."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise OsrmError(f"{path}: {kind} not found") from None
    except IsADirectoryError:
        raise OsrmError(f"{path}: a folder, not a {kind} file") from None
    except UnicodeDecodeError:
        raise OsrmError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise OsrmError(f"{path}: corrupt JSON ({exc})") from None
    except OSError as exc:
        raise OsrmError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else None
        raise OsrmError(f"{path}: not an osrm-gui {kind} (format {found!r}, expected {fmt!r})")
    return data


def refuse_overlap(target: str | Path, inputs: Iterable[str | Path]) -> None:
    """An output may not be an input, lie inside one, or contain one (--force would destroy it)."""
    out = Path(target).expanduser().resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item).expanduser().resolve()
        if out == source or out.is_relative_to(source) or source.is_relative_to(out):
            raise OsrmError(f"{target}: is (or holds, or lies inside) the input {item}; choose another output")


def refuse_existing(target: str | Path, force: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Fail early, before any work, when an output is there and may not be replaced, or is an input."""
    target = Path(target)
    refuse_overlap(target, inputs)
    if target.exists() and not force:
        raise OsrmError(f"{target}: already exists; pass --force to replace it")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary siblings of ``target`` whose writer no longer runs; return them."""
    removed = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return removed
    for path in siblings:
        match = _STALE.match(path.name)
        if match and match["name"] == target.name and not _pid_alive(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _umask() -> int:
    try:  # Linux tells without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_umask(path: Path) -> None:
    """mkdtemp/mkstemp make private (0700/0600) entries; finished outputs follow the umask."""
    mask = _umask()
    for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
        if not item.is_symlink():
            item.chmod((0o777 if item.is_dir() else 0o666) & ~mask)


def _replace(tmp: Path, target: Path) -> None:
    if not target.exists():
        tmp.rename(target)
        return
    old = target.with_name(f".{target.name}.osrm-old-{os.getpid()}")
    target.rename(old)
    tmp.rename(target)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


def _write_error(target: Path, exc: OSError) -> OsrmError:
    reason = exc.strerror or str(exc).splitlines()[0]
    return OsrmError(f"{target}: cannot write ({reason})")


def _missing_parents(folder: Path) -> list[Path]:
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


@contextmanager
def _atomic(target: Path, force: bool, inputs, make_parents: bool, make_tmp):
    refuse_existing(target, force, inputs)
    created = _missing_parents(target.parent)
    if created and not make_parents:
        raise OsrmError(f"{target}: the folder {created[-1]} does not exist")
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        tmp = make_tmp(prefix=f".{target.name}{_TMP_MARK}{os.getpid()}-", dir=target.parent)
        yield tmp
        _apply_umask(tmp)
        _replace(tmp, target)
    except BaseException as exc:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        for folder in created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):
            raise _write_error(target, exc) from None
        if type(exc).__name__ == "SafetensorError":  # safetensors reports disk errors as its own type
            raise OsrmError(f"{target}: cannot write ({str(exc).splitlines()[0]})") from None
        raise


def _mkdtemp(prefix: str, dir: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=dir))


def _mkstemp(prefix: str, dir: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=prefix, dir=dir)
    os.close(fd)
    return Path(name)


@contextmanager
def atomic_dir(target: str | Path, force: bool = False, inputs: Iterable[str | Path] = (), make_parents: bool = True):
    """Yield a temporary folder that becomes ``target`` when the block succeeds."""
    with _atomic(Path(target), force, inputs, make_parents, _mkdtemp) as tmp:
        yield tmp


@contextmanager
def atomic_file(target: str | Path, force: bool = False, inputs: Iterable[str | Path] = (), make_parents: bool = False):
    """Yield a temporary path that becomes the file ``target`` when the block succeeds."""
    with _atomic(Path(target), force, inputs, make_parents, _mkstemp) as tmp:
        yield tmp


def atomic_write_text(target: str | Path, text: str, force: bool = False, inputs: Iterable[str | Path] = (),
                      make_parents: bool = False) -> None:
    with atomic_file(target, force, inputs, make_parents) as tmp:
        tmp.write_text(text)
