"""DO-Merging — decouple magnitude and direction, optionally orthogonalise (arXiv 2505.15875).

No reference code exists; this is our reading of the paper's summary (METHODS.md §2), kept
low-rank. For the adapters ``ΔW_t = s_t B_t A_t`` that target the layer (coefficients ``c_t``):

1. **Orthogonalise** (optional, ``orthogonalize_steps`` > 0; unverified spec, our reading):
   ``B̂_t = B_t + δ_B,t``, ``Â_t = A_t + δ_A,t`` with δ starting at 0, minimising by Adam
   ``Σ_{t≠u} ‖B̃_tᵀB̃_u‖_F + ‖Ã_tÃ_uᵀ‖_F + γ Σ_t (‖δ_A,t‖²/‖A_t‖² + ‖δ_B,t‖²/‖B_t‖²)``,
   where ``X̃ = X̂/‖X‖_F`` (each factor measured in units of its original norm, so the
   overlaps are scale-free cosines and γ penalises the *relative* change). Adam's variables
   are each entry's change in units of the factor's RMS entry, so ``lr`` is a relative step
   (``lr``·steps roughly bounds ‖δ‖/‖X‖). Deterministic: zero start, no random draws (the seed is
   not used). Adapters with an all-zero factor are left out (they have nothing to overlap).
   Defaults (ours): lr 1e-3 and γ 20, with which 4 random or strongly correlated rank-8
   adapters settle at ‖δ‖/‖X‖ ≈ 3–5 % however many steps run (the METHODS.md target ≤ ~5 %).
2. **Decouple**: ``W_t = s_t B̂_t Â_t``; magnitudes ``m_t[j] = ‖W_t[:, j]‖₂`` computed from
   the factors (``‖B a_j‖ = ‖R a_j‖`` with ``B = QR``); directions ``D_t = W_t·diag(1/m_t)``
   (a zero column stays 0).
3. **Merge** (t runs over the adapters that target the layer): ``m* = mean_t m_t``
   ("mean", the default) or ``Σ_t |c_t| m_t / Σ_t |c_t|`` ("weighted"; a magnitude cannot
   be negative, a negative coefficient negates the direction instead); ``D* = Σ_t c_t D_t`` (task arithmetic); with ``renormalize`` "on",
   ``κ_j = 1/‖D*[:, j]‖`` — 0 where the column cancels to rounding level (norm ≤
   1000·eps·Σ_t |c_t|, Σ_t |c_t| being its largest possible norm) instead of blowing
   noise up to unit length — else ``κ = 1``.
4. ``W* = λ · D*·diag(κ ⊙ m*)``, returned exactly as a LoRA of rank Σ r_t:
   ``B = λ·[s_1 B̂_1 … s_T B̂_T]``, ``A = [c_1 Â_1 diag(κ⊙m*/m_1); …; c_T Â_T diag(κ⊙m*/m_T)]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from osrm_gui.core.merge._tensors import compute_dtype
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod, Param

MAGNITUDE_MERGE = Param(
    "magnitude_merge",
    "mean",
    "How the column magnitudes are merged: 'mean' over the adapters (the paper, unverified) or "
    "'weighted' by the absolute coefficients.",
    choices=("mean", "weighted"),
    label="Magnitude merge",
)
RENORMALIZE = Param(
    "renormalize",
    "on",
    "Rescale each column of the merged direction to unit length before applying the merged magnitudes.",
    choices=("on", "off"),
    label="Renormalise directions",
)
ORTHOGONALIZE_STEPS = Param(
    "orthogonalize_steps",
    0,
    "Adam steps pushing the adapters' LoRA factors apart before merging (0 = off).",
    minimum=0,
    maximum=10_000,
    label="Orthogonalisation steps",
)
ORTHOGONALIZE_LR = Param(
    "orthogonalize_lr",
    1e-3,
    "Adam learning rate of the orthogonalisation, relative to each factor's typical entry.",
    minimum=0.0,
    maximum=1.0,
    min_exclusive=True,
    label="Orthogonalisation step size",
)
ORTHOGONALIZE_GAMMA = Param(
    "orthogonalize_gamma",
    20.0,
    "Weight of the penalty on the relative change of the LoRA factors during orthogonalisation "
    "(larger keeps them closer to the originals).",
    minimum=0.0,
    label="Orthogonalisation penalty (γ)",
)

CANCEL_RTOL = 1000.0  # × eps: a merged direction column this short (relative) is treated as cancelled


def column_norms(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``‖(B A)[:, j]‖₂`` for every column j, without forming B A."""
    R = torch.linalg.qr(B, mode="r").R
    return torch.linalg.vector_norm(R @ A, dim=0)


def _safe_inverse(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, 1.0 / torch.where(x > 0, x, 1.0), 0.0)


def _frobenius(M: torch.Tensor) -> torch.Tensor:
    # differentiable at 0 (exactly orthogonal pairs) unlike matrix_norm
    return torch.sqrt((M * M).sum() + torch.finfo(M.dtype).tiny)


def pairwise_overlap(As: Sequence[torch.Tensor], Bs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``Σ_{t≠u} ‖B_tᵀB_u‖_F + ‖A_tA_uᵀ‖_F`` (each unordered pair counted twice)."""
    total = As[0].new_zeros(())
    for t in range(len(As)):
        for u in range(t + 1, len(As)):
            total = total + 2 * (_frobenius(Bs[t].T @ Bs[u]) + _frobenius(As[t] @ As[u].T))
    return total


def orthogonalize(As: Sequence[torch.Tensor], Bs: Sequence[torch.Tensor], steps: int, lr: float,
                  gamma: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(Â_t, B̂_t)`` after ``steps`` Adam steps on the objective of step 1."""
    As, Bs = list(As), list(Bs)
    active = [t for t in range(len(As)) if bool(As[t].any()) and bool(Bs[t].any())]
    if steps <= 0 or len(active) < 2:
        return As, Bs
    with torch.inference_mode(False), torch.enable_grad():
        factors = [X.detach().clone() for t in active for X in (As[t], Bs[t])]
        norms = [torch.linalg.matrix_norm(X) for X in factors]
        units = [X / n for X, n in zip(factors, norms)]  # unit Frobenius norm
        rms = [1.0 / math.sqrt(X.numel()) for X in factors]  # an entry's RMS in those units
        shifts = [torch.zeros_like(X, requires_grad=True) for X in factors]
        optimizer = torch.optim.Adam(shifts, lr=lr)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            moved = [X + r * s for X, r, s in zip(units, rms, shifts)]
            penalty = sum(((r * s) ** 2).sum() for r, s in zip(rms, shifts))
            loss = pairwise_overlap(moved[0::2], moved[1::2]) + gamma * penalty
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            result = [n * (X + r * s) for X, n, r, s in zip(units, norms, rms, shifts)]
    for k, t in enumerate(active):
        As[t], Bs[t] = result[2 * k].detach(), result[2 * k + 1].detach()
    return As, Bs


def do_merge_factors(As: Sequence[torch.Tensor], Bs: Sequence[torch.Tensor], scalings: Sequence[float],
                     coefficients: Sequence[float], magnitude_merge: str = "mean",
                     renormalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` with ``B @ A = D*·diag(κ ⊙ m*)`` (steps 2–4 without λ)."""
    magnitudes = torch.stack([abs(s) * column_norms(B, A) for A, B, s in zip(As, Bs, scalings)])
    if magnitude_merge == "mean":
        merged_magnitude = magnitudes.mean(dim=0)
    elif magnitude_merge == "weighted":
        w = torch.tensor([abs(c) for c in coefficients], dtype=magnitudes.dtype, device=magnitudes.device)
        merged_magnitude = (w[:, None] * magnitudes).sum(0) / w.sum() if w.sum() > 0 else magnitudes.mean(dim=0)
    else:
        raise ValueError(f"magnitude_merge must be 'mean' or 'weighted', got {magnitude_merge!r}")
    B = torch.cat([s * B for B, s in zip(Bs, scalings)], dim=1)
    A = torch.cat([c * A * _safe_inverse(m) for A, c, m in zip(As, coefficients, magnitudes)], dim=0)
    if renormalize:
        norms = column_norms(B, A)
        mass = sum(abs(c) * (m > 0).to(norms.dtype) for c, m in zip(coefficients, magnitudes))
        cancelled = norms <= CANCEL_RTOL * torch.finfo(norms.dtype).eps * mass
        kappa = torch.where(cancelled, 0.0, _safe_inverse(norms))
    else:
        kappa = torch.ones_like(merged_magnitude)
    return B, A * (kappa * merged_magnitude)


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    dtype, p = compute_dtype(deltas), ctx.params
    As = [d.A.to(device=ctx.device, dtype=dtype) for d in deltas]
    Bs = [d.B.to(device=ctx.device, dtype=dtype) for d in deltas]
    As, Bs = orthogonalize(As, Bs, p["orthogonalize_steps"], p["orthogonalize_lr"], p["orthogonalize_gamma"])
    coefficients = [float(ctx.coefficients[d.index]) for d in deltas]
    B, A = do_merge_factors(As, Bs, [float(d.scaling) for d in deltas], coefficients, p["magnitude_merge"],
                            p["renormalize"] == "on")
    return LayerResult(A=A.contiguous(), B=(ctx.lam * B).contiguous())


METHOD = MergeMethod(
    name="do_merging",
    label="DO-Merging",
    doc="Splits each task update into column magnitudes and directions, sums the directions with their "
    "coefficients, renormalises them and applies the mean magnitude (optionally after pushing the "
    "adapters' subspaces apart); exact low rank, scaled by λ.",
    params=(MAGNITUDE_MERGE, RENORMALIZE, ORTHOGONALIZE_STEPS, ORTHOGONALIZE_LR, ORTHOGONALIZE_GAMMA),
    merge_layer=_merge_layer,
    low_rank=True,
)
