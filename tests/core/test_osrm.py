"""Feature statistics, OSRM subspaces, OSRM initialisation, post-hoc projection and RegMean,
each checked against a direct computation."""

import numpy as np
import pytest
import torch

from osrm_gui.core.inputs.adapters import load_adapter
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.osrm.features import LayerStats, TaskFeatures, cached_features, collect_features
from osrm_gui.core.merge import get_method, merge_layers
from osrm_gui.core.merge.regmean import regmean_merge
from osrm_gui.core.inputs.models import load_base
from osrm_gui.core.osrm.subspaces import cov_subspace, mean_subspace, project_adapter, subspaces
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.inputs.tasks import resolve_task
from osrm_gui.core.osrm.training import TrainSettings, train_adapter
from tests.tolerances import U64, assert_within, bert_forward_rtol, gamma


@pytest.fixture(scope="module")
def base(tiny_base_dir):
    return load_base(tiny_base_dir, device="cpu")


@pytest.fixture(scope="module")
def tasks(tiny_tasks):
    return {name: resolve_task(str(path)) for name, path in tiny_tasks.items()}


def _stats(rows: torch.Tensor) -> LayerStats:
    rows = rows.to(torch.float64)
    return LayerStats(rows.shape[0], rows.sum(0), rows.T @ rows)


def _explicit_inputs(base, task, layer, samples=100, max_length=128):
    """Inputs of one layer gathered one example at a time (no padding at all)."""
    from osrm_gui.core.osrm.features import sample_split

    captured = []
    module = base.model.get_submodule(layer)
    handle = module.register_forward_hook(lambda _m, i, _o: captured.append(i[0][0].detach().to(torch.float64)))
    with torch.inference_mode():
        for text in sample_split(task.split("train"), samples, 0).texts:
            base.model(**base.tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length))
    handle.remove()
    return torch.cat(captured)


def test_statistics_equal_explicit_activations_and_ignore_padding(base, tasks):
    task = tasks["animal"]
    layer = "bert.encoder.layer.1.attention.self.value"
    explicit = _explicit_inputs(base, task, layer)
    gram, total = explicit.T @ explicit, explicit.sum(0)
    # The reference's float32 activations come from unpadded single texts; the statistics' from
    # padded batches, which round differently on some CPUs. Each activation may then differ by
    # δ·(its row's largest entry), δ = 2ε, ε the rounding bound of layer 0's forward pass; the Gram
    # and the sum by what that δ implies (first order, plus δ² and float64 accumulation).
    delta = 2 * bert_forward_rtol(base.model.config, seq_len=128, layers=1, head=False)
    row_scale = explicit.abs().amax(1, keepdim=True)
    weighted = (row_scale * explicit.abs()).sum(0)
    n = explicit.shape[0]
    gram_bound = (delta * (weighted[:, None] + weighted[None, :]) + delta**2 * (row_scale**2).sum()
                  + gamma(n, U64) * explicit.abs().T @ explicit.abs())
    sum_bound = delta * row_scale.sum() + gamma(n, U64) * explicit.abs().sum(0)
    for batch_size in (1, 7, 64):  # different batches pad differently; the statistics must not change
        features = run_to_end(collect_features(base, task, ["query", "value"], samples=100, batch_size=batch_size))
        stats = features.layers[layer]
        assert stats.count == n
        assert_within(stats.sum, total, sum_bound, "sums")
        assert_within(stats.gram, gram, gram_bound, "Gram matrices")
    leaked = torch.cat([explicit, explicit[:1]])  # one padding row counted would be caught
    assert ((leaked.T @ leaked - gram).abs() > gram_bound).any()
    assert features.samples == 84 and "fewer than the 100 asked" in features.warnings[0]


def test_streaming_sum_equals_one_shot():
    rows = torch.randn(50, 6, dtype=torch.float64)
    parts = [_stats(rows[i : i + 13]) for i in range(0, 50, 13)]
    total = sum(parts[1:], parts[0])
    one = _stats(rows)
    assert total.count == one.count
    torch.testing.assert_close(total.gram, one.gram)
    torch.testing.assert_close(total.second_moment, rows.T @ rows / 49)


def test_cache_hit_and_miss(base, tasks, tmp_path):
    first = run_to_end(cached_features(base, tasks["colour"], ["query"], samples=20, cache=tmp_path))
    assert first.meta["cache"] == "miss" and len(list(tmp_path.iterdir())) == 1
    second = run_to_end(cached_features(base, tasks["colour"], ["query"], samples=20, cache=tmp_path))
    assert second.meta["cache"] == "hit"
    for name in first.layers:
        assert torch.equal(first.layers[name].gram, second.layers[name].gram)
    run_to_end(cached_features(base, tasks["colour"], ["query"], samples=30, cache=tmp_path))
    assert len(list(tmp_path.iterdir())) == 2  # another sample count is another entry
    next(tmp_path.iterdir()).write_bytes(b"garbage")
    again = run_to_end(cached_features(base, tasks["colour"], ["query"], samples=20, cache=tmp_path))
    assert again.meta["cache"] in ("hit", "miss")  # a damaged entry is recomputed, never an error


def test_cov_subspace_takes_the_smallest_eigenvalues():
    rng = np.random.default_rng(0)
    rows = torch.tensor(rng.normal(size=(200, 10)) * np.linspace(0.1, 3.0, 10), dtype=torch.float64)
    stats = [_stats(rows[:120]), _stats(rows[120:])]
    A = cov_subspace(stats, 3)
    S = rows.T @ rows / 199
    eigenvalues = torch.linalg.eigvalsh(S)
    torch.testing.assert_close(A @ A.T, torch.eye(3, dtype=torch.float64), atol=1e-10, rtol=0)
    assert float(torch.trace(A @ S @ A.T)) == pytest.approx(float(eigenvalues[:3].sum()))
    assert float(torch.trace(A @ S @ A.T)) < float(eigenvalues[-3:].sum()) / 10  # the largest would be far bigger


def test_mean_subspace_is_orthogonal_to_other_means():
    rng = np.random.default_rng(1)
    stats = [_stats(torch.tensor(rng.normal(loc=k, size=(30, 8)))) for k in range(3)]
    A = mean_subspace(stats, 4)
    torch.testing.assert_close(A @ A.T, torch.eye(4, dtype=torch.float64), atol=1e-10, rtol=0)
    for s in stats:
        assert float(torch.linalg.vector_norm(A @ s.mean)) < 1e-10
    wide = mean_subspace(stats, 7)  # more rows than the null space (8 - 3 = 5): still orthonormal
    torch.testing.assert_close(wide @ wide.T, torch.eye(7, dtype=torch.float64), atol=1e-10, rtol=0)


def test_subspaces_need_other_tasks(base, tasks):
    features = {"colour": run_to_end(collect_features(base, tasks["colour"], ["query"], samples=10))}
    with pytest.raises(OsrmError, match="needs the statistics of other tasks"):
        subspaces(features, "colour", 2)
    features["animal"] = run_to_end(collect_features(base, tasks["animal"], ["query"], samples=10))
    A = subspaces(features, "colour", 2)
    assert {a.shape for a in A.values()} == {(2, 32)}


def test_osrm_init_training_starts_from_the_subspace(tiny_base_dir, base, tasks, tiny_tasks, tmp_path):
    settings = TrainSettings(rank=4, alpha=8, steps=0, max_length=16, init="osrm-cov", osrm_tasks=[str(tiny_tasks["colour"])], osrm_samples=50)
    result = run_to_end(train_adapter(tiny_base_dir, tasks["animal"], tmp_path / "init", settings, device="cpu"))
    adapter = load_adapter(result.path)
    other = run_to_end(collect_features(base, tasks["colour"], ["query", "value"], samples=50, max_length=16))
    expected = {n: cov_subspace([s], 4) for n, s in other.layers.items()}
    for name, layer in adapter.layers.items():
        torch.testing.assert_close(layer.A, expected[name].float(), atol=1e-5, rtol=0)
        assert layer.B.abs().sum() == 0
    assert "osrm init" in (result.path / "README.md").read_text()
    # and training from it lowers the loss
    trained = []
    job = train_adapter(tiny_base_dir, tasks["animal"], tmp_path / "trained",
                        TrainSettings(rank=4, alpha=8, steps=60, lr=2e-2, batch_size=16, max_length=16, init="osrm-cov",
                                      osrm_tasks=[str(tiny_tasks["colour"])], osrm_samples=50), device="cpu")
    for event in job:
        if event.stage == "train":
            trained.append(event.loss)
    assert np.mean(trained[-5:]) < 0.7 * np.mean(trained[:5])


def test_osrm_init_alone_is_an_error(tiny_base_dir, tasks, tiny_tasks, tmp_path):
    settings = TrainSettings(steps=0, init="osrm-cov", osrm_tasks=[str(tiny_tasks["animal"])])
    with pytest.raises(OsrmError, match="no 'other' tasks"):
        run_to_end(train_adapter(tiny_base_dir, tasks["animal"], tmp_path / "x", settings, device="cpu"))


def test_post_hoc_projection(tiny_adapters, base, tasks, tmp_path):
    adapter = load_adapter(tiny_adapters[0])
    features = {n: run_to_end(collect_features(base, t, ["query", "value"], samples=30)) for n, t in tasks.items()}
    basis = subspaces(features, "colour", 3)
    projection = project_adapter(adapter, basis)
    for name, layer in projection.layers.items():
        A = basis[name]
        expected = adapter.layers[name].delta().double() @ A.T @ A
        torch.testing.assert_close(layer.delta().double(), expected, rtol=1e-4, atol=1e-5)
        kept = float(torch.linalg.matrix_norm(expected) / torch.linalg.matrix_norm(adapter.layers[name].delta().double()))
        assert projection.kept[name] == pytest.approx(kept, rel=1e-5) and 0 < kept < 1
    from osrm_gui.core.osrm.subspaces import write_projection

    write_projection(projection, base, tmp_path / "projected", "cov", ["animal"])
    written = load_adapter(tmp_path / "projected")
    assert set(written.head) == set(adapter.head)
    for key in adapter.head:  # the fine-tuned head, not a fresh one
        assert torch.equal(written.head[key], adapter.head[key])
    for name in adapter.layers:
        torch.testing.assert_close(written.layers[name].delta(), projection.layers[name].delta(), rtol=1e-5, atol=1e-6)
    assert written.init == "post-hoc osrm-cov"
    wrong = {k: v for k, v in basis.items() if "query" in k}
    with pytest.raises(OsrmError, match="targets differ"):
        project_adapter(adapter, wrong)


def test_regmean_equals_least_squares():
    rng = np.random.default_rng(2)
    d_in, d_out = 6, 4
    H = [torch.tensor(rng.normal(size=(40, d_in))) for _ in range(3)]
    W = [torch.tensor(rng.normal(size=(d_out, d_in))) for _ in range(3)]
    merged = regmean_merge(W, [h.T @ h for h in H], [1.0, 1.0, 1.0], alpha=1.0)
    # min_W Σ_t ‖H_t Wᵀ − H_t W_tᵀ‖²: one stacked least-squares problem
    stacked_H = torch.cat(H)
    stacked_Y = torch.cat([h @ w.T for h, w in zip(H, W)])
    reference = torch.linalg.lstsq(stacked_H, stacked_Y).solution.T
    torch.testing.assert_close(merged, reference, rtol=1e-8, atol=1e-10)
    # α → small: the off-diagonals vanish and each input dimension is a per-column weighted average
    diag = regmean_merge(W, [h.T @ h for h in H], [1.0, 1.0, 1.0], alpha=1e-12)
    g = [torch.diagonal(h.T @ h) for h in H]
    expected = sum(w * gi for w, gi in zip(W, g)) / sum(g)
    torch.testing.assert_close(diag, expected, rtol=1e-6, atol=1e-8)


def test_regmean_through_the_engine():
    rng = np.random.default_rng(3)
    adapters, grams, dense = [], [], []
    for t in range(2):
        A, B = torch.tensor(rng.normal(size=(2, 5)), dtype=torch.float32), torch.tensor(rng.normal(size=(3, 2)), dtype=torch.float32)
        H = torch.tensor(rng.normal(size=(30, 5)))
        adapters.append({"layer": (A, B, 0.5)})
        grams.append({"layer": H.T @ H})
        dense.append(0.5 * (B.double() @ A.double()))
    (name, result), = list(merge_layers(adapters, get_method("regmean"), [1.0, 2.0], 0.5, {"alpha": 0.8}, grams=grams))
    expected = 0.5 * regmean_merge(dense, [g["layer"] for g in grams], [1.0, 2.0], 0.8)
    torch.testing.assert_close(result.delta.double(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs the feature statistics"):
        merge_layers(adapters, get_method("regmean"), [1.0, 1.0])


def test_regmean_on_a_workspace(tiny_base_dir, tiny_adapters):
    from osrm_gui.core.merge.spec import MergeSpec
    from osrm_gui.core.workspace import open_workspace

    ws = open_workspace(tiny_base_dir, tiny_adapters, device="cpu")
    ws.feature_samples = 20
    merged = run_to_end(ws.merge(MergeSpec("regmean", [1.0, 1.0], 1.0, {"alpha": 0.9})))
    scores = run_to_end(ws.evaluate(merged))
    assert set(scores) == {"colour", "animal"}
    # per-token Grams: a task with longer texts must not outweigh the others by its token count
    from osrm_gui.core.osrm.features import cached_features

    grams = run_to_end(ws.adapter_grams())
    for (adapter, task), own in zip(ws._adapter_tasks(""), grams):
        features = run_to_end(cached_features(ws.base, task, adapter.targets, ws.feature_samples))
        for name, stats in features.layers.items():
            torch.testing.assert_close(own[name], stats.gram / stats.count)
    layer = next(iter(merged.layers))
    dense = [a.layers[layer].delta().double() for a in ws.adapters]
    expected = regmean_merge(dense, [g[layer] for g in grams], [1.0, 1.0], 0.9)
    torch.testing.assert_close(merged.layers[layer].delta.double(), expected, rtol=1e-4, atol=1e-6)


def test_subspace_energy_matches_the_trace_formula():
    from osrm_gui.core.osrm.subspaces import subspace_energy

    rng = np.random.default_rng(5)
    scales = [np.linspace(0.1, 3.0, 8), np.linspace(3.0, 0.1, 8)]
    features = {}
    for name, scale in zip(("a", "b"), scales):
        rows = torch.tensor(rng.normal(size=(100, 8)) * scale)
        features[name] = TaskFeatures(name, name, {"layer": _stats(rows)}, 100)
    energy = subspace_energy(features, 2, "cov")
    A = cov_subspace([features["b"].layers["layer"]], 2)
    S = features["a"].layers["layer"].second_moment
    So = features["b"].layers["layer"].second_moment
    assert energy["a"][0] == pytest.approx(float(torch.trace(A @ S @ A.T) / torch.trace(S)))
    assert energy["a"][1] == pytest.approx(float(torch.trace(A @ So @ A.T) / torch.trace(So)))
    # b avoids a's small directions, which a uses heavily: a's own energy there is large
    assert energy["a"][0] > 10 * energy["a"][1]
