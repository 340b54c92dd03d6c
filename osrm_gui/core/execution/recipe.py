"""What a worker on another process or machine needs to rebuild the driver's workspace: where
the base and the adapters are (each worker reads them from these paths), and the tasks' data
itself (sent along, so every worker scores exactly the examples the driver holds, however they
were loaded). A worker checks that what it loaded is what the driver loaded."""

from __future__ import annotations

from dataclasses import dataclass

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.adapters import load_adapter
from osrm_gui.core.inputs.models import embedded_model_path, load_base
from osrm_gui.core.inputs.tasks import Task
from osrm_gui.core.workspace import Workspace


@dataclass
class WorkspaceRecipe:
    base: str | None  # None: the embedded MiniLM, wherever the worker's copy of the package is
    dtype: str
    trust_remote_code: bool
    adapters: list[str]
    names: list[str]
    tasks: list[Task]
    pairs: dict[str, int]  # task -> index of the adapter whose head scores it
    batch_size: int
    max_length: int
    feature_samples: int
    base_fingerprint: str
    adapter_hashes: list[str]

    @classmethod
    def of(cls, ws: Workspace) -> "WorkspaceRecipe":
        try:
            embedded = embedded_model_path().resolve()
        except OsrmError:
            embedded = None
        base = None if embedded is not None and ws.base.path.resolve() == embedded else str(ws.base.path)
        index = {id(a): i for i, a in enumerate(ws.adapters)}
        return cls(base, str(ws.base.dtype).removeprefix("torch."), ws.base.trust_remote_code, [str(a.path) for a in ws.adapters],
                   [a.name for a in ws.adapters], list(ws.tasks), {t: index[id(a)] for t, a in ws.pairs.items()},
                   ws.batch_size, ws.max_length, ws.feature_samples, ws.base.fingerprint, [a.content_hash for a in ws.adapters])

    def open(self, device: str) -> Workspace:
        """The workspace, loaded here; OsrmError when a file differs from the driver's."""
        adapters = [load_adapter(p) for p in self.adapters]
        for adapter, name, expected in zip(adapters, self.names, self.adapter_hashes):
            if adapter.content_hash != expected:
                raise OsrmError(f"{adapter.path}: this worker reads another adapter there than the driver did; "
                                "workers must see the same files at the same paths")
            adapter.name = name
        base = load_base(self.base, device=device, dtype=self.dtype, trust_remote_code=self.trust_remote_code)
        if base.fingerprint != self.base_fingerprint:
            raise OsrmError(f"{base.path}: this worker reads another base model there than the driver did; "
                            "workers must see the same files at the same paths")
        pairs = {task: adapters[i] for task, i in self.pairs.items()}
        return Workspace(base, adapters, list(self.tasks), pairs, feature_samples=self.feature_samples, batch_size=self.batch_size,
                         max_length=self.max_length)
