"""The method leaderboard: λ chosen on validation and reported on test, sizes, and the family verdict."""

import json

import numpy as np
import pytest

from osrm_gui.core.explore import leaderboard as board
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.workspace import open_workspace


@pytest.fixture(scope="module")
def ws(tiny_base_dir, tiny_adapters):
    return open_workspace(tiny_base_dir, tiny_adapters, device="cpu")


def test_each_method_is_chosen_on_validation_and_scored_on_test(ws):
    runs = run_to_end(board.run_methods(ws, "fam", 0, ["task_arithmetic", "ties", "concat"], limit=12))
    assert [r.method for r in runs] == ["task_arithmetic", "ties", "concat"]
    for run in runs:
        assert set(run.validation) == {f"{lam:g}" for lam in board.lambda_grid(run.method)}
        best = max(run.validation.values())
        assert run.validation[f"{run.lam:g}"] == best
        assert all(float(lam) >= run.lam for lam, v in run.validation.items() if v == best)  # ties go to the smaller λ
        again = run_to_end(ws.score(MergeSpec(run.method, None, run.lam), "test", 12))
        assert run.test == pytest.approx({t: s["metric"] for t, s in again.items()}, abs=1 / 12)  # one example at most
        validation_again = run_to_end(ws.score(MergeSpec(run.method, None, run.lam), "validation", 12))
        assert np.mean([s["metric"] for s in validation_again.values()]) == pytest.approx(best, abs=1 / 12)
    concat, ties = runs[2], runs[1]
    rank = sum(max(a.ranks) for a in ws.adapters)
    layers = sorted({n for a in ws.adapters for n in a.layers})
    assert concat.export_bytes == sum(4 * rank * (32 + 32) for _ in layers)  # LoRA factors, 32×32 layers
    assert ties.export_bytes == len(layers) * 32 * 32 * 4  # dense


def _run(method, family, seed, average):
    return board.MethodRun(method, family, seed, 1.0, {"1": average}, {"a": average, "b": average}, {"a": 1.0, "b": 1.0}, 0.1, 100)


def test_family_margin_needs_more_than_the_seed_spread():
    runs = [_run("m", "base", s, v) for s, v in enumerate((0.70, 0.72, 0.74))]
    runs += [_run("m", "osrm", s, v) for s, v in enumerate((0.80, 0.81, 0.82))]
    runs += [_run("n", "base", s, v) for s, v in enumerate((0.70, 0.75, 0.80))]
    runs += [_run("n", "osrm", s, v) for s, v in enumerate((0.72, 0.77, 0.82))]
    rows = {r["method"]: r for r in board.family_margin(runs, "osrm", "base")}
    assert rows["m"]["osrm better?"] == "yes" and rows["n"]["osrm better?"] == "within the spread"
    summary = board.summarise(runs)
    assert summary[0]["test average"] == "0.720 ± 0.020" and summary[0]["λ (validation)"] == "1,1,1"


def test_save_and_load(tmp_path):
    runs = [_run("m", "base", 0, 0.7)]
    board.save(runs, tmp_path / "lb.json", {"command": "x"})
    meta, loaded = board.load(tmp_path / "lb.json")
    assert loaded == runs and meta["command"] == "x"
    (tmp_path / "bad.json").write_text(json.dumps({"meta": {}, "runs": [{"method": 1}]}))
    with pytest.raises(Exception, match="not a leaderboard file"):
        board.load(tmp_path / "bad.json")


def test_every_method_is_linear_in_lambda_so_one_merge_serves_a_grid(ws):
    from osrm_gui.core.merge import METHODS

    for name in METHODS:
        params = {"steps": 20} if name == "doge" else {"fisher_examples": 4} if name == "fisher" else {}
        unit = run_to_end(ws.merge(MergeSpec(name, [1.0, 0.7], 1.0, params)))
        direct = run_to_end(ws.merge(MergeSpec(name, [1.0, 0.7], 2.5, params)))
        scaled = unit.scaled(2.5)
        assert scaled.spec.lam == 2.5
        for layer in direct.layers:
            for task in (None, 0, 1):
                want, got = direct.layers[layer].dense(task).double(), scaled.layers[layer].dense(task).double()
                assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max()) + 1e-12, (name, layer, task)


def test_a_resumed_leaderboard_runs_only_what_is_missing():
    kept = [_run("ties", "base", 0, 0.7), _run("emr", "base", 0, 0.8), _run("ties", "base", 1, 0.7)]
    assert board.missing_methods(kept, "base", 0, ["ties", "emr", "iso_c"]) == ["iso_c"]
    assert board.missing_methods(kept, "base", 1, ["ties", "emr"]) == ["emr"]
    assert board.missing_methods(kept, "osrm", 0, ["ties"]) == ["ties"]
