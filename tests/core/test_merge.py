"""Merge engine: every method against a direct computation written here (numpy loops
and explicit formulas) and, where the definitions coincide, against peft's merge_utils."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from osrm_gui.core.merge import METHODS, LayerContext, LoraDelta, fidelity, get_method, layer_seed, merge_layers
from osrm_gui.core.merge.svd import compress_dense
from tests.tolerances import assert_within, gamma

D_OUT, D_IN = 7, 9


@pytest.fixture(scope="module")
def peft_mu():
    return pytest.importorskip("peft.utils.merge_utils")


def make_deltas(ranks, dtype=torch.float64, seed=0, d_out=D_OUT, d_in=D_IN, indices=None):
    g = torch.Generator().manual_seed(seed)
    indices = indices or list(range(len(ranks)))
    return [
        LoraDelta(
            index=i,
            A=torch.randn(r, d_in, generator=g, dtype=dtype),
            B=torch.randn(d_out, r, generator=g, dtype=dtype),
            scaling=0.5 + float(torch.rand(1, generator=g)),
        )
        for i, r in zip(indices, ranks)
    ]


def ctx_for(method, coefficients, lam=1.0, seed=0, **params):
    return LayerContext("layer", tuple(coefficients), lam, get_method(method).resolve_params(params), seed)


def np_dense(d):
    return d.scaling * (d.B.double().numpy() @ d.A.double().numpy())


def np_trim(m, density):
    k = int(density * m.size)
    keep = np.argsort(-np.abs(m).ravel(), kind="stable")[:k]
    out = np.zeros(m.size)
    out[keep] = m.ravel()[keep]
    return out.reshape(m.shape)


def np_elect_mean(weighted, method):
    """TIES election + disjoint mean, one entry at a time."""
    T, n, m = weighted.shape
    out = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            w = [weighted[t, i, j] for t in range(T)]
            score = sum(w) if method == "total" else sum(np.sign(x) for x in w)
            g = 1.0 if score >= 0 else -1.0
            agree = [x for x in w if np.sign(x) == g]
            out[i, j] = sum(agree) / max(1, len(agree))
    return out


def peft_masks(shape, T, density, seed):
    """The masks peft's random_pruning draws: one bernoulli per task tensor after manual_seed."""
    torch.manual_seed(seed)
    return [torch.bernoulli(torch.full(shape, density, dtype=torch.float32)).double().numpy() for _ in range(T)]


def f32_bound(deltas, coefs, lam=1.0, density=1.0, computations=1):
    """Rounding bound of a float32 merge of these task vectors: every entry is a sum over tasks of
    c·s·(B·A)/density·λ (and a mean), so γ over the rank, the tasks and those few scalings applies
    to the same sum of absolute values (Higham §3.1); doubled when both sides round."""
    terms = sum(abs(c) * d.scaling * (d.B.double().abs() @ d.A.double().abs()).numpy() for c, d in zip(coefs, deltas))
    n = max(d.A.shape[0] for d in deltas) + len(deltas) + 4
    return computations * gamma(n) * abs(lam) * terms / density


def merged(method, deltas, ctx):
    return get_method(method).merge_layer(deltas, ctx).dense().double().numpy()


# ---------------------------------------------------------------- linear / task arithmetic


def test_linear_normalises_by_all_coefficients():
    # adapter 1 does not target this layer, yet its coefficient counts in the normalisation
    deltas = make_deltas([2, 3], indices=[0, 2])
    coefs, lam = (0.5, 2.0, 1.5), 0.8
    expected = lam * (0.5 * np_dense(deltas[0]) + 1.5 * np_dense(deltas[1])) / 4.0
    np.testing.assert_allclose(merged("linear", deltas, ctx_for("linear", coefs, lam)), expected, atol=1e-12)


def test_linear_zero_coefficient_sum_is_an_error():
    deltas = make_deltas([2, 2])
    with pytest.raises(ValueError, match="sum to 0"):
        get_method("linear").merge_layer(deltas, ctx_for("linear", (1.0, -1.0)))


def test_task_arithmetic_direct_and_peft(peft_mu):
    deltas = make_deltas([2, 4, 3])
    coefs, lam = (0.7, -0.3, 1.2), 1.5
    expected = lam * sum(c * np_dense(d) for c, d in zip(coefs, deltas))
    got = merged("task_arithmetic", deltas, ctx_for("task_arithmetic", coefs, lam))
    np.testing.assert_allclose(got, expected, atol=1e-12)
    ref = peft_mu.task_arithmetic([d.dense(torch.float64) for d in deltas], torch.tensor(coefs, dtype=torch.float64))
    np.testing.assert_allclose(got, lam * ref.numpy(), atol=1e-12)


# ---------------------------------------------------------------- TIES / magnitude prune


@pytest.mark.parametrize("sign_method", ["total", "frequency"])
def test_ties_direct(sign_method):
    deltas = make_deltas([2, 3, 4], seed=1)
    coefs, lam, density = (0.9, -0.6, 1.3), 1.7, 0.4
    weighted = np.stack([c * np_trim(np_dense(d), density) for c, d in zip(coefs, deltas)])
    expected = lam * np_elect_mean(weighted, sign_method)
    ctx = ctx_for("ties", coefs, lam, density=density, majority_sign_method=sign_method)
    np.testing.assert_allclose(merged("ties", deltas, ctx), expected, atol=1e-12)


def test_ties_keeps_int_density_fraction_per_task():
    deltas = make_deltas([3])
    out = merged("ties", deltas, ctx_for("ties", (1.0,), density=0.3))
    assert np.count_nonzero(out) == int(0.3 * D_OUT * D_IN)


def test_ties_weights_before_election():
    # one entry: task values +1 and +2, coefficients +1 and -1 → weighted +1, -2.
    # Weighted election: sum -1 → sign −, only -2 agrees → -2.  (peft: elect + on the
    # unweighted values, both agree, mean of weighted = -0.5.)
    one = torch.ones(1, 1, dtype=torch.float64)
    deltas = [LoraDelta(0, one, one, 1.0), LoraDelta(1, one, one, 2.0)]
    out = merged("ties", deltas, ctx_for("ties", (1.0, -1.0), density=1.0))
    assert out.item() == pytest.approx(-2.0)


@pytest.mark.parametrize("coefs,sign_method", [((0.4, 1.3, 0.8), "frequency"), ((0.6, 0.6, 0.6), "total")])
def test_ties_matches_peft_where_definitions_coincide(peft_mu, coefs, sign_method):
    deltas = make_deltas([2, 3, 2], seed=2)
    lam, density = 1.3, 0.5
    ctx = ctx_for("ties", coefs, lam, density=density, majority_sign_method=sign_method)
    ref = peft_mu.ties(
        [d.dense(torch.float64) for d in deltas], torch.tensor(coefs, dtype=torch.float64), density, sign_method
    )
    np.testing.assert_allclose(merged("ties", deltas, ctx), lam * ref.numpy(), atol=1e-12)


def test_magnitude_prune_direct_and_peft(peft_mu):
    deltas = make_deltas([2, 5, 3], seed=3)
    coefs, lam, density = (0.5, -1.1, 0.9), 0.7, 0.6
    expected = lam * sum(c * np_trim(np_dense(d), density) for c, d in zip(coefs, deltas))
    got = merged("magnitude_prune", deltas, ctx_for("magnitude_prune", coefs, lam, density=density))
    np.testing.assert_allclose(got, expected, atol=1e-12)
    ref = peft_mu.magnitude_prune(
        [d.dense(torch.float64) for d in deltas], torch.tensor(coefs, dtype=torch.float64), density
    )
    np.testing.assert_allclose(got, lam * ref.numpy(), atol=1e-12)


# ---------------------------------------------------------------- DARE


def test_dare_linear_direct_and_peft(peft_mu):
    deltas = make_deltas([2, 3, 4], dtype=torch.float32, seed=4)
    coefs, lam, density, seed = (0.8, -0.5, 1.2), 1.4, 0.4, 123
    masks = peft_masks((D_OUT, D_IN), 3, density, seed)
    expected = lam * sum(c * np_dense(d) * m / density for c, d, m in zip(coefs, deltas, masks))
    got = merged("dare_linear", deltas, ctx_for("dare_linear", coefs, lam, seed=seed, density=density))
    assert_within(got, expected, f32_bound(deltas, coefs, lam, density))
    torch.manual_seed(seed)
    ref = peft_mu.dare_linear([d.dense() for d in deltas], torch.tensor(coefs), density)
    assert_within(got, lam * ref.double().numpy(), f32_bound(deltas, coefs, lam, density, computations=2))


@pytest.mark.parametrize("sign_method", ["total", "frequency"])
def test_dare_ties_direct(sign_method):
    deltas = make_deltas([3, 2, 2], dtype=torch.float32, seed=5)
    coefs, lam, density, seed = (1.0, -0.7, 0.4), 0.9, 0.5, 7
    masks = peft_masks((D_OUT, D_IN), 3, density, seed)
    weighted = np.stack([c * np_dense(d) * m / density for c, d, m in zip(coefs, deltas, masks)])
    expected = lam * np_elect_mean(weighted, sign_method)
    ctx = ctx_for("dare_ties", coefs, lam, seed=seed, density=density, majority_sign_method=sign_method)
    assert_within(merged("dare_ties", deltas, ctx), expected, f32_bound(deltas, coefs, lam, density))


def test_dare_ties_matches_peft_with_positive_weights(peft_mu):
    deltas = make_deltas([3, 2, 4], dtype=torch.float32, seed=6)
    coefs, density, seed = (0.3, 1.1, 0.7), 0.6, 99
    ctx = ctx_for("dare_ties", coefs, seed=seed, density=density, majority_sign_method="frequency")
    torch.manual_seed(seed)
    ref = peft_mu.dare_ties([d.dense() for d in deltas], torch.tensor(coefs), density, "frequency")
    assert_within(merged("dare_ties", deltas, ctx), ref.double().numpy(), f32_bound(deltas, coefs, 1.0, density, computations=2))


def test_dare_depends_on_seed():
    deltas = make_deltas([2, 2], dtype=torch.float32)
    a = merged("dare_linear", deltas, ctx_for("dare_linear", (1.0, 1.0), seed=1))
    b = merged("dare_linear", deltas, ctx_for("dare_linear", (1.0, 1.0), seed=1))
    c = merged("dare_linear", deltas, ctx_for("dare_linear", (1.0, 1.0), seed=2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


# ---------------------------------------------------------------- low rank


def test_concat_is_exact_with_mixed_ranks():
    deltas = make_deltas([2, 4, 8], seed=8)
    coefs, lam = (0.6, -1.2, 0.9), 1.3
    result = get_method("concat").merge_layer(deltas, ctx_for("concat", coefs, lam))
    assert get_method("concat").low_rank and result.delta is None
    assert result.A.shape == (14, D_IN) and result.B.shape == (D_OUT, 14)
    expected = lam * sum(c * np_dense(d) for c, d in zip(coefs, deltas))
    np.testing.assert_allclose((result.B @ result.A).numpy(), expected, atol=1e-12)


def np_svd_truncation(m, rank):
    u, s, vh = np.linalg.svd(m, full_matrices=False)
    approx = (u[:, :rank] * s[:rank]) @ vh[:rank]
    return approx, np.linalg.norm(m - approx) / np.linalg.norm(m)


def test_svd_exact_when_rank_covers_sum_of_ranks():
    deltas = make_deltas([1, 2], seed=9)
    coefs, lam = (0.5, 1.5), 0.7
    result = get_method("svd").merge_layer(deltas, ctx_for("svd", coefs, lam, rank=3))
    expected = lam * sum(c * np_dense(d) for c, d in zip(coefs, deltas))
    assert result.A.shape == (3, D_IN) and result.B.shape == (D_OUT, 3)
    np.testing.assert_allclose(result.dense().numpy(), expected, atol=1e-12)
    assert result.truncation_error == pytest.approx(0.0, abs=1e-12)


def test_svd_truncation_matches_dense_svd_and_shrinks_with_rank():
    deltas = make_deltas([3, 4], seed=10)
    coefs, lam = (0.8, -0.6), 1.1
    dense = lam * sum(c * np_dense(d) for c, d in zip(coefs, deltas))
    errors = []
    for rank in (1, 2, 4, 6):
        result = get_method("svd").merge_layer(deltas, ctx_for("svd", coefs, lam, rank=rank))
        approx, err = np_svd_truncation(dense, rank)
        np.testing.assert_allclose(result.dense().numpy(), approx, atol=1e-10)
        assert result.truncation_error == pytest.approx(err, rel=1e-9)
        # reported error is the real one
        assert np.linalg.norm(dense - result.dense().numpy()) / np.linalg.norm(dense) == pytest.approx(err, rel=1e-9)
        # singular values split evenly: B and A carry the same column/row norms
        np.testing.assert_allclose(result.B.norm(dim=0).numpy(), result.A.norm(dim=1).numpy(), rtol=1e-9)
        errors.append(result.truncation_error)
    assert all(a > b for a, b in zip(errors, errors[1:])) and errors[0] > 0.1


def test_svd_zero_merge_has_zero_error():
    deltas = make_deltas([2])
    result = get_method("svd").merge_layer(deltas, ctx_for("svd", (0.0,), rank=1))
    assert result.truncation_error == 0.0
    assert float(result.dense().abs().max()) == 0.0


def test_compress_dense_matches_numpy():
    g = torch.Generator().manual_seed(11)
    m = torch.randn(8, 6, generator=g, dtype=torch.float64)
    B, A, err = compress_dense(m, 3)
    approx, expected_err = np_svd_truncation(m.numpy(), 3)
    assert B.shape == (8, 3) and A.shape == (3, 6)
    np.testing.assert_allclose((B @ A).numpy(), approx, atol=1e-10)
    assert err == pytest.approx(expected_err, rel=1e-9)


# ---------------------------------------------------------------- registry and params


def test_registry_order_and_unknown_name():
    assert list(METHODS)[:9] == [
        "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "magnitude_prune", "concat", "svd", "regmean",
    ]
    assert {"emr", "iso_c", "iso_cts", "tsv", "knots_ties", "knots_dare_ties", "do_merging", "della", "della_linear", "breadcrumbs",
            "breadcrumbs_ties", "sce", "doge", "fisher", "opcm"} <= set(METHODS)
    assert all(p.title for m in METHODS.values() for p in m.params)
    assert all(m.label and m.doc for m in METHODS.values())
    with pytest.raises(ValueError, match="linear.*svd.*regmean"):
        get_method("nope")


def test_param_defaults_and_validation():
    assert get_method("ties").resolve_params(None) == {"density": 0.5, "majority_sign_method": "total"}
    assert get_method("svd").resolve_params({}) == {"rank": 16}
    assert get_method("dare_linear").resolve_params({"density": 1}) == {"density": 1.0}
    for bad in ({"density": 0.0}, {"density": 1.5}, {"density": float("nan")}, {"majority_sign_method": "mean"}):
        with pytest.raises(ValueError):
            get_method("dare_ties").resolve_params(bad)
    with pytest.raises(ValueError, match="no parameter"):
        get_method("ties").resolve_params({"rank": 4})
    with pytest.raises(ValueError):
        get_method("svd").resolve_params({"rank": 0})


# ---------------------------------------------------------------- engine


def as_adapter(deltas, names):
    return {n: (d.A, d.B, d.scaling) for n, d in zip(names, deltas)}


def two_adapters():
    a = as_adapter(make_deltas([2, 2], seed=20), ["l.b", "l.a"])
    b = as_adapter(make_deltas([3], seed=21), ["l.a"])  # does not target l.b
    return a, b


def test_engine_union_of_layers_with_missing_layer():
    a, b = two_adapters()
    coefs, lam = (0.5, 2.0), 0.9
    out = dict(merge_layers([a, b], "task_arithmetic", coefs, lam))
    assert list(out) == ["l.a", "l.b"]
    dense = lambda f: f[2] * (f[1].numpy() @ f[0].numpy())  # noqa: E731
    expected_a = lam * (0.5 * dense(a["l.a"]) + 2.0 * dense(b["l.a"]))
    as_delta = lambda f: LoraDelta(0, f[0], f[1], f[2])  # noqa: E731
    assert_within(out["l.a"].delta.numpy(), expected_a, f32_bound([as_delta(a["l.a"]), as_delta(b["l.a"])], coefs, lam))
    assert_within(out["l.b"].delta.numpy(), lam * 0.5 * dense(a["l.b"]), f32_bound([as_delta(a["l.b"])], coefs[:1], lam))
    assert out["l.a"].delta.dtype == torch.float32
    # linear normalises l.b by both coefficients although only adapter 0 targets it
    lin = dict(merge_layers([a, b], "linear", coefs, lam))
    assert_within(lin["l.b"].delta.numpy(), lam * 0.5 * dense(a["l.b"]) / 2.5, f32_bound([as_delta(a["l.b"])], coefs[:1], lam))


def test_engine_shape_mismatch_names_the_layer():
    a, _ = two_adapters()
    g = torch.Generator().manual_seed(0)
    bad = {"l.a": (torch.randn(2, D_IN + 1, generator=g), torch.randn(D_OUT, 2, generator=g), 1.0)}
    with pytest.raises(ValueError, match=r"'l\.a'"):
        merge_layers([a, bad], "ties", (1.0, 1.0))  # raised at the call, before iterating
    inconsistent = {"l.c": (torch.zeros(2, D_IN), torch.zeros(D_OUT, 3), 1.0)}
    with pytest.raises(ValueError, match=r"'l\.c'"):
        merge_layers([inconsistent], "ties", (1.0,))


def test_engine_validates_arguments():
    a, b = two_adapters()
    with pytest.raises(ValueError, match="coefficients"):
        merge_layers([a, b], "linear", (1.0,))
    with pytest.raises(ValueError, match="no parameter"):
        merge_layers([a, b], "linear", (1.0, 1.0), params={"density": 0.5})
    with pytest.raises(ValueError, match="density"):
        merge_layers([a, b], "dare_linear", (1.0, 1.0), params={"density": 1.5})
    with pytest.raises(ValueError, match="valid"):
        merge_layers([a, b], "bogus", (1.0, 1.0))


def test_engine_seeds_replay_and_differ_across_layers():
    d = make_deltas([3], seed=30)[0]
    same = {"x.first": (d.A, d.B, d.scaling), "x.second": (d.A, d.B, d.scaling)}
    run = lambda s: {n: r.delta for n, r in merge_layers([same], "dare_linear", (1.0,), seed=s)}  # noqa: E731
    first, again, other = run(3), run(3), run(4)
    for name in same:
        assert torch.equal(first[name], again[name])
        assert not torch.equal(first[name], other[name])
    assert not torch.equal(first["x.first"], first["x.second"])
    # the per-layer seed is the documented, stable one (crc32-based; hash() would vary per process)
    assert layer_seed(0, "model.layers.0.q_proj") == 4030871767
    torch.manual_seed(layer_seed(3, "x.first"))
    mask = torch.bernoulli(torch.full((D_OUT, D_IN), 0.5)).numpy()
    expected = mask * (d.scaling * (d.B.float() @ d.A.float())).numpy() / 0.5
    assert_within(first["x.first"].numpy(), expected, f32_bound([d], (1.0,), 1.0, 0.5, computations=2))


def test_fidelity():
    deltas = make_deltas([2, 3], seed=40)
    coefs = (0.7, 0.4)
    exact = get_method("concat").merge_layer(deltas, ctx_for("concat", coefs, 1.2))
    assert fidelity(exact, deltas, ctx_for("concat", coefs, 1.2)) < 1e-12
    ctx = ctx_for("svd", coefs, 1.2, rank=2)
    compressed = get_method("svd").merge_layer(deltas, ctx)
    assert fidelity(compressed, deltas, ctx) == pytest.approx(compressed.truncation_error, rel=1e-9)
    ctx = ctx_for("ties", coefs, 1.2, density=0.3)
    assert fidelity(get_method("ties").merge_layer(deltas, ctx), deltas, ctx) > 0.05
    zero = ctx_for("task_arithmetic", (0.0, 0.0))
    assert fidelity(get_method("task_arithmetic").merge_layer(deltas, zero), deltas, zero) == 0.0
    assert math.isinf(fidelity(exact, deltas, zero))
