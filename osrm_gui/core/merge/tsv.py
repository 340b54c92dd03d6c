"""TSV-Merge (Task Singular Vectors, Gargiulo et al., CVPR 2025), per layer, in core space.

Definition used here, for the N adapters that target a layer (m × n), with the weighted
task vectors ``T_i = c_i · ΔW_i`` (the adapter's coefficient applied first, as a task
vector's scale; with equal coefficients c the result is c times the paper's, since TSV is
homogeneous of degree 1, negative c included):

1. Compact SVD of each task, ``T_i = U_i diag(σ_i) V_iᵀ``, keeping
   ``k_i = min(rank(T_i), ⌊min(m, n)/N⌋)`` components. ``rank`` is the numerical rank
   (≤ r_i; it is r_i for a generic LoRA), so a direction a task does not have is never
   kept; the paper's ``⌊min(m, n)/N⌋`` alone would take null-space directions of a LoRA.
   If ``⌊min(m, n)/N⌋ = 0`` nothing is kept and the layer's merge is 0, as in the reference.
2. Concatenate ``U_cat = [U_1 … U_N]``, ``σ_cat``, ``V_cat = [V_1 … V_N]`` (block order is
   irrelevant: the polar factor commutes with permutations).
3. Polar-orthogonalise: ``U⊥ = P Qᵀ`` from ``U_cat = P S Qᵀ``, the same for ``V_cat``. The
   polar factor is taken on the numerical rank of ``U_cat`` (singular values above
   ``rtol · S_max``), which is the exact polar factor whenever the task vectors' directions
   are linearly independent (the generic case, and always so in the reference's tests); when
   tasks share directions the reference's full-size factor would add arbitrary
   directions with weight 1, this one gives a partial isometry and adds none.
4. ``τ* = λ · U⊥ diag(σ_cat) V⊥ᵀ``; λ is the paper's α (the authors pick it in 0.1…3.0 on
   validation data).

Every step is a function of SVDs, so it runs on the core matrices of
:mod:`.core_space` (``ΔW_i = U M_i V``): the result equals the dense computation restricted
to the adapters' spans, costs O(R³) per layer, and is a LoRA of rank ≤ R = Σ r_i
(``low_rank=True``).

Numerical ranks use ``rtol = max(p, q) · eps`` of the factors' dtype (p × q is the core
size; float32 adapters: eps = 1.2e-7), relative to each matrix's largest singular value,
after numpy's ``matrix_rank``: a direction below the factors' own precision is round-off.

The shared helpers here (:func:`polar_factor`, :func:`rank_rtol`, :func:`lift_or_zero`) are
also used by :mod:`.iso`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from osrm_gui.core.merge._tensors import compute_dtype
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod
from osrm_gui.core.merge.core_space import CoreSpace, core_space


def rank_rtol(deltas: Sequence[LoraDelta], space: CoreSpace) -> float:
    """Relative cut below which a singular value is round-off: max(p, q) · eps of the factors' dtype."""
    size = max(space.U.shape[1], space.V.shape[0], 1)
    return size * torch.finfo(compute_dtype(deltas)).eps


def count_above(s: torch.Tensor, tol: float) -> int:
    """How many singular values exceed ``tol`` (0 when ``tol`` is 0 and so is everything)."""
    return int((s > tol).sum()) if s.numel() else 0


def polar_factor(X: torch.Tensor, rtol: float) -> torch.Tensor:
    """``P Qᵀ`` for ``X = P S Qᵀ``, over the singular values above ``rtol · S_max``.

    For X of full column rank this is the orthogonal polar factor (the closest matrix with
    orthonormal columns); otherwise a partial isometry on X's numerical range.
    """
    P, S, Qh = torch.linalg.svd(X, full_matrices=False)
    if S.numel() == 0 or S[0] == 0:
        return torch.zeros_like(X)
    k = count_above(S, rtol * float(S[0]))
    return P[:, :k] @ Qh[:k]


def tsv_core(tasks: Sequence[torch.Tensor], per_task: int, rtol: float) -> torch.Tensor:
    """TSV-Merge (steps 1–3, without λ) of task matrices given in any orthonormal bases."""
    Us, ss, Vs = [], [], []
    for T in tasks:
        U, s, Vh = torch.linalg.svd(T, full_matrices=False)
        k = min(per_task, count_above(s, rtol * float(s[0])) if s.numel() else 0)
        Us.append(U[:, :k])
        ss.append(s[:k])
        Vs.append(Vh[:k])
    sigma = torch.cat(ss)
    like = tasks[0]
    if sigma.numel() == 0:
        return torch.zeros_like(like)
    U_perp = polar_factor(torch.cat(Us, dim=1), rtol)
    V_perp = polar_factor(torch.cat(Vs, dim=0), rtol)
    return (U_perp * sigma) @ V_perp


def lift_or_zero(space: CoreSpace, core: torch.Tensor, deltas: Sequence[LoraDelta], dtype: torch.dtype) -> LayerResult:
    """``space.lift(core)``; a rank-1 zero LoRA when the adapters span nothing (all-zero factors)."""
    if space.U.shape[1] == 0 or space.V.shape[0] == 0:
        m, n = deltas[0].B.shape[0], deltas[0].A.shape[1]
        device = space.U.device
        return LayerResult(A=torch.zeros(1, n, dtype=dtype, device=device), B=torch.zeros(m, 1, dtype=dtype, device=device))
    return space.lift(core, dtype)


def weighted_cores(space: CoreSpace, deltas: Sequence[LoraDelta], ctx: LayerContext) -> list[torch.Tensor]:
    """``c_i · M_i``: each adapter's coefficient applied to its core matrix."""
    return [float(ctx.coefficients[d.index]) * M for d, M in zip(deltas, space.cores)]


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    space = core_space(deltas, device=ctx.device)
    m, n = deltas[0].B.shape[0], deltas[0].A.shape[1]
    per_task = min(m, n) // len(deltas)
    core = tsv_core(weighted_cores(space, deltas, ctx), per_task, rank_rtol(deltas, space))
    return lift_or_zero(space, ctx.lam * core, deltas, compute_dtype(deltas))


METHOD = MergeMethod(
    name="tsv",
    label="TSV-Merge",
    doc="Keeps each task's top singular vectors (at most min(m, n)/N per task), orthogonalises the "
    "stacked singular vectors across tasks (polar factor) and rebuilds the update with the tasks' "
    "singular values; scaled by λ (the paper's α, chosen in 0.1–3.0 on validation data).",
    params=(),
    merge_layer=_merge_layer,
    low_rank=True,
)
