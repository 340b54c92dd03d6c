"""Where sweep points, search trials and training jobs run: in this process (``local``, the
default) or on a Ray cluster (``ray``), as the CLI's ``--executor`` options and the app's
setting describe it."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from osrm_gui.core.errors import OsrmError

KINDS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorSettings:
    kind: str = "local"
    # None: start a Ray instance on this machine (or join the one RAY_ADDRESS names); "auto": the
    # cluster `ray start --head` runs here; "ray://HOST:PORT": a remote cluster through Ray Client
    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    threads_per_worker: int | None = None  # None: this machine's CPUs shared out among the workers

    def __post_init__(self):
        if self.kind not in KINDS:
            raise OsrmError(f"executor {self.kind!r}: choose from {', '.join(KINDS)}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise OsrmError(f"{self.workers} workers: expected 1 or more")
        if not (math.isfinite(self.gpus_per_worker) and self.gpus_per_worker >= 0):
            raise OsrmError(f"{self.gpus_per_worker} GPUs per worker: expected 0 or more")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise OsrmError(f"{self.threads_per_worker} threads per worker: expected 1 or more")
        if self.address is not None and not self.address.strip():
            raise OsrmError("an empty Ray address: leave it out to start a local instance, or give auto or ray://HOST:PORT")

    @property
    def remote(self) -> bool:
        return self.kind == "ray"

    @property
    def threads(self) -> int:
        """Torch threads each worker computes with."""
        if self.threads_per_worker is not None:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // self.workers)

    def describe(self) -> str:
        if not self.remote:
            return "local (this process)"
        where = self.address or "a local Ray instance"
        gpus = f", {self.gpus_per_worker:g} GPU each" if self.gpus_per_worker else ""
        return f"Ray on {where}: {self.workers} worker{'s' * (self.workers != 1)} × {self.threads} thread{'s' * (self.threads != 1)}{gpus}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExecutorSettings":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


LOCAL = ExecutorSettings()
