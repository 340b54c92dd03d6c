"""Test tolerances that follow from floating-point rounding instead of being guessed.

Two computations of the same float32 quantity in different orders (another batch shape, BLAS
kernel, thread count or CPU) differ by rounding only. For a reduction of length n, Higham's
bound (Accuracy and Stability of Numerical Algorithms, 2nd ed., §3.1) is
    |fl(Σ a_k b_k) − Σ a_k b_k| ≤ γ_n Σ |a_k||b_k|,   γ_n = n·u / (1 − n·u),
with u the unit roundoff (2⁻²⁴ for float32). Each comparison below states which reductions it
covers; a real bug (a wrong scale, a leaked padding row, a missing layer) is orders of magnitude
larger than these bounds, and each test that uses them also checks that it can fail.
"""

from __future__ import annotations

import numpy as np
import torch

U32 = 2.0**-24
U64 = 2.0**-53


def gamma(n: int, u: float = U32) -> float:
    return n * u / (1 - n * u)


def matmul_bound(A: torch.Tensor, B: torch.Tensor, u: float = U32) -> torch.Tensor:
    """Elementwise bound on |fl(A @ B) − A @ B| (in float64)."""
    return gamma(A.shape[-1], u) * (A.double().abs() @ B.double().abs())


def bert_forward_rtol(config, seq_len: int, lora_rank: int = 0, layers: int | None = None, head: bool = True) -> float:
    """First-order relative rounding bound of a float32 BERT forward pass, relative to the size of
    what it produces: the sum of γ_n over the reductions a value passes through (embedding
    LayerNorm; per layer the q/k/v projections, scores, softmax, context, output projection,
    LayerNorm, the two FFN matmuls and LayerNorm; a LoRA branch; the pooler and the classifier).
    LayerNorm re-normalises every layer, so errors add across layers instead of compounding.
    ``layers``/``head``: only the first layers, without pooler and classifier (a hidden state)."""
    h, i = config.hidden_size, config.intermediate_size
    head = h // config.num_attention_heads
    per_layer = [h, h, h, head, seq_len, seq_len, h, h, h, i, h] + ([lora_rank, lora_rank] if lora_rank else [])
    layers = config.num_hidden_layers if layers is None else layers
    reductions = [h] + per_layer * layers + ([h, h] if head else [])
    return sum(gamma(n) for n in reductions)


def logits_bound(config, head: torch.nn.Module, seq_len: int, lora_rank: int = 0, computations: int = 2) -> np.ndarray:
    """Per-class bound on the logits' rounding: |logit_k| ≤ Σ_j |W_kj| + |b_k| since BERT's pooled
    features lie in [−1, 1] (tanh), and the forward pass's relative bound applies to that scale."""
    scale = head.weight.detach().double().abs().sum(1) + head.bias.detach().double().abs()
    return computations * bert_forward_rtol(config, seq_len, lora_rank) * scale.numpy()


def assert_within(got, expected, bound, what: str = "values") -> None:
    """|got − expected| ≤ bound elementwise (bound: an array or a scalar)."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), got.shape)
    excess = np.abs(got - expected) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else ()
    assert excess.size == 0 or excess[worst] <= 0, (
        f"{what} differ beyond the rounding bound at {worst}: |{got[worst]!r} − {expected[worst]!r}| "
        f"= {abs(got[worst] - expected[worst]):.3g} > {bound[worst]:.3g}")
