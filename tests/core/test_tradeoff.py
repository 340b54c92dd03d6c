"""The trade-off study (issue 13): its measures against hand computations, its verdict on
synthetic runs, and a tiny run end to end (core on the tiny tasks; the CLI, bound to the demo
tasks, for its option errors and for printing and plotting a saved study)."""

import json

import numpy as np
import pytest
import torch

from osrm_gui.core.analysis.interference import interference_matrix
from osrm_gui.core.analysis.pairwise import mean_off_diagonal
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore import compare as cmp
from osrm_gui.core.explore import tradeoff
from osrm_gui.core.explore.compare import FamilyRun, load_runs, save_runs
from osrm_gui.core.inputs.tasks import resolve_task
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.osrm.training import TrainSettings
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.workspace import open_workspace
from tests.cli_support import one_error_line, run

SETTINGS = TrainSettings(rank=4, alpha=8, steps=3, batch_size=8, max_length=16, osrm_samples=20)


def test_lambda_width_matches_a_hand_computation():
    curve = {"0": 0.5, "0.1": 0.7, "0.2": 0.80, "0.3": 0.805, "0.4": 0.79, "0.5": 0.6}
    # best 0.805 at λ = 0.3, level 0.795: 0.2 is in (0.80), 0.1 and 0.4 are out; the crossings are
    # 0.2 − 0.1·(0.80 − 0.795)/(0.80 − 0.70) = 0.195 and 0.3 + 0.1·(0.805 − 0.795)/(0.805 − 0.79) = 0.36667
    low, high = tradeoff.lambda_interval(curve)
    assert low == pytest.approx(0.195) and high == pytest.approx(0.3 + 0.1 * 0.01 / 0.015)
    run = FamilyRun("f", 0, {"a": 1.0, "b": 1.0}, {lam: {"a": v - 0.1, "b": v + 0.1} for lam, v in curve.items()}, {}, 0.0)
    assert tradeoff.lambda_width(run) == pytest.approx(high - low)
    # the interval stops at the grid's end (a lower bound), and a far-away second peak is not joined
    assert tradeoff.lambda_interval({"1": 0.9, "1.1": 0.899, "1.2": 0.7, "1.3": 0.9}) == pytest.approx((1.0, 1.1 + 0.1 * 0.009 / 0.199))
    assert tradeoff.lambda_interval({"0": 0.3, "0.1": 0.8}) == pytest.approx((0.1 - 0.1 * 0.01 / 0.5, 0.1))


def test_heldout_interference_reads_the_heldout_split(tiny_base_dir, tiny_adapters):
    ws = open_workspace(tiny_base_dir, tiny_adapters)
    held = run_to_end(tradeoff.heldout_grams(ws, "test"))
    train_rows = run_to_end(ws.adapter_grams())
    layers = sorted(ws.adapters[0].layers)
    assert not torch.allclose(held[0][layers[0]], train_rows[0][layers[0]])  # other inputs than the statistics'
    # explicit activations: every test text of task j alone (no padding) through the bare base
    modules = ws.base.linear_modules()
    H = []
    for adapter in ws.adapters:
        task = ws.tasks[[t.name for t in ws.tasks].index(adapter.task)]
        rows = {name: [] for name in layers}
        hooks = [modules[name].register_forward_hook(lambda _m, inputs, _o, into=rows[name]: into.append(inputs[0][0].double()))
                 for name in layers]
        try:
            with torch.inference_mode():
                for text in task.split("test").texts:
                    encoded = ws.base.tokenizer(text, truncation=True, max_length=ws.max_length, return_tensors="pt")
                    ws.base.model(**encoded)
        finally:
            for hook in hooks:
                hook.remove()
        H.append({name: torch.cat(rows[name]) for name in layers})
    matrices = interference_matrix(ws.adapters, held)
    for name in layers:
        for i, a in enumerate(ws.adapters):
            for j, b in enumerate(ws.adapters):
                direct = (torch.linalg.matrix_norm(a.layers[name].delta().double() @ H[j][name].T)
                          / torch.linalg.matrix_norm(b.layers[name].delta().double() @ H[j][name].T))
                assert matrices[name][i, j] == pytest.approx(float(direct), rel=1e-4)
    trained_on = mean_off_diagonal(interference_matrix(ws.adapters, train_rows))
    assert mean_off_diagonal(matrices) != pytest.approx(trained_on, rel=1e-6)


def test_ties_lambda_is_chosen_on_validation_and_reported_on_test(tiny_base_dir, tiny_adapters):
    ws = open_workspace(tiny_base_dir, tiny_adapters)
    result = run_to_end(tradeoff.evaluate_tradeoff(ws, "f", 0, limit=12))
    assert list(result.ties_validation) == [f"{lam:g}" for lam in tradeoff.TIES_LAMBDAS]
    averages = {lam: np.mean(list(s.values())) for lam, s in result.ties_validation.items()}
    assert result.ties_lambda == max(averages, key=lambda lam: (averages[lam], -float(lam)))
    unit = run_to_end(ws.merge(MergeSpec("ties", None, float(result.ties_lambda), tradeoff.TIES_PARAMS)))
    on_test = run_to_end(ws.evaluate(unit, "test", 12))
    assert result.ties_chosen == {t: s["metric"] for t, s in on_test.items()}
    assert list(result.task_arithmetic) == [f"{lam:g}" for lam in tradeoff.FINE_LAMBDAS] == list(result.validation)
    assert result.chosen_lambda in result.validation and result.heldout_split == "test" and result.other_energy == {}
    # synthetic: validation prefers λ = 0.5 for TIES while test would prefer 1
    run = FamilyRun("f", 0, {"a": 1.0}, {"0": {"a": 0.5}}, {"a": 0.9}, 0.5, [], {"0": {"a": 0.5}},
                    {"0.5": {"a": 0.8}, "1": {"a": 0.7}}, {"a": 0.6})
    assert run.ties_lambda == "0.5" and tradeoff.ties_normalised(run) == pytest.approx(0.6)


def _synthetic(family: str, singles: list[float], merged: list[float]) -> list[FamilyRun]:
    """Runs whose single-task accuracy and TA normalised accuracy are exactly the given values, one per seed."""
    return [FamilyRun(family, seed, {"a": s}, {"0.5": {"a": m * s}}, {"a": 0.0}, 0.5, [], {"0.5": {"a": 1.0}})
            for seed, (s, m) in enumerate(zip(singles, merged))]


def test_pareto_front_and_verdict_on_synthetic_runs():
    runs = (_synthetic("peft-default", [0.85, 0.86, 0.84], [0.90, 0.92, 0.91]) + _synthetic("osrm-cov", [0.85, 0.84, 0.86], [0.92, 0.93, 0.91])
            + _synthetic("wins", [0.90, 0.91, 0.90], [0.97, 0.98, 0.97])  # beyond both spreads on both axes
            + _synthetic("close", [0.86, 0.85, 0.87], [0.93, 0.92, 0.94])  # better means, within the spread
            + _synthetic("worse", [0.70, 0.71, 0.70], [0.99, 0.99, 0.99]))  # merges best, far worse alone
    points = {p.family: p for p in tradeoff.pareto_points(runs)}
    assert points["wins"].single == pytest.approx(0.903333) and points["wins"].merged_std == pytest.approx(np.std([0.97, 0.98, 0.97], ddof=1))
    assert tradeoff.non_dominated(list(points.values())) == ["wins", "worse"]
    rows = {r["setting"]: r for r in tradeoff.dominance(runs)}
    assert set(rows) == {"wins", "close", "worse"}
    assert rows["wins"]["dominates all"] == "yes" and rows["wins"]["single vs peft-default"].endswith("better")
    assert rows["close"]["dominates all"] == "no" and rows["close"]["single vs osrm-cov"].endswith("within the spread")
    diff = np.mean([0.86, 0.85, 0.87]) - np.mean([0.85, 0.84, 0.86])
    spread = np.sqrt(np.var([0.86, 0.85, 0.87], ddof=1) + np.var([0.85, 0.84, 0.86], ddof=1))
    assert rows["close"]["single vs osrm-cov"] == f"{diff:+.3f} (spread {spread:.3f}): within the spread"
    assert rows["worse"]["single vs peft-default"].endswith("worse") and rows["worse"]["TA normalised vs osrm-cov"].endswith("better")
    assert tradeoff.verdict(runs).startswith("yes: wins beats peft-default and osrm-cov")
    without = [r for r in runs if r.family != "wins"]
    assert tradeoff.verdict(without).startswith("no: no setting beats") and ";" not in tradeoff.verdict(without)
    # merging better than both beyond the spread, alone level with both: the gain that costs nothing measurable
    free = without + _synthetic("free", [0.85, 0.86, 0.84], [0.97, 0.98, 0.97])
    rows = {r["setting"]: r for r in tradeoff.dominance(free)}
    assert rows["free"]["dominates all"] == tradeoff.FREE_GAIN and rows["close"]["dominates all"] == "no"
    assert rows["worse"]["dominates all"] == "no"  # merges better too, but is worse alone beyond the spread
    assert tradeoff.verdict(free).endswith("; free merges better than both by more than the spread, "
                                           "with single-task accuracy within the spread of both")
    one_seed = [r for r in runs if r.seed == 0]
    assert {r["dominates all"] for r in tradeoff.dominance(one_seed)} == {"no"}
    with pytest.raises(OsrmError, match="osrm-cov"):
        tradeoff.dominance([r for r in runs if r.family != "osrm-cov"])
    rows = tradeoff.summarise(runs)
    assert [r["setting"] for r in rows] == ["peft-default", "osrm-cov", "wins", "close", "worse"]
    assert rows[2]["TA normalised"] == "0.973 ± 0.006" and rows[2]["interference (held-out)"] == "–"
    merged = [0.90 * 0.97, 0.91 * 0.98, 0.90 * 0.97]  # the merged model's own test average: normalised × alone
    assert rows[2]["TA merged"] == f"{np.mean(merged):.3f} ± {np.std(merged, ddof=1):.3f}"


def test_settings_are_listed_knob_by_knob_whatever_order_they_were_measured_in():
    # a resumed study measures the settings in the order it is told; the table and the plot keep the study's order
    measured = ["osrm-cov-pen1000", "osrm-cov", "mine", "osrm-cov-k8", "peft-default", "osrm-cov-k1", "other"]
    runs = [run for family in measured for run in _synthetic(family, [0.8, 0.81], [0.9, 0.91])]
    expected = ["peft-default", "osrm-cov", "osrm-cov-k1", "osrm-cov-k8", "osrm-cov-pen1000", "mine", "other"]
    assert [r["setting"] for r in tradeoff.summarise(runs)] == expected
    assert [p.family for p in tradeoff.pareto_points(runs)] == expected
    assert [r["setting"] for r in tradeoff.dominance(runs)] == expected[2:]
    meta = {"families": dict.fromkeys(["osrm-cov-a0.01", *measured]), "seeds": [0, 1]}
    assert tradeoff.coverage(meta, runs) == "partial study: 14 of 16 adapter sets measured; not yet: osrm-cov-a0.01 (seeds 0, 1)"
    assert tradeoff.coverage(meta, runs[2:]).endswith("not yet: osrm-cov-pen1000 (seeds 0, 1); osrm-cov-a0.01 (seeds 0, 1)")


def test_runs_saved_before_the_study_still_load(tmp_path):
    old = {"family": "osrm-cov", "seed": 0, "single": {"a": 0.9}, "task_arithmetic": {"1": {"a": 0.8}}, "ties": {"a": 0.7},
           "interference": 0.8, "paths": [], "validation": {"1": {"a": 0.8}}}
    (tmp_path / "old.json").write_text(json.dumps({"meta": {"command": "osrm demo compare"}, "runs": [old]}))
    _, [run] = load_runs(tmp_path / "old.json")
    assert run.ties_validation == {} and run.ties_lambda is None and run.heldout_interference is None and run.other_energy == {}
    assert not tradeoff.is_study_run(run) and tradeoff.ties_normalised(run) is None
    from osrm_gui.core.paths import demo_dir

    _, committed = load_runs(demo_dir() / "compare.json")  # the real file, written before the study
    assert committed and all(r.ties_lambda is None for r in committed)


def test_existing_families_are_unchanged_and_knobs_are_named():
    assert cmp.FAMILIES["osrm-cov"][0] == {"init": "osrm-cov"} and cmp.FAMILIES["osrm-cov-a0.1"][0] == {"init": "osrm-cov", "a_lr_multiplier": 0.1}
    assert list(cmp.FAMILIES)[:7] == ["peft-default", "gaussian", "osrm-cov", "osrm-cov-a0.1", "osrm-cov-frozen", "peft-default-frozen", "osrm-mean"]
    assert cmp.FAMILIES["osrm-cov-k4"][0] == {"init": "osrm-cov", "subspace_budget": 4}
    assert cmp.FAMILIES["osrm-cov-pen100"][0] == {"init": "osrm-cov", "subspace_penalty": 100.0}
    assert cmp.FAMILIES["peft-default-pen1"][0] == {"init": "peft-default", "subspace_penalty": 1.0}
    assert cmp.FAMILIES["osrm-cov-a0.01"][0] == {"init": "osrm-cov", "a_lr_multiplier": 0.01}
    assert set(tradeoff.STUDY_FAMILIES) <= set(cmp.FAMILIES) and all(text for _, text in cmp.FAMILIES.values())


def test_a_knob_training_lacks_is_one_line(monkeypatch):
    monkeypatch.setitem(cmp.FAMILIES, "future", ({"init": "osrm-cov", "no_such_knob": 1}, "a knob from the future"))
    with pytest.raises(OsrmError, match="'future' needs the training setting.s. no_such_knob"):
        cmp.family_settings("future", SETTINGS, 0, 0, [])


def test_study_end_to_end_on_tiny_tasks_and_resumes(tiny_base_dir, tiny_tasks, tmp_path, monkeypatch):
    tasks = [resolve_task(str(p)) for p in tiny_tasks.values()]
    saved, opened = [], []
    opening = cmp.open_executor
    monkeypatch.setattr(cmp, "open_executor", lambda *a: opened.append(a) or opening(*a))
    runs = run_to_end(tradeoff.study(["peft-default", "osrm-cov-a0.01"], [0], tasks, tmp_path / "work", SETTINGS, "cpu", 10,
                                     tiny_base_dir, save=lambda r: saved.append((len(r), (tmp_path / "work" / "osrm-cov-a0.01").exists()))))
    assert [(r.family, r.seed) for r in runs] == [("peft-default", 0), ("osrm-cov-a0.01", 0)]
    assert saved == [(1, False), (2, True)]  # the first set is on disk before the second one trains
    assert len(opened) == 1  # one executor for all sets' training and evaluation (on Ray: workers start once)
    assert all(tradeoff.is_study_run(r) for r in runs)
    trained = json.loads((tmp_path / "work" / "osrm-cov-a0.01" / "seed0" / "colour" / "osrm_adapter.json").read_text())
    assert trained["settings"]["a_lr_multiplier"] == 0.01 and trained["settings"]["init"] == "osrm-cov"
    if isinstance(trained.get("other_energy"), dict):  # training that records the drift: the run carries it per task
        assert runs[1].other_energy["colour"] == trained["other_energy"]
    save_runs(runs, tmp_path / "study.json", {"command": "test"})
    assert load_runs(tmp_path / "study.json")[1] == runs
    rows = tradeoff.summarise(runs)
    assert [r["setting"] for r in rows] == ["peft-default", "osrm-cov-a0.01"] and rows[0]["TIES λ"] in {f"{x:g}" for x in tradeoff.TIES_LAMBDAS}
    stamp = (tmp_path / "work" / "peft-default" / "seed0" / "colour" / "adapter_model.safetensors").stat().st_mtime_ns
    again = run_to_end(tradeoff.study(["peft-default", "osrm-cov-a0.01"], [0], tasks, tmp_path / "work", SETTINGS, "cpu", 10,
                                      tiny_base_dir, kept=runs[:1], save=lambda r: saved.append((len(r), True))))
    assert saved[2:] == [(2, True)] and again[0] is runs[0] and again[1] == runs[1]  # only the missing set evaluated, same numbers
    assert (tmp_path / "work" / "peft-default" / "seed0" / "colour" / "adapter_model.safetensors").stat().st_mtime_ns == stamp


def test_cli_refuses_bad_options_in_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "demo", "tradeoff", "--families", "peft-default,nope")
    assert code == 2 and "unknown family 'nope'" in one_error_line(err)
    code, _, err = run(capsys, "demo", "tradeoff", "--families", "peft-default", "--resume")
    assert code == 2 and "--resume needs --json" in one_error_line(err)
    code, _, err = run(capsys, "demo", "tradeoff", "--families", "peft-default", "--seeds", "0,x")
    assert code == 2 and "--seeds" in one_error_line(err)
    code, _, err = run(capsys, "demo", "tradeoff", "--families", "peft-default", "--workers", "2")
    assert code == 2 and "only with --executor ray" in one_error_line(err)
    from osrm_gui.core.paths import demo_dir

    code, _, err = run(capsys, "demo", "tradeoff", "--from-json", demo_dir() / "compare.json")
    assert code == 2 and "not `demo tradeoff`" in one_error_line(err)


def _study_file(path):
    """A saved study (synthetic runs with every trade-off field), as `demo tradeoff --json` writes it."""
    runs = []
    for family, single, merged in (("peft-default", 0.85, 0.90), ("osrm-cov", 0.85, 0.92), ("osrm-cov-k4", 0.83, 0.97)):
        for seed in range(2):
            s = single + 0.01 * seed
            runs.append(FamilyRun(family, seed, {"a": s, "b": s}, {f"{lam:g}": {"a": merged * s * (1 - abs(lam - 0.7)), "b": merged * s}
                                                                for lam in tradeoff.FINE_LAMBDAS},
                                  {"a": 0.7, "b": 0.7}, 0.8, [], {f"{lam:g}": {"a": 1 - abs(lam - 0.7), "b": 0.5} for lam in tradeoff.FINE_LAMBDAS},
                                  {"1": {"a": 0.7, "b": 0.7}}, {"a": 0.7, "b": 0.7}, 0.9, "test",
                                  {"a": {"start": 6e-5, "end": 2e-3}} if family != "peft-default" else {}))
    save_runs(runs, path, {"command": "osrm demo tradeoff (synthetic)", "families": {"osrm-cov-k4": "budget 4"}})
    return runs


def test_cli_prints_and_plots_a_saved_study(capsys, tmp_path):
    _study_file(tmp_path / "study.json")
    code, out, err = run(capsys, "demo", "tradeoff", "--from-json", tmp_path / "study.json", "--plot", tmp_path / "pareto.png")
    assert code == 0, err
    assert "osrm-cov-k4" in out and "Pareto front" in out and "does any setting dominate peft-default and osrm-cov" in out
    assert "no: no setting beats" in out  # k4 merges better but is worse alone
    assert "6.0e-05 → 2.0e-03" in out  # the others' energy share, start → end, from the adapters' metadata
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(capsys, "demo", "tradeoff", "--from-json", tmp_path / "study.json", "--plot", tmp_path / "pareto.png")
    assert code == 2 and "pareto.png" in one_error_line(err)  # an existing output is refused, as everywhere


def test_a_partial_study_says_which_sets_are_missing(capsys, tmp_path):
    runs = _study_file(tmp_path / "whole.json")
    assert tradeoff.coverage({"families": {}, "seeds": [0, 1]}, runs) == ""
    meta = {"families": {"peft-default": "", "osrm-cov": "", "osrm-cov-k4": "", "osrm-cov-k8": ""}, "seeds": [0, 1, 2]}
    assert tradeoff.coverage(meta, runs[:-1]) == ("partial study: 5 of 12 adapter sets measured; not yet: peft-default (seed 2); "
                                                   "osrm-cov (seed 2); osrm-cov-k4 (seeds 1, 2); osrm-cov-k8 (seeds 0, 1, 2)")
    assert tradeoff.coverage({}, runs[:-1]).startswith("partial study: 5 of 6 adapter sets measured; not yet: osrm-cov-k4 (seed 1)")
    save_runs(runs[:-1], tmp_path / "partial.json", {"command": "osrm demo tradeoff (synthetic)", "families": {}, "seeds": [0, 1]})
    code, out, err = run(capsys, "demo", "tradeoff", "--from-json", tmp_path / "partial.json")
    assert code == 0, err
    assert "partial study: 5 of 6 adapter sets measured; not yet: osrm-cov-k4 (seed 1)" in out
    code, out, err = run(capsys, "demo", "tradeoff", "--from-json", tmp_path / "whole.json")
    assert code == 0 and "partial study" not in out



def test_the_committed_study_is_what_the_readme_quotes(capsys):
    """resources/demo/tradeoff.json (what the app's viewer and the README show) loads as a study, and
    the README's table is what `--from-json` prints from it."""
    from pathlib import Path

    from osrm_gui.core.paths import demo_dir

    committed = demo_dir() / "tradeoff.json"
    meta, runs = load_runs(committed)
    assert runs and all(tradeoff.is_study_run(r) for r in runs) and meta["command"].startswith("osrm demo tradeoff")
    code, out, err = run(capsys, "demo", "tradeoff", "--from-json", committed)
    assert code == 0, err
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = [line for line in out.splitlines() if any(line.startswith(f"{r.family} ") for r in runs)]
    assert table and all(line in readme for line in table)
