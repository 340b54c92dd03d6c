"""What keeps a LoRA adapter out of the other tasks' way *during* training, and how far
it strays. ``S`` is the other tasks' pooled un-centred second moment of one layer's
inputs (``HᵀH / (n − 1)``, the ``cov`` statistic of ../shared/OSRM.md).

- **energy share** of ``row(A)``: ``tr(Qᵀ S Q) / tr(S)`` with ``Q`` an orthonormal basis
  of ``row(A)``; the fraction of the other tasks' feature energy that ``A`` can see
  (r/d for a random r-dim subspace; the r smallest eigenvalues over ``tr(S)`` for OSRM-cov).
- **subspace budget**: ``A = C · U_m`` with ``U_m`` the ``m`` eigenvectors of ``S`` with the
  smallest eigenvalues, training ``C``; ``row(A)`` never leaves ``span(U_m)``.
- **subspace penalty**: ``tr(A S̃ Aᵀ) / tr(A Aᵀ)`` with ``S̃ = S / tr(S)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from osrm_gui.core.errors import OsrmError


def energy_share(A: torch.Tensor, S: torch.Tensor) -> float:
    """``tr(Qᵀ S Q) / tr(S)`` for ``Q`` an orthonormal basis of ``row(A)`` (QR of ``Aᵀ``), in float64."""
    S = S.to(torch.float64)
    Q, _ = torch.linalg.qr(A.detach().to(device=S.device, dtype=torch.float64).T)
    total = float(torch.trace(S))
    return float((Q * (S @ Q)).sum()) / total if total > 0 else float("nan")


def mean_energy_share(weights: dict[str, torch.Tensor], moments: dict[str, torch.Tensor]) -> float:
    """:func:`energy_share` averaged over the layers in ``weights`` (A per layer)."""
    shares = [energy_share(A, moments[name]) for name, A in weights.items()]
    return sum(shares) / len(shares) if shares else float("nan")


def penalty_term(weights: list[torch.Tensor], scaled: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of ``tr(A S̃ Aᵀ) / tr(A Aᵀ)`` (differentiable in A).

    ``S̃ = S / tr(S)`` and the ratio is a Rayleigh quotient, so the term is invariant to
    the scale of the base's features and of A: a given β weighs the same on any base.
    Each layer's value lies in ``[λ_min, λ_max] / tr(S)``; for A with orthonormal rows
    it is the energy share divided by the rank."""
    terms = [(A @ St * A).sum() / (A * A).sum() for A, St in zip(weights, scaled)]
    return torch.stack(terms).mean()


class RowSpan(nn.Module):
    """Parametrisation ``A = C · U`` (``U``: orthonormal rows, m × d): ``row(A) ⊆ span(U)`` exactly,
    whatever the optimiser does to ``C`` (r × m). Adam's per-coordinate scaling then runs in
    the coordinates of ``U``'s rows (S's eigenbasis), not in the input coordinates."""

    def __init__(self, U: torch.Tensor):
        super().__init__()
        self.register_buffer("U", U, persistent=False)

    def forward(self, C: torch.Tensor) -> torch.Tensor:
        return C @ self.U

    def right_inverse(self, A: torch.Tensor) -> torch.Tensor:
        return A @ self.U.T  # exact when row(A) ⊆ span(U): U has orthonormal rows


def constrain_rows(linear: nn.Module, U: torch.Tensor, start: torch.Tensor | None = None) -> None:
    """Train ``linear.weight`` as ``C · U``; ``start`` (r × m) sets ``C`` (else ``C = A Uᵀ``)."""
    weight = linear.weight
    parametrize.register_parametrization(linear, "weight", RowSpan(U.to(device=weight.device, dtype=weight.dtype)))
    if start is not None:
        with torch.no_grad():
            linear.parametrizations.weight.original.copy_(start)


def release_rows(model: nn.Module) -> int:
    """Replace every :class:`RowSpan` parametrisation by its current value ``C · U`` as a plain
    weight (what a PEFT adapter file holds); returns how many were released."""
    released = 0
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight") and any(isinstance(p, RowSpan) for p in module.parametrizations.weight):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            released += 1
    return released


def smallest_eigenvectors(S: torch.Tensor, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(count × d) orthonormal rows: eigenvectors of the symmetric ``S`` with the smallest eigenvalues, ascending."""
    d = S.shape[0]
    if count > d:
        raise OsrmError(f"{count} eigenvectors asked of a {d}-dimensional layer")
    S = S.to(device=device, dtype=torch.float64)
    S = (S + S.T) / 2  # symmetric to the last bit, as eigh assumes
    _, vectors = torch.linalg.eigh(S)  # ascending eigenvalues
    return vectors[:, :count].T.contiguous().cpu()
