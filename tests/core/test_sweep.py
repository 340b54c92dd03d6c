"""The fast sweep engine against the slow path, 2-D and multi-method sweeps, and the run history."""

import sqlite3

import numpy as np
import pytest
import torch

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.evaluation import encode_split, predict_logits
from osrm_gui.core.explore.history import History, pareto_front, to_csv
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.explore.sweep import LAMBDA, Axis, SweepPoint, parse_axis, run_sweep
from osrm_gui.core.workspace import open_workspace
from tests.tolerances import assert_within, logits_bound


@pytest.fixture(scope="module")
def ws(tiny_base_dir, tiny_adapters):
    return open_workspace(tiny_base_dir, tiny_adapters, device="cpu")


def _logits(ws, task):
    encoded = encode_split(ws.base.tokenizer, task.split("test"), 128)
    ws.base.set_head(ws.heads[task.name])
    try:
        return run_to_end(predict_logits(ws.base, encoded, 7, "eval"))
    finally:
        ws.base.set_head(None)


@pytest.mark.parametrize("spec", [
    MergeSpec("task_arithmetic", [0.7, -0.4], 0.9),
    MergeSpec("linear", [1.0, 3.0], 1.5),
    MergeSpec("concat", [2.0, 0.5], 0.3),
])
def test_fast_engine_logits_equal_merging_dense_weights(ws, spec):
    merged = run_to_end(ws.merge(spec))
    task = ws.tasks[1]
    ws.base.set_deltas(merged.dense_deltas())
    try:
        slow = _logits(ws, task)
    finally:
        ws.base.clear_deltas()
    from osrm_gui.core.merge import get_method

    resolved = spec.resolved(2)
    lora_sum = ws.lora_sum()
    lora_sum.set_weights(get_method(spec.method).adapter_weights(tuple(resolved.coefficients), resolved.lam, {}))
    with lora_sum.installed():
        fast = _logits(ws, task)
    rank = sum(max(a.ranks) for a in ws.adapters)  # the engine's stacked LoRA branch
    assert_within(fast, slow, logits_bound(ws.base.model.config, ws.heads[task.name], seq_len=128, lora_rank=rank), "logits")
    assert not ws.base.model.get_submodule(next(iter(lora_sum.layers)))._forward_hooks  # hooks removed after use


def test_score_takes_the_fast_path_and_agrees_with_merge_then_evaluate(ws, monkeypatch):
    spec = MergeSpec("task_arithmetic", [0.5, 1.2], 0.8)
    slow = run_to_end(ws.evaluate(run_to_end(ws.merge(spec))))
    monkeypatch.setattr(type(ws), "merge", lambda *a, **k: pytest.fail("the linear family must not re-merge dense weights"))
    fast = run_to_end(ws.score(spec))
    assert fast == slow


def test_score_of_other_methods_merges_and_restores_the_base(ws):
    before = {n: p.clone() for n, p in ws.base.model.named_parameters()}
    spec = MergeSpec("ties", [1.0, 1.0], 1.0, {"density": 0.5})
    assert run_to_end(ws.score(spec)) == run_to_end(ws.evaluate(run_to_end(ws.merge(spec))))
    assert all(torch.equal(before[n], p) for n, p in ws.base.model.named_parameters())


def test_linear_with_zero_sum_is_a_clear_error(ws):
    with pytest.raises(OsrmError, match="sum to 0"):
        run_to_end(ws.score(MergeSpec("linear", [1.0, -1.0])))


def test_parse_axis():
    assert parse_axis("lambda=0:1:3") == Axis(LAMBDA, (0.0, 0.5, 1.0))
    assert parse_axis("colour=0.1,0.7") == Axis("colour", (0.1, 0.7))
    with pytest.raises(OsrmError, match="cannot read sweep axis 'lambda'"):
        parse_axis("lambda")


def test_grid_over_two_coefficients_for_two_methods(ws):
    axes = [Axis("colour", (0.0, 1.0)), Axis("animal", (0.0, 0.5, 1.0))]
    spec = MergeSpec("task_arithmetic")
    result = run_to_end(run_sweep(ws, spec, axes, limit=10, methods=["task_arithmetic", "ties"]))
    assert len(result.points) == 12 and result.total == 12
    ties = result.grid("ties", "colour")
    assert ties.shape == (2, 3) and not np.isnan(ties).any()
    # each grid cell is the score of that merge computed on its own
    one = run_to_end(ws.score(MergeSpec("ties", [1.0, 0.5]), limit=10))
    assert ties[1, 1] == one["colour"]["metric"]
    floor = run_to_end(ws.evaluate(None, limit=10))  # both coefficients 0: the bare base
    assert result.grid("task_arithmetic")[0, 0] == pytest.approx(np.mean([s["metric"] for s in floor.values()]))
    assert {"method", "coefficient of colour", "coefficient of animal", "colour", "animal", "average"} == set(result.rows()[0])


def test_axes_must_differ_and_name_adapters(ws):
    with pytest.raises(OsrmError, match="different things"):
        run_to_end(run_sweep(ws, MergeSpec(), [Axis(LAMBDA, (0.0, 1.0)), Axis(LAMBDA, (0.0, 1.0))]))
    with pytest.raises(OsrmError, match="cannot sweep 'nope'"):
        run_to_end(run_sweep(ws, MergeSpec(), [Axis("nope", (0.0, 1.0))]))


def test_cancelled_sweep_resumes_from_the_history_without_recomputing(ws, tmp_path, monkeypatch):
    history = History(tmp_path / "runs.sqlite")
    axes = [Axis(LAMBDA, (0.0, 0.25, 0.5, 0.75, 1.0))]
    job = run_sweep(ws, MergeSpec(), axes, limit=10, history=history)
    points = []
    for event in job:
        if isinstance(event, SweepPoint):
            points.append(event)
            if len(points) == 2:
                job.close()  # what Cancel does
                break
    assert len(history) == 2

    computed = []
    real_score = type(ws).score

    def counting_score(self, spec, *args, **kwargs):
        computed.append(spec.lam)
        return (yield from real_score(self, spec, *args, **kwargs))

    monkeypatch.setattr(type(ws), "score", counting_score)
    result = run_to_end(run_sweep(ws, MergeSpec(), axes, limit=10, history=History(tmp_path / "runs.sqlite")))
    assert computed == [0.5, 0.75, 1.0]
    assert [p.reused for p in result.points] == [True, True, False, False, False]
    assert [p.scores for p in result.points[:2]] == [p.scores for p in points]
    assert len(history) == 5


def test_history_keys_change_with_what_the_score_depends_on(ws, tmp_path):
    history = History(tmp_path / "runs.sqlite")
    axes = [Axis(LAMBDA, (1.0,))]
    run_to_end(run_sweep(ws, MergeSpec(), axes, limit=10, history=history))
    again = run_to_end(run_sweep(ws, MergeSpec(), axes, limit=10, history=history))
    assert again.points[0].reused
    for other in (
        run_sweep(ws, MergeSpec(), axes, limit=12, history=history),  # other examples
        run_sweep(ws, MergeSpec(seed=3), axes, limit=10, history=history),
        run_sweep(ws, MergeSpec("ties", params={"density": 0.4}), axes, limit=10, history=history),
    ):
        assert not run_to_end(other).points[0].reused
    assert len(history) == 4


def test_history_survives_a_reopen_and_exports_csv(ws, tmp_path):
    path = tmp_path / "runs.sqlite"
    run_to_end(run_sweep(ws, MergeSpec(), [Axis("colour", (0.0, 1.0))], limit=10, history=History(path)))
    reopened = History(path)
    points = reopened.points()
    assert [p.coefficients for p in points] == [[0.0, 1.0], [1.0, 1.0]]
    assert points[0].adapters == ["colour", "animal"] and points[0].kind == "preview" and points[0].limit == 10
    assert reopened.points(adapter_hashes=[a.content_hash for a in ws.adapters]) == points
    assert reopened.points(adapter_hashes=["other"]) == []
    lines = to_csv(points).splitlines()
    assert lines[0].split(",")[:2] == ["id", "created"] and "c[colour]" in lines[0] and len(lines) == 3


def test_a_file_that_is_not_a_history_is_refused(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not sqlite at all" * 100)
    with pytest.raises(OsrmError, match="bad.sqlite: not a run-history database"):
        History(bad)


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    History(path)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(OsrmError, match="newer osrm-gui"):
        History(path)


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(0)
    points = [tuple(p) for p in rng.integers(0, 6, size=(40, 2)).astype(float)]
    front = set(pareto_front(points))
    for i, (x, y) in enumerate(points):
        beaten = any(ox >= x and oy >= y and (ox, oy) != (x, y) for ox, oy in points)
        assert (i in front) == (not beaten)
