"""The guard against a bad contributor: the pre-screen against direct formulas, the leave-one-out
deltas against independently scored merges, the flag rules, and a harmful adapter caught among
honest ones."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from osrm_gui.core.analysis.prescreen import PreScreen, ScreenRules, adapter_norm, prescreen, robust_z
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.guard import LeftOut, guard, judge, leave_one_out_reasons, score_without
from osrm_gui.core.inputs.adapters import Adapter, LoraLayer
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import Progress, Run, run_to_end
from osrm_gui.core.workspace import open_workspace
from tests.conftest import make_adapter, write_task_csv



pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- pre-screen against direct formulas


def _fake(name: str, layers: dict[str, tuple[torch.Tensor, torch.Tensor, float]]) -> Adapter:
    return Adapter(Path(f"/fake/{name}"), name, {}, {n: LoraLayer(A, B, s) for n, (A, B, s) in layers.items()}, {}, None, {}, name, 0)


def _random_layers(generator, names=("l0", "l1"), rank=2, d_out=8, d_in=6, scale=1.0, scaling=0.5):
    return {n: (torch.randn(rank, d_in, generator=generator, dtype=torch.float64),
                scale * torch.randn(d_out, rank, generator=generator, dtype=torch.float64), scaling) for n in names}


def _dense(adapter: Adapter, layer: str) -> np.ndarray:
    lo = adapter.layers[layer]
    return lo.scaling * lo.B.numpy() @ lo.A.numpy()


def _direct_sign_conflict(x: np.ndarray, y: np.ndarray, density: float) -> float:
    def trim(m):
        k = int(density * m.size)
        keep = np.zeros(m.size, bool)
        keep[np.argsort(-np.abs(m).ravel(), kind="stable")[:k]] = True
        return np.where(keep.reshape(m.shape), m, 0.0)

    tx, ty = trim(x), trim(y)
    both = (tx != 0) & (ty != 0)
    return float((np.sign(tx) != np.sign(ty))[both].mean())


def _direct_overlap(x: np.ndarray, y: np.ndarray) -> float:
    def left(m):
        U, s, _ = np.linalg.svd(m)
        return U[:, : int((s > s[0] * max(m.shape) * np.finfo(float).eps).sum())]

    Ux, Uy = left(x), left(y)
    return float(np.linalg.norm(Ux.T @ Uy) ** 2 / min(Ux.shape[1], Uy.shape[1]))


def _direct_z(values, j, floor):
    others = np.delete(values, j)
    med = np.median(others)
    return (values[j] - med) / max(1.4826 * np.median(np.abs(others - med)), floor)


def test_prescreen_numbers_equal_direct_formulas():
    g = torch.Generator().manual_seed(0)
    adapters = [_fake(f"a{i}", _random_layers(g)) for i in range(4)]
    adapters[1].layers["l2"] = LoraLayer(torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(8, 3, generator=g, dtype=torch.float64), 2.0)
    screen = run_to_end(prescreen(adapters, ScreenRules(density=0.3)))
    assert screen.layers == ["l0", "l1"]  # l2 is a1's alone: counted in its norm, not in the pairwise statistics
    norms = np.array([math.sqrt(sum(np.sum(_dense(a, n) ** 2) for n in a.layers)) for a in adapters])
    n = len(adapters)
    cos = np.zeros((n, n))
    conflict = np.zeros((n, n))
    overlap = np.zeros((n, n))
    for i in range(n):
        for k in range(n):
            per = [(_dense(adapters[i], lay), _dense(adapters[k], lay)) for lay in ("l0", "l1")]
            cos[i, k] = np.mean([np.sum(x * y) / np.linalg.norm(x) / np.linalg.norm(y) for x, y in per])
            conflict[i, k] = np.mean([_direct_sign_conflict(x, y, 0.3) for x, y in per])
            overlap[i, k] = np.mean([_direct_overlap(x, y) for x, y in per])
    means = {name: np.array([np.mean(np.delete(m[j], j)) for j in range(n)]) for name, m in
             (("mean_cosine", cos), ("sign_conflict", conflict), ("overlap", overlap))}
    for j, a in enumerate(screen.adapters):
        assert a.norm == pytest.approx(norms[j], rel=1e-12)
        assert a.norm_ratio == pytest.approx(norms[j] / np.median(np.delete(norms, j)), rel=1e-12)
        assert a.mean_cosine == pytest.approx(means["mean_cosine"][j], abs=1e-12)
        assert a.sign_conflict == pytest.approx(means["sign_conflict"][j], abs=1e-12)
        assert a.overlap == pytest.approx(means["overlap"][j], abs=1e-9)
        for name in means:
            assert a.z[name] == pytest.approx(_direct_z(means[name], j, 0.05), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(screen.matrices["cosine"], cos, atol=1e-12)
    # a1's own third layer makes it the large one; the pairwise statistics are draws of one distribution
    assert screen.flagged == [a.name for j, a in enumerate(adapters) if norms[j] / np.median(np.delete(norms, j)) > 3] == ["a1"]
    assert all("norm" in r for r in screen.adapters[1].reasons)


def test_prescreen_flags_a_large_norm_and_an_adapter_pulling_against_the_others():
    g = torch.Generator().manual_seed(1)
    honest = [_random_layers(g) for _ in range(5)]
    adapters = [_fake(f"h{i}", layers) for i, layers in enumerate(honest)]
    adapters.append(_fake("big", _random_layers(g, scale=6.0)))
    # minus the sum of the honest updates, as one rank-10 LoRA: cosine ≈ −1/√5 against each
    against = {n: (torch.cat([layers[n][0] for layers in honest]), -torch.cat([layers[n][1] for layers in honest], dim=1), 0.5)
               for n in ("l0", "l1")}
    adapters.append(_fake("against", against))
    screen = run_to_end(prescreen(adapters))
    by_name = {a.name: a for a in screen.adapters}
    assert by_name["big"].norm_ratio > 3 and any("norm" in r for r in by_name["big"].reasons)
    assert by_name["against"].mean_cosine < -0.3 and any("mean cosine" in r for r in by_name["against"].reasons)
    assert screen.flagged == ["big", "against"]
    # a stricter norm rule also catches what the default lets through, a looser one lets "big" pass
    ratio = by_name["big"].norm_ratio
    assert "big" not in run_to_end(prescreen(adapters, ScreenRules(norm_ratio=ratio + 0.1))).flagged


def test_robust_z_needs_two_others_and_floors_the_spread():
    assert math.isnan(robust_z(np.array([1.0, 2.0]), 0, 0.05))
    assert robust_z(np.array([0.3, 0.1, 0.1, 0.1]), 0, 0.05) == pytest.approx(0.2 / 0.05)
    values = np.array([0.9, 0.1, 0.2, 0.4])
    assert robust_z(values, 0, 0.01) == pytest.approx((0.9 - 0.2) / (1.4826 * 0.1))


def test_adapter_norm_is_the_dense_frobenius_norm(tiny_adapters):
    from osrm_gui.core.inputs.adapters import load_adapter

    adapter = load_adapter(tiny_adapters[0])
    dense = math.sqrt(sum(float((layer.scaling * layer.B.double() @ layer.A.double()).pow(2).sum()) for layer in adapter.layers.values()))
    assert adapter_norm(adapter) == pytest.approx(dense, rel=1e-12)


def test_bad_rules_are_refused():
    g = torch.Generator().manual_seed(2)
    adapters = [_fake(f"a{i}", _random_layers(g)) for i in range(2)]
    for rules, message in ((ScreenRules(norm_ratio=0), "--norm-ratio 0"), (ScreenRules(z=math.nan), "--z nan"),
                           (ScreenRules(density=1.5), "--density 1.5")):
        with pytest.raises(OsrmError, match=message):
            run_to_end(prescreen(adapters, rules))


# ---------------------------------------------------------------- the flag rules


def test_mean_and_worst_rules():
    zero = {"tb": 0.0, "tc": 0.0}
    assert [r.split()[0] for r in leave_one_out_reasons({"tb": -0.015, "tc": -0.007}, zero, 0.01)] == ["mean"]  # mean −0.011
    reasons = leave_one_out_reasons({"tb": 0.01, "tc": -0.025}, zero, 0.01)  # mean −0.0075, one task −0.025
    assert len(reasons) == 1 and reasons[0].startswith("Δ -0.025 on tc") and "limit -0.02" in reasons[0]
    assert leave_one_out_reasons({"tb": -0.01, "tc": -0.01}, zero, 0.01) == []  # exactly −τ is not below −τ
    assert leave_one_out_reasons({"tb": -0.05, "tc": -0.05}, zero, 0.06) == []  # τ scales both rules
    # against a reference: the same losses are no excess when the others cost as much
    assert leave_one_out_reasons({"tb": -0.05, "tc": -0.05}, {"tb": -0.05, "tc": -0.04}, 0.01) == []
    against = leave_one_out_reasons({"tb": -0.05, "tc": -0.05}, {"tb": -0.01, "tc": -0.01}, 0.01)
    assert len(against) == 2 and "-0.040 against the other adapters'" in against[0]


def test_judge_against_the_other_adapters_and_ignoring_a_flagged_adapters_task():
    owned = {"a": "ta", "b": "tb", "c": "tc", "d": "td"}
    # including any adapter costs every other task 3 points; d costs 20
    deltas = {j: {owned[i]: (-0.2 if j == "d" else -0.03) for i in owned if i != j} for j in owned}
    deltas["a"]["td"] = -0.25  # d's task suffers from everything once d is in
    judged = judge(deltas, owned, 0.01, "others")
    assert judged["d"].reasons and all(not judged[j].reasons for j in "abc")
    assert judged["d"].references == {"ta": -0.03, "tb": -0.03, "tc": -0.03}
    assert judged["a"].counted == ["tb", "tc"]  # d, flagged first, no longer counts against a
    # a's yardstick on tb is the median over tb's other contributors, c and d (a flagged adapter's Δ still counts there)
    assert judged["a"].references == pytest.approx({"tb": (-0.03 - 0.2) / 2, "tc": (-0.03 - 0.2) / 2})
    # against zero, the usual cost of merging flags the adapters one after the other, worst first; the
    # last one is left with only flagged adapters' tasks, which no longer count: it alone would remain
    against_zero = judge(deltas, owned, 0.01, "zero")
    assert [j for j in owned if against_zero[j].reasons] == ["a", "b", "d"]
    assert against_zero["c"].counted == [] and against_zero["b"].counted == ["tc"]


# ---------------------------------------------------------------- a harmful adapter among honest ones


@pytest.fixture(scope="module")
def guard_set(tmp_path_factory, tiny_base_dir):
    """Two honest adapters trained on their tasks (the random tiny_adapters sit at chance, where every Δ
    is noise) and a harmful one: the animal adapter's head with a large random LoRA update, serving a
    copy of the animal task."""
    from osrm_gui.core.inputs.tasks import resolve_task
    from osrm_gui.core.osrm.training import TrainSettings, train_adapter

    folder = tmp_path_factory.mktemp("guard")
    tasks = {"animal": write_task_csv(folder / "animal.csv", {"cat": "land", "dog": "land", "fish": "water", "bird": "air"}, n=1000, seed=1),
             "size": write_task_csv(folder / "size.csv", {"big": "large", "small": "little"}, n=1000, seed=2)}
    paths = []
    for i, (name, csv) in enumerate(tasks.items()):
        settings = TrainSettings(rank=4, alpha=8, steps=100, batch_size=16, lr=1e-2, max_length=16, seed=3 + i)
        run_to_end(train_adapter(tiny_base_dir, resolve_task(str(csv)), folder / name, settings, device="cpu"))
        paths.append(folder / name)
    bad = folder / "poisoned"
    shutil.copytree(folder / "animal", bad)
    shutil.copy(tasks["animal"], folder / "poisoned.csv")
    weights = load_file(bad / "adapter_model.safetensors")
    g = torch.Generator().manual_seed(7)
    save_file({k: torch.randn(v.shape, generator=g) * 0.5 if "lora_" in k else v for k, v in weights.items()}, bad / "adapter_model.safetensors")
    meta = json.loads((bad / "osrm_adapter.json").read_text())
    (bad / "osrm_adapter.json").write_text(json.dumps({**meta, "name": "poisoned", "task": "poisoned", "task_spec": str(folder / "poisoned.csv")}))
    return tiny_base_dir, [*paths, bad]


def _run(job):
    run = Run(job)
    events = list(run)
    return run.result, events


@pytest.mark.parametrize("spec", [MergeSpec("task_arithmetic"), MergeSpec("ties", None, 1.0, {"density": 0.5})], ids=["ta", "ties"])
def test_guard_flags_the_harmful_adapter_and_passes_the_honest(guard_set, spec):
    base, paths = guard_set
    ws = open_workspace(base, paths, device="cpu")
    result, events = _run(guard(ws, spec))
    assert result.flagged == ["poisoned"], result.verdict_rows()
    bad = result.verdicts[-1]
    assert any("norm" in r for r in bad.prescreen) and bad.leave_one_out and bad.status == "flagged (pre-screen, leave-one-out)"
    assert bad.mean_delta < -0.1 and bad.average_with < bad.average_without
    assert all(v.status == "pass" for v in result.verdicts[:2])
    steps = [e for e in events if isinstance(e, LeftOut)]
    assert [(e.index, e.adapter, e.task) for e in steps] == [(0, "animal", "animal"), (1, "size", "size"), (2, "poisoned", "poisoned")]
    assert all(e.deltas == result.deltas[e.adapter] and e.scores == result.without[e.adapter] for e in steps)
    assert all(isinstance(e, (Progress, PreScreen, LeftOut)) for e in events) and any(e.stage == "guard" for e in events if isinstance(e, Progress))
    screens = [i for i, e in enumerate(events) if isinstance(e, PreScreen)]
    assert len(screens) == 1 and events[screens[0]] is result.prescreen and screens[0] < events.index(steps[0])
    assert result.split == "validation" and result.tasks == ["animal", "size", "poisoned"]
    matrix = result.delta_matrix()
    assert np.isnan(np.diag(matrix)).all() and matrix[2, 0] == result.deltas["poisoned"]["animal"]
    assert isinstance(result.prescreen, PreScreen) and json.dumps(result.to_dict(), allow_nan=True)


@pytest.mark.parametrize("spec", [MergeSpec("linear", [1.0, 0.6, 1.5], 2.0), MergeSpec("ties", [0.8, 1.2, 1.0], 0.9, {"density": 0.4})],
                         ids=["linear", "ties"])
def test_deltas_equal_independently_scored_merges(guard_set, spec):
    """Δ_{j,t} against merges of the other adapters opened and scored on their own, the other
    coefficients kept (linear renormalises by their sum: the same recipe without j)."""
    base, paths = guard_set
    ws = open_workspace(base, paths, device="cpu")
    result = run_to_end(guard(ws, spec, limit=60))
    specs = [t.extra["spec"] for t in ws.tasks]
    everyone = {t: s["metric"] for t, s in run_to_end(open_workspace(base, paths, specs, device="cpu").score(spec, "validation", 60)).items()}
    assert result.with_all == everyone
    for j, name in enumerate(result.adapters):
        others = [i for i in range(len(paths)) if i != j]
        alone = open_workspace(base, [paths[i] for i in others], [specs[i] for i in others], device="cpu")
        sub = MergeSpec(spec.method, [spec.coefficients[i] for i in others], spec.lam, spec.params)
        scores = {t: s["metric"] for t, s in run_to_end(alone.score(sub, "validation", 60)).items()}
        assert result.without[name] == scores
        assert result.deltas[name] == {t: everyone[t] - scores[t] for t in scores}
    # score_without is the same merge on any split
    test_scores = run_to_end(score_without(ws, spec, 2, "test", 30))
    alone = open_workspace(base, paths[:2], specs[:2], device="cpu")
    sub = MergeSpec(spec.method, spec.coefficients[:2], spec.lam, spec.params)
    assert {t: s["metric"] for t, s in test_scores.items()} == {t: s["metric"] for t, s in run_to_end(alone.score(sub, "test", 30)).items()}


# ---------------------------------------------------------------- refusals


def test_refuses_an_adapter_without_a_task(tiny_base_dir, tiny_adapters, tiny_tasks, tmp_path):
    stray = make_adapter(tiny_base_dir, tmp_path / "stray", None, num_labels=2, seed=5)
    ws = open_workspace(tiny_base_dir, [*tiny_adapters, stray], [str(tiny_tasks["colour"]), str(tiny_tasks["animal"])], device="cpu")
    with pytest.raises(OsrmError, match=r"none is known for .*stray; name every adapter's evaluation data with --task"):
        run_to_end(guard(ws, MergeSpec()))


def test_refuses_one_adapter_and_bad_settings(tiny_base_dir, tiny_adapters):
    one = open_workspace(tiny_base_dir, tiny_adapters[:1], device="cpu")
    with pytest.raises(OsrmError, match="needs 2 adapters or more"):
        run_to_end(guard(one, MergeSpec()))
    ws = open_workspace(tiny_base_dir, tiny_adapters, device="cpu")
    for kwargs, message in (({"tau": -0.01}, "--tau -0.01"), ({"tau": math.inf}, "--tau inf"), ({"reference": "mean"}, "reference 'mean'")):
        with pytest.raises(OsrmError, match=message):
            run_to_end(guard(ws, MergeSpec(), **kwargs))
    with pytest.raises(OsrmError, match="3 coefficients given for 2 adapters"):
        run_to_end(guard(ws, MergeSpec(coefficients=[1, 1, 1])))
    with pytest.raises(OsrmError, match="linear merge: the coefficients sum to 0"):  # without the first, the rest sums to 0
        run_to_end(guard(ws, MergeSpec("linear", [1.0, 0.0])))
