"""The diagonal Fisher information of an adapter's layers, for Fisher merging.

For one adapter i, under its own model (the base with ΔW_i installed and head i), over a
seeded sample X of its task's training inputs (labels are never read):

    F_i(W) = (1/|X|) Σ_x Σ_y p(y|x) · (∂ log p(y|x) / ∂W)²

for the dense weight W (d_out × d_in) of every layer the adapter adapts, everything else
frozen. The expectation over y is exact (one backward pass per class), taken under the
model's own predictive distribution, and each example is its own forward pass (batch size 1),
so this is the per-example Fisher, not the square of a batch-summed gradient (METHODS.md §7a,
pitfall). A regression head (one output f) is read as a unit-variance Gaussian, whose Fisher
is ``(∂f/∂W)²``. Dropout is off (the model stays in eval mode).
"""

from __future__ import annotations

from collections.abc import Generator

import torch
from torch import nn

from osrm_gui.core.evaluation import encode_split, iter_batches
from osrm_gui.core.inputs.adapters import Adapter
from osrm_gui.core.inputs.models import BaseModel
from osrm_gui.core.inputs.tasks import Task
from osrm_gui.core.osrm.features import sample_split
from osrm_gui.core.progress import Progress

MAX_LENGTH = 128  # tokens per example, as the feature statistics


def example_fisher(model: nn.Module, weights: list[torch.Tensor], inputs: dict, regression: bool) -> list[torch.Tensor]:
    """``Σ_y p(y|x) (∂ log p(y|x)/∂W)²`` for one example (a batch of one), per weight, float32."""
    logits = model(**inputs).logits[0]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half types up, float64 kept
    if regression:
        grads = torch.autograd.grad(logits[0], weights, allow_unused=True)
        return [torch.zeros_like(w, dtype=torch.float32) if g is None else g.float() ** 2 for w, g in zip(weights, grads)]
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.detach().exp()
    totals = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
    for y in range(log_probs.shape[0]):
        grads = torch.autograd.grad(log_probs[y], weights, retain_graph=y < log_probs.shape[0] - 1, allow_unused=True)
        for total, grad in zip(totals, grads):
            if grad is not None:
                total.add_(probs[y] * grad.float() ** 2)
    return totals


def collect_fisher(
    base: BaseModel, adapter: Adapter, task: Task, examples: int = 64, seed: int = 0, max_length: int = MAX_LENGTH,
    split: str = "train",
) -> Generator[Progress, None, dict[str, torch.Tensor]]:
    """Per layer of ``adapter``, the diagonal Fisher (d_out × d_in, float32, on the CPU) of its dense
    weight under the adapter's model, averaged over ``examples`` seeded examples of ``task``'s split."""
    data = sample_split(task.split(split), examples, seed)
    encoded = encode_split(base.tokenizer, data, max_length)
    names = sorted(adapter.layers)
    modules = [base.model.get_submodule(name) for name in names]
    weights = [m.weight for m in modules]
    totals = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
    n = len(encoded.input_ids)
    pad_id = base.tokenizer.pad_token_id or 0
    base.set_deltas({name: adapter.layers[name].delta() for name in names})
    base.set_head(base.build_head(adapter.head))
    for w in weights:
        w.requires_grad_(True)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for start, inputs in iter_batches(encoded, 1, pad_id, base.device):
                for total, value in zip(totals, example_fisher(base.model, weights, inputs, task.is_regression)):
                    total.add_(value)
                yield Progress(f"fisher:{task.name}", start + 1, n)
    finally:
        for w in weights:
            w.requires_grad_(False)
        base.set_head(None)
        base.clear_deltas()
    # GPT-2's Conv1D keeps its weight as (d_in, d_out): the Fisher of W is the transpose
    return {name: (total if isinstance(m, nn.Linear) else total.T).div(max(n, 1)).cpu().contiguous()
            for name, m, total in zip(names, modules, totals)}
