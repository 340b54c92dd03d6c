"""Bases and adapters named by a Hugging Face Hub id (``org/name`` or ``org/name@revision``).

Ids resolve through the Hub's own cache (``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``),
so a model downloaded once by transformers, peft or ``hf download`` is found here too. The process
is offline by default: an id resolves only from that cache until the user allows downloads
(``osrm --online``, or the app's setting), and a local path always wins over an id of the same spelling.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from osrm_gui.core.errors import OsrmError

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<revision>[A-Za-z0-9][A-Za-z0-9._/-]*))?$")
_OFFLINE_VARIABLE = "HF_HUB_OFFLINE"


@dataclass(frozen=True)
class Resolved:
    """A local folder, and the Hub id it came from (``org/name@commit``) when it came from the Hub."""

    path: Path
    hub_id: str | None = None

    @property
    def display_name(self) -> str | None:
        """The repository's name, since a cached snapshot's folder is only named by its commit."""
        return self.hub_id.split("@", 1)[0].rsplit("/", 1)[-1] if self.hub_id else None


class _Policy:
    online = False
    owns_variable = False  # whether HF_HUB_OFFLINE was set by us rather than by the user


def configure(online: bool = False) -> None:
    """Choose this process's Hub policy: cache only (the default) or downloads allowed.

    Offline also sets HF_HUB_OFFLINE, so that no library behind us makes a slow, failing look-up.
    A value the user put in the environment is left alone (and then wins over ``online``)."""
    if _OFFLINE_VARIABLE not in os.environ or _Policy.owns_variable:
        os.environ[_OFFLINE_VARIABLE] = "0" if online else "1"
        _Policy.owns_variable = True
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:  # it reads the variable once, at import
            constants.HF_HUB_OFFLINE = not online
    _Policy.online = online


def downloads_allowed() -> bool:
    return _Policy.online


def _offline_forced_by_user() -> bool:
    value = os.environ.get(_OFFLINE_VARIABLE, "")
    return not _Policy.owns_variable and value.upper() in ("1", "ON", "YES", "TRUE")


def parse_hub_id(spec: str) -> tuple[str, str | None] | None:
    """``(repo, revision)`` when ``spec`` is spelt like a Hub id, else None."""
    match = HUB_ID.match(spec)
    return (match["repo"], match["revision"]) if match else None


def resolve(spec: str | Path, what: str) -> Resolved:
    """The local folder behind ``spec``: the path itself when it exists (or is not spelt like an id),
    else the cached (or, when allowed, downloaded) snapshot of the Hub id. ``what`` names the thing in errors."""
    path = Path(spec).expanduser()
    parsed = None if path.exists() or isinstance(spec, Path) else parse_hub_id(str(spec))
    if parsed is None:
        return Resolved(path)
    repo, revision = parsed
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, IncompleteSnapshotError, LocalEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    online = _Policy.online and not _offline_forced_by_user()
    try:
        folder = Path(snapshot_download(repo, revision=revision, local_files_only=not online))
    except (LocalEntryNotFoundError, IncompleteSnapshotError):
        where = f"no local folder of that name, and as a Hub id the {what} is not in the Hugging Face cache {constants.HF_HUB_CACHE}"
        if online:
            raise OsrmError(f"{spec}: {where} and the Hub could not be reached") from None
        if _Policy.online:
            raise OsrmError(f"{spec}: {where}, and HF_HUB_OFFLINE in your environment forbids downloading it") from None
        raise OsrmError(f"{spec}: {where} (or not complete there), and downloads are off; "
                        "pass --online (app: Settings ▸ Allow Hub downloads) to fetch it") from None
    except RevisionNotFoundError:
        raise OsrmError(f"{spec}: the Hub repository {repo} has no revision {revision!r}") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise OsrmError(f"{spec}: no such Hub repository, or it is private or gated (log in with `hf auth login`)") from None
    except (HfHubHTTPError, OSError) as exc:
        raise OsrmError(f"{spec}: cannot fetch {what} from the Hub: {str(exc).splitlines()[0]}") from None
    return Resolved(folder, f"{repo}@{folder.name}")
