"""The fast engine for the linear merge family: adapters stay LoRA factors on the
base model and only their weights change between sweep points.

For a merge that is exactly ``Σ_t w_t ΔW_t`` (linear, task arithmetic, concat) each
targeted linear computes ``W0 x + B_cat (scale ⊙ (A_cat x))`` through a forward hook,
with ``A_cat``/``B_cat`` the stacked factors of every adapter on that layer and
``scale`` holding ``w_t s_t`` for each of adapter t's rank rows. A new point rewrites
those few scale numbers in place: no dense task vector is ever formed, no weight is
copied and nothing is reloaded, so a point costs one evaluation forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import torch

from osrm_gui.core.inputs.adapters import Adapter
from osrm_gui.core.inputs.models import BaseModel


class _Layer:
    def __init__(self, A: torch.Tensor, B: torch.Tensor, owners: torch.Tensor, scalings: torch.Tensor):
        self.A = A  # (Σr × d_in)
        self.B = B  # (d_out × Σr)
        self.owners = owners  # adapter index of each rank row
        self.scalings = scalings  # LoRA scaling s_t of each rank row (float64)
        self.scale = torch.zeros(A.shape[0], dtype=A.dtype, device=A.device)

    def hook(self, module, args, output):
        x = args[0]
        return output + ((x @ self.A.T) * self.scale) @ self.B.T


class LoraSum:
    """Stacked LoRA factors of ``adapters`` for ``base``; see the module docstring."""

    def __init__(self, base: BaseModel, adapters: Sequence[Adapter]):
        self.base = base
        self.count = len(adapters)
        names = sorted({name for adapter in adapters for name in adapter.layers})
        self.layers: dict[str, _Layer] = {}
        for name in names:
            weight = base.model.get_submodule(name).weight
            parts = [(i, a.layers[name]) for i, a in enumerate(adapters) if name in a.layers]
            A = torch.cat([layer.A for _, layer in parts], dim=0).to(weight.device, weight.dtype)
            B = torch.cat([layer.B for _, layer in parts], dim=1).to(weight.device, weight.dtype)
            owners = torch.cat([torch.full((layer.rank,), i) for i, layer in parts])
            scalings = torch.cat([torch.full((layer.rank,), float(layer.scaling), dtype=torch.float64) for _, layer in parts])
            self.layers[name] = _Layer(A, B, owners, scalings)

    def set_weights(self, weights: Sequence[float]) -> None:
        """The merge ``Σ_t weights[t] ΔW_t``; costs a few scalar writes per layer."""
        if len(weights) != self.count:
            raise ValueError(f"{len(weights)} weights for {self.count} adapters")
        w = torch.tensor([float(v) for v in weights], dtype=torch.float64)
        for layer in self.layers.values():
            layer.scale.copy_((w[layer.owners] * layer.scalings).to(layer.scale.dtype))

    def set_layer_weights(self, weights: Mapping[str, Sequence[float]]) -> None:
        """The merge ``Σ_t weights[layer][t] ΔW_t`` with weights of its own for each layer (a search
        over layer groups). Every layer must be given: a layer left out would keep stale weights."""
        missing = sorted(set(self.layers) - set(weights))
        unknown = sorted(set(weights) - set(self.layers))
        if missing or unknown:
            raise ValueError(f"layer weights must name exactly the adapted layers (missing: {', '.join(missing) or 'none'}; "
                             f"unknown: {', '.join(unknown) or 'none'})")
        for name, layer in self.layers.items():
            if len(weights[name]) != self.count:
                raise ValueError(f"{len(weights[name])} weights for {self.count} adapters on layer {name}")
            w = torch.tensor([float(v) for v in weights[name]], dtype=torch.float64)
            layer.scale.copy_((w[layer.owners] * layer.scalings).to(layer.scale.dtype))

    def installed(self):
        """The hooks live on the model only inside this block, so other code sees the plain base."""
        return layer_hooks(self.base, self.layers, self)


@contextmanager
def layer_hooks(base: BaseModel, layers: dict, owner):
    """``layers[name].hook`` as a forward hook on each named module of ``base`` inside the block
    (which gets ``owner``), removed on the way out whatever happens."""
    handles = [base.model.get_submodule(name).register_forward_hook(layer.hook) for name, layer in layers.items()]
    try:
        yield owner
    finally:
        for handle in handles:
            handle.remove()
