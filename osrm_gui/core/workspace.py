"""Loading a base, its adapters and their tasks together, as the CLI and the app do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator

from torch import nn

from osrm_gui.core.inputs.adapters import Adapter, load_adapter
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.evaluation import evaluate_tasks
from osrm_gui.core.merge import get_method
from osrm_gui.core.merge.spec import MergedState, MergeSpec, merge_adapters, pair_tasks, task_heads, validate_all
from osrm_gui.core.inputs.models import BaseModel, load_base
from osrm_gui.core.progress import Progress
from osrm_gui.core.inputs.tasks import Task, resolve_task


@dataclass
class Workspace:
    base: BaseModel
    adapters: list[Adapter]
    tasks: list[Task]
    pairs: dict[str, Adapter]
    warnings: list[str] = field(default_factory=list)
    _heads: dict[str, nn.Module] | None = None
    encoding_cache: dict = field(default_factory=dict)
    feature_samples: int = 100
    _grams: dict[str, dict] = field(default_factory=dict)
    _fishers: dict[str, dict] = field(default_factory=dict)
    lora_sum_cache: dict = field(default_factory=dict)  # a caller's dict keeps the stacked factors across workspaces
    batch_size: int = 64  # of evaluation, when a call does not say
    max_length: int = 128  # tokens per example in evaluation

    @property
    def heads(self) -> dict[str, nn.Module]:
        if self._heads is None:
            self._heads = task_heads(self.base, self.pairs)
        return self._heads

    def input_paths(self) -> list[Path]:
        """Every file or folder this workspace reads: no output may replace or lie inside one."""
        specs = [t.extra.get("spec") or "" for t in self.tasks]
        files = [Path(s.partition("@")[0]) for s in specs if s and Path(s.partition("@")[0]).exists()]
        return [self.base.path, *(a.path for a in self.adapters), *files]

    def data_record(self, spec: MergeSpec) -> list[dict] | None:
        """What a recipe must record for ``spec`` to replay to the same weights: the task data a
        data-dependent method (RegMean, Fisher) reads, by spec and content hash, and how much of it."""
        spec = spec.resolved(len(self.adapters))
        if not get_method(spec.method).needs_data:
            return None
        samples = self.data_samples(spec)
        pairs = self._adapter_tasks(f"{spec.method} reads the adapter's task data, and none is known for it; name it with --task")
        return [{"task": t.name, "spec": t.extra.get("spec") or t.name, "hash": t.content_hash(), "samples": samples}
                for _, t in pairs]

    def data_samples(self, spec: MergeSpec) -> int:
        """Examples per task a data-dependent merge reads: ``fisher_examples`` for Fisher merging,
        the feature samples for RegMean."""
        spec = spec.resolved(len(self.adapters))
        return int(spec.params["fisher_examples"]) if get_method(spec.method).needs_fisher else self.feature_samples

    def merge(self, spec: MergeSpec) -> Generator[Progress, None, MergedState]:
        """Merge the adapters; methods that need feature statistics (RegMean) or Fisher information
        (Fisher merging) get them from the cache or the base."""
        spec = spec.resolved(len(self.adapters))  # unknown methods and bad parameters fail here, in one line
        method = get_method(spec.method)
        grams = fishers = None
        if method.needs_grams:
            grams = yield from self.adapter_grams()
        if method.needs_fisher:
            fishers = yield from self.adapter_fishers(int(spec.params["fisher_examples"]), spec.seed)
        return (yield from merge_adapters(self.adapters, spec, self.base.device, grams, fishers))

    def _adapter_tasks(self, why: str) -> list[tuple[Adapter, Task]]:
        """Each adapter with the task it serves; ``why`` says what needs it when one has none."""
        by_adapter = {id(self.pairs[t.name]): t for t in self.tasks}
        for adapter in self.adapters:
            if id(adapter) not in by_adapter:
                raise OsrmError(f"{adapter.path}: {why}")
        return [(a, by_adapter[id(a)]) for a in self.adapters]

    def adapter_grams(self) -> Generator[Progress, None, list[dict]]:
        """Per adapter, the Gram matrices of its task's inputs to each of its layers (pretrained base),
        per token: summed Grams would weigh each task by its token count, and on the demo the task
        with the longest texts (7× the tokens of the shortest) then dominated RegMean's solve."""
        from osrm_gui.core.osrm.features import cached_features

        grams = []
        for adapter, task in self._adapter_tasks("RegMean needs the adapter's task data to collect its feature statistics"):
            key = f"{adapter.content_hash}|{task.content_hash()}"
            if key not in self._grams:
                features = yield from cached_features(self.base, task, adapter.targets, self.feature_samples)
                self._grams[key] = {name: s.gram / max(s.count, 1) for name, s in features.layers.items()}
            grams.append(self._grams[key])
        return grams

    def adapter_fishers(self, examples: int, seed: int = 0) -> Generator[Progress, None, list[dict]]:
        """Per adapter, the diagonal Fisher of each of its layers' dense weights under its own model
        (base + adapter + head), over ``examples`` training inputs of its task drawn with ``seed``."""
        from osrm_gui.core.osrm.fisher_info import MAX_LENGTH, collect_fisher

        fishers = []
        for adapter, task in self._adapter_tasks("Fisher merging needs the adapter's task data to compute its Fisher information"):
            key = f"{adapter.content_hash}|{task.content_hash()}|{examples}|{seed}|{MAX_LENGTH}"
            if key not in self._fishers:
                self._fishers[key] = yield from collect_fisher(self.base, adapter, task, examples, seed)
            fishers.append(self._fishers[key])
        return fishers

    def evaluate(self, merged: MergedState | None, split: str = "test", limit: int | None = None, batch_size: int | None = None,
                 max_length: int | None = None) -> Generator[Progress, None, dict]:
        """Metrics per task with the merged backbone (``None``: the bare base, heads only)."""
        batch_size, max_length = batch_size or self.batch_size, max_length or self.max_length
        if merged is not None and merged.per_task:
            return (yield from self._evaluate_per_task(merged, split, limit, batch_size, max_length))
        if merged is None:
            self.base.clear_deltas()
        else:
            self.base.set_deltas(merged.dense_deltas())
        try:
            return (yield from evaluate_tasks(self.base, self.heads, self.tasks, split, batch_size, max_length, limit, self.encoding_cache))
        finally:
            self.base.clear_deltas()

    def _evaluate_per_task(self, merged: MergedState, split, limit, batch_size, max_length) -> Generator[Progress, None, dict]:
        """Each task through its own update (EMR's mask and scale) and its own head."""
        results: dict = {}
        try:
            for task in self.tasks:
                index = next(i for i, a in enumerate(self.adapters) if a is self.pairs[task.name])
                self.base.set_deltas(merged.dense_deltas(index))
                scores = yield from evaluate_tasks(self.base, {task.name: self.heads[task.name]}, [task], split, batch_size, max_length,
                                                   limit, self.encoding_cache)
                results.update(scores)
        finally:
            self.base.clear_deltas()
        return results

    def score(self, spec: MergeSpec, split: str = "test", limit: int | None = None) -> Generator[Progress, None, dict]:
        """Metrics per task for the merge ``spec``: through the fast LoRA-sum engine when the
        method is a weighted sum of task vectors, else merged layer by layer, then evaluated."""
        spec = spec.resolved(len(self.adapters))
        method = get_method(spec.method)
        if method.adapter_weights is None:
            merged = yield from self.merge(spec)
            return (yield from self.evaluate(merged, split, limit))
        try:
            weights = method.adapter_weights(tuple(spec.coefficients), spec.lam, spec.params)
        except ValueError as exc:
            raise OsrmError(str(exc)) from None
        lora_sum = self.lora_sum()
        lora_sum.set_weights(weights)
        with lora_sum.installed():  # the hooks carry the whole merge: evaluate the plain base under them
            return (yield from self.evaluate(None, split, limit))

    def lora_sum(self):
        """The adapters' stacked LoRA factors; only the latest adapter set is kept."""
        from osrm_gui.core.merge.stacked_lora import LoraSum

        base = self.base
        key = (base.fingerprint, str(base.device), str(base.dtype), tuple(a.content_hash for a in self.adapters))
        if key not in self.lora_sum_cache:
            self.lora_sum_cache.clear()
            self.lora_sum_cache[key] = LoraSum(base, self.adapters)
        return self.lora_sum_cache[key]

    def evaluate_single(self, split: str = "test", limit: int | None = None, batch_size: int | None = None,
                        max_length: int | None = None) -> Generator[Progress, None, dict]:
        """Each task with its own adapter alone (the single-task reference)."""
        batch_size, max_length = batch_size or self.batch_size, max_length or self.max_length
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
    warnings += [w for t in tasks for w in t.warnings]
    pairs = pair_tasks(adapters, tasks) if tasks else {}
    return Workspace(base, adapters, tasks, pairs, warnings)
