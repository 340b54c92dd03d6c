"""SVD-compressed low-rank merge.

The exact merge ``M = λ Σ_t c_t ΔW_t`` is truncated to its best rank-r
approximation (Eckart–Young). ``M`` is never formed: with the concatenated
factors ``M = B' A'`` (see :mod:`.concat`), ``B' = Q_B R_B`` and
``A'ᵀ = Q_A R_A``, so ``M = Q_B (R_B R_Aᵀ) Q_Aᵀ`` and only the small core
``R_B R_Aᵀ`` (at most Σr_t × Σr_t) is decomposed. The singular values are split
evenly, ``B = U √S`` and ``A = √S Vᵀ``. The rank of the result is
``min(rank, Σr_t, d_out, d_in)``; when ``rank ≥ Σr_t`` it is exact.
``truncation_error = ‖M − BA‖_F / ‖M‖_F = √(Σ_{i>r} σ_i²) / √(Σ σ_i²)`` (0 when M = 0).
"""

from __future__ import annotations

import torch

from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod, Param
from osrm_gui.core.merge.concat import concat_factors


def factored_svd(B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``(U, S, Vh)`` of ``B @ A`` computed from the factors (QR + small core SVD)."""
    q_b, r_b = torch.linalg.qr(B, mode="reduced")
    q_a, r_a = torch.linalg.qr(A.T, mode="reduced")
    u_core, S, vh_core = torch.linalg.svd(r_b @ r_a.T, full_matrices=False)
    return q_b @ u_core, S, vh_core @ q_a.T


def truncate(
    U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rank: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(B, A, rel_error)`` keeping the ``rank`` largest singular values, split as √S on each side."""
    if rank < 1:
        raise ValueError(f"rank must be ≥ 1, got {rank}")
    k = min(int(rank), S.shape[0])
    root = S[:k].sqrt()
    energy = S.pow(2).sum()
    rel_error = 0.0 if energy == 0 else float((S[k:].pow(2).sum() / energy).sqrt())
    return U[:, :k] * root, root[:, None] * Vh[:k], rel_error


def compress_factors(B: torch.Tensor, A: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-``rank`` factors of ``B @ A`` without forming it."""
    return truncate(*factored_svd(B, A), rank)


def compress_dense(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-``rank`` factors ``(B, A, rel_error)`` of a dense d_out × d_in update.

    For turning any dense merge (TIES, DARE, …) into a LoRA adapter: ``B @ A`` is
    the truncated SVD of ``delta`` and ``rel_error = ‖delta − BA‖_F / ‖delta‖_F``.
    """
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    return truncate(U, S, Vh, rank)


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    B_cat, A_cat = concat_factors(deltas, ctx.coefficients, ctx.lam, ctx.device)
    B, A, error = compress_factors(B_cat, A_cat, ctx.params["rank"])
    return LayerResult(A=A, B=B, truncation_error=error)


RANK = Param("rank", 16, "Rank of the compressed merged adapter.", minimum=1)

METHOD = MergeMethod(
    name="svd",
    label="SVD-compressed low-rank",
    doc="The exact merge λ·Σ c_t ΔW_t truncated to the given rank by SVD (the best approximation "
    "of that rank); reports the relative truncation error.",
    params=(RANK,),
    merge_layer=_merge_layer,
    low_rank=True,
)
