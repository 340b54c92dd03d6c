"""OSRM subspaces (Zhang & Zhou, ACL 2025): for task t, the rows of ``A_t`` span
directions the *other* tasks' features barely use, so ``B_t A_t`` hardly moves
their outputs. Two variants, as in ../shared/OSRM.md:

- ``cov``: the r eigenvectors of the other tasks' un-centred second moment
  ``S = HᵀH / (n − 1)`` with the *smallest* eigenvalues (minimises ‖A Hᵀ‖_F).
- ``mean``: the last r right-singular vectors of the stacked per-task feature
  means — the null space of those means, as the official code does.

Also the post-hoc variant: project a trained adapter onto its subspace."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from osrm_gui.core.inputs.adapters import Adapter, LoraLayer
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.osrm.constraints import smallest_eigenvectors
from osrm_gui.core.osrm.features import LayerStats, TaskFeatures

VARIANTS = ("cov", "mean")


def _compute_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cov_subspace(others: list[LayerStats], rank: int) -> torch.Tensor:
    """(rank × d) orthonormal rows: eigenvectors of the pooled second moment, smallest eigenvalues first."""
    pooled = sum(others[1:], others[0])
    d = pooled.gram.shape[0]
    if rank > d:
        raise OsrmError(f"rank {rank} exceeds the layer's input size {d}")
    return smallest_eigenvectors(pooled.second_moment, rank, _compute_device())


def mean_subspace(others: list[LayerStats], rank: int) -> torch.Tensor:
    """(rank × d) orthonormal rows orthogonal to every other task's mean feature
    (exactly, while rank ≤ d − number of other tasks; beyond that the rows with
    the smallest singular values fill up)."""
    X = torch.stack([s.mean for s in others]).to(_compute_device())
    d = X.shape[1]
    if rank > d:
        raise OsrmError(f"rank {rank} exceeds the layer's input size {d}")
    _, _, Vh = torch.linalg.svd(X, full_matrices=True)
    return Vh[-rank:].contiguous().cpu()


def subspaces(features: dict[str, TaskFeatures], task: str, rank: int, variant: str = "cov") -> dict[str, torch.Tensor]:
    """``A`` per layer for ``task`` from the statistics of all the other tasks."""
    others = [f for name, f in features.items() if name != task]
    if not others:
        raise OsrmError(f"OSRM needs the statistics of other tasks than {task!r}: add at least one more task")
    return subspaces_from_others(others, rank, variant)


def subspaces_from_others(others: list[TaskFeatures], rank: int, variant: str = "cov") -> dict[str, torch.Tensor]:
    if variant not in VARIANTS:
        raise OsrmError(f"unknown OSRM variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not others:
        raise OsrmError("OSRM needs the statistics of at least one other task")
    layers = sorted(others[0].layers)
    for other in others[1:]:
        if sorted(other.layers) != layers:
            raise OsrmError(f"statistics of {other.task!r} and {others[0].task!r} cover different layers; collect them with the same targets")
    pick = cov_subspace if variant == "cov" else mean_subspace
    return {name: pick([o.layers[name] for o in others], rank) for name in layers}


@dataclass
class Projection:
    adapter: Adapter
    layers: dict[str, LoraLayer]
    kept: dict[str, float]  # ‖ΔW'‖_F / ‖ΔW‖_F per layer


def project_adapter(adapter: Adapter, basis: dict[str, torch.Tensor], alpha: float | None = None) -> Projection:
    """``ΔW' = ΔW AᵀA`` on every layer: ``A' = A_osrm``, ``B' = ΔW A_osrmᵀ / s'``."""
    missing = sorted(set(adapter.layers) - set(basis))
    if missing:
        raise OsrmError(f"{adapter.path}: no OSRM subspace for its layer(s) {', '.join(missing[:3])}; its targets differ from the statistics' targets")
    layers, kept = {}, {}
    for name, layer in adapter.layers.items():
        A = basis[name].to(torch.float64)
        if A.shape[1] != layer.A.shape[1]:
            raise OsrmError(f"{adapter.path}: layer {name} has inputs of size {layer.A.shape[1]}, the statistics {A.shape[1]}")
        rank = A.shape[0]
        scaling = (alpha if alpha is not None else adapter.alpha) / (math.sqrt(rank) if adapter.config.get("use_rslora") else rank)
        delta = layer.delta().to(torch.float64)
        B = delta @ A.T / scaling
        projected = scaling * B @ A
        norm = float(torch.linalg.matrix_norm(delta))
        kept[name] = float(torch.linalg.matrix_norm(projected)) / norm if norm else 1.0
        layers[name] = LoraLayer(A=A.float(), B=B.float(), scaling=scaling)
    return Projection(adapter, layers, kept)


def write_projection(projection: Projection, base, out, variant: str, other_tasks: list[str], force: bool = False):
    """The projected adapter as a PEFT folder, with the adapter's own fine-tuned head."""
    import json

    from osrm_gui.core.atomic import atomic_dir
    from osrm_gui.core.export import write_lora_folder

    adapter = projection.adapter
    factors = {name: (layer.scaling * layer.B, layer.A) for name, layer in projection.layers.items()}
    metadata = {**adapter.metadata, "name": f"{adapter.name}-osrm-{variant}", "init": f"post-hoc osrm-{variant}",
                "projected_from": {"path": str(adapter.path), "hash": adapter.content_hash},
                "osrm": {"variant": variant, "other_tasks": other_tasks}, "kept_fraction": projection.kept}
    with atomic_dir(out, force=force, inputs=[adapter.path, base.path]) as tmp:
        write_lora_folder(tmp, factors, base, adapter.head, metadata)
        (tmp / "osrm_adapter.json").write_text(json.dumps(metadata, indent=2))
    return out


def subspace_energy(features: dict[str, TaskFeatures], rank: int, variant: str = "cov") -> dict[str, tuple[float, float]]:
    """Per task: the share of its own and of the other tasks' feature energy that falls in
    its OSRM subspace, ``tr(A S Aᵀ) / tr(S)`` averaged over layers (a random r-dim subspace gets r/d)."""
    result = {}
    for task, own in features.items():
        others = [f for name, f in features.items() if name != task]
        basis = subspaces_from_others(others, rank, variant)
        shares = []
        for layer, A in basis.items():
            pooled = sum((o.layers[layer] for o in others[1:]), others[0].layers[layer])
            pair = []
            for S in (own.layers[layer].second_moment, pooled.second_moment):
                pair.append(float(torch.trace(A @ S @ A.T) / torch.trace(S)))
            shares.append(pair)
        mean = torch.tensor(shares).mean(0)
        result[task] = (float(mean[0]), float(mean[1]))
    return result
