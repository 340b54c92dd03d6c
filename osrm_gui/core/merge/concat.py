"""Exact low-rank merge ("cat"): stack the LoRA factors instead of densifying.

``A' = [c_1 A_1; …; c_T A_T]`` (Σr_t × d_in) and ``B' = λ · [s_1 B_1 … s_T B_T]``
(d_out × Σr_t) give ``B' A' = λ Σ_t c_t s_t B_t A_t`` exactly, with rank Σr_t;
the ranks of the adapters may differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from osrm_gui.core.merge._tensors import compute_dtype
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod


def concat_factors(
    deltas: Sequence[LoraDelta], coefficients: Sequence[float], lam: float, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B', A')`` with ``B' @ A' == lam · Σ_t coefficients[d.index] · d.dense()``."""
    dtype = compute_dtype(deltas)
    A = torch.cat([float(coefficients[d.index]) * d.A.to(device=device, dtype=dtype) for d in deltas], dim=0)
    B = torch.cat([float(d.scaling) * d.B.to(device=device, dtype=dtype) for d in deltas], dim=1)
    return lam * B, A


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    B, A = concat_factors(deltas, ctx.coefficients, ctx.lam, ctx.device)
    return LayerResult(A=A, B=B, truncation_error=0.0)


def _weights(coefficients: tuple[float, ...], lam: float, params: dict) -> list[float]:
    return [lam * c for c in coefficients]


METHOD = MergeMethod(
    name="concat",
    label="Exact low-rank (concat)",
    doc="Concatenates the LoRA factors so the merged adapter equals λ·Σ c_t ΔW_t exactly; "
    "its rank is the sum of the adapters' ranks.",
    params=(),
    merge_layer=_merge_layer,
    adapter_weights=_weights,
    low_rank=True,
)
