"""Layer-by-layer merge driver, independent of how the adapters were loaded.

An adapter is a mapping ``layer_name -> (A, B, scaling)`` (A: r × d_in,
B: d_out × r). :func:`merge_layers` walks the union of the adapters' layers in
sorted order and yields one merged layer at a time, so at most one layer's
dense task vectors exist at once.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping, Sequence

import torch

from osrm_gui.core.merge.base import LayerContext, LayerResult, LoraDelta, MergeMethod

LoraFactors = tuple[torch.Tensor, torch.Tensor, float]


def layer_seed(seed: int, name: str) -> int:
    """A per-layer seed, stable across runs and processes (crc32, never ``hash()``)."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**63)


def _check_shapes(adapters: Sequence[Mapping[str, LoraFactors]]) -> list[str]:
    """Sorted union of layer names; ValueError naming the layer on any shape disagreement."""
    shapes: dict[str, tuple[int, int, int]] = {}  # layer -> (d_out, d_in, first adapter)
    for i, adapter in enumerate(adapters):
        for name, (A, B, _scaling) in adapter.items():
            if A.dim() != 2 or B.dim() != 2 or B.shape[1] != A.shape[0]:
                raise ValueError(
                    f"layer {name!r}: adapter {i} has A {tuple(A.shape)} and B {tuple(B.shape)}, "
                    "expected A (r × d_in) and B (d_out × r)"
                )
            shape = (B.shape[0], A.shape[1])
            if name not in shapes:
                shapes[name] = (*shape, i)
            elif shapes[name][:2] != shape:
                d_out, d_in, first = shapes[name]
                raise ValueError(
                    f"layer {name!r}: adapter {i} is {shape[0]} × {shape[1]} (d_out × d_in) "
                    f"but adapter {first} is {d_out} × {d_in}"
                )
    return sorted(shapes)


def merge_layers(
    adapters: Sequence[Mapping[str, LoraFactors]],
    method: MergeMethod | str,
    coefficients: Sequence[float],
    lam: float = 1.0,
    params: dict | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    grams: Sequence[Mapping[str, torch.Tensor]] | None = None,
    fishers: Sequence[Mapping[str, torch.Tensor]] | None = None,
) -> Iterator[tuple[str, LayerResult]]:
    """Merge ``adapters`` layer by layer; yields ``(layer_name, LayerResult)``.

    ``grams`` (methods with ``needs_grams``): per adapter, the Gram matrix of its task's inputs
    per layer. ``fishers`` (``needs_fisher``): per adapter, the diagonal Fisher (d_out × d_in)
    of each of its layers' dense weights.

    Everything is validated before the first layer is merged (this function is
    not itself a generator, so errors surface at the call).
    """
    if isinstance(method, str):
        from osrm_gui.core.merge import get_method

        method = get_method(method)
    if not adapters:
        raise ValueError("no adapters to merge")
    if len(coefficients) != len(adapters):
        raise ValueError(f"{len(coefficients)} coefficients for {len(adapters)} adapters")
    coefficients = tuple(float(c) for c in coefficients)
    if not all(math.isfinite(c) for c in coefficients) or not math.isfinite(float(lam)):
        raise ValueError("coefficients and λ must be finite numbers")
    resolved = method.resolve_params(params)
    names = _check_shapes(adapters)
    if method.needs_grams:
        if grams is None or len(grams) != len(adapters):
            raise ValueError(f"method {method.name!r} needs the feature statistics (Gram matrices) of every adapter's task")
        for i, (adapter, gram) in enumerate(zip(adapters, grams)):
            missing = sorted(set(adapter) - set(gram))
            if missing:
                raise ValueError(f"method {method.name!r}: no Gram matrix for layer {missing[0]!r} of adapter {i}")
    fisher_norms = _check_fishers(adapters, method, fishers) if method.needs_fisher else None
    return _iterate(adapters, method, names, coefficients, float(lam), resolved, int(seed), torch.device(device), grams,
                    fishers if method.needs_fisher else None, fisher_norms)


def _check_fishers(adapters, method, fishers) -> list[float]:
    """Every adapter's Fisher covers its layers with the layer's shape, finite and ≥ 0; returns
    the Frobenius norm of each adapter's Fisher over its layers (the whole model's)."""
    if fishers is None or len(fishers) != len(adapters):
        raise ValueError(f"method {method.name!r} needs the Fisher information of every adapter (computed on its task's data)")
    norms = []
    for i, (adapter, fisher) in enumerate(zip(adapters, fishers)):
        squares = 0.0
        for name, (A, B, _scaling) in sorted(adapter.items()):
            if name not in fisher:
                raise ValueError(f"method {method.name!r}: no Fisher information for layer {name!r} of adapter {i}")
            values = fisher[name]
            if tuple(values.shape) != (B.shape[0], A.shape[1]):
                raise ValueError(f"method {method.name!r}: the Fisher of layer {name!r} of adapter {i} is {tuple(values.shape)}, "
                                 f"the layer is {B.shape[0]} × {A.shape[1]}")
            values = values.double()
            if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
                raise ValueError(f"method {method.name!r}: the Fisher of layer {name!r} of adapter {i} has negative or non-finite values")
            squares += float((values * values).sum())
        norms.append(math.sqrt(squares))
    return norms


def _iterate(adapters, method, names, coefficients, lam, params, seed, device, grams=None, fishers=None, fisher_norms=None):
    for name in names:
        deltas = [
            LoraDelta(
                index=i,
                A=adapter[name][0].to(device=device, dtype=torch.float32),
                B=adapter[name][1].to(device=device, dtype=torch.float32),
                scaling=float(adapter[name][2]),
            )
            for i, adapter in enumerate(adapters)
            if name in adapter
        ]
        layer_grams = None
        if grams is not None:
            layer_grams = {i: g[name].to(device=device, dtype=torch.float64) for i, g in enumerate(grams) if name in g and name in adapters[i]}
        layer_fishers = layer_norms = None
        if fishers is not None:
            layer_fishers = {i: f[name].to(device=device) for i, f in enumerate(fishers) if name in f and name in adapters[i]}
            layer_norms = {i: fisher_norms[i] for i in layer_fishers}
        ctx = LayerContext(name, coefficients, lam, dict(params), layer_seed(seed, name), device, layer_grams, layer_fishers, layer_norms)
        result = method.merge_layer(deltas, ctx)
        del deltas
        yield name, result


def reference_delta(deltas: Sequence[LoraDelta], ctx: LayerContext) -> torch.Tensor:
    """``λ Σ_t c_t ΔW_t`` in float64: what a lossless merge of the layer would give."""
    total = sum(float(ctx.coefficients[d.index]) * d.dense(torch.float64) for d in deltas)
    return ctx.lam * total


def fidelity(result: LayerResult, deltas: Sequence[LoraDelta], ctx: LayerContext) -> float:
    """``‖merged − λΣc_tΔW_t‖_F / ‖λΣc_tΔW_t‖_F`` (0 = lossless).

    When the reference is 0 this is 0 if the merge is 0 too, else ``inf``.
    """
    reference = reference_delta(deltas, ctx)
    merged = result.dense().to(device=reference.device, dtype=torch.float64)
    error = float(torch.linalg.matrix_norm(merged - reference))
    norm = float(torch.linalg.matrix_norm(reference))
    if norm == 0:
        return 0.0 if error == 0 else math.inf
    return error / norm
