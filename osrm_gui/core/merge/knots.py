"""KnOTS (Stoica et al., ICLR 2025): align LoRA updates by one SVD, then TIES or DARE-TIES.

Definition used here, for the N adapters that target a layer (m × n):

1. ``X = [c_1ΔW_1 | … | c_NΔW_N]`` (m × N·n; the reference's ``concat_across_output``).
   The coefficients act on the task vectors *before* the SVD. The reference scales all
   tasks after the merge by one number (``weights[0]``); with equal coefficients c > 0 the
   two agree up to that factor c, since every later step is homogeneous of degree 1.
2. Its compact SVD in float64, from the factors: with the core space of
   :mod:`.core_space`, ``X = U_ref [c_1M_1 | … | c_NM_N] (I_N ⊗ V_ref)``, so only the
   p × N·q core is decomposed. Components with ``σ > 1e-5 · σ_max`` are kept. The reference
   keeps ``σ > 1e-5`` *absolute* (on float32 full-model weights, a noise floor); a relative
   cut is used here so that the coefficients and the adapters' scale do not change which
   components survive. This gives ``U`` (m × k) and ``Vᵀ`` split into N blocks ``V_iᵀ`` (k × n).
   Each pair (u_j, v_j) is signed so that u_j's largest-magnitude entry is positive: TIES
   with the "total" election is unchanged by flipping a pair, but a tied "frequency" count
   is not, and an SVD's signs differ between libraries and devices.
3. Task representations ``diag(σ) V_iᵀ`` (k × n), in the layer's input coordinates.
4. KnOTS-DARE-TIES only: DARE on the stacked representations: keep each entry with
   probability 1 − p, rescale by 1/(1 − p); one Bernoulli mask over [N, k, n] from a CPU
   generator seeded with the layer's seed (:func:`.sparsify.dare_drop`).
5. TIES: each task keeps its ``int(top_k · k·n)`` largest-magnitude entries, a sign is elected
   per entry ("total": sign of the sum; "frequency": the most common sign; a zero score
   goes to +1, where the reference gives it the vector's majority sign), and the disjoint
   mean of the agreeing entries is taken (:mod:`.ties`).
6. ``ΔW* = U · (λ · merged)``: a LoRA of rank k ≤ R (``low_rank=True``), B = U, A = λ·merged.

The reference flattens the representations of **all** layers into one vector per task
before the top-K; the engine here merges one layer at a time, so the top-K is per layer (as
:mod:`.ties` in this project also does). Defaults follow the authors' ViT-B/32 r16 configs:
KnOTS-TIES top-K 20 %, KnOTS-DARE-TIES top-K 100 % and p = 0.1; their single scaling
coefficient (0.6 and 0.7, found by linear search) is the global λ here, and their DARE seed
(421) is the merge's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from osrm_gui.core.merge._params import MAJORITY_SIGN_METHOD
from osrm_gui.core.merge._tensors import compute_dtype
from osrm_gui.core.merge.base import (
    LayerContext,
    LayerResult,
    LoraDelta,
    MergeMethod,
    Param,
)
from osrm_gui.core.merge.core_space import core_space
from osrm_gui.core.merge.sparsify import dare_drop, magnitude_trim
from osrm_gui.core.merge.ties import elect_and_merge

SIGMA_RTOL = 1e-5  # components with σ ≤ SIGMA_RTOL · σ_max are dropped (step 2)


def knots_align(deltas: Sequence[LoraDelta], weights: Sequence[float], device: torch.device | str = "cpu"):
    """``(U, reps)``: the shared left singular vectors U (m × k) of ``X = [w_1ΔW_1 | …]`` and the
    task representations ``diag(σ) V_iᵀ`` stacked as [N, k, n], float64, computed from the factors."""
    space = core_space(deltas, device=device)
    q = space.V.shape[0]
    X_core = torch.cat([float(w) * M for w, M in zip(weights, space.cores)], dim=1)  # p × N·q
    if X_core.numel() == 0:
        k = 0
        u, s, vh = X_core.new_zeros(X_core.shape[0], 0), X_core.new_zeros(0), X_core.new_zeros(0, X_core.shape[1])
    else:
        u, s, vh = torch.linalg.svd(X_core, full_matrices=False)
        k = int((s > SIGMA_RTOL * s[0]).sum()) if s[0] > 0 else 0
    U = space.U @ u[:, :k]
    sV = s[:k, None] * vh[:k]
    if k:
        signs = torch.sign(U.gather(0, U.abs().argmax(dim=0, keepdim=True))).squeeze(0)
        signs[signs == 0] = 1.0
        U, sV = U * signs, sV * signs[:, None]
    reps = torch.stack([sV[:, i * q:(i + 1) * q] @ space.V for i in range(len(deltas))])
    return U, reps


def knots_merge(reps: torch.Tensor, top_k: float, majority_sign_method: str = "total",
                drop_rate: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Steps 4–5 on [N, k, n] representations: optional DARE (drop_rate > 0), then TIES."""
    if drop_rate > 0:
        reps = dare_drop(reps, 1.0 - drop_rate, seed)
    return elect_and_merge(magnitude_trim(reps, top_k), majority_sign_method)


def _merge(deltas: list[LoraDelta], ctx: LayerContext, drop_rate: float) -> LayerResult:
    dtype = compute_dtype(deltas)
    U, reps = knots_align(deltas, [ctx.coefficients[d.index] for d in deltas], ctx.device)
    if U.shape[1] == 0:  # nothing to merge: a rank-1 zero LoRA
        m, n = deltas[0].B.shape[0], deltas[0].A.shape[1]
        return LayerResult(A=U.new_zeros(1, n, dtype=dtype), B=U.new_zeros(m, 1, dtype=dtype))
    merged = knots_merge(reps, ctx.params["top_k"], ctx.params["majority_sign_method"], drop_rate, ctx.seed)
    return LayerResult(A=(ctx.lam * merged).to(dtype).contiguous(), B=U.to(dtype).contiguous())


def _merge_ties(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    return _merge(deltas, ctx, 0.0)


def _merge_dare_ties(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    return _merge(deltas, ctx, ctx.params["drop_rate"])


def _top_k(default: float) -> Param:
    return Param(
        "top_k",
        default,
        "Fraction of each task's aligned representation kept by magnitude before the sign election (KnOTS's topK/100).",
        minimum=0.0,
        maximum=1.0,
        min_exclusive=True,
        label="Top-K (kept fraction)",
    )


DROP_RATE = Param(
    "drop_rate",
    0.1,
    "DARE's drop probability p on the aligned representations; survivors are rescaled by 1/(1 − p).",
    minimum=0.0,
    maximum=0.99,
    label="DARE drop rate",
)

KNOTS_TIES = MergeMethod(
    name="knots_ties",
    label="KnOTS-TIES",
    doc="Aligns the LoRA updates in one shared SVD basis, then merges their representations in it with "
    "TIES (top-K, sign election, disjoint mean); scaled by λ (the authors used 0.6).",
    params=(_top_k(0.2), MAJORITY_SIGN_METHOD),
    merge_layer=_merge_ties,
    low_rank=True,
)

KNOTS_DARE_TIES = MergeMethod(
    name="knots_dare_ties",
    label="KnOTS-DARE-TIES",
    doc="Aligns the LoRA updates in one shared SVD basis, randomly drops entries of their representations "
    "(DARE) and merges them with TIES; scaled by λ (the authors used 0.7). Seeded.",
    params=(_top_k(1.0), DROP_RATE, MAJORITY_SIGN_METHOD),
    merge_layer=_merge_dare_ties,
    low_rank=True,
)
