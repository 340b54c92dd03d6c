"""The core space shared by one layer's LoRA updates (after Core-Space merging's ``get_core_matrices``).

For the task updates ``ΔW_i = s_i·B_i·A_i`` of a layer (B_i m×r_i, A_i r_i×n, R = Σ r_i):

- ``U`` (m×p): orthonormal basis of the span of all the B_i's columns,
- ``V`` (q×n): orthonormal basis of the span of all the A_i's rows,
- ``M_i = Uᵀ ΔW_i Vᵀ`` (p×q), computed from the factors, never from a dense ΔW,

so that ``ΔW_i = U M_i V`` exactly. p, q ≤ R are the *numerical* ranks of the stacked factors:
a basis padded to R with arbitrary directions would let a spectrum-flattening method (ISO,
TSV) put energy into directions no adapter uses. A method that is invariant to orthogonal
changes of basis on both sides (any function of the SVD) gives the same ΔW when run on the
M_i and lifted back, at O(R³) per layer instead of O(m·n·min(m, n)), and its result is a
LoRA of rank ≤ min(p, q): ``B = U·M``, ``A = V``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from osrm_gui.core.merge.base import LayerResult, LoraDelta


def orthonormal_span(M: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """Orthonormal columns spanning M's column space, cut at its numerical rank
    (singular values above ``rtol``·σ_max; by default max(m, n)·eps, as numpy's matrix_rank)."""
    U, s, _ = torch.linalg.svd(M, full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return U[:, :0]
    rtol = max(M.shape) * torch.finfo(M.dtype).eps if rtol is None else rtol
    return U[:, : int((s > rtol * s[0]).sum())]


@dataclass(frozen=True)
class CoreSpace:
    U: torch.Tensor  # m × p, orthonormal columns
    V: torch.Tensor  # q × n, orthonormal rows
    cores: tuple[torch.Tensor, ...]  # one p × q core matrix per delta, in the deltas' order

    def dense(self, core: torch.Tensor) -> torch.Tensor:
        """The m × n update a core matrix stands for."""
        return self.U @ core @ self.V

    def lift(self, core: torch.Tensor, dtype: torch.dtype = torch.float32, truncation_error: float | None = None) -> LayerResult:
        """A core-space result as low-rank factors (``delta == B @ A``), in ``dtype``."""
        return LayerResult(A=self.V.to(dtype).contiguous(), B=(self.U @ core).to(dtype).contiguous(),
                           truncation_error=truncation_error)


def core_space(deltas: list[LoraDelta], dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> CoreSpace:
    """The shared bases and each delta's core matrix, from the factors (float64 by default)."""
    Bs = [d.B.to(device=device, dtype=dtype) for d in deltas]
    As = [d.A.to(device=device, dtype=dtype) for d in deltas]
    U = orthonormal_span(torch.cat(Bs, dim=1))
    V = orthonormal_span(torch.cat(As, dim=0).T).T
    cores = tuple(d.scaling * (U.T @ B) @ (A @ V.T) for d, A, B in zip(deltas, As, Bs))
    return CoreSpace(U, V, cores)
