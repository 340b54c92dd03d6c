"""Isotropic merging (Marczak et al. 2025): ISO-C and ISO-CTS, per layer, in core space.

Both flatten the spectrum of the summed task vectors. On LoRA updates a full-size SVD of
the rank-≤R sum would give the mean singular value to min(m, n) − R arbitrary null-space
directions, i.e. noise as large as the signal. Here both run on the core matrices of
:mod:`.core_space` (``ΔW_i = U M_i V``, orthonormal U, V spanning the adapters' columns and
rows) and only on the *numerical* rank, so the merge adds nothing outside the adapters'
spans and is a LoRA of rank ≤ R = Σ r_i (``low_rank=True``); it equals the dense
computation restricted to the numerical rank.

Coefficients: ISO sums task vectors; each adapter's coefficient scales its task vector
before the sum, ``T_i = c_i · ΔW_i``. With equal coefficients c the result is c times the
paper's (both rules are homogeneous of degree 1, negative c included). The output scale is
arbitrary (the mean singular value of a *sum*): the global λ is the paper's α, and for LoRA
the authors found λ ≈ 3.5–4.5 best (iso-merging issue #6), above their default grid 0.1–3.0.

**ISO-C**: ``Σ = Σ_i T_i = U diag(σ) Vᵀ`` (compact SVD, the k = numerical rank of Σ
components), ``τ* = λ · mean(σ_1..σ_k) · U_k V_kᵀ``.

**ISO-CTS** (``common_space_fraction`` f, default 0.8), after the reference
(``iso_cts`` in iso-merging / fusion_bench) with k = the numerical rank of Σ instead of
min(m, n) (METHODS.md §3, LoRA adaptation):

1. ``c0 = int(f·k)``; ``p = round((k − c0)/N)`` (Python's round, half to even, as the
   reference), capped at ``⌊k/N⌋`` so that ``c = k − N·p ≥ 0`` (the reference would index a
   negative common size for f near 0); N counts the adapters that target the layer.
2. Common space: the top-c components ``U_c, σ_c, V_c`` of Σ.
3. Per task, the residual ``ρ_i = T_i − U_c U_cᵀ T_i`` (projected on the left, as the
   reference) and its top ``p_i = min(p, rank(ρ_i))`` components: a residual has rank
   ≤ r_i and can be 0 (a task inside the common space); the reference would pad with
   zero singular values and arbitrary directions, which the isotropic mean then inflates.
4. Stack the task blocks and the common block into U, σ, V (c + Σ p_i ≤ k columns),
   replace U and V by their polar factors (``P Qᵀ`` of their SVDs, on the numerical rank,
   as in :mod:`.tsv`), and every σ by their mean: ``τ* = λ · mean(σ) · U⊥ V⊥``.

With f = 1 (c = k, p = 0) ISO-CTS is ISO-C. Numerical ranks: singular values above
``max(p, q) · eps`` (of the factors' dtype; p × q = the core size) times a scale: for Σ the
largest singular value of Σ or of any T_i (so a cancellation's round-off is not a
direction), for ρ_i the largest singular value of T_i (so the round-off left after
projecting out the common space is not a direction).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from osrm_gui.core.merge._tensors import compute_dtype
from osrm_gui.core.merge.base import (
    LayerContext,
    LayerResult,
    LoraDelta,
    MergeMethod,
    Param,
)
from osrm_gui.core.merge.core_space import core_space
from osrm_gui.core.merge.tsv import (
    count_above,
    lift_or_zero,
    polar_factor,
    rank_rtol,
    weighted_cores,
)


def _spectral_norm(T: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(T, ord=2)) if T.numel() else 0.0


def _sum_svd(tasks: Sequence[torch.Tensor], rtol: float):
    """Compact SVD of Σ_i T_i cut at its numerical rank: ``(U_k, σ_k, Vh_k)``."""
    total = sum(tasks)
    U, s, Vh = torch.linalg.svd(total, full_matrices=False)
    scale = max([float(s[0]) if s.numel() else 0.0] + [_spectral_norm(T) for T in tasks])
    k = count_above(s, rtol * scale)
    return U[:, :k], s[:k], Vh[:k]


def iso_c_core(tasks: Sequence[torch.Tensor], rtol: float) -> torch.Tensor:
    """ISO-C of task matrices (any orthonormal bases): ``mean(σ) · U Vᵀ`` of their sum, on its numerical rank."""
    U, s, Vh = _sum_svd(tasks, rtol)
    if s.numel() == 0:
        return torch.zeros_like(tasks[0])
    return s.mean() * (U @ Vh)


def cts_sizes(k: int, n_tasks: int, fraction: float) -> tuple[int, int]:
    """``(c, p)``: the common-space size and the per-task size for rank k (steps 1 above)."""
    c0 = int(k * fraction)
    p = min(round((k - c0) / n_tasks), k // n_tasks)
    return k - n_tasks * p, p


def iso_cts_core(tasks: Sequence[torch.Tensor], fraction: float, rtol: float) -> torch.Tensor:
    """ISO-CTS of task matrices (any orthonormal bases), steps 1–4 above without λ."""
    U, s, Vh = _sum_svd(tasks, rtol)
    k = s.numel()
    if k == 0:
        return torch.zeros_like(tasks[0])
    c, p = cts_sizes(k, len(tasks), fraction)
    U_c = U[:, :c]
    Us, ss, Vs = [], [], []
    for T in tasks:
        residual = T - U_c @ (U_c.T @ T)
        u, sigma, vh = torch.linalg.svd(residual, full_matrices=False)
        p_i = min(p, count_above(sigma, rtol * _spectral_norm(T)))
        Us.append(u[:, :p_i])
        ss.append(sigma[:p_i])
        Vs.append(vh[:p_i])
    Us.append(U_c)
    ss.append(s[:c])
    Vs.append(Vh[:c])
    sigma = torch.cat(ss)
    U_perp = polar_factor(torch.cat(Us, dim=1), rtol)
    V_perp = polar_factor(torch.cat(Vs, dim=0), rtol)
    return sigma.mean() * (U_perp @ V_perp)


def _merge_c(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    space = core_space(deltas, device=ctx.device)
    core = iso_c_core(weighted_cores(space, deltas, ctx), rank_rtol(deltas, space))
    return lift_or_zero(space, ctx.lam * core, deltas, compute_dtype(deltas))


def _merge_cts(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    space = core_space(deltas, device=ctx.device)
    core = iso_cts_core(weighted_cores(space, deltas, ctx), ctx.params["common_space_fraction"], rank_rtol(deltas, space))
    return lift_or_zero(space, ctx.lam * core, deltas, compute_dtype(deltas))


_LAMBDA_NOTE = "λ is the paper's α (output scale is arbitrary; for LoRA λ ≈ 3.5–4.5 worked best in the authors' issue #6)."

COMMON_SPACE_FRACTION = Param(
    "common_space_fraction",
    0.8,
    "Share of the summed update's rank kept as the common subspace; the rest is split evenly "
    "among the tasks' own directions (1 = ISO-C).",
    minimum=0.0,
    maximum=1.0,
    label="Common space fraction",
)

ISO_C = MergeMethod(
    name="iso_c",
    label="ISO-C (isotropic)",
    doc="Sums the task vectors and flattens the sum's spectrum (every singular value set to their "
    "mean) on its numerical rank, so no direction dominates; " + _LAMBDA_NOTE,
    params=(),
    merge_layer=_merge_c,
    low_rank=True,
)

ISO_CTS = MergeMethod(
    name="iso_cts",
    label="ISO-CTS (isotropic, common + task spaces)",
    doc="Isotropic merge of the sum's top directions (common space) plus each task's own top "
    "directions outside it, orthogonalised, all with the mean singular value; " + _LAMBDA_NOTE,
    params=(COMMON_SPACE_FRACTION,),
    merge_layer=_merge_cts,
    low_rank=True,
)
