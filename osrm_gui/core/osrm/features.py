"""Feature statistics of the pretrained base: for every LoRA-targeted linear
layer, the token count, the sum of its input rows and their Gram matrix ``HᵀH``,
accumulated streaming in float64 with padding excluded. Layers that read the
same input (a block's q/k/v projections) share one ``LayerStats`` object, computed
once and stored once. OSRM subspaces and RegMean both start from these; they are
cached on disk in safetensors.

File format (``save_features``/``load_features``; the cache's entries, ``osrm features --out``
and an adapter's shipped ``osrm_stats.safetensors``): a safetensors file with float64
tensors ``LAYER.sum`` (d,) and ``LAYER.gram`` (d, d) per layer, and string metadata
``format`` (``osrm-gui/features@1``), ``task``, ``key``, ``samples``, ``counts`` (JSON:
layer -> token count), ``aliases`` (JSON: layer -> the layer whose tensors it shares)
and ``meta`` (JSON: base name and fingerprint, task hash, targets, samples asked,
max_length, seed). No pickle, no text of the data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator

import numpy as np
import torch

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.evaluation import encode_split, iter_batches
from osrm_gui.core.inputs.models import BaseModel, linear_shape
from osrm_gui.core.progress import Progress
from osrm_gui.core.inputs.tasks import Task, TaskSplit

DEFAULT_SAMPLES = 100
STATS_FORMAT = "osrm-gui/features@1"


@dataclass
class LayerStats:
    count: int
    sum: torch.Tensor  # (d_in,) float64
    gram: torch.Tensor  # (d_in, d_in) float64, un-centred: Σ h hᵀ

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)

    @property
    def second_moment(self) -> torch.Tensor:
        """``HᵀH / (n − 1)``, the paper's (un-centred) S."""
        return self.gram / max(self.count - 1, 1)

    def __add__(self, other: "LayerStats") -> "LayerStats":
        return LayerStats(self.count + other.count, self.sum + other.sum, self.gram + other.gram)


@dataclass
class TaskFeatures:
    task: str
    key: str
    layers: dict[str, LayerStats]
    samples: int  # examples actually used
    meta: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def targets(self) -> list[str]:
        return sorted({name.rsplit(".", 1)[-1] for name in self.layers})


def target_layers(base: BaseModel, targets: list[str]) -> dict[str, torch.nn.Module]:
    layers = {n: m for n, m in base.linear_modules().items() if n.rsplit(".", 1)[-1] in targets}
    missing = [t for t in targets if not any(n.rsplit(".", 1)[-1] == t for n in layers)]
    if missing:
        raise OsrmError(f"target module(s) {', '.join(missing)} not found in {base.name}")
    return layers


def sample_split(split: TaskSplit, samples: int, seed: int) -> TaskSplit:
    order = np.sort(np.random.default_rng(seed).permutation(len(split))[: min(samples, len(split))])
    return TaskSplit([split.texts[i] for i in order], split.labels[order], [split.pairs[i] for i in order] if split.pairs else None)


def features_key(base: BaseModel, task: Task, targets: list[str], samples: int, max_length: int, seed: int) -> str:
    spec = json.dumps([base.fingerprint, task.content_hash(), sorted(targets), samples, max_length, seed])
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


def collect_features(
    base: BaseModel, task: Task, targets: list[str] | None = None, samples: int = DEFAULT_SAMPLES, max_length: int = 128,
    seed: int = 0, batch_size: int = 32, split: str = "train",
) -> Generator[Progress, None, TaskFeatures]:
    """Run the pretrained base (no adapter) over ``samples`` seeded examples of ``task``."""
    targets = targets or base.default_targets
    layers = target_layers(base, targets)
    data = task.split(split)
    warnings = []
    if len(data) < samples:
        warnings.append(f"task {task.name!r} has {len(data)} {split} examples, fewer than the {samples} asked for: using all of them")
    data = sample_split(data, samples, seed)
    device = base.device
    # Accumulators are keyed by the group of layers that read one same input tensor (the q/k/v
    # projections of an attention block do): its moments are computed once per batch and the
    # layers of a group share one LayerStats, so a block's q_proj and v_proj cost one Gram.
    groups: dict[tuple[str, ...], LayerStats] = {}
    current: dict = {}

    def batch_moments(x: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Token count, sum and Gram of the real (unpadded) rows of ``x``, from one float64
        matmul: the rows get a column of ones, so ``[H 1]ᵀ[H 1]`` holds ``HᵀH``, ``Hᵀ1`` and n."""
        d = x.shape[-1]
        flat = x.reshape(-1, d)
        index = current["index"]
        rows = torch.empty(flat.shape[0] if index is None else index.numel(), d + 1, dtype=torch.float64, device=flat.device)
        rows[:, :d] = flat if index is None else flat.index_select(0, index)
        rows[:, d] = 1.0
        moments = rows.T @ rows
        return rows.shape[0], moments[:d, d], moments[:d, :d]

    def flush() -> None:
        """Add the pending input's moments to the accumulator of the layers that read it."""
        if current.get("names"):
            key = tuple(sorted(current["names"]))
            count, total, gram = current["moments"]
            if key in groups:
                acc = groups[key]
                acc.count += count
                acc.sum += total
                acc.gram += gram
            else:
                groups[key] = LayerStats(count, total.clone(memory_format=torch.contiguous_format), gram.clone(memory_format=torch.contiguous_format))
        for k in ("input", "moments", "names"):
            current.pop(k, None)

    def hook(name):
        def accumulate(_module, inputs, _output):
            x = inputs[0]
            if current.get("input") is not x:
                flush()
                current.update(input=x, moments=batch_moments(x), names=[])
            current["names"].append(name)
        return accumulate

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    encoded = encode_split(base.tokenizer, data, max_length)
    base.clear_deltas()
    try:
        with torch.inference_mode():
            n = len(encoded.input_ids)
            for start, inputs in iter_batches(encoded, batch_size, base.tokenizer.pad_token_id or 0, device):
                mask = inputs["attention_mask"].reshape(-1).bool()
                # real tokens only: padding is left out (and nothing is gathered when a batch has none)
                current["index"] = None if bool(mask.all()) else mask.nonzero().squeeze(1)
                base.model(**inputs)
                flush()
                yield Progress(f"features:{task.name}", min(start + batch_size, n), n)
    finally:
        for handle in handles:
            handle.remove()
    cpu = {id(acc): LayerStats(acc.count, acc.sum.cpu(), acc.gram.cpu()) for acc in groups.values()}
    owners: dict[str, list[LayerStats]] = {}
    for key, acc in groups.items():
        for name in key:
            owners.setdefault(name, []).append(cpu[id(acc)])
    stats = {}
    for name, module in layers.items():
        parts = owners.get(name)
        if not parts:  # never reached by the forward pass
            d = linear_shape(module)[1]
            stats[name] = LayerStats(0, torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64))
        else:  # one shared accumulator, or (if the grouping ever changed between batches) the sum of its groups
            stats[name] = parts[0] if len(parts) == 1 else sum(parts[1:], parts[0])
    key = features_key(base, task, targets, samples, max_length, seed)
    meta = {"base": base.name, "base_fingerprint": base.fingerprint, "task_hash": task.content_hash(), "targets": sorted(targets),
            "samples_asked": samples, "max_length": max_length, "seed": seed}
    return TaskFeatures(task.name, key, stats, len(data), meta, warnings)


def cache_dir() -> Path:
    """``$OSRM_GUI_CACHE`` if set, else the platform's user cache folder."""
    import os

    from platformdirs import user_cache_dir

    return Path(os.environ.get("OSRM_GUI_CACHE") or user_cache_dir("osrm-gui")) / "features"


def save_features(features: TaskFeatures, path: Path) -> None:
    from safetensors.torch import save_file

    from osrm_gui.core.atomic import atomic_file

    tensors = {}
    aliases = {}  # layers that share another layer's statistics (same input) are stored once
    first: dict[int, str] = {}
    for name, s in features.layers.items():
        owner = first.setdefault(id(s), name)
        if owner != name:
            aliases[name] = owner
            continue
        tensors[f"{name}.sum"] = s.sum.contiguous()
        tensors[f"{name}.gram"] = s.gram.contiguous()
    counts = {name: s.count for name, s in features.layers.items()}
    metadata = {"format": STATS_FORMAT, "task": features.task, "key": features.key, "samples": str(features.samples),
                "counts": json.dumps(counts), "aliases": json.dumps(aliases), "meta": json.dumps(features.meta)}
    with atomic_file(path, force=True, make_parents=True) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_features(path: Path) -> TaskFeatures:
    """Read a statistics file (this module's format: safetensors tensors ``LAYER.sum`` and
    ``LAYER.gram`` in float64, JSON metadata; no pickle); anything else is one line naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            metadata = fh.metadata() or {}
            if metadata.get("format") != STATS_FORMAT:
                raise OsrmError(f"{path}: not an osrm-gui feature-statistics file")
            counts = json.loads(metadata["counts"])
            aliases = json.loads(metadata.get("aliases") or "{}")
            stored = {name: LayerStats(int(count), fh.get_tensor(f"{name}.sum"), fh.get_tensor(f"{name}.gram"))
                      for name, count in counts.items() if name not in aliases}
            layers = {name: stored[aliases.get(name, name)] for name in counts}
        meta = json.loads(metadata["meta"])
        features = TaskFeatures(str(metadata["task"]), str(metadata["key"]), layers, int(metadata["samples"]), dict(meta))
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise OsrmError(f"{path}: corrupt feature statistics ({type(exc).__name__}: {exc})") from None
    for name, stats in stored.items():
        d = stats.sum.shape[0] if stats.sum.dim() == 1 else -1
        if stats.sum.dtype != torch.float64 or stats.gram.dtype != torch.float64 or stats.gram.shape != (d, d):
            raise OsrmError(f"{path}: corrupt feature statistics (layer {name}: sum {tuple(stats.sum.shape)}, Gram {tuple(stats.gram.shape)})")
    return features


def cached_features(
    base: BaseModel, task: Task, targets: list[str] | None = None, samples: int = DEFAULT_SAMPLES, max_length: int = 128,
    seed: int = 0, cache: Path | None = None,
) -> Generator[Progress, None, TaskFeatures]:
    """Statistics from the disk cache when the same (base, data, targets, samples, length, seed) was seen, else collected and stored."""
    targets = targets or base.default_targets
    folder = cache if cache is not None else cache_dir()
    path = folder / f"{features_key(base, task, targets, samples, max_length, seed)}.safetensors"
    if path.is_file():
        try:
            features = load_features(path)
            features.meta["cache"] = "hit"
            return features
        except OsrmError:
            path.unlink(missing_ok=True)  # a damaged cache entry is recomputed
    features = yield from collect_features(base, task, targets, samples, max_length, seed)
    save_features(features, path)
    features.meta["cache"] = "miss"
    return features
