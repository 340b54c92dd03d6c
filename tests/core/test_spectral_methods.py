"""ISO-C, ISO-CTS, TSV-Merge, KnOTS-TIES and KnOTS-DARE-TIES against independent dense numpy versions.

Each reference below is written from the formulas in METHODS.md (§3, §7c, §7d) on the dense
m × n task vectors, with full-size numpy SVDs restricted to the numerical rank where the spec
says so for LoRA. The methods run on the LoRA factors (core space, float64), so the two agree to
float64 round-off; 1e-10 relative is far above that and far below any real error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osrm_gui.core.merge import iso, knots, tsv
from osrm_gui.core.merge.base import LayerContext, LoraDelta
from osrm_gui.core.merge.engine import layer_seed, merge_layers
from osrm_gui.core.merge.sparsify import random_keep_mask

RTOL = 1e-10
ALL = (iso.ISO_C, iso.ISO_CTS, tsv.METHOD, knots.KNOTS_TIES, knots.KNOTS_DARE_TIES)


def make_deltas(ranks=(2, 3, 4), m=30, n=24, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [LoraDelta(i, torch.randn(r, n, generator=g, dtype=dtype), torch.randn(m, r, generator=g, dtype=dtype), 0.5 + 0.25 * i)
            for i, r in enumerate(ranks)]


def ctx_for(method, coefficients, lam=1.0, seed=0, **params):
    return LayerContext("layer", tuple(coefficients), lam, method.resolve_params(params), seed)


def run(method, deltas, coefficients, lam=1.0, seed=0, **params):
    result = method.merge_layer(deltas, ctx_for(method, coefficients, lam, seed, **params))
    assert result.delta is None and result.A is not None and result.B is not None
    return result


def dense_np(d):
    return d.scaling * (d.B.double().numpy() @ d.A.double().numpy())


def rel_err(got, expected):
    got = got.double().numpy() if isinstance(got, torch.Tensor) else got
    return np.linalg.norm(got - expected) / np.linalg.norm(expected)


def orth(M, rtol=1e-10):
    U, s, _ = np.linalg.svd(M, full_matrices=False)
    return U[:, s > rtol * s[0]]


def np_polar(X):
    """The reference's orthogonalisation: u @ vh of X's thin SVD (X of full rank here)."""
    u, _, vh = np.linalg.svd(X, full_matrices=False)
    return u @ vh


def np_rank(s, scale, rtol=1e-10):
    return int((s > rtol * scale).sum())


# ------------------------------------------------------------------ references (dense, numpy)


def ref_iso_c(mats, lam=1.0):
    total = sum(mats)
    U, s, Vh = np.linalg.svd(total, full_matrices=False)
    k = np_rank(s, s[0])
    return lam * s[:k].mean() * U[:, :k] @ Vh[:k]


def ref_iso_c_naive(mats):
    """ISO-C as in the paper's code on a dense sum: all min(m, n) singular values flattened."""
    U, s, Vh = np.linalg.svd(sum(mats), full_matrices=False)
    return s.mean() * U @ Vh


def ref_iso_cts(mats, f=0.8, lam=1.0):
    N = len(mats)
    U, s, Vh = np.linalg.svd(sum(mats), full_matrices=False)
    k = np_rank(s, max(s[0], *(np.linalg.norm(T, 2) for T in mats)))
    c0 = int(k * f)
    p = round((k - c0) / N)
    p = min(p, k // N)
    c = k - N * p
    Uc = U[:, :c]
    blocks_u, blocks_s, blocks_v = [], [], []
    for T in mats:
        u, sig, vh = np.linalg.svd(T - Uc @ Uc.T @ T, full_matrices=False)
        p_i = min(p, np_rank(sig, np.linalg.norm(T, 2)))
        blocks_u.append(u[:, :p_i]), blocks_s.append(sig[:p_i]), blocks_v.append(vh[:p_i])
    blocks_u.append(Uc), blocks_s.append(s[:c]), blocks_v.append(Vh[:c])
    sigma = np.concatenate(blocks_s)
    return lam * sigma.mean() * np_polar(np.hstack(blocks_u)) @ np_polar(np.vstack(blocks_v))


def ref_tsv(mats, ranks, lam=1.0):
    m, n = mats[0].shape
    per_task = min(m, n) // len(mats)
    Us, ss, Vs = [], [], []
    for T, r in zip(mats, ranks):
        U, s, Vh = np.linalg.svd(T, full_matrices=False)
        k = min(r, per_task)
        Us.append(U[:, :k]), ss.append(s[:k]), Vs.append(Vh[:k])
    return lam * np_polar(np.hstack(Us)) @ np.diag(np.concatenate(ss)) @ np_polar(np.vstack(Vs))


def np_ties(reps, top_k, sign_method="total"):
    """Top-k per task (int(top_k · size) entries by magnitude), sign election, disjoint mean."""
    N = reps.shape[0]
    flat = reps.reshape(N, -1)
    keep = int(top_k * flat.shape[1])
    trimmed = np.zeros_like(flat)
    for t in range(N):
        idx = np.argsort(-np.abs(flat[t]), kind="stable")[:keep]
        trimmed[t, idx] = flat[t, idx]
    score = trimmed.sum(0) if sign_method == "total" else np.sign(trimmed).sum(0)
    elected = np.where(score >= 0, 1.0, -1.0)
    agree = np.sign(trimmed) == elected
    merged = (trimmed * agree).sum(0) / np.maximum(agree.sum(0), 1)
    return merged.reshape(reps.shape[1:])


def ref_knots(mats, top_k, lam=1.0, drop=0.0, seed=0, sign_method="total"):
    N, n = len(mats), mats[0].shape[1]
    X = np.hstack(mats)
    U, s, Vh = np.linalg.svd(X, full_matrices=False)
    keep = s > 1e-5 * s[0]
    U, s, Vh = U[:, keep], s[keep], Vh[keep]
    signs = np.sign(U[np.abs(U).argmax(0), np.arange(U.shape[1])])  # u_j's largest entry positive
    U, Vh = U * signs, Vh * signs[:, None]
    reps = np.stack([s[:, None] * Vh[:, i * n:(i + 1) * n] for i in range(N)])
    if drop > 0:
        mask = random_keep_mask(reps.shape, 1.0 - drop, seed).double().numpy()
        reps = reps * mask / (1.0 - drop)
    return U @ (lam * np_ties(reps, top_k, sign_method))


# ------------------------------------------------------------------ ISO-C


@pytest.mark.parametrize("coefs,lam", [((1.0, 1.0, 1.0), 1.0), ((0.7, -1.3, 2.0), 3.5)])
def test_iso_c_matches_dense_reference_on_the_numerical_rank(coefs, lam):
    ds = make_deltas()
    mats = [c * dense_np(d) for c, d in zip(coefs, ds)]
    result = run(iso.ISO_C, ds, coefs, lam)
    assert rel_err(result.B @ result.A, ref_iso_c(mats, lam)) < RTOL
    assert result.A.shape[0] <= 9 and result.A.dtype == torch.float64


def test_iso_c_naive_full_size_svd_puts_energy_outside_the_adapters_span_ours_none():
    ds = make_deltas()  # R = 9 < min(m, n) = 24
    mats = [dense_np(d) for d in ds]
    result = run(iso.ISO_C, ds, (1.0, 1.0, 1.0))
    ours = (result.B @ result.A).numpy()
    naive = ref_iso_c_naive(mats)
    assert rel_err(ours, naive) > 0.5
    Q_out = orth(np.hstack([d.B.numpy() for d in ds]))  # span of the B's
    Q_in = orth(np.vstack([d.A.numpy() for d in ds]).T)  # span of the A's rows

    def outside(M):
        return np.linalg.norm(M - Q_out @ (Q_out.T @ M)) / np.linalg.norm(M)

    def outside_rows(M):
        return np.linalg.norm(M - (M @ Q_in) @ Q_in.T) / np.linalg.norm(M)

    assert outside(naive) ** 2 == pytest.approx(15 / 24, rel=1e-9)  # 15 of its 24 directions are null-space noise
    assert outside(ours) < 1e-12 and outside_rows(ours) < 1e-12


def test_iso_c_of_one_rank_one_update_is_that_update():
    (d,) = make_deltas(ranks=(1,))
    result = run(iso.ISO_C, [d], (1.0,))
    assert rel_err(result.B @ result.A, dense_np(d)) < RTOL


# ------------------------------------------------------------------ ISO-CTS


@pytest.mark.parametrize("ranks,f,coefs,lam", [
    ((2, 3, 4), 0.8, (1.0, 1.0, 1.0), 1.0),
    ((4, 4, 5, 3), 0.5, (0.5, 1.5, -1.0, 2.0), 4.0),
    ((6, 6), 0.0, (1.0, 2.0), 1.0),  # f = 0: everything is task space (p = k/N)
    ((5, 3, 4), 0.3, (1.0, 0.2, 1.1), 1.0),  # k = 12, c0 = 3, p = round(3) = 3, c = 3
    ((5, 6), 0.0, (1.0, 1.0), 1.0),  # k = 11: round(5.5) = 6 is capped at ⌊11/2⌋ = 5, c = 1
])
def test_iso_cts_matches_dense_reference(ranks, f, coefs, lam):
    ds = make_deltas(ranks=ranks, seed=sum(ranks))
    mats = [c * dense_np(d) for c, d in zip(coefs, ds)]
    result = run(iso.ISO_CTS, ds, coefs, lam, common_space_fraction=f)
    assert rel_err(result.B @ result.A, ref_iso_cts(mats, f, lam)) < RTOL
    assert result.A.shape[0] <= sum(ranks)


def test_iso_cts_sizes_follow_the_reference_and_never_go_negative():
    assert iso.cts_sizes(9, 3, 0.8) == (6, 1)  # c0 = 7, p = round(2/3) = 1, c = 9 − 3
    assert iso.cts_sizes(16, 2, 0.8) == (12, 2)
    assert iso.cts_sizes(10, 4, 0.0) == (2, 2)  # round(2.5) = 2 (half to even, as Python's round)
    assert iso.cts_sizes(11, 2, 0.0) == (1, 5)  # round(5.5) = 6 would leave c = −1: capped at ⌊k/N⌋
    assert iso.cts_sizes(10, 3, 1.0) == (10, 0)


def test_iso_cts_with_the_whole_common_space_is_iso_c():
    ds = make_deltas(ranks=(3, 2, 4), seed=5)
    coefs = (1.0, -0.5, 2.0)
    cts = run(iso.ISO_CTS, ds, coefs, 2.0, common_space_fraction=1.0)
    c = run(iso.ISO_C, ds, coefs, 2.0)
    assert rel_err(cts.B @ cts.A, (c.B @ c.A).numpy()) < 1e-12


def test_iso_cts_skips_a_residual_that_is_zero_instead_of_inflating_it():
    """Task 2 lies inside the common space: its residual is round-off and gets no direction.

    Task 1 = Σ_j σ_j u_j v_jᵀ with σ = (10, 9, 1, 0.5), task 2 = 0.1 u_1 v_1ᵀ. The sum has rank 4;
    f = 0.5 gives c0 = 2, p = 1, c = 2: the common space is {u_1, u_2}, task 1's residual keeps
    u_3 (σ = 1), task 2's residual is 0. So τ* = mean(10.1, 9, 1) · (u_1v_1ᵀ + u_2v_2ᵀ + u_3v_3ᵀ);
    the reference would add a fourth, arbitrary direction and average in a zero.
    """
    g = torch.Generator().manual_seed(11)
    U, _ = torch.linalg.qr(torch.randn(20, 4, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(16, 4, generator=g, dtype=torch.float64))
    sigma = torch.tensor([10.0, 9.0, 1.0, 0.5], dtype=torch.float64)
    t1 = LoraDelta(0, V.T.contiguous(), U * sigma, 1.0)
    t2 = LoraDelta(1, V[:, :1].T.contiguous(), 0.1 * U[:, :1], 1.0)
    result = run(iso.ISO_CTS, [t1, t2], (1.0, 1.0), common_space_fraction=0.5)
    expected = (10.1 + 9 + 1) / 3 * (U[:, :3] @ V[:, :3].T)
    assert rel_err(result.B @ result.A, expected.numpy()) < RTOL


# ------------------------------------------------------------------ TSV


@pytest.mark.parametrize("ranks,m,n,coefs,lam", [
    ((2, 3, 4), 30, 24, (1.0, 1.0, 1.0), 1.0),
    ((2, 4, 5), 12, 10, (1.0, -0.5, 2.0), 1.5),  # ⌊10/3⌋ = 3 < r_i: truncated; R = 11 > min(m, n)
    ((3, 3, 3, 3), 40, 16, (0.3, 0.6, 0.9, 1.2), 1.0),
])
def test_tsv_matches_dense_reference(ranks, m, n, coefs, lam):
    ds = make_deltas(ranks=ranks, m=m, n=n, seed=m + n)
    mats = [c * dense_np(d) for c, d in zip(coefs, ds)]
    result = run(tsv.METHOD, ds, coefs, lam)
    assert rel_err(result.B @ result.A, ref_tsv(mats, ranks, lam)) < RTOL
    assert result.A.shape[0] <= sum(ranks)


def test_tsv_of_one_task_is_that_task_and_of_a_task_with_its_copy_too():
    (d,) = make_deltas(ranks=(4,))
    alone = run(tsv.METHOD, [d], (1.0,))
    assert rel_err(alone.B @ alone.A, dense_np(d)) < RTOL
    twin = LoraDelta(1, d.A.clone(), d.B.clone(), d.scaling)
    # [U U] is rank-deficient: its polar factor on the numerical rank is U[I I]/√2, so τ* = U diag(σ) Vᵀ;
    # a full-size polar factor would add r arbitrary directions of weight σ.
    result = run(tsv.METHOD, [d, twin], (1.0, 1.0))
    assert rel_err(result.B @ result.A, dense_np(d)) < RTOL


# ------------------------------------------------------------------ KnOTS


@pytest.mark.parametrize("top_k,coefs,lam,sign_method", [
    (0.2, (1.0, 1.0, 1.0), 1.0, "total"),
    (0.5, (0.8, -1.2, 1.5), 0.6, "total"),
    (0.3, (1.0, 2.0, 0.5), 1.0, "frequency"),
    (1.0, (1.0, 1.0, 1.0), 1.0, "total"),
])
def test_knots_ties_matches_dense_reference(top_k, coefs, lam, sign_method):
    ds = make_deltas()
    mats = [c * dense_np(d) for c, d in zip(coefs, ds)]
    result = run(knots.KNOTS_TIES, ds, coefs, lam, top_k=top_k, majority_sign_method=sign_method)
    assert rel_err(result.B @ result.A, ref_knots(mats, top_k, lam, sign_method=sign_method)) < RTOL
    assert result.B.shape[1] <= 9


@pytest.mark.parametrize("top_k,drop,seed", [(1.0, 0.1, 421), (0.4, 0.3, 7)])
def test_knots_dare_ties_matches_dense_reference(top_k, drop, seed):
    ds = make_deltas(ranks=(3, 2, 4, 2), seed=2)
    coefs = (1.0, 0.5, 1.5, 1.0)
    mats = [c * dense_np(d) for c, d in zip(coefs, ds)]
    result = run(knots.KNOTS_DARE_TIES, ds, coefs, 0.7, seed=seed, top_k=top_k, drop_rate=drop)
    assert rel_err(result.B @ result.A, ref_knots(mats, top_k, 0.7, drop, seed)) < RTOL


def test_knots_dare_ties_is_reproducible_with_a_seed_and_differs_across_seeds():
    ds = make_deltas()
    a = run(knots.KNOTS_DARE_TIES, ds, (1.0, 1.0, 1.0), seed=5)
    b = run(knots.KNOTS_DARE_TIES, ds, (1.0, 1.0, 1.0), seed=5)
    c = run(knots.KNOTS_DARE_TIES, ds, (1.0, 1.0, 1.0), seed=6)
    assert torch.equal(a.A, b.A) and torch.equal(a.B, b.B)
    assert rel_err(c.B @ c.A, (a.B @ a.A).numpy()) > 1e-3
    no_drop = run(knots.KNOTS_DARE_TIES, ds, (1.0, 1.0, 1.0), seed=5, drop_rate=0.0, top_k=0.2)
    ties = run(knots.KNOTS_TIES, ds, (1.0, 1.0, 1.0), top_k=0.2)
    assert torch.equal(no_drop.B @ no_drop.A, ties.B @ ties.A)


def test_knots_of_one_task_with_everything_kept_is_that_task():
    (d,) = make_deltas(ranks=(3,))
    result = run(knots.KNOTS_TIES, [d], (2.0,), 0.5, top_k=1.0)
    assert rel_err(result.B @ result.A, dense_np(d)) < RTOL  # 0.5 · 2 · ΔW


# ------------------------------------------------------------------ shared properties


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.name)
def test_exactly_low_rank_inside_the_adapters_column_span(method):
    ds = make_deltas(ranks=(2, 3, 2), m=40, n=32, seed=9)
    result = run(method, ds, (1.0, 0.5, 1.5), 2.0)
    assert method.low_rank and result.A.shape[0] == result.B.shape[1] <= 7
    assert result.A.shape[1] == 32 and result.B.shape[0] == 40
    merged = (result.B @ result.A).numpy()
    Q = orth(np.hstack([d.B.numpy() for d in ds]))
    assert np.linalg.norm(merged - Q @ (Q.T @ merged)) < 1e-12 * np.linalg.norm(merged)
    if method is not knots.KNOTS_TIES and method is not knots.KNOTS_DARE_TIES:  # element-wise masks leave the row span
        Q_in = orth(np.vstack([d.A.numpy() for d in ds]).T)
        assert np.linalg.norm(merged - merged @ Q_in @ Q_in.T) < 1e-12 * np.linalg.norm(merged)


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.name)
@pytest.mark.parametrize("c", [2.5, -0.5])
def test_equal_coefficients_scale_the_result(method, c):
    """All five are homogeneous of degree 1: equal coefficients c give c times the c = 1 merge, and λ scales it."""
    ds = make_deltas(seed=4)
    one = run(method, ds, (1.0, 1.0, 1.0), seed=3)
    scaled = run(method, ds, (c, c, c), 2.0, seed=3)
    assert rel_err(scaled.B @ scaled.A, 2.0 * c * (one.B @ one.A).numpy()) < RTOL


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.name)
def test_all_zero_layer_gives_a_zero_lora(method):
    zero = [LoraDelta(0, torch.zeros(2, 6), torch.zeros(5, 2), 1.0), LoraDelta(1, torch.zeros(3, 6), torch.zeros(5, 3), 1.0)]
    result = run(method, zero, (1.0, 1.0))
    assert result.A.shape[1] == 6 and result.B.shape[0] == 5 and result.A.shape[0] >= 1
    assert not (result.B @ result.A).any()


def test_through_the_engine_with_float32_adapters_and_a_missing_layer():
    g = torch.Generator().manual_seed(1)
    shapes = {"l0": (24, 20), "l1": (16, 28)}

    def adapter(r, names):
        return {k: (torch.randn(r, shapes[k][1], generator=g), torch.randn(shapes[k][0], r, generator=g), 2.0) for k in names}

    adapters = [adapter(2, ["l0", "l1"]), adapter(3, ["l0"]), adapter(4, ["l0", "l1"])]
    coefs = (1.0, 0.5, 1.5)
    for method in ALL:
        out = dict(merge_layers(adapters, method, coefs, 1.5, seed=8))
        assert sorted(out) == ["l0", "l1"]
        for name, result in out.items():
            assert result.A.dtype == torch.float32 and result.B.dtype == torch.float32
            assert result.dense().shape == shapes[name]
            deltas = [LoraDelta(i, a[name][0], a[name][1], a[name][2]) for i, a in enumerate(adapters) if name in a]
            ctx = LayerContext(name, coefs, 1.5, method.resolve_params(None), layer_seed(8, name))
            direct = method.merge_layer(deltas, ctx)
            assert torch.equal(direct.A, result.A) and torch.equal(direct.B, result.B)
        assert out["l1"].A.shape[0] <= 6  # only adapters 0 and 2 target l1


def test_params_labels_and_docs():
    assert iso.ISO_C.resolve_params(None) == {}
    assert iso.ISO_CTS.resolve_params(None) == {"common_space_fraction": 0.8}
    assert tsv.METHOD.resolve_params(None) == {}
    assert knots.KNOTS_TIES.resolve_params(None) == {"top_k": 0.2, "majority_sign_method": "total"}
    assert knots.KNOTS_DARE_TIES.resolve_params(None) == {"top_k": 1.0, "drop_rate": 0.1, "majority_sign_method": "total"}
    for bad in ({"top_k": 0.0}, {"top_k": 1.5}, {"drop_rate": 1.0}, {"drop_rate": -0.1}):
        with pytest.raises(ValueError):
            knots.KNOTS_DARE_TIES.resolve_params(bad)
    with pytest.raises(ValueError):
        iso.ISO_CTS.resolve_params({"common_space_fraction": 1.2})
    names = [m.name for m in ALL]
    assert names == ["iso_c", "iso_cts", "tsv", "knots_ties", "knots_dare_ties"]
    for method in ALL:
        assert method.label and method.doc and method.low_rank and not method.needs_grams
        assert all(p.label and p.doc for p in method.params)
    assert "3.5" in iso.ISO_C.doc and "4.5" in iso.ISO_CTS.doc
