"""The shared core space: exact lifting, numerical rank, and basis invariance against dense SVDs."""

import torch

from osrm_gui.core.merge.base import LoraDelta
from osrm_gui.core.merge.core_space import core_space, orthonormal_span


def deltas(ranks=(2, 3, 4), m=11, n=9, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [LoraDelta(i, torch.randn(r, n, generator=g, dtype=dtype), torch.randn(m, r, generator=g, dtype=dtype), 0.5 + i)
            for i, r in enumerate(ranks)]


def test_lifting_reproduces_every_update_to_float64_precision():
    ds = deltas()
    space = core_space(ds)
    assert space.U.shape == (11, 9) and space.V.shape == (9, 9)  # R = 9 ≤ m; rows span all of n = 9
    for d, core in zip(ds, space.cores):
        dense = d.dense(torch.float64)
        assert torch.linalg.matrix_norm(space.dense(core) - dense) <= 1e-13 * torch.linalg.matrix_norm(dense)
    torch.testing.assert_close(space.U.T @ space.U, torch.eye(9, dtype=torch.float64), atol=1e-13, rtol=0)
    torch.testing.assert_close(space.V @ space.V.T, torch.eye(9, dtype=torch.float64), atol=1e-13, rtol=0)


def test_bases_stop_at_the_numerical_rank():
    a, b = deltas(ranks=(3, 3), m=20, n=16)
    twin = LoraDelta(2, a.A.clone(), a.B.clone(), 2.0)  # spans nothing new
    space = core_space([a, b, twin])
    assert space.U.shape[1] == 6 and space.V.shape[0] == 6
    for d, core in zip([a, b, twin], space.cores):
        torch.testing.assert_close(space.dense(core), d.dense(torch.float64), atol=1e-12, rtol=0)
    assert orthonormal_span(torch.zeros(5, 3, dtype=torch.float64)).shape == (5, 0)


def _flatten_spectrum(M, rtol=None):
    """ISO-C's rule on the numerical rank: keep the singular vectors, give each the mean singular value."""
    U, s, Vh = torch.linalg.svd(M, full_matrices=False)
    k = int((s > (max(M.shape) * torch.finfo(M.dtype).eps if rtol is None else rtol) * s[0]).sum())
    return s[:k].mean() * U[:, :k] @ Vh[:k]


def test_a_basis_invariant_rule_gives_the_same_update_in_core_space_and_dense():
    ds = deltas(ranks=(2, 2, 3), m=30, n=25, seed=3)
    space = core_space(ds)
    in_core = space.dense(_flatten_spectrum(sum(space.cores)))
    dense = _flatten_spectrum(sum(d.dense(torch.float64) for d in ds), rtol=1e-10)
    torch.testing.assert_close(in_core, dense, atol=1e-10, rtol=0)
    result = space.lift(_flatten_spectrum(sum(space.cores)), torch.float64)
    torch.testing.assert_close(result.B @ result.A, dense, atol=1e-10, rtol=0)
    assert result.A.shape[0] <= 7  # a LoRA of rank ≤ R
