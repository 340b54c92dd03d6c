"""DO-Merging, DELLA, Model Breadcrumbs and SCE against direct computations written here from
their definitions (numpy, explicit per-row / per-entry loops), with the same random masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osrm_gui.core.merge import LayerContext, LoraDelta, merge_layers
from osrm_gui.core.merge.breadcrumbs import BREADCRUMBS, BREADCRUMBS_TIES
from osrm_gui.core.merge.della import DELLA, DELLA_LINEAR
from osrm_gui.core.merge.do_merging import METHOD as DO_MERGING
from osrm_gui.core.merge.do_merging import orthogonalize
from osrm_gui.core.merge.sce import METHOD as SCE

from tests.core.test_merge import D_IN, D_OUT, make_deltas, np_dense
ALL = (DO_MERGING, DELLA, DELLA_LINEAR, BREADCRUMBS, BREADCRUMBS_TIES, SCE)


def ctx_for(method, coefficients, lam=1.0, seed=0, **params):
    return LayerContext("layer", tuple(coefficients), lam, method.resolve_params(params), seed)



def merged(method, deltas, ctx):
    return method.merge_layer(deltas, ctx).dense().double().numpy()


def np_sum_agreeing(weighted, normalise_by=None):
    """Sign election by the sum (ties → +) per entry; the sum of the agreeing weighted entries,
    divided by the sum of the agreeing tasks' ``normalise_by`` weights (0 → 1) when given."""
    T, n, m = weighted.shape
    out = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            x = weighted[:, i, j]
            elected = 1.0 if x.sum() >= 0 else -1.0
            agree = [t for t in range(T) if np.sign(x[t]) == elected]
            total = sum(x[t] for t in agree)
            if normalise_by is not None:
                divisor = sum(normalise_by[t] for t in agree)
                total /= divisor if divisor != 0 else 1.0
            out[i, j] = total
    return out


def test_every_method_presents_itself():
    for method in ALL:
        assert method.label and method.doc and method.params
        for param in method.params:
            assert param.label and param.doc.endswith(".")
            assert param.validate(param.default) == param.default
    assert DO_MERGING.low_rank and not any(m.low_rank for m in ALL[1:])


# ---------------------------------------------------------------- Model Breadcrumbs


def np_breadcrumbs_trim(m, density, gamma):
    """Keep the entries whose ascending-|x| rank lies in [bottom, bottom + keep)."""
    n = m.size
    keep = int(density * n)
    bottom = max(0, n - keep - int(gamma * n))
    flat = m.ravel()
    rank = np.empty(n, dtype=int)
    rank[np.argsort(np.abs(flat), kind="stable")] = np.arange(n)
    return np.where((rank >= bottom) & (rank < bottom + keep), flat, 0.0).reshape(m.shape)


@pytest.mark.parametrize("density,gamma", [(0.6, 0.05), (0.9, 0.2), (0.5, 0.0), (0.3, 0.01)])
def test_breadcrumbs_direct(density, gamma):
    deltas = make_deltas([2, 3, 4], seed=1)
    coefs, lam = (0.9, -0.6, 1.3), 1.7
    trimmed = [np_breadcrumbs_trim(np_dense(d), density, gamma) for d in deltas]
    for t in trimmed:
        assert np.count_nonzero(t) == int(density * D_OUT * D_IN)
    ctx = ctx_for(BREADCRUMBS, coefs, lam, density=density, gamma=gamma)
    expected = lam * sum(c * t for c, t in zip(coefs, trimmed))
    np.testing.assert_allclose(merged(BREADCRUMBS, deltas, ctx), expected, atol=1e-12)
    weighted = np.stack([c * t for c, t in zip(coefs, trimmed)])
    expected_ties = lam * np_sum_agreeing(weighted)  # summed, not averaged (mergekit's normalize: false)
    ctx = ctx_for(BREADCRUMBS_TIES, coefs, lam, density=density, gamma=gamma)
    np.testing.assert_allclose(merged(BREADCRUMBS_TIES, deltas, ctx), expected_ties, atol=1e-12)


def test_breadcrumbs_drops_the_largest_entries():
    d = make_deltas([3], seed=2)[0]
    n = D_OUT * D_IN
    out = merged(BREADCRUMBS, [d], ctx_for(BREADCRUMBS, (1.0,), density=0.5, gamma=0.1))
    magnitudes = np.sort(np.abs(np_dense(d)).ravel())
    kept = np.sort(np.abs(out[out != 0]))
    np.testing.assert_allclose(kept, magnitudes[n - int(0.1 * n) - int(0.5 * n): n - int(0.1 * n)], rtol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_breadcrumbs_at_density_one_is_task_arithmetic(gamma):
    deltas = make_deltas([2, 3], seed=3)
    coefs, lam = (0.7, -1.2), 0.8
    expected = lam * sum(c * np_dense(d) for c, d in zip(coefs, deltas))
    ctx = ctx_for(BREADCRUMBS, coefs, lam, density=1.0, gamma=gamma)
    np.testing.assert_allclose(merged(BREADCRUMBS, deltas, ctx), expected, atol=1e-12)
    one = deltas[:1]
    ctx = ctx_for(BREADCRUMBS_TIES, coefs, lam, density=1.0, gamma=gamma)
    np.testing.assert_allclose(merged(BREADCRUMBS_TIES, one, ctx), lam * coefs[0] * np_dense(one[0]), atol=1e-12)


# ---------------------------------------------------------------- DELLA


def np_della_probabilities(m, density, epsilon):
    """Per row: rank = how many entries of the row are smaller in magnitude; p from that rank,
    in float32 arithmetic as mergekit computes it."""
    rows, cols = m.shape
    p = np.zeros((rows, cols), dtype=np.float32)
    for i in range(rows):
        for j in range(cols):
            rank = sum(abs(m[i, k]) < abs(m[i, j]) for k in range(cols))
            rank_norm = np.float32(rank) / np.float32(cols - 1)
            p[i, j] = np.float32(density - epsilon) + rank_norm * np.float32(2) * np.float32(epsilon)
    return p


def np_della_prune(dense, density, epsilon, rescale, seed):
    """What mergekit's della_magprune gives for each task tensor in turn after torch.manual_seed."""
    torch.manual_seed(seed)
    out = []
    for m in dense:
        p = np_della_probabilities(m, density, epsilon)
        mask = torch.bernoulli(torch.from_numpy(p)).double().numpy()
        kept = m * mask
        if rescale == "l1":
            kept = kept * np.abs(m).sum() / np.abs(kept).sum()
        elif rescale == "inverse_p":
            kept = kept / p.astype(np.float64)
        out.append(kept)
    return out


@pytest.mark.parametrize("rescale", ["l1", "inverse_p", "none"])
def test_della_direct(rescale):
    deltas = make_deltas([2, 3, 4], seed=4)
    coefs, lam, density, epsilon, seed = (0.8, -0.5, 1.2), 1.4, 0.4, 0.2, 123
    pruned = np_della_prune([np_dense(d) for d in deltas], density, epsilon, rescale, seed)
    params = {"density": density, "epsilon": epsilon, "rescale": rescale}
    expected_linear = lam * sum(c * x for c, x in zip(coefs, pruned))
    got = merged(DELLA_LINEAR, deltas, ctx_for(DELLA_LINEAR, coefs, lam, seed, **params))
    np.testing.assert_allclose(got, expected_linear, rtol=1e-12, atol=1e-12)
    weighted = np.stack([c * x for c, x in zip(coefs, pruned)])
    expected = lam * np_sum_agreeing(weighted, normalise_by=coefs)
    np.testing.assert_allclose(merged(DELLA, deltas, ctx_for(DELLA, coefs, lam, seed, **params)), expected,
                               rtol=1e-12, atol=1e-12)


def test_della_float32_factors():
    deltas = make_deltas([3, 2], dtype=torch.float32, seed=5)
    coefs, seed = (1.0, 0.6), 9
    pruned = np_della_prune([np_dense(d) for d in deltas], 0.5, 0.15, "l1", seed)
    expected = np_sum_agreeing(np.stack([c * x for c, x in zip(coefs, pruned)]), normalise_by=coefs)
    result = DELLA.merge_layer(deltas, ctx_for(DELLA, coefs, seed=seed))
    assert result.delta.dtype == torch.float32
    got = result.delta.double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_della_keeps_larger_entries_more_often():
    # one 200 × 300 task: the kept fraction is density on average and rises with the in-row rank
    g = torch.Generator().manual_seed(6)
    d = LoraDelta(0, torch.randn(8, 300, generator=g), torch.randn(200, 8, generator=g), 1.0)
    out = merged(DELLA_LINEAR, [d], ctx_for(DELLA_LINEAR, (1.0,), seed=1, density=0.4, epsilon=0.2, rescale="none"))
    kept = out != 0
    n = kept.size
    assert abs(kept.mean() - 0.4) < 4 * np.sqrt(0.4 * 0.6 / n)
    dense = np_dense(d)
    order = np.argsort(np.abs(dense), axis=1)
    by_rank = np.take_along_axis(kept, order, axis=1).mean(axis=0)  # kept fraction per in-row rank
    assert by_rank[:30].mean() < 0.25 and by_rank[-30:].mean() > 0.55


def test_della_seed_replays_and_differs():
    deltas = make_deltas([2, 3], dtype=torch.float32, seed=7)
    run = lambda method, seed: merged(method, deltas, ctx_for(method, (1.0, 0.5), seed=seed))
    for method in (DELLA, DELLA_LINEAR):
        np.testing.assert_array_equal(run(method, 11), run(method, 11))
        assert not np.allclose(run(method, 11), run(method, 12))
    # through the engine: the same seed replays, layers differ
    d = deltas[0]
    adapter = {"x.first": (d.A, d.B, d.scaling), "x.second": (d.A, d.B, d.scaling)}
    once = dict(merge_layers([adapter], DELLA, (1.0,), seed=3))
    again = dict(merge_layers([adapter], DELLA, (1.0,), seed=3))
    for name in adapter:
        assert torch.equal(once[name].delta, again[name].delta)
    assert not torch.equal(once["x.first"].delta, once["x.second"].delta)


def test_della_density_one_and_bad_epsilon():
    deltas = make_deltas([2, 3], seed=8)
    coefs, lam = (0.5, 1.5), 0.9
    ctx = ctx_for(DELLA_LINEAR, coefs, lam, density=1.0)
    expected = lam * sum(c * np_dense(d) for c, d in zip(coefs, deltas))
    np.testing.assert_allclose(merged(DELLA_LINEAR, deltas, ctx), expected, atol=1e-12)
    with pytest.raises(ValueError, match="density"):
        DELLA.merge_layer(deltas, ctx_for(DELLA, coefs, density=0.9, epsilon=0.15))
    with pytest.raises(ValueError):
        DELLA.resolve_params({"rescale": "l2"})


# ---------------------------------------------------------------- SCE


def np_sce(stack, select_topk):
    T, n, m = stack.shape
    if select_topk < 1:
        variance = ((stack - stack.mean(axis=0)) ** 2).mean(axis=0)
        k = int(np.count_nonzero(variance) * select_topk)
        keep = np.zeros(n * m, dtype=bool)
        keep[np.argsort(-variance.ravel(), kind="stable")[:k]] = True
        stack = stack * keep.reshape(n, m)
    energy = np.array([np.mean(x**2) for x in stack])
    weights = energy / energy.sum()
    out = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            x = stack[:, i, j]
            elected = 1.0 if x.sum() >= 0 else -1.0
            agree = [t for t in range(T) if np.sign(x[t]) == elected]
            out[i, j] = sum(weights[t] * x[t] for t in agree) / max(sum(weights[t] for t in agree), 1e-6)
    return out


@pytest.mark.parametrize("select_topk", [1.0, 0.3])
def test_sce_direct(select_topk):
    deltas = make_deltas([2, 3, 4], seed=9)
    coefs, lam = (0.9, -0.6, 1.3), 1.2
    stack = np.stack([c * np_dense(d) for c, d in zip(coefs, deltas)])  # the coefficients act first
    expected = lam * np_sce(stack, select_topk)
    got = merged(SCE, deltas, ctx_for(SCE, coefs, lam, select_topk=select_topk))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    if select_topk < 1:
        assert np.count_nonzero(got) <= int(select_topk * D_OUT * D_IN)


def test_sce_special_cases():
    deltas = make_deltas([2, 3], seed=10)
    one = merged(SCE, deltas[:1], ctx_for(SCE, (0.7,), 1.5))
    np.testing.assert_allclose(one, 1.5 * 0.7 * np_dense(deltas[0]), atol=1e-12)
    # equal coefficients only scale the result
    unit = merged(SCE, deltas, ctx_for(SCE, (1.0, 1.0)))
    np.testing.assert_allclose(merged(SCE, deltas, ctx_for(SCE, (0.4, 0.4))), 0.4 * unit, atol=1e-12)
    # tiny updates keep their energy weights (mergekit would fall back to equal weights below 1e-6)
    tiny = [LoraDelta(d.index, d.A * 1e-3, d.B * 1e-3, d.scaling) for d in deltas]
    np.testing.assert_allclose(merged(SCE, tiny, ctx_for(SCE, (1.0, 1.0))), 1e-6 * unit, rtol=1e-9, atol=1e-18)


# ---------------------------------------------------------------- DO-Merging


def np_column_norms(m):
    return np.sqrt((m**2).sum(axis=0))


def np_do_merge(dense, coefs, lam, magnitude_merge="mean", renormalize=True):
    magnitudes = np.stack([np_column_norms(w) for w in dense])
    directions = [w / m for w, m in zip(dense, magnitudes)]
    if magnitude_merge == "mean":
        m_star = magnitudes.mean(axis=0)
    else:
        m_star = sum(abs(c) * m for c, m in zip(coefs, magnitudes)) / sum(abs(c) for c in coefs)
    d_star = sum(c * d for c, d in zip(coefs, directions))
    if renormalize:
        d_star = d_star / np_column_norms(d_star)
    return lam * d_star * m_star[None, :]


@pytest.mark.parametrize("magnitude_merge", ["mean", "weighted"])
@pytest.mark.parametrize("renormalize", ["on", "off"])
def test_do_merging_low_rank_equals_dense(magnitude_merge, renormalize):
    deltas = make_deltas([2, 4, 3], seed=11)
    coefs, lam = (0.8, -0.5, 1.3), 1.4
    ctx = ctx_for(DO_MERGING, coefs, lam, magnitude_merge=magnitude_merge, renormalize=renormalize)
    result = DO_MERGING.merge_layer(deltas, ctx)
    assert result.delta is None and result.A.shape == (9, D_IN) and result.B.shape == (D_OUT, 9)
    expected = np_do_merge([np_dense(d) for d in deltas], coefs, lam, magnitude_merge, renormalize == "on")
    np.testing.assert_allclose((result.B @ result.A).numpy(), expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())
    if renormalize == "on":  # every column carries the merged magnitude
        magnitudes = np.stack([np_column_norms(np_dense(d)) for d in deltas])
        m_star = magnitudes.mean(0) if magnitude_merge == "mean" else (np.abs(coefs) @ magnitudes) / np.abs(coefs).sum()
        np.testing.assert_allclose(np_column_norms(expected), abs(lam) * m_star, rtol=1e-10)


@pytest.mark.parametrize("renormalize", ["on", "off"])
def test_do_merging_one_task_returns_its_update(renormalize):
    d = make_deltas([3], seed=12)[0]
    out = merged(DO_MERGING, [d], ctx_for(DO_MERGING, (1.0,), renormalize=renormalize))
    np.testing.assert_allclose(out, np_dense(d), rtol=1e-10, atol=1e-12)


def test_do_merging_float32_and_cancellation():
    deltas = make_deltas([3, 2], dtype=torch.float32, seed=13)
    coefs = (0.6, 1.1)
    result = DO_MERGING.merge_layer(deltas, ctx_for(DO_MERGING, coefs, 0.9))
    assert result.A.dtype == torch.float32
    expected = np_do_merge([np_dense(d) for d in deltas], coefs, 0.9)
    np.testing.assert_allclose(result.dense().double().numpy(), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    # a task minus itself cancels: 0, not rounding noise blown up to the merged magnitude
    twice = [deltas[0], LoraDelta(1, deltas[0].A, deltas[0].B, deltas[0].scaling)]
    zero = merged(DO_MERGING, twice, ctx_for(DO_MERGING, (1.0, -1.0)))
    assert np.abs(zero).max() < 1e-5 * np.abs(np_dense(deltas[0])).max()


def raw_overlap(As, Bs):
    """Σ_{i≠j} ‖B_iᵀB_j‖_F + ‖A_iA_jᵀ‖_F in float64."""
    As, Bs = [a.double() for a in As], [b.double() for b in Bs]
    return sum(float(torch.linalg.matrix_norm(Bs[i].T @ Bs[j]) + torch.linalg.matrix_norm(As[i] @ As[j].T))
               for i in range(len(As)) for j in range(len(As)) if i != j)


def test_do_merging_orthogonalization_reduces_overlap_and_stays_close():
    g = torch.Generator().manual_seed(14)
    common_A, common_B = torch.randn(4, 40, generator=g), torch.randn(30, 4, generator=g)
    deltas = [
        LoraDelta(i, 0.5 * common_A + torch.randn(4, 40, generator=g),
                  1e-2 * (0.5 * common_B + torch.randn(30, 4, generator=g)), 2.0)  # B much smaller than A, as in LoRA
        for i in range(3)
    ]
    As, Bs = [d.A for d in deltas], [d.B for d in deltas]
    params = DO_MERGING.resolve_params({"orthogonalize_steps": 100})
    A_hat, B_hat = orthogonalize(As, Bs, 100, params["orthogonalize_lr"], params["orthogonalize_gamma"])
    assert raw_overlap(A_hat, B_hat) < 0.9 * raw_overlap(As, Bs)
    for X, X_hat in zip(As + Bs, A_hat + B_hat):
        assert 0 < float(torch.linalg.matrix_norm(X_hat - X) / torch.linalg.matrix_norm(X)) <= 0.05
    # deterministic, and the merge is the dense DO-Merging of the moved factors
    again = orthogonalize(As, Bs, 100, params["orthogonalize_lr"], params["orthogonalize_gamma"])
    assert all(torch.equal(x, y) for x, y in zip(A_hat + B_hat, again[0] + again[1]))
    coefs = (1.0, 0.7, 0.4)
    ctx = LayerContext("layer", coefs, 1.0, params, 0)
    with torch.inference_mode():  # the optimisation must not depend on the caller's grad mode
        result = DO_MERGING.merge_layer(deltas, ctx)
    moved = [d.scaling * (b.double() @ a.double()).numpy() for d, a, b in zip(deltas, A_hat, B_hat)]
    expected = np_do_merge(moved, coefs, 1.0)
    np.testing.assert_allclose(result.dense().double().numpy(), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    plain = np_do_merge([np_dense(d) for d in deltas], coefs, 1.0)
    assert not np.allclose(expected, plain, rtol=1e-3)


def test_do_merging_through_the_engine():
    c, d = make_deltas([2], seed=15)[0], make_deltas([3], seed=16)[0]
    a = {"l.a": (c.A, c.B, c.scaling)}
    b = {"l.a": (d.A, d.B, d.scaling), "l.b": (d.A, d.B, d.scaling)}
    out = dict(merge_layers([a, b], DO_MERGING, (0.5, 1.5), lam=1.2))
    assert out["l.a"].B.shape == (D_OUT, 5) and out["l.a"].A.shape == (5, D_IN)
    # l.b has one adapter: its update times λ (renormalising the direction cancels the coefficient)
    np.testing.assert_allclose(out["l.b"].dense().double().numpy(), 1.2 * np_dense(d), rtol=1e-5,
                               atol=1e-6 * np.abs(np_dense(d)).max())
