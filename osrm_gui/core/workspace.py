"""Loading a base, its adapters and their tasks together, as the CLI and the app do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator

from torch import nn

from .adapters import Adapter, load_adapter
from .errors import OsrmError
from .evaluation import evaluate_tasks
from .merging import MergedState, pair_tasks, task_heads, validate_all
from .models import BaseModel, load_base
from .progress import Progress
from .tasks import Task, resolve_task


@dataclass
class Workspace:
    base: BaseModel
    adapters: list[Adapter]
    tasks: list[Task]
    pairs: dict[str, Adapter]
    warnings: list[str] = field(default_factory=list)
    _heads: dict[str, nn.Module] | None = None
    encoding_cache: dict = field(default_factory=dict)

    @property
    def heads(self) -> dict[str, nn.Module]:
        if self._heads is None:
            self._heads = task_heads(self.base, self.pairs)
        return self._heads

    def evaluate(self, merged: MergedState | None, split: str = "test", limit: int | None = None, batch_size: int = 64, max_length: int = 128) -> Generator[Progress, None, dict]:
        """Metrics per task with the merged backbone (``None``: the bare base, heads only)."""
        if merged is None:
            self.base.clear_deltas()
        else:
            self.base.set_deltas(merged.dense_deltas())
        try:
            return (yield from evaluate_tasks(self.base, self.heads, self.tasks, split, batch_size, max_length, limit, self.encoding_cache))
        finally:
            self.base.clear_deltas()

    def evaluate_single(self, split: str = "test", limit: int | None = None, batch_size: int = 64, max_length: int = 128) -> Generator[Progress, None, dict]:
        """Each task with its own adapter alone (the single-task reference)."""
        results: dict = {}
        try:
            for task in self.tasks:
                adapter = self.pairs[task.name]
                self.base.set_deltas({name: layer.delta() for name, layer in adapter.layers.items()})
                scores = yield from evaluate_tasks(self.base, {task.name: self.heads[task.name]}, [task], split, batch_size, max_length, limit, self.encoding_cache)
                results.update(scores)
        finally:
            self.base.clear_deltas()
        return results


def tasks_for(adapters: list[Adapter], task_specs: list[str] | None) -> list[Task]:
    if task_specs:
        return [resolve_task(spec) for spec in task_specs]
    specs = [a.metadata.get("task_spec") for a in adapters]
    if not all(specs):
        unnamed = [str(a.path) for a, s in zip(adapters, specs) if not s]
        raise OsrmError(f"no task data known for {', '.join(unnamed)}; name the evaluation data with --task")
    return [resolve_task(spec) for spec in specs]


def open_workspace(
    base_path: str | Path | None,
    adapter_paths: list[str | Path],
    task_specs: list[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    need_tasks: bool = True,
) -> Workspace:
    # Adapters first: a bad adapter file is reported before the slower base load.
    adapters = [load_adapter(p) for p in adapter_paths]
    names = [a.name for a in adapters]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        for adapter in adapters:
            if adapter.name in duplicates:
                adapter.name = f"{adapter.name}@{adapter.path.parent.name}"
    base = load_base(base_path, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    warnings = validate_all(base, adapters)
    tasks = tasks_for(adapters, task_specs) if need_tasks and adapters else []
    pairs = pair_tasks(adapters, tasks) if tasks else {}
    return Workspace(base, adapters, tasks, pairs, warnings)
