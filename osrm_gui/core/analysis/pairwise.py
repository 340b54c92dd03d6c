"""Read-only analysis of a set of LoRA adapters: pairwise metrics per layer, their
aggregation, interference and merge fidelity; the one entry point for the GUI's plots.

Overlap of subspaces U (k1 dims), V (k2 dims) with orthonormal bases: the principal-angle
cosines are the singular values of UᵀV; overlap = mean cos²θ over the min(k1, k2) angles
= ‖UᵀV‖_F² / min(k1, k2) (1 = one contains the other, 0 = orthogonal, NaN = one is empty).
Everything is float64, computed from the rank-r factors where that gives the same answer.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from osrm_gui.core.inputs.adapters import Adapter, LoraLayer
from osrm_gui.core.analysis.interference import interference_matrix
from osrm_gui.core.merge.base import LayerContext, LoraDelta
from osrm_gui.core.merge.engine import fidelity
from osrm_gui.core.merge.sparsify import magnitude_trim

if TYPE_CHECKING:  # merging pulls in the model stack; analysis itself only needs the result
    from osrm_gui.core.merge.spec import MergedState

_EPS = torch.finfo(torch.float64).eps


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


def _numerical_rank(s: torch.Tensor, shape: tuple[int, ...]) -> int:
    """Singular values above max(shape)·eps·σ_max (numpy's matrix_rank rule); 0 for a zero matrix."""
    return int((s > s.max() * max(shape) * _EPS).sum()) if s.numel() else 0


def orthonormal_basis(M: torch.Tensor) -> torch.Tensor:
    """A d × k float64 orthonormal basis of col(M), k its numerical rank (k = 0 for a zero matrix)."""
    U, s, _ = torch.linalg.svd(_f64(M), full_matrices=False)
    return U[:, : _numerical_rank(s, tuple(M.shape))]


def _overlap(U: torch.Tensor, V: torch.Tensor) -> float:
    k = min(U.shape[1], V.shape[1])
    return float(np.clip(float(torch.linalg.matrix_norm(U.T @ V) ** 2) / k, 0.0, 1.0)) if k else float("nan")


def principal_angles(U: torch.Tensor, V: torch.Tensor) -> np.ndarray:
    """Principal angles (radians, smallest first) between col(U) and col(V), any U, V."""
    cosines = torch.linalg.svdvals(orthonormal_basis(U).T @ orthonormal_basis(V)).numpy()
    return np.arccos(np.clip(cosines, 0.0, 1.0))


def subspace_overlap(U: torch.Tensor, V: torch.Tensor) -> float:
    """‖QᵤᵀQᵥ‖_F² / min(k1, k2) for orthonormal bases of col(U), col(V); NaN if one is empty."""
    return _overlap(orthonormal_basis(U), orthonormal_basis(V))


ENERGY = 0.9  # delta_overlap compares the directions holding this share of ‖ΔW‖_F²


def right_singular_basis(layer: LoraLayer, energy: float | None = None) -> torch.Tensor:
    """d_in × k right singular vectors of ΔW = s·B A, largest singular value first; k = rank ΔW,
    or with ``energy`` the fewest directions holding that share of ‖ΔW‖_F².

    With Aᵀ = Q_A R_A and B = Q_B R_B, ΔW = Q_B (s R_B R_Aᵀ) Q_Aᵀ, so the SVD of the
    r × r core C = U S Vᵀ gives ΔW's right singular vectors Q_A V: no d × d SVD."""
    Q_A, R_A = torch.linalg.qr(_f64(layer.A).T)
    _, R_B = torch.linalg.qr(_f64(layer.B))
    _, s, Vh = torch.linalg.svd(float(layer.scaling) * R_B @ R_A.T)
    k = _numerical_rank(s, (layer.B.shape[0], layer.A.shape[1]))
    if energy is not None and k:
        share = torch.cumsum(s[:k] ** 2, 0) / (s[:k] ** 2).sum()
        k = int((share < energy - 1e-12).sum()) + 1
    return Q_A @ Vh[:k].T


def row_overlap(a: LoraLayer, b: LoraLayer) -> float:
    """Overlap of row(A_a) and row(A_b): do the two adapters read the same input directions?"""
    return subspace_overlap(a.A.T, b.A.T)


def col_overlap(a: LoraLayer, b: LoraLayer) -> float:
    """Overlap of col(B_a) and col(B_b): do the two adapters write the same output directions?"""
    return subspace_overlap(a.B, b.B)


def delta_overlap(a: LoraLayer, b: LoraLayer, energy: float = ENERGY) -> float:
    """Overlap of the input directions that carry ``energy`` (90 %) of each ‖ΔW‖_F².

    All r right singular vectors of a full-rank B·A span exactly row(A), so comparing them
    would repeat row_overlap; the dominant ones say where each update actually acts."""
    return _overlap(right_singular_basis(a, energy), right_singular_basis(b, energy))


def _inner(a: LoraLayer, b: LoraLayer) -> float:
    # ⟨s_a B_a A_a, s_b B_b A_b⟩_F = s_a s_b Σ (B_aᵀB_b) ⊙ (A_a A_bᵀ): r × r work, no dense ΔW
    products = (_f64(a.B).T @ _f64(b.B)) * (_f64(a.A) @ _f64(b.A).T)
    return float(a.scaling) * float(b.scaling) * float(products.sum())


def cosine(a: LoraLayer, b: LoraLayer) -> float:
    """⟨ΔW_a, ΔW_b⟩_F / (‖ΔW_a‖_F ‖ΔW_b‖_F); NaN if either is zero."""
    norm = np.sqrt(max(_inner(a, a), 0.0) * max(_inner(b, b), 0.0))
    return float(np.clip(_inner(a, b) / norm, -1.0, 1.0)) if norm > 0 else float("nan")


def sign_conflict(a: LoraLayer, b: LoraLayer, density: float = 0.2) -> float:
    """Each ΔW trimmed to its top-density entries by magnitude (as TIES trims); among the
    positions both keep, the fraction with opposite signs. NaN if they keep none in common."""
    trimmed = magnitude_trim(torch.stack([float(x.scaling) * _f64(x.B) @ _f64(x.A) for x in (a, b)]), density)
    both = (trimmed[0] != 0) & (trimmed[1] != 0)
    conflict = (trimmed[0].sign() != trimmed[1].sign())[both]
    return float(conflict.double().mean()) if both.any() else float("nan")


_PAIR_METRICS: dict[str, Callable[[LoraLayer, LoraLayer], float]] = {
    "row_overlap": row_overlap, "col_overlap": col_overlap, "delta_overlap": delta_overlap, "cosine": cosine,
}


def common_layers(adapters: list[Adapter]) -> list[str]:
    """The layers every adapter targets, sorted (the same set interference_matrix uses)."""
    return sorted(set.intersection(*(set(a.layers) for a in adapters))) if adapters else []


def pairwise(adapters: list[Adapter], metric: str, density: float = 0.2) -> dict[str, np.ndarray]:
    """Per common layer, the T × T matrix M[i, j] = metric(adapter i, adapter j); ``density``
    is sign_conflict's. Every pair metric is symmetric, so only the upper triangle is computed."""
    if metric == "sign_conflict":
        fn = lambda a, b: sign_conflict(a, b, density)  # noqa: E731
    elif metric in _PAIR_METRICS:
        fn = _PAIR_METRICS[metric]
    else:
        raise ValueError(f"unknown pair metric {metric!r}; one of {', '.join([*_PAIR_METRICS, 'sign_conflict'])}")
    result = {}
    for name in common_layers(adapters):
        layers = [a.layers[name] for a in adapters]
        matrix = np.empty((len(layers), len(layers)))
        for i in range(len(layers)):
            for j in range(i, len(layers)):
                matrix[i, j] = matrix[j, i] = fn(layers[i], layers[j])
        result[name] = matrix
    return result


def interference(adapters: list[Adapter], grams: list[dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """I[i, j] = ‖ΔW_i H_jᵀ‖_F / ‖ΔW_j H_jᵀ‖_F per common layer; ``grams[j]`` are task j's HᵀH."""
    return interference_matrix(adapters, grams)


class Metric(NamedTuple):
    label: str
    description: str
    compute: Callable[..., dict[str, np.ndarray]]  # (adapters, grams=None, density=0.2) -> per layer T × T


def _pair(name: str):
    return lambda adapters, grams=None, density=0.2: pairwise(adapters, name, density)


def _interference(adapters, grams=None, density=0.2):
    if grams is None:
        raise ValueError("interference needs the feature statistics (Gram matrices) of every adapter's task")
    return interference(adapters, grams)


NEEDS_GRAMS = frozenset({"interference"})
METRICS: dict[str, Metric] = {
    "row_overlap": Metric("Input subspace overlap (A)", "Mean cos² of the principal angles between the row spaces of A_i and A_j.", _pair("row_overlap")),
    "col_overlap": Metric("Output subspace overlap (B)", "Mean cos² of the principal angles between the column spaces of B_i and B_j.", _pair("col_overlap")),
    "delta_overlap": Metric("ΔW subspace overlap", "Mean cos² of the principal angles between the input directions that carry 90 % of ‖ΔW_i‖² and of ‖ΔW_j‖².", _pair("delta_overlap")),
    "cosine": Metric("Cosine similarity", "Cosine similarity of the flattened task vectors ΔW_i and ΔW_j.", _pair("cosine")),
    "sign_conflict": Metric("TIES sign conflict", "Among entries both keep after TIES trimming, the fraction with opposite signs.", _pair("sign_conflict")),
    "interference": Metric("Interference", "‖ΔW_i H_jᵀ‖ / ‖ΔW_j H_jᵀ‖ on task j's inputs (needs feature statistics).", _interference),
}


def merge_fidelity(adapters: list[Adapter], merged_state: MergedState) -> dict[str, float]:
    """Per merged layer, ‖merged − λΣ_t c_t ΔW_t‖_F / ‖λΣ_t c_t ΔW_t‖_F (0 = lossless)."""
    spec = merged_state.spec
    coefficients = tuple(spec.coefficients) if spec.coefficients is not None else (1.0,) * len(adapters)
    result = {}
    for name, layer_result in merged_state.layers.items():
        deltas = [LoraDelta(i, a.layers[name].A, a.layers[name].B, a.layers[name].scaling) for i, a in enumerate(adapters) if name in a.layers]
        ctx = LayerContext(name, coefficients, float(spec.lam), dict(spec.params), 0)
        result[name] = fidelity(layer_result, deltas, ctx)
    return result


def aggregate(per_layer: dict[str, np.ndarray], how: str = "mean") -> np.ndarray:
    """Element-wise nan-mean or nan-max over layers (NaN where every layer is NaN)."""
    if how not in ("mean", "max"):
        raise ValueError(f"how must be 'mean' or 'max', got {how!r}")
    stack = np.stack(list(per_layer.values()))
    with warnings.catch_warnings():  # an all-NaN entry is a legitimate NaN result, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stack, axis=0) if how == "mean" else np.nanmax(stack, axis=0)


def layer_type(name: str) -> str:
    """The last dotted component: ``...attention.self.query`` → ``query``."""
    return name.rsplit(".", 1)[-1]


def layer_index(name: str) -> int | None:
    """The first integer dotted component (the block number), None if there is none."""
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(match[1]) if match else None


def by_layer_type(per_layer: dict[str, np.ndarray], how: str = "mean") -> dict[str, np.ndarray]:
    """Layer type → the matrices of that type aggregated with :func:`aggregate`."""
    kinds = sorted({layer_type(name) for name in per_layer})
    return {kind: aggregate({n: m for n, m in per_layer.items() if layer_type(n) == kind}, how) for kind in kinds}


def nan_mean(values) -> float:
    """Mean of the non-NaN values (NaN when there are none)."""
    values = list(values)
    with warnings.catch_warnings():  # all-NaN is a legitimate "no value"
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values)) if values else float("nan")


def off_diagonal_mean(matrix: np.ndarray) -> float:
    """Mean over the pairs of different adapters, NaNs skipped (NaN when there are none)."""
    return nan_mean(matrix[~np.eye(matrix.shape[0], dtype=bool)])


def mean_off_diagonal(per_layer: dict[str, np.ndarray]) -> float:
    """The one-number summary of a metric: the off-diagonal mean of each layer, averaged over
    the layers that have one (for interference: lower merges better)."""
    return nan_mean(off_diagonal_mean(m) for m in per_layer.values())


def to_rows(per_layer: dict[str, np.ndarray], names: list[str], metric: str | None = None) -> list[dict]:
    """One dict (layer, [metric,] adapter_i, adapter_j, value) per matrix entry, for CSV export."""
    tag = {} if metric is None else {"metric": metric}
    return [
        {"layer": layer, **tag, "adapter_i": names[i], "adapter_j": names[j], "value": float(matrix[i, j])}
        for layer, matrix in per_layer.items() for i in range(matrix.shape[0]) for j in range(matrix.shape[1])
    ]
