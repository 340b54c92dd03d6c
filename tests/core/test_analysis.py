"""The analysis metrics, each against an independent (dense, numpy or scipy) computation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from osrm_gui.core.analysis import pairwise as analysis
from osrm_gui.core.inputs.adapters import Adapter, LoraLayer, load_adapter
from osrm_gui.core.merge.spec import MergeSpec, merge_adapters
from osrm_gui.core.progress import run_to_end

D_OUT, D_IN = 12, 10
LAYERS = ("enc.layer.0.query", "enc.layer.0.value", "enc.layer.1.query")


def lora(rank: int, seed: int, scaling: float = 0.5, d_out: int = D_OUT, d_in: int = D_IN) -> LoraLayer:
    g = torch.Generator().manual_seed(seed)
    return LoraLayer(A=torch.randn(rank, d_in, generator=g), B=torch.randn(d_out, rank, generator=g), scaling=scaling)


def adapter(name: str, layers: dict[str, LoraLayer]) -> Adapter:
    return Adapter(path=Path(name), name=name, config={}, layers=layers, head={}, head_name=None,
                   metadata={}, content_hash="", size_bytes=0)


def random_adapter(name: str, rank: int, seed: int) -> Adapter:
    return adapter(name, {layer: lora(rank, seed * 100 + k) for k, layer in enumerate(LAYERS)})


def dense(layer: LoraLayer) -> np.ndarray:
    return layer.scaling * layer.B.double().numpy() @ layer.A.double().numpy()


def dense_overlap(U: np.ndarray, V: np.ndarray) -> float:
    return np.mean(np.cos(scipy.linalg.subspace_angles(U, V)) ** 2)


def test_identical_adapters_overlap_fully():
    a = random_adapter("a", rank=3, seed=1)
    for metric in ("row_overlap", "col_overlap", "delta_overlap", "cosine"):
        for matrix in analysis.pairwise([a, a], metric).values():
            np.testing.assert_allclose(matrix, 1.0, atol=1e-12)
    for matrix in analysis.pairwise([a, a], "sign_conflict").values():
        np.testing.assert_array_equal(matrix, 0.0)


def test_orthogonal_input_blocks_give_zero_row_and_delta_overlap():
    a, b = lora(3, 1), lora(2, 2)
    A_a, A_b = torch.zeros(3, D_IN), torch.zeros(2, D_IN)
    A_a[:, :4], A_b[:, 4:7] = a.A[:, :4], b.A[:, 4:7]
    a, b = LoraLayer(A_a, a.B, 1.0), LoraLayer(A_b, b.B, 2.0)
    assert analysis.row_overlap(a, b) == pytest.approx(0.0, abs=1e-14)
    assert analysis.delta_overlap(a, b) == pytest.approx(0.0, abs=1e-14)
    assert analysis.col_overlap(a, b) > 0.1  # the random B's still share output directions


def test_orthogonal_output_columns_give_zero_col_overlap():
    a, b = lora(3, 1), lora(3, 2)
    B_a, B_b = torch.zeros(D_OUT, 3), torch.zeros(D_OUT, 3)
    B_a[:5], B_b[5:] = a.B[:5], b.B[5:]
    assert analysis.col_overlap(LoraLayer(a.A, B_a, 1.0), LoraLayer(b.A, B_b, 1.0)) == pytest.approx(0.0, abs=1e-14)


def test_principal_angles_and_overlap_match_scipy():
    rng = np.random.default_rng(0)
    U, V = rng.standard_normal((20, 3)), rng.standard_normal((20, 5))
    angles = analysis.principal_angles(torch.from_numpy(U), torch.from_numpy(V))
    np.testing.assert_allclose(np.sort(angles), np.sort(scipy.linalg.subspace_angles(U, V)), atol=1e-10)
    assert analysis.subspace_overlap(torch.from_numpy(U), torch.from_numpy(V)) == pytest.approx(dense_overlap(U, V), abs=1e-12)
    # a subspace contained in the other overlaps fully
    assert analysis.subspace_overlap(torch.from_numpy(U[:, :2]), torch.from_numpy(U)) == pytest.approx(1.0)


@pytest.mark.parametrize("ranks", [(2, 5), (4, 3), (6, 6)])
def test_delta_overlap_matches_dense_svd(ranks):
    a, b = lora(ranks[0], 3, scaling=0.7), lora(ranks[1], 4, scaling=-1.5)

    def dominant(matrix):  # the fewest right singular vectors holding 90 % of the energy
        _, s, Vh = np.linalg.svd(matrix)
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), 0.9)) + 1
        return Vh[:k].T

    V_a, V_b = dominant(dense(a)), dominant(dense(b))
    expected = np.linalg.norm(V_a.T @ V_b) ** 2 / min(V_a.shape[1], V_b.shape[1])
    assert analysis.delta_overlap(a, b) == pytest.approx(expected, abs=1e-10)
    # and the factored right singular basis spans the dense one (same projector)
    Q = analysis.right_singular_basis(a).numpy()
    V_full = np.linalg.svd(dense(a))[2][: ranks[0]].T
    np.testing.assert_allclose(Q @ Q.T, V_full @ V_full.T, atol=1e-10)


def test_row_and_col_overlap_match_dense_subspaces():
    a, b = lora(2, 5), lora(4, 6)
    assert analysis.row_overlap(a, b) == pytest.approx(dense_overlap(a.A.double().numpy().T, b.A.double().numpy().T), abs=1e-10)
    assert analysis.col_overlap(a, b) == pytest.approx(dense_overlap(a.B.double().numpy(), b.B.double().numpy()), abs=1e-10)


def test_cosine_matches_torch():
    a, b = lora(3, 7, scaling=2.0), lora(5, 8, scaling=-0.3)
    expected = torch.nn.functional.cosine_similarity(a.delta().double().flatten(), b.delta().double().flatten(), dim=0)
    assert analysis.cosine(a, b) == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize("density", [0.1, 0.2, 0.5, 1.0])
def test_sign_conflict_matches_explicit_top_k(density):
    a, b = lora(3, 9), lora(2, 10)
    da, db = dense(a).ravel(), dense(b).ravel()
    k = int(density * da.size)
    keep_a, keep_b = np.zeros(da.size, bool), np.zeros(db.size, bool)
    keep_a[np.argsort(-np.abs(da))[:k]] = True
    keep_b[np.argsort(-np.abs(db))[:k]] = True
    both = keep_a & keep_b
    expected = np.mean(np.sign(da[both]) != np.sign(db[both]))
    assert analysis.sign_conflict(a, b, density) == pytest.approx(expected, abs=1e-12)


def test_sign_conflict_is_nan_without_common_entries():
    a, b = lora(2, 1), lora(2, 2)
    assert math.isnan(analysis.sign_conflict(a, b, density=0.0))


def test_zero_b_gives_nan_not_an_error():
    trained, untrained = lora(3, 1), LoraLayer(lora(3, 2).A, torch.zeros(D_OUT, 3), 1.0)
    assert analysis.orthonormal_basis(untrained.B).shape == (D_OUT, 0)
    for fn in (analysis.col_overlap, analysis.delta_overlap, analysis.cosine):
        assert math.isnan(fn(trained, untrained))
    assert 0 <= analysis.row_overlap(trained, untrained) <= 1  # A is still trained
    matrix = analysis.pairwise([adapter("t", {"l": trained}), adapter("u", {"l": untrained})], "delta_overlap")["l"]
    assert matrix[0, 0] == pytest.approx(1.0) and np.isnan(matrix[1, 1]) and np.isnan(matrix[0, 1])


def test_pairwise_shapes_symmetry_and_common_layers():
    adapters = [random_adapter("a", 2, 1), random_adapter("b", 4, 2), random_adapter("c", 3, 3)]
    adapters[2].layers.pop(LAYERS[1])
    for name, metric in analysis.METRICS.items():
        if name in analysis.NEEDS_GRAMS:
            continue
        result = metric.compute(adapters, density=0.3)
        assert sorted(result) == [LAYERS[0], LAYERS[2]]
        for matrix in result.values():
            assert matrix.shape == (3, 3) and np.all(np.isfinite(matrix))
            np.testing.assert_allclose(matrix, matrix.T)
            np.testing.assert_allclose(np.diag(matrix), 0.0 if name == "sign_conflict" else 1.0, atol=1e-12)


def test_interference_from_grams_matches_explicit_activations():
    adapters = [random_adapter("a", 2, 1), random_adapter("b", 4, 2)]
    rng = np.random.default_rng(0)
    H = [{layer: rng.standard_normal((30 + 5 * j, D_IN)) for layer in LAYERS} for j in range(2)]
    grams = [{layer: torch.from_numpy(h.T @ h) for layer, h in task.items()} for task in H]
    result = analysis.METRICS["interference"].compute(adapters, grams=grams)
    assert result.keys() == analysis.interference(adapters, grams).keys() == set(LAYERS)
    for layer, matrix in result.items():
        for i in range(2):
            for j in range(2):
                own = np.linalg.norm(dense(adapters[j].layers[layer]) @ H[j][layer].T)
                expected = np.linalg.norm(dense(adapters[i].layers[layer]) @ H[j][layer].T) / own
                assert matrix[i, j] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="feature statistics"):
        analysis.METRICS["interference"].compute(adapters)


def test_merge_fidelity_lossless_for_task_arithmetic_lossy_for_ties():
    adapters = [random_adapter("a", 2, 1), random_adapter("b", 4, 2)]
    spec = MergeSpec("task_arithmetic", coefficients=[0.7, 1.3], lam=0.9)
    exact = analysis.merge_fidelity(adapters, run_to_end(merge_adapters(adapters, spec)))
    assert set(exact) == set(LAYERS) and all(v < 1e-6 for v in exact.values())

    merged = run_to_end(merge_adapters(adapters, MergeSpec("ties", coefficients=[0.7, 1.3], lam=0.9, params={"density": 0.3})))
    lossy = analysis.merge_fidelity(adapters, merged)
    assert all(v > 0.01 for v in lossy.values())
    layer = LAYERS[1]
    reference = 0.9 * (0.7 * dense(adapters[0].layers[layer]) + 1.3 * dense(adapters[1].layers[layer]))
    got = merged.layers[layer].dense().double().numpy()
    assert lossy[layer] == pytest.approx(np.linalg.norm(got - reference) / np.linalg.norm(reference), rel=1e-5)


def test_aggregate_and_by_layer_type():
    nan = np.nan
    per_layer = {
        "enc.layer.0.query": np.array([[1.0, 0.2], [0.2, nan]]),
        "enc.layer.1.query": np.array([[1.0, 0.6], [0.6, nan]]),
        "enc.layer.0.value": np.array([[1.0, 0.1], [0.1, 4.0]]),
    }
    np.testing.assert_allclose(analysis.aggregate(per_layer, "mean"), [[1.0, 0.3], [0.3, 4.0]])
    np.testing.assert_allclose(analysis.aggregate(per_layer, "max"), [[1.0, 0.6], [0.6, 4.0]])
    by_type = analysis.by_layer_type(per_layer, "mean")
    assert list(by_type) == ["query", "value"]
    np.testing.assert_allclose(by_type["query"], [[1.0, 0.4], [0.4, nan]])
    np.testing.assert_allclose(analysis.by_layer_type(per_layer, "max")["value"], per_layer["enc.layer.0.value"])
    with pytest.raises(ValueError):
        analysis.aggregate(per_layer, "median")


def test_layer_names_and_rows():
    assert analysis.layer_type("bert.encoder.layer.3.attention.self.query") == "query"
    assert analysis.layer_index("bert.encoder.layer.3.attention.self.query") == 3
    assert analysis.layer_index("model.layers.12.self_attn.q_proj") == 12
    assert analysis.layer_index("classifier.dense") is None
    rows = analysis.to_rows({"l.0.q": np.array([[1.0, 2.0], [3.0, 4.0]])}, ["a", "b"])
    assert rows[2] == {"layer": "l.0.q", "adapter_i": "b", "adapter_j": "a", "value": 3.0}
    assert len(rows) == 4


def test_metrics_on_real_peft_adapters(tiny_adapters):
    adapters = [load_adapter(p) for p in tiny_adapters]  # ranks 4 and 2
    for name in ("row_overlap", "col_overlap", "delta_overlap", "cosine", "sign_conflict"):
        per_layer = analysis.METRICS[name].compute(adapters)
        assert len(per_layer) == 4  # query and value of two blocks
        mean = analysis.aggregate(per_layer)
        assert np.all(np.isfinite(mean)) and np.all(mean >= -1) and np.all(mean <= 1)
        assert {analysis.layer_index(layer) for layer in per_layer} == {0, 1}


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown pair metric"):
        analysis.pairwise([random_adapter("a", 2, 1)], "interference")
