"""A merge whose coefficients are trainable: the engine behind AdaMerging.

Each adapted linear ℓ computes, through a forward hook,

    y = W0 x + Σ_i λ_i^ℓ s_i B_i (A_i x)

with λ a torch tensor that requires grad, so a loss on the model's outputs has a gradient
with respect to every coefficient and no dense task vector is ever formed. Task-wise, λ holds
one coefficient per adapter shared by every layer (N × 1); layer-wise, one per adapter and
adapted module (N × L, the columns in :attr:`LearnableLoraMerge.layer_names` order).

AdaMerging++ learns its coefficients over *trimmed* task vectors (:func:`trim_task_vectors`),
which are sparse but no longer low-rank, so the ++ engine holds each layer's dense trimmed
updates (N × d_out × d_in per layer) and computes ``y = W0 x + (Σ_i λ_i^ℓ τ̃_i^ℓ) x``. That is
fine for small encoders (MiniLM: ~1.8 M floats per adapter) and heavy for billion-parameter
models, whose every adapted matrix it materialises once per adapter.

The hooks live on the model only inside :meth:`LearnableLoraMerge.installed`, as for
:class:`~osrm_gui.core.merge.stacked_lora.LoraSum`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from osrm_gui.core.inputs.adapters import Adapter
from osrm_gui.core.inputs.models import BaseModel
from osrm_gui.core.merge.base import LayerResult
from osrm_gui.core.merge.stacked_lora import layer_hooks


def adapted_layers(adapters: Sequence[Adapter]) -> list[str]:
    """The union of the adapters' adapted modules, sorted (the layer order of every table here)."""
    return sorted({name for adapter in adapters for name in adapter.layers})


def trim_task_vectors(adapters: Sequence[Adapter], density: float = 0.2, device: torch.device | str = "cpu") -> list[dict[str, torch.Tensor]]:
    """AdaMerging++'s ``ties_merging_split``: each adapter's dense task vector over the whole
    flattened set of adapted layers keeps its top ``density`` by |value| (the original's
    ``topk_values_mask``: |τ| ≥ the (D − ⌊density·D⌋)-th smallest |τ| of that adapter); the sign
    of every entry is elected from the sum of the trimmed vectors (a zero sum takes the sign
    of the sum of all elected signs); each vector keeps only the entries that agree with the
    elected sign. Returns, per adapter, its trimmed dense update (d_out × d_in) on each layer it
    adapts. Layers an adapter does not adapt count as zeros in its flattened vector."""
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    names = adapted_layers(adapters)
    shapes = {}
    for adapter in adapters:
        for name, layer in adapter.layers.items():
            shapes[name] = (layer.B.shape[0], layer.A.shape[1])
    rows = []
    for adapter in adapters:
        parts = [adapter.layers[n].delta().to(device) if n in adapter.layers else torch.zeros(shapes[n], device=device) for n in names]
        rows.append(torch.cat([p.reshape(-1) for p in parts]))
    flat = torch.stack(rows)  # N × D, float32
    size = flat.shape[1]
    rank = size - int(size * density)  # 1-based rank of the smallest magnitude kept
    if rank >= 1:
        threshold = flat.abs().kthvalue(rank, dim=1, keepdim=True).values
        flat = flat * (flat.abs() >= threshold)
    sign = torch.sign(flat.sum(dim=0))
    sign[sign == 0] = torch.sign(sign.sum())
    agree = torch.where(sign.unsqueeze(0) > 0, flat > 0, flat < 0)
    flat = flat * agree
    trimmed: list[dict[str, torch.Tensor]] = [{} for _ in adapters]
    start = 0
    for name in names:
        count = shapes[name][0] * shapes[name][1]
        for i, adapter in enumerate(adapters):
            if name in adapter.layers:
                trimmed[i][name] = flat[i, start:start + count].reshape(shapes[name]).clone()
        start += count
    return trimmed


class _StackedLayer:
    """One adapted linear with every adapter's factors stacked (as in LoraSum), scaled by λ."""

    def __init__(self, owner: LearnableLoraMerge, column: int, A, B, rows, scalings):
        self.owner, self.column = owner, column
        self.A, self.B = A, B  # (Σr × d_in), (d_out × Σr)
        self.rows = rows  # adapter index of each rank row
        self.scalings = scalings  # s_i of each rank row (float32)

    def row_scale(self) -> torch.Tensor:
        """λ_i^ℓ s_i per rank row: differentiable in λ."""
        return self.owner.coefficients[self.rows, self.column] * self.scalings

    def hook(self, module, args, output):
        x = args[0]
        return output + ((x @ self.A.T) * self.row_scale().to(x.dtype)) @ self.B.T

    def result(self) -> LayerResult:
        """The exact concat LoRA: B = [λ_1 s_1 B_1 | …], A = [A_1; …]."""
        with torch.no_grad():
            B = self.B.float() * self.row_scale().float().unsqueeze(0)
        return LayerResult(A=self.A.float().clone(), B=B, truncation_error=0.0)


class _DenseLayer:
    """One adapted linear with each adapter's dense (trimmed) update, for AdaMerging++."""

    def __init__(self, owner: LearnableLoraMerge, column: int, deltas, rows):
        self.owner, self.column = owner, column
        self.deltas = deltas  # (n × d_out × d_in)
        self.rows = rows  # adapter index of each update

    def delta(self) -> torch.Tensor:
        return torch.einsum("n,nij->ij", self.owner.coefficients[self.rows, self.column], self.deltas)

    def hook(self, module, args, output):
        x = args[0]
        return output + x @ self.delta().to(x.dtype).T

    def result(self) -> LayerResult:
        with torch.no_grad():
            return LayerResult(delta=self.delta().float().clone())


class LearnableLoraMerge:
    """Trainable merge coefficients over ``adapters`` on ``base``; see the module docstring.

    ``trimmed``: per adapter, its dense trimmed update per layer (from :func:`trim_task_vectors`);
    given, the engine runs AdaMerging++'s dense updates instead of the LoRA factors.
    """

    def __init__(self, base: BaseModel, adapters: Sequence[Adapter], layer_wise: bool, init: float = 0.3,
                 trimmed: Sequence[dict[str, torch.Tensor]] | None = None):
        if not adapters:
            raise ValueError("no adapters to merge")
        self.base = base
        self.layer_wise = layer_wise
        self.layer_names = adapted_layers(adapters)
        columns = len(self.layer_names) if layer_wise else 1
        device = base.device
        self.coefficients = torch.full((len(adapters), columns), float(init), dtype=torch.float32, device=device, requires_grad=True)
        # which adapter adapts which layer: λ where it does not has no effect and no gradient
        self.present = np.array([[name in a.layers for name in self.layer_names] for a in adapters])
        self.layers: dict[str, _StackedLayer | _DenseLayer] = {}
        for column, name in enumerate(self.layer_names):
            weight = base.model.get_submodule(name).weight
            owners = [i for i, a in enumerate(adapters) if name in a.layers]
            col = column if layer_wise else 0
            if trimmed is not None:
                deltas = torch.stack([trimmed[i][name] for i in owners]).to(device, weight.dtype)
                self.layers[name] = _DenseLayer(self, col, deltas, torch.tensor(owners, device=device))
                continue
            parts = [adapters[i].layers[name] for i in owners]
            A = torch.cat([p.A for p in parts], dim=0).to(device, weight.dtype)
            B = torch.cat([p.B for p in parts], dim=1).to(device, weight.dtype)
            rows = torch.cat([torch.full((p.rank,), i) for i, p in zip(owners, parts)]).to(device)
            scalings = torch.cat([torch.full((p.rank,), float(p.scaling)) for p in parts]).to(device, torch.float32)
            self.layers[name] = _StackedLayer(self, col, A, B, rows, scalings)

    @property
    def dense(self) -> bool:
        return any(isinstance(layer, _DenseLayer) for layer in self.layers.values())

    def set_coefficients(self, values) -> None:
        """Overwrite λ (shape N × 1 task-wise, N × L layer-wise; a vector of N is one per adapter)."""
        values = torch.as_tensor(np.asarray(values, dtype=np.float32), device=self.coefficients.device)
        if values.dim() == 1:
            values = values.unsqueeze(1).expand_as(self.coefficients)
        with torch.no_grad():
            self.coefficients.copy_(values)

    def clamp_(self, low: float = 0.0, high: float = 1.0) -> None:
        with torch.no_grad():
            self.coefficients.clamp_(low, high)

    def table(self) -> np.ndarray:
        """λ as adapters × layers (task-wise: each adapter's one λ repeated across the layers);
        NaN where the adapter does not adapt the layer."""
        values = self.coefficients.detach().double().cpu().numpy()
        full = values if self.layer_wise else np.repeat(values, len(self.layer_names), axis=1)
        return np.where(self.present, full, np.nan)

    def layer_results(self) -> dict[str, LayerResult]:
        """The learned merge as the merge engine's results: exact concat LoRA factors, or (++)
        dense updates."""
        return {name: layer.result() for name, layer in self.layers.items()}

    def installed(self):
        """The hooks live on the model only inside this block, so other code sees the plain base."""
        return layer_hooks(self.base, self.layers, self)
