"""DOGE: data-free adaptive projective gradient descent (Wei et al., ICML 2025), per layer.

After fusion_bench's ``DOGE_TA_Algorithm`` (``fusion_bench/method/doge_ta/doge_ta.py``; the
official repository was not reachable), on the dense task vectors of one layer:

1. ``τ_i = c_i·ΔW_i`` (m × n) for the T adapters that target the layer; an adapter whose τ_i is
   0 (a zero coefficient or a zero update) is left out of the layer.
2. ``λ_i = lamda / ‖τ_i‖_F``: every task vector is rescaled to norm ``lamda`` (so only the
   sign of c_i survives in ``λ_i τ_i``; its size still weights δ through ``λ_i``).
   ``S = Σ_i λ_i τ_i``, ``Λ = Σ_i λ_i``.
3. Shared subspace. With ``k = min(m, n)``, each τ_i gives its top ``k_i`` left singular
   vectors, ``k_i = min(⌊k/T⌋, rank(τ_i))`` where ``rank`` is the numerical rank (singular
   values above ``σ_max·max(m, n)·eps``) capped at the adapter's LoRA rank r_i; they are put
   side by side in ``U_cat`` (m × Σk_i). With ``U_cat = P Σ Qᵀ``, the projector is
   ``Π = P_p P_pᵀ`` on the top ``p = min(⌊k/6⌋, rank(U_cat))`` columns, so ``p ≤ Σ k_i ≤ R = Σ r_i``.
   The reference takes ``⌊k/T⌋`` and ``⌊k/6⌋`` uncapped, which for LoRA updates (rank r_i ≪ k)
   would put arbitrary null-space directions into Π (METHODS.md §5, LoRA caveat).
4. One shared δ (m × n) from 0, ``steps`` Adam steps (learning rate ``lr``, β = (0.9, 0.999),
   ε = 1e-8, as ``torch.optim.Adam``'s defaults; fresh moments per layer, as in the reference
   whose one optimiser meets each layer's δ only in that layer's loop) on

       L(δ) = Σ_j Σ_rows ( Σ_cols τ_j ⊙ (τ_j − S − Λδ) )²,

   whose gradient is ``∂L/∂δ = −2Λ Σ_j e_j ⊙ τ_j`` with ``e_j = rowsum(τ_j ⊙ (τ_j − S − Λδ))``
   broadcast along each row (computed in closed form, no autograd). Before each step the
   gradient is projected off the shared subspace: ``g ← g − Π g``. Only the gradient is
   projected, as in the reference: Adam's elementwise rescaling moves δ itself off it.
5. Masks ``M_i``: the ``max(1, int(keep·m·n))`` largest |τ_i| of the layer (ties at the
   threshold all kept). The reference takes the top K % over the whole flattened model (and
   keeps one entry more than ``int(K·d)``); this engine merges one layer at a time, so the
   masks are per layer.
6. Output: ``λ_global · Σ_i λ_i (τ_i + δ) ⊙ M_i`` (dense; the mask is computed on τ_i and
   applied to τ_i + δ).

Nothing is drawn at random: the result does not depend on the seed. The cost is ``steps``
times a few T·m·n passes per layer; the engine reports progress (and can be cancelled)
between layers, and ``steps`` is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from osrm_gui.core.merge._tensors import compute_dtype, stack_task_vectors
from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod, Param

SUBSPACE_DIVISOR = 6  # the reference's ``subspace``: the projector takes ⌊k/6⌋ directions (before the cap)
BETAS = (0.9, 0.999)
EPS = 1e-8
MAX_STEPS = 5000


def numerical_rank(s: torch.Tensor, shape: tuple[int, int]) -> int:
    """Singular values above ``σ_max · max(shape) · eps`` (numpy's ``matrix_rank`` rule)."""
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    tol = float(s[0]) * max(shape) * torch.finfo(s.dtype).eps
    return int((s > tol).sum())


def shared_subspace(stack: torch.Tensor, ranks: Sequence[int] | None = None) -> torch.Tensor:
    """The m × p orthonormal basis ``P_p`` of step 3 (p may be 0) for a [T, m, n] stack."""
    T, m, n = stack.shape
    k = min(m, n)
    per_task = k // T
    blocks = []
    for i in range(T):
        U, s, _ = torch.linalg.svd(stack[i], full_matrices=False)
        k_i = min(per_task, numerical_rank(s, (m, n)))
        if ranks is not None:
            k_i = min(k_i, int(ranks[i]))
        blocks.append(U[:, :k_i])
    cat = torch.cat(blocks, dim=1)
    if cat.shape[1] == 0:
        return cat
    P, s, _ = torch.linalg.svd(cat, full_matrices=False)
    p = min(k // SUBSPACE_DIVISOR, numerical_rank(s, tuple(cat.shape)))
    return P[:, :p]


def project_off(grad: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``g − Π g`` with ``Π = basis basisᵀ`` applied from the left (the d_out side, where the
    shared left singular vectors live), as the reference's ``projection @ grad``."""
    if basis.shape[1] == 0:
        return grad
    return grad - basis @ (basis.T @ grad)


def loss_gradient(stack: torch.Tensor, lambdas: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``∂L/∂δ = −2Λ Σ_j e_j ⊙ τ_j`` with ``e_j = rowsum(τ_j ⊙ (τ_j − S − Λδ))`` (step 4)."""
    total = lambdas.sum()
    target = (lambdas.view(-1, 1, 1) * stack).sum(dim=0) + total * delta  # S + Λδ
    residual = torch.einsum("trc,trc->tr", stack, stack - target)  # e_j, [T, m]
    return -2.0 * total * torch.einsum("tr,trc->rc", residual, stack)


def top_fraction_mask(tau: torch.Tensor, keep: float) -> torch.Tensor:
    """Boolean mask of the ``max(1, int(keep·numel))`` largest |τ| (ties at the threshold kept)."""
    magnitude = tau.abs().reshape(-1)
    count = max(1, int(keep * magnitude.numel()))
    if count >= magnitude.numel():
        return torch.ones_like(tau, dtype=torch.bool)
    threshold = torch.kthvalue(magnitude, magnitude.numel() - count + 1).values
    return tau.abs() >= threshold


def optimise_delta(stack: torch.Tensor, lambdas: torch.Tensor, basis: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """δ after ``steps`` Adam steps on L with projected gradients, from δ = 0."""
    delta = torch.zeros_like(stack[0])
    first = torch.zeros_like(delta)
    second = torch.zeros_like(delta)
    beta1, beta2 = BETAS
    # loss_gradient with the δ-free part of e_j computed once: e_j = rowsum(τ_j ⊙ (τ_j − S)) − Λ·rowsum(τ_j ⊙ δ)
    total = lambdas.sum()
    fixed = torch.einsum("trc,trc->tr", stack, stack - (lambdas.view(-1, 1, 1) * stack).sum(dim=0))
    for step in range(1, steps + 1):
        residual = fixed - total * torch.einsum("trc,rc->tr", stack, delta)
        grad = project_off(-2.0 * total * torch.einsum("tr,trc->rc", residual, stack), basis)
        first.mul_(beta1).add_(grad, alpha=1 - beta1)
        second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        correction1 = 1 - beta1**step
        correction2 = 1 - beta2**step
        denominator = (second.sqrt() / correction2**0.5).add_(EPS)
        delta.addcdiv_(first, denominator, value=-lr / correction1)
    return delta


def doge_merge(stack: torch.Tensor, lamda: float, lr: float, steps: int, keep: float,
               ranks: Sequence[int] | None = None) -> torch.Tensor:
    """``Σ_i λ_i (τ_i + δ) ⊙ M_i`` (without the global λ) for a [T, m, n] stack of ``τ_i = c_i ΔW_i``."""
    norms = torch.linalg.matrix_norm(stack)
    present = [i for i in range(stack.shape[0]) if float(norms[i]) > 0]
    if not present:
        return torch.zeros_like(stack[0])
    stack, norms = stack[present], norms[present]
    ranks = [ranks[i] for i in present] if ranks is not None else None
    lambdas = lamda / norms
    delta = optimise_delta(stack, lambdas, shared_subspace(stack, ranks), lr, steps)
    merged = torch.zeros_like(delta)
    for i in range(stack.shape[0]):
        merged += lambdas[i] * (stack[i] + delta) * top_fraction_mask(stack[i], keep)
    return merged


def _merge_layer(deltas: list[LoraDelta], ctx: LayerContext) -> LayerResult:
    stack = stack_task_vectors(deltas, compute_dtype(deltas)).to(ctx.device)
    coefficients = torch.tensor([float(ctx.coefficients[d.index]) for d in deltas], dtype=stack.dtype, device=stack.device)
    stack = stack * coefficients.view(-1, 1, 1)
    p = ctx.params
    merged = doge_merge(stack, p["lamda"], p["lr"], p["steps"], p["keep"], [d.A.shape[0] for d in deltas])
    return LayerResult(delta=ctx.lam * merged)


METHOD = MergeMethod(
    name="doge",
    label="DOGE (projective gradient descent)",
    doc="Data-free: each task vector is rescaled to norm lamda, then one shared correction δ is learnt per layer by Adam "
        "(steps × lr) so that each task's row-wise inner product with the merge is kept, its gradient projected off the "
        "tasks' shared subspace; each task's top keep fraction of entries (mask on τ, applied to τ + δ) is summed; scaled by λ. "
        "Dense, and slow: steps Adam steps per layer.",
    params=(
        Param("lamda", 0.07, "Norm every task vector is rescaled to (λ_i = lamda/‖τ_i‖). 0.07 was tuned for CLIP full "
              "fine-tuning; for LoRA sweep it, e.g. 0.02–0.3.", minimum=0.0, min_exclusive=True, label="Task-vector norm (lamda)"),
        Param("lr", 1e-4, "Adam learning rate of the shared correction δ.", minimum=0.0, maximum=1.0, min_exclusive=True,
              label="Learning rate"),
        Param("steps", 400, f"Adam steps per layer (0 = no correction; at most {MAX_STEPS}).", minimum=0, maximum=MAX_STEPS,
              label="Adam steps per layer"),
        Param("keep", 0.3, "Fraction of each task vector's largest entries kept by its mask, per layer (0 < keep ≤ 1).",
              minimum=0.0, maximum=1.0, min_exclusive=True, label="Mask keep fraction"),
    ),
    merge_layer=_merge_layer,
)
