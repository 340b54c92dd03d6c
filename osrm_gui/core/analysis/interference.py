"""Data–parameter interference (what OSRM minimises): how much adapter i moves
the outputs of layer inputs from task j, relative to task j's own adapter,

    I[i, j] = ‖ΔW_i H_jᵀ‖_F / ‖ΔW_j H_jᵀ‖_F,   with ‖ΔW Hᵀ‖_F² = tr(ΔW G ΔWᵀ), G = HᵀH,

computed from the cached Gram matrices alone (no stored activations)."""

from __future__ import annotations

import numpy as np
import torch

from osrm_gui.core.inputs.adapters import Adapter


def output_energy(delta: torch.Tensor, gram: torch.Tensor) -> float:
    """‖ΔW Hᵀ‖_F from the Gram matrix G = HᵀH."""
    delta = delta.to(torch.float64)
    return float(torch.sqrt(torch.clamp(torch.einsum("oi,ij,oj->", delta, gram.to(torch.float64), delta), min=0.0)))


def interference_matrix(adapters: list[Adapter], grams: list[dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """Per layer, the T × T matrix I[i, j]; ``grams[j]`` are task j's (the task of adapter j)."""
    layers = sorted(set.intersection(*(set(a.layers) for a in adapters)))
    result = {}
    for name in layers:
        deltas = [a.layers[name].delta() for a in adapters]
        matrix = np.zeros((len(adapters), len(adapters)))
        for j, gram in enumerate(grams):
            own = output_energy(deltas[j], gram[name])
            for i, delta in enumerate(deltas):
                matrix[i, j] = output_energy(delta, gram[name]) / own if own else np.nan
        result[name] = matrix
    return result

