"""The other tasks' feature statistics a new adapter is initialised, constrained, penalised
and measured against: gathered once per training run from the other tasks' data (task
specs, through the feature cache) and/or from statistics files written earlier.

A statistics file is the feature cache's own format (``features.save_features``):
safetensors holding, per targeted layer, the float64 sum and Gram matrix of its input
rows (layers reading one same input are stored once), with JSON metadata naming the
task, the token counts and the base's fingerprint. It holds no pickled objects and no
text of the task's data. ``osrm features --out FILE`` writes one; ``osrm train
--ship-stats`` writes ``osrm_stats.safetensors`` into each adapter it trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator

import torch

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.models import BaseModel
from osrm_gui.core.inputs.tasks import Task
from osrm_gui.core.osrm.features import TaskFeatures, cached_features, load_features
from osrm_gui.core.progress import Progress

SHIPPED_STATS = "osrm_stats.safetensors"  # a task's own statistics, next to its adapter


@dataclass
class OtherStatistics:
    features: list[TaskFeatures]  # one per other task, restricted to the adapted layers
    files: list[str] = field(default_factory=list)  # the statistics files among them
    warnings: list[str] = field(default_factory=list)
    _pooled: dict | None = field(default=None, repr=False)

    @property
    def names(self) -> list[str]:
        return [f.task for f in self.features]

    @property
    def layers(self) -> list[str]:
        return sorted(self.features[0].layers)

    def _groups(self) -> dict[str, tuple]:
        """Layer -> identity of its statistics: layers reading one same input (q and v of a block) share one."""
        return {name: tuple(id(f.layers[name]) for f in self.features) for name in self.layers}

    def second_moments(self) -> dict[str, torch.Tensor]:
        """Pooled ``S = Σ HᵀH / (Σ n − 1)`` per layer, float64 on the CPU; shared tensors for shared inputs."""
        if self._pooled is None:
            by_group: dict[tuple, torch.Tensor] = {}
            self._pooled = {}
            for name, group in self._groups().items():
                if group not in by_group:
                    parts = [f.layers[name] for f in self.features]
                    by_group[group] = sum(parts[1:], parts[0]).second_moment
                self._pooled[name] = by_group[group]
        return self._pooled

    def cov_bases(self, count: int) -> dict[str, torch.Tensor]:
        """Per layer the ``count`` eigenvectors of S with the smallest eigenvalues (rows, ascending),
        one eigendecomposition per distinct input, exactly as ``subspaces.cov_subspace`` computes them."""
        from osrm_gui.core.osrm.subspaces import cov_subspace

        by_group: dict[tuple, torch.Tensor] = {}
        result = {}
        for name, group in self._groups().items():
            if group not in by_group:
                by_group[group] = cov_subspace([f.layers[name] for f in self.features], count)
            result[name] = by_group[group]
        return result

    def scaled_moments(self, device, dtype) -> dict[str, torch.Tensor]:
        """``S / tr(S)`` per layer on the training device, for the subspace penalty."""
        by_id: dict[int, torch.Tensor] = {}
        result = {}
        for name, S in self.second_moments().items():
            if id(S) not in by_id:
                trace = float(torch.trace(S))
                by_id[id(S)] = (S / trace if trace > 0 else S).to(device=device, dtype=dtype)
            result[name] = by_id[id(S)]
        return result


def load_stats_file(path: str | Path, base: BaseModel, layers: list[str]) -> TaskFeatures:
    """A statistics file's layers ``layers``, refused (one line naming the file) if it was
    collected on another base or lacks one of them."""
    path = Path(path)
    if not path.is_file():
        raise OsrmError(f"{path}: statistics file not found")
    features = load_features(path)
    recorded = features.meta.get("base_fingerprint")
    if recorded != base.fingerprint:
        raise OsrmError(f"{path}: statistics of another base ({features.meta.get('base', '?')}, fingerprint {recorded}), "
                        f"not of {base.name} ({base.fingerprint}); collect them again on this base")
    missing = [name for name in layers if name not in features.layers]
    if missing:
        raise OsrmError(f"{path}: no statistics for layer {missing[0]} (the file covers targets "
                        f"{','.join(features.targets)}); collect them with the targets being trained")
    kept = {name: features.layers[name] for name in layers}
    return TaskFeatures(features.task, features.key, kept, features.samples, {**features.meta, "file": str(path)})


def gather_other_statistics(
    base: BaseModel, task: Task, layers: list[str], task_specs: list[str] | None, stats_files: list[str | Path] | None,
    samples: int, max_length: int, targets: list[str],
) -> Generator[Progress, None, OtherStatistics | None]:
    """The statistics of every task other than ``task``: from ``task_specs`` (collected on the
    pretrained base, cached) and ``stats_files``; None when there are none. A task given twice
    (same data) counts once; the task's own data is left out."""
    from osrm_gui.core.inputs.tasks import resolve_task

    features, files, warnings = [], [], []
    own_hash = task.content_hash()
    seen: set[str] = set()

    def admit(found: TaskFeatures, where: str) -> bool:
        data = found.meta.get("task_hash") or str(id(found))
        if found.task == task.name or data == own_hash:
            if where:  # a file of the task itself: say why it is not used
                warnings.append(f"{where}: statistics of {task.name!r} itself, left out")
            return False
        if data in seen:
            return False
        seen.add(data)
        features.append(found)
        return True

    for spec in task_specs or []:
        other = resolve_task(spec)
        if other.name == task.name:
            continue
        found = yield from cached_features(base, other, targets, samples, max_length)
        warnings.extend(found.warnings)
        admit(found, "")
    for path in stats_files or []:
        if admit(load_stats_file(path, base, layers), str(path)):
            files.append(str(path))
    if not features:
        return None
    return OtherStatistics(features, files, warnings)


def against_adapters(paths: list[str | Path]) -> tuple[list[str], list[str]]:
    """Other tasks named by trained adapters: (task specs, statistics files). An adapter that
    ships ``osrm_stats.safetensors`` gives that file; otherwise the task spec it records."""
    from osrm_gui.core.inputs.adapters import load_adapter

    specs, files = [], []
    for path in paths:
        adapter = load_adapter(path)
        shipped = Path(adapter.path) / SHIPPED_STATS
        if shipped.is_file():
            files.append(str(shipped))
        elif adapter.metadata.get("task_spec"):
            specs.append(str(adapter.metadata["task_spec"]))
        else:
            raise OsrmError(f"{path}: records no task data (task_spec) and ships no {SHIPPED_STATS}; "
                            "give its task with --osrm-task or its statistics with --against-stats")
    return specs, files
