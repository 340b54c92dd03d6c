"""OPCM: continual merging by orthogonal projection (Tang et al., NeurIPS 2025), in LoRA form.

Adapters arrive one at a time. Per adapted layer the merged update ``M`` (m × n) is kept as
its thin SVD ``U diag(σ) Vh`` at its numerical rank k ≤ Σ r_i, never as a dense matrix. On
the arrival of a task vector ``τ = c·s·B A`` (the adapter's coefficient c applied first):

1. ``r_s`` = the first (0-based) index i with ``cumsum(σ)_i / Σσ > α``; when no index
   exceeds α (α = 1, up to rounding) ``r_s = k − 1``, the limit α → 1⁻ (the reference's
   ``argmax`` of an all-false mask would give 0 there, a jump). k = 0 (nothing merged into the
   layer yet): ``r_s = 0``.
2. ``τ̃ = τ − U_{:r_s} U_{:r_s}ᵀ τ V_{:r_s} V_{:r_s}ᵀ − Σ_{r_s ≤ i < k} (u_iᵀ τ v_i) u_i v_iᵀ``:
   the reference's ``P = Uᵀ τ V`` with ``P[:r_s, :r_s] = 0`` and ``diag(P) = 0``, the diagonal
   restricted to i < rank(M) (METHODS.md §4's pitfall: beyond the rank, u_i and v_i are
   arbitrary null-space vectors and the result would depend on the SVD routine).
3. ``new = λ_prev·M + τ̃`` in every layer (a layer τ does not adapt gets ``λ_prev·M``).
4. Whole-model rescale: ``n̄`` = mean of ‖c_i τ_i‖ over the adapters arrived so far, each norm
   over all its layers; ``n_t = ‖new‖`` over all layers; ``M = new·n̄/n_t``, ``λ_prev = n_t/n̄``
   (when ``new`` is 0 everywhere: M = 0, λ_prev = 0).

Starting from M = 0 and λ_prev = 1, the first arrival gives ``M = τ_1`` as in the reference.
"Whole model" means the LoRA-adapted layers: task heads are never merged, and a LoRA adapter
changes nothing else. The global λ multiplies the result (and each snapshot) at the end.

Step 3's SVD runs in a core space: ``new`` lies in the span of ``[U, B]`` on the left and of
``[Vh; A]`` on the right, so with orthonormal bases P (m × p) and Q (q × n) of those spans
``new = P (Pᵀ new Qᵀ) Q`` exactly, and the p × q core's SVD (p, q ≤ k + r) gives the new
``U, σ, Vh``. Numerical ranks: singular values above ``max(p, q)·eps·σ_max`` (eps of the
factors' dtype), as in :mod:`.tsv`. The cost per arrival and layer is O((m + n)(k + r)²); the
result is a LoRA of rank k per layer: ``B = λ·U diag(σ)``, ``A = Vh``.

OPCM's rescale spans the whole model, so it is no per-layer method: :func:`opcm_merge` runs
it over all layers (and yields a :class:`OpcmSnapshot` after every arrival, for continual
evaluation); :data:`METHOD` registers it through ``MergeMethod.merge_model``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod, Param
from osrm_gui.core.merge.core_space import orthonormal_span
from osrm_gui.core.merge.engine import LoraFactors, _check_shapes
from osrm_gui.core.progress import Progress, Run

ORDERS = ("given", "shuffled")


@dataclass
class _Svd:
    """One layer's merged update ``U diag(s) Vh`` (U m × k, Vh k × n, orthonormal), float64."""

    U: torch.Tensor
    s: torch.Tensor
    Vh: torch.Tensor

    def scaled(self, factor: float) -> _Svd:
        return _Svd(self.U, self.s * factor, self.Vh)


@dataclass(frozen=True)
class OpcmSnapshot:
    """The merge after an arrival: what one would evaluate or export at that point."""

    step: int  # adapters merged so far (1-based)
    adapter: int  # index of the adapter that just arrived
    arrived: tuple[int, ...]  # indices of the adapters merged so far, in arrival order
    layers: dict[str, LayerResult]  # low-rank, λ applied
    norm: float  # ‖M‖ over the whole model after the rescale (n̄, before λ)
    lam_t: float  # n_t / n̄ (≈ √t in the paper)


def split_rank(s: torch.Tensor, alpha: float) -> int:
    """``r_s``: the first index where ``cumsum(s)/Σs > α`` (``len(s) − 1`` when none; 0 for no values)."""
    if s.numel() == 0:
        return 0
    above = (torch.cumsum(s, 0) / s.sum() > alpha).nonzero()
    return int(above[0]) if above.numel() else s.numel() - 1


def project_out(M: _Svd, B: torch.Tensor, A: torch.Tensor, scale: float, alpha: float) -> torch.Tensor:
    """The k × k matrix ``C`` with ``τ − τ̃ = U C Vh`` (steps 1–2) for ``τ = scale·B A``."""
    k = M.s.numel()
    T = scale * (M.U.T @ B) @ (A @ M.Vh.T)  # Uᵀ τ V
    r_s = split_rank(M.s, alpha)
    C = torch.zeros_like(T)
    C[:r_s, :r_s] = T[:r_s, :r_s]
    idx = torch.arange(r_s, k, device=T.device)
    C[idx, idx] = T[idx, idx]
    return C


def _thin_svd(P: torch.Tensor, core: torch.Tensor, Q: torch.Tensor, eps: float) -> _Svd:
    u, s, vh = torch.linalg.svd(core, full_matrices=False)
    k = int((s > max(core.shape) * eps * s[0]).sum()) if s.numel() and s[0] > 0 else 0
    return _Svd(P @ u[:, :k], s[:k], vh[:k] @ Q)


def arrive(M: _Svd | None, B: torch.Tensor, A: torch.Tensor, scale: float, lam_prev: float, alpha: float, eps: float) -> _Svd | None:
    """``new = λ_prev·M + τ̃`` of one layer (steps 1–3), as a thin SVD; None when it is empty."""
    zero_tau = scale == 0 or not bool(B.any()) or not bool(A.any())
    if M is None or M.s.numel() == 0:
        if zero_tau:
            return M
        P = orthonormal_span(B)
        Q = orthonormal_span(A.T).T
        return _thin_svd(P, scale * (P.T @ B) @ (A @ Q.T), Q, eps)
    if zero_tau:
        return M.scaled(lam_prev)
    C = project_out(M, B, A, scale, alpha)
    kept = lam_prev * torch.diag(M.s) - C  # new = U kept Vh + τ
    # bases of [U, B] and [Vh; A]: B and A at unit spectral norm, so that the rank cut is relative to each
    P = orthonormal_span(torch.cat([M.U, B / torch.linalg.matrix_norm(B, 2)], dim=1))
    Q = orthonormal_span(torch.cat([M.Vh, A / torch.linalg.matrix_norm(A, 2)], dim=0).T).T
    core = (P.T @ M.U) @ kept @ (M.Vh @ Q.T) + scale * (P.T @ B) @ (A @ Q.T)
    return _thin_svd(P, core, Q, eps)


def task_norm(adapter: Mapping[str, tuple[torch.Tensor, torch.Tensor, float]], coefficient: float) -> float:
    """``‖c·τ‖`` over all the adapter's layers (float64 factors), from the factors."""
    squares = 0.0
    for A, B, scaling in adapter.values():
        squares += float(((B.T @ B) * (A @ A.T)).sum()) * (coefficient * scaling) ** 2
    return math.sqrt(max(squares, 0.0))


def _lift(M: _Svd | None, lam: float, m: int, n: int, dtype: torch.dtype, device) -> LayerResult:
    if M is None or M.s.numel() == 0:
        return LayerResult(A=torch.zeros(1, n, dtype=dtype, device=device), B=torch.zeros(m, 1, dtype=dtype, device=device))
    return LayerResult(A=M.Vh.to(dtype).contiguous(), B=(lam * M.U * M.s).to(dtype).contiguous())


def check_order(order: Sequence[int], n_adapters: int) -> list[int]:
    """``order`` as a list of distinct adapter indices; ValueError otherwise."""
    order = [int(i) for i in order]
    if not order:
        raise ValueError("the arrival order names no adapter")
    bad = [i for i in order if not 0 <= i < n_adapters]
    if bad:
        raise ValueError(f"arrival order {order}: adapter index {bad[0]} is not in 0…{n_adapters - 1}")
    if len(set(order)) != len(order):
        raise ValueError(f"arrival order {order}: an adapter arrives twice")
    return order


def shuffled_order(n_adapters: int, seed: int) -> list[int]:
    """The ``order="shuffled"`` arrival order for ``seed`` (reproducible)."""
    return [int(i) for i in np.random.default_rng(int(seed)).permutation(n_adapters)]


def opcm_merge(
    adapters_factors: Sequence[Mapping[str, LoraFactors]],
    order: Sequence[int],
    alpha: float = 0.5,
    coefficients: Sequence[float] | None = None,
    lam: float = 1.0,
    device: torch.device | str = "cpu",
) -> Iterator[Progress | OpcmSnapshot]:
    """OPCM over the adapters in ``order`` (indices into ``adapters_factors``).

    A generator: yields a ``Progress("merge", t, len(order))`` and an :class:`OpcmSnapshot` after
    each arrival, and returns the final ``{layer: LayerResult}`` (low-rank, λ applied). Arguments
    are checked at the call (this function is not itself a generator)."""
    if not adapters_factors:
        raise ValueError("no adapters to merge")
    order = check_order(order, len(adapters_factors))
    coefficients = [1.0] * len(adapters_factors) if coefficients is None else [float(c) for c in coefficients]
    if len(coefficients) != len(adapters_factors):
        raise ValueError(f"{len(coefficients)} coefficients for {len(adapters_factors)} adapters")
    alpha, lam = float(alpha), float(lam)
    if not all(math.isfinite(x) for x in [*coefficients, alpha, lam]):
        raise ValueError("α, the coefficients and λ must be finite numbers")
    _check_shapes(adapters_factors)
    return _run(adapters_factors, order, alpha, coefficients, lam, torch.device(device))


def _run(adapters_factors, order, alpha, coefficients, lam, device):
    wide = any(t.dtype == torch.float64 for adapter in adapters_factors for factors in adapter.values() for t in factors[:2])
    out_dtype = torch.float64 if wide else torch.float32  # of the result, and the eps of its rank cuts
    eps = torch.finfo(out_dtype).eps
    shapes: dict[str, tuple[int, int]] = {}
    merged: dict[str, _Svd | None] = {}
    norms: list[float] = []
    lam_prev = 1.0
    for step, index in enumerate(order, 1):
        adapter = {name: (A.to(device, torch.float64), B.to(device, torch.float64), float(s))
                   for name, (A, B, s) in adapters_factors[index].items()}
        c = coefficients[index]
        norms.append(task_norm(adapter, c))
        n_bar = sum(norms) / len(norms)
        for name in sorted(set(merged) | set(adapter)):
            if name in adapter:
                A, B, scaling = adapter[name]
                shapes[name] = (B.shape[0], A.shape[1])
                merged[name] = arrive(merged.get(name), B, A, c * scaling, lam_prev, alpha, eps)
            elif merged[name] is not None:
                merged[name] = merged[name].scaled(lam_prev)
        del adapter
        n_t = math.sqrt(sum(float((M.s ** 2).sum()) for M in merged.values() if M is not None))
        if n_t > 0 and n_bar > 0:
            merged = {name: M.scaled(n_bar / n_t) if M is not None else None for name, M in merged.items()}
            lam_prev, norm = n_t / n_bar, n_bar
        else:  # every arrived task vector cancelled or was 0: nothing is merged yet
            merged, lam_prev, norm = dict.fromkeys(merged), 0.0, 0.0
        yield Progress("merge", step, len(order), f"adapter {index + 1} arrived")
        layers = {name: _lift(M, lam, *shapes[name], out_dtype, device) for name, M in sorted(merged.items())}
        yield OpcmSnapshot(step, index, tuple(order[:step]), layers, norm, lam_prev)
    return {name: _lift(M, lam, *shapes[name], out_dtype, device) for name, M in sorted(merged.items())}


def _merge_model(adapters_factors, coefficients, lam, params, seed, device):
    """The registry's whole-model merge: every adapter, in the given or a seeded shuffled order."""
    n = len(adapters_factors)
    order = list(range(n)) if params["order"] == "given" else shuffled_order(n, seed)
    run = Run(opcm_merge(adapters_factors, order, params["alpha"], coefficients, lam, device))
    for event in run:
        if isinstance(event, Progress):  # the snapshots are for continual evaluation, not for a plain merge
            yield event
    return run.result


def _no_layer_merge(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    raise ValueError("opcm rescales over the whole model, so it cannot merge one layer alone; merge the adapters as a whole")


ALPHA = Param(
    "alpha",
    0.5,
    "Share of the merged update's singular-value mass (cumulative) whose top singular directions are "
    "protected: each new adapter's update is projected out of them (0 protects none, 1 all but the last).",
    minimum=0.0,
    maximum=1.0,
    label="Protected spectrum (α)",
)

ORDER = Param(
    "order",
    "given",
    "Arrival order of the adapters: as listed, or shuffled with the merge seed.",
    choices=ORDERS,
    label="Arrival order",
)

METHOD = MergeMethod(
    name="opcm",
    label="OPCM (continual, orthogonal projection)",
    doc="Merges the adapters one at a time (continual merging): each new adapter's update is projected out of "
    "the merged update's top singular directions (those holding the first α of its singular-value mass) and "
    "loses its component along each of the merged update's other singular pairs; then the whole model is "
    "rescaled so that its norm is the mean of the adapters' norms. The arrival order matters; λ scales the result.",
    params=(ALPHA, ORDER),
    merge_layer=_no_layer_merge,
    low_rank=True,
    merge_model=_merge_model,
)
