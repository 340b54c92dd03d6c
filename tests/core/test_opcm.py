"""OPCM in LoRA form against a dense numpy implementation of METHODS.md §4.

The reference below materialises every task vector, takes full-size SVDs of the dense merged
update, zeroes P's diagonal (restricted to the numerical rank of M, the pitfall METHODS.md
names) and its top-left r_s × r_s block, and rescales over the whole model. The LoRA form runs
on the factors in float64 (core space), so the two agree to float64 round-off; 1e-10 relative
is far above that and far below any real error (a dropped diagonal term is O(1)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.merge import get_method
from osrm_gui.core.merge.opcm import OpcmSnapshot, opcm_merge, shuffled_order, split_rank
from osrm_gui.core.merge.spec import MergedState, MergeSpec, merge_adapters
from osrm_gui.core.progress import Progress, Run

RTOL = 1e-10
SHAPES = {"layer.a": (14, 11), "layer.b": (9, 16), "layer.c": (12, 12)}
# adapter -> the layers it adapts, with their ranks: not every adapter adapts every layer
TARGETS = [{"layer.a": 2, "layer.b": 3}, {"layer.a": 3, "layer.b": 2, "layer.c": 2}, {"layer.a": 2, "layer.c": 3}]


def make_adapters(seed=0, dtype=torch.float64, targets=TARGETS):
    g = torch.Generator().manual_seed(seed)
    adapters = []
    for i, layers in enumerate(targets):
        adapter = {}
        for name, r in layers.items():
            m, n = SHAPES[name]
            adapter[name] = (torch.randn(r, n, generator=g, dtype=dtype), torch.randn(m, r, generator=g, dtype=dtype), 0.5 + 0.25 * i)
        adapters.append(adapter)
    return adapters


def dense_tau(adapter, coefficient):
    return {name: coefficient * s * (B.double().numpy() @ A.double().numpy()) for name, (A, B, s) in adapter.items()}


def whole_norm(layers: dict) -> float:
    return math.sqrt(sum(float(np.sum(x * x)) for x in layers.values()))


def dense_opcm(adapters, order, alpha, coefficients=None):
    """METHODS.md §4 on dense matrices; returns the merged update after each arrival."""
    coefficients = coefficients or [1.0] * len(adapters)
    taus = [dense_tau(a, c) for a, c in zip(adapters, coefficients)]
    merged = {name: np.zeros(SHAPES[name]) for name in SHAPES}
    first = taus[order[0]]
    merged.update(first)
    lam_prev, norms = 1.0, [whole_norm(first)]
    history = [{k: v.copy() for k, v in merged.items()}]
    for index in order[1:]:
        tau = taus[index]
        norms.append(whole_norm(tau))
        n_bar = np.mean(norms)
        new = {}
        for name, M in merged.items():
            T = tau.get(name, np.zeros(SHAPES[name]))
            U, s, Vh = np.linalg.svd(M, full_matrices=True)
            rank = int(np.sum(s > max(M.shape) * np.finfo(float).eps * s[0])) if s[0] > 0 else 0
            r_s = int(np.argmax(np.cumsum(s) / s.sum() > alpha)) if rank else 0
            P = U.T @ T @ Vh.T
            P[:r_s, :r_s] = 0
            P[np.arange(rank), np.arange(rank)] = 0  # the diagonal, restricted to rank(M)
            new[name] = lam_prev * M + U @ P @ Vh
        n_t = whole_norm(new)
        merged = {name: X * n_bar / n_t for name, X in new.items()}
        lam_prev = n_t / n_bar
        history.append({k: v.copy() for k, v in merged.items()})
    return history


def run_opcm(adapters, order, alpha=0.5, coefficients=None, lam=1.0):
    run = Run(opcm_merge(adapters, order, alpha, coefficients, lam))
    events = list(run)
    return run.result, [e for e in events if isinstance(e, OpcmSnapshot)], [e for e in events if isinstance(e, Progress)]


def rel_err(result, expected):
    got = (result.B.double() @ result.A.double()).numpy()
    return np.linalg.norm(got - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("order", [[0, 1, 2], [2, 0, 1], [1, 2, 0]])
def test_lora_form_equals_the_dense_rule_after_every_arrival(alpha, order):
    adapters = make_adapters()
    coefficients = [1.0, 0.7, 1.3]
    final, snapshots, progress = run_opcm(adapters, order, alpha, coefficients)
    expected = dense_opcm(adapters, order, alpha, coefficients)
    assert [s.step for s in snapshots] == [1, 2, 3] and [p.done for p in progress] == [1, 2, 3]
    assert [s.adapter for s in snapshots] == order and snapshots[-1].arrived == tuple(order)
    for snapshot, dense in zip(snapshots, expected):
        for name, result in snapshot.layers.items():
            assert rel_err(result, dense[name]) < RTOL, (snapshot.step, name)
        # layers no arrived adapter adapts are absent, and zero in the reference
        for name in set(dense) - set(snapshot.layers):
            assert not dense[name].any()
    assert set(final) == set(SHAPES)
    for name, result in final.items():
        assert rel_err(result, expected[-1][name]) < RTOL


def test_results_are_low_rank_and_lift_exactly():
    adapters = make_adapters(seed=1)
    final, _, _ = run_opcm(adapters, [0, 1, 2])
    for name, result in final.items():
        assert result.delta is None and result.A is not None and result.B is not None
        total_rank = sum(layers[name] for layers in TARGETS if name in layers)
        assert result.A.shape[0] <= total_rank and result.A.shape[0] == result.B.shape[1]
        assert result.A.shape[1] == SHAPES[name][1] and result.B.shape[0] == SHAPES[name][0]
        # A has orthonormal rows: B A is the merged update's thin SVD, lifted without loss
        assert torch.allclose(result.A @ result.A.T, torch.eye(result.A.shape[0], dtype=torch.float64), atol=1e-12)
    state = MergedState(MergeSpec("opcm"), final)
    assert state.low_rank and not state.per_task
    assert set(state.dense_deltas()) == set(SHAPES)


def test_the_whole_model_rescale_keeps_the_mean_task_norm():
    adapters = make_adapters(seed=2)
    coefficients = [1.0, 2.0, 0.5]
    _, snapshots, _ = run_opcm(adapters, [1, 0, 2], 0.5, coefficients)
    taus = [dense_tau(a, c) for a, c in zip(adapters, coefficients)]
    norms = []
    for snapshot, index in zip(snapshots, [1, 0, 2]):
        norms.append(whole_norm(taus[index]))
        merged_norm = math.sqrt(sum(float((r.B @ r.A).square().sum()) for r in snapshot.layers.values()))
        assert merged_norm == pytest.approx(np.mean(norms), rel=1e-12)
        assert snapshot.norm == pytest.approx(np.mean(norms), rel=1e-12)
    # λ_t is the norm of the un-rescaled update over n̄: 1 for the first adapter alone
    assert snapshots[0].lam_t == pytest.approx(1.0)


def test_global_lambda_scales_the_result_and_snapshots():
    adapters = make_adapters(seed=3)
    plain, plain_snaps, _ = run_opcm(adapters, [0, 1, 2])
    scaled, scaled_snaps, _ = run_opcm(adapters, [0, 1, 2], lam=0.4)
    for name in plain:
        assert torch.allclose(scaled[name].B @ scaled[name].A, 0.4 * (plain[name].B @ plain[name].A), rtol=1e-12, atol=1e-14)
    assert scaled_snaps[1].norm == pytest.approx(plain_snaps[1].norm)


def test_float32_adapters_give_float32_factors_close_to_the_dense_rule():
    adapters = make_adapters(seed=4, dtype=torch.float32)
    final, _, _ = run_opcm(adapters, [2, 1, 0])
    expected = dense_opcm(adapters, [2, 1, 0], 0.5)[-1]
    for name, result in final.items():
        assert result.A.dtype == torch.float32 and result.B.dtype == torch.float32
        assert rel_err(result, expected[name]) < 1e-5


def test_split_rank():
    s = torch.tensor([4.0, 3.0, 2.0, 1.0])  # cumsum / Σ = 0.4, 0.7, 0.9, 1.0
    assert split_rank(s, 0.0) == 0
    assert split_rank(s, 0.4) == 1  # strictly above α
    assert split_rank(s, 0.5) == 1
    assert split_rank(s, 0.95) == 3
    assert split_rank(s, 1.0) == 3  # none above: the limit α → 1⁻
    assert split_rank(torch.tensor([]), 0.5) == 0


def test_a_repeated_adapter_adds_nothing_new_and_zero_adapters_are_harmless():
    adapters = make_adapters(seed=5)
    twice = [adapters[0], adapters[0]]
    final, snapshots, _ = run_opcm(twice, [0, 1])
    first = {n: (r.B @ r.A) for n, r in snapshots[0].layers.items()}
    # τ_2 = τ_1 = M: everything is projected out (top block + diagonal), so M is rescaled back onto itself
    for name, result in final.items():
        assert torch.allclose(result.B @ result.A, first[name], rtol=1e-10, atol=1e-12)
        assert result.A.shape[0] == TARGETS[0][name]
    zero, _, _ = run_opcm(adapters, [0, 1], coefficients=[0.0, 0.0, 0.0])
    assert all(not (r.B @ r.A).any() for r in zero.values())


def test_arguments_are_checked_at_the_call():
    adapters = make_adapters()
    with pytest.raises(ValueError, match="twice"):
        opcm_merge(adapters, [0, 0, 1])
    with pytest.raises(ValueError, match="not in"):
        opcm_merge(adapters, [0, 3])
    with pytest.raises(ValueError, match="no adapter"):
        opcm_merge(adapters, [])
    with pytest.raises(ValueError, match="coefficients"):
        opcm_merge(adapters, [0, 1], coefficients=[1.0])


class _Adapter:
    """What merge_adapters reads of an adapter: its layers and factors."""

    def __init__(self, factors):
        self.layers = factors
        self._factors = factors

    def factors(self):
        return self._factors


def _merge(adapters, **spec):
    run = Run(merge_adapters([_Adapter(a) for a in adapters], MergeSpec("opcm", **spec)))
    events = list(run)
    assert events and all(isinstance(e, Progress) for e in events)  # snapshots stay inside
    return run.result


def test_registry_entry_merges_the_whole_model_in_the_given_or_seeded_order():
    adapters = make_adapters(seed=6)
    method = get_method("opcm")
    assert method.low_rank and method.merge_model is not None
    assert method.resolve_params({}) == {"alpha": 0.5, "order": "given"}
    given = _merge(adapters, coefficients=[1.0, 0.5, 2.0], lam=0.8)
    expected = dense_opcm(adapters, [0, 1, 2], 0.5, [1.0, 0.5, 2.0])[-1]
    for name, result in given.layers.items():
        assert rel_err(result, 0.8 * expected[name]) < RTOL

    shuffled = _merge(adapters, params={"order": "shuffled"}, seed=3)
    again = _merge(adapters, params={"order": "shuffled"}, seed=3)
    order = shuffled_order(3, 3)
    assert order == shuffled_order(3, 3) and sorted(order) == [0, 1, 2]
    expected = dense_opcm(adapters, order, 0.5)[-1]
    for name, result in shuffled.layers.items():
        assert torch.equal(result.A, again.layers[name].A) and torch.equal(result.B, again.layers[name].B)
        assert rel_err(result, expected[name]) < RTOL
    # seeds give different orders (6 orders of 3 adapters: some of 10 seeds must differ)
    assert len({tuple(shuffled_order(3, seed)) for seed in range(10)}) > 1


def test_registry_refuses_bad_parameters_and_single_layer_use():
    adapters = make_adapters()
    with pytest.raises(OsrmError, match="alpha"):
        _merge(adapters, params={"alpha": 1.5})
    with pytest.raises(OsrmError, match="order"):
        _merge(adapters, params={"order": "backwards"})
    with pytest.raises(ValueError, match="whole model"):
        get_method("opcm").merge_layer([], None)
