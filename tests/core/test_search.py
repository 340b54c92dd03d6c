"""Multi-fidelity merge search: chunked scoring against plain evaluation, seeded reproducibility,
resuming from SQLite, pruning, the validation/test separation, samplers, constraints, history."""

import re

import numpy as np
import optuna
import pytest
import torch

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.evaluation import encode_split, predict_logits
from osrm_gui.core.explore.history import History
from osrm_gui.core.explore.search import TrialEvent, search
from osrm_gui.core.explore.search_fidelity import RunningScores, ValidationChunks, install, score_chunk
from osrm_gui.core.explore.search_space import LayerGroups, SearchPoint, SearchSpace
from osrm_gui.core.inputs.tasks import Task
from osrm_gui.core.merge.spec import MergedState, MergeSpec
from osrm_gui.core.progress import Run, run_to_end
from osrm_gui.core.workspace import open_workspace
from tests.job_support import drive
from tests.tolerances import assert_within, logits_bound

FAST = dict(chunk=4)  # the tiny tasks have 12 validation examples each: 3 chunks


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ws(tiny_base_dir, tiny_adapters):
    return open_workspace(tiny_base_dir, tiny_adapters, device="cpu")


def _drive(job):
    result, events = drive(job)
    return result, [e for e in events if isinstance(e, TrialEvent)]


def _groups(ws, count):
    return LayerGroups.of(sorted({n for a in ws.adapters for n in a.layers}), count)


def _block(name):
    return int(re.search(r"\.(\d+)\.", name)[1])


def _merged_by_block(ws, spec, group_coefficients, blocks_of_group):
    """Independently: each group's layers from a plain merge at that group's coefficients."""
    layers = {}
    for coefficients, blocks in zip(group_coefficients, blocks_of_group):
        merged = run_to_end(ws.merge(MergeSpec(spec.method, coefficients, spec.lam, spec.params, spec.seed)))
        layers.update({n: r for n, r in merged.layers.items() if _block(n) in blocks})
    return MergedState(spec, layers)


def test_per_layer_weights_of_the_lora_sum_equal_dense_per_layer_merges(ws):
    lora_sum = ws.lora_sum()
    weights = {name: [0.3 + 0.4 * i, 1.1 - 0.2 * i] for i, name in enumerate(lora_sum.layers)}
    dense = {name: sum(w * a.layers[name].delta().float() for w, a in zip(weights[name], ws.adapters) if name in a.layers)
             for name in lora_sum.layers}
    task = ws.tasks[0]
    encoded = encode_split(ws.base.tokenizer, task.split("validation"), 128)
    ws.base.set_head(ws.heads[task.name])
    try:
        ws.base.set_deltas(dense)
        slow = run_to_end(predict_logits(ws.base, encoded, 64, ""))
        ws.base.clear_deltas()
        lora_sum.set_layer_weights(weights)
        with lora_sum.installed():
            fast = run_to_end(predict_logits(ws.base, encoded, 64, ""))
    finally:
        ws.base.clear_deltas()
        ws.base.set_head(None)
    rank = sum(max(a.ranks) for a in ws.adapters)
    assert_within(fast, slow, logits_bound(ws.base.model.config, ws.heads[task.name], seq_len=128, lora_rank=rank), "logits")
    with pytest.raises(ValueError, match="missing"):
        lora_sum.set_layer_weights({next(iter(lora_sum.layers)): [1.0, 1.0]})


def test_chunks_are_disjoint_cover_the_split_and_follow_the_seed(ws):
    chunks = ValidationChunks(ws, 5, seed=3)
    assert chunks.count == 3
    for task in ws.tasks:
        rows = np.concatenate([chunks.rows(task, k) for k in range(chunks.count)])
        assert sorted(rows) == list(range(len(task.split("validation"))))
    again, other = ValidationChunks(ws, 5, seed=3), ValidationChunks(ws, 5, seed=4)
    task = ws.tasks[0]
    assert list(again.rows(task, 0)) == list(chunks.rows(task, 0))
    assert any(list(other.rows(t, 0)) != list(chunks.rows(t, 0)) for t in ws.tasks)


@pytest.mark.parametrize("point", [
    SearchPoint(MergeSpec("task_arithmetic", [1.2, 0.4], 0.7).resolved(2)),
    SearchPoint(MergeSpec("ties", [0.9, 1.1], 1.0, {"density": 0.4}).resolved(2)),
    SearchPoint(MergeSpec("emr", [1.0, 1.0], 1.0).resolved(2)),  # a task-specific update per task
], ids=["lora-sum", "dense", "per-task"])
def test_scoring_every_chunk_equals_a_plain_evaluation_of_the_split(ws, point):
    chunks = ValidationChunks(ws, 5, seed=1)
    running = RunningScores(ws.tasks)
    with install(ws, point, _groups(ws, 1)) as merge:
        spent = sum(score_chunk(ws, chunks, k, merge, running) for k in range(chunks.count))
    plain = run_to_end(ws.score(point.spec, "validation"))
    assert {t: (m["metric"], m["n"]) for t, m in running.metrics().items()} == {t: (s["metric"], s["n"]) for t, s in plain.items()}
    assert spent == sum(s["n"] for s in plain.values())
    assert not ws.base._originals or all(torch.equal(ws.base.model.get_submodule(n).weight, w) for n, w in ws.base._originals.items())


def test_per_layer_group_chunks_equal_an_independent_per_group_merge(ws):
    groups = _groups(ws, 2)
    assert groups.labels == ["block 0", "block 1"]
    point = SearchPoint(MergeSpec("task_arithmetic", [1.0, 1.0], 0.8).resolved(2), [[1.3, 0.2], [0.1, 1.4]])
    chunks = ValidationChunks(ws, 4, seed=0)
    running = RunningScores(ws.tasks)
    with install(ws, point, groups) as merge:
        for k in range(chunks.count):
            score_chunk(ws, chunks, k, merge, running)
    independent = run_to_end(ws.evaluate(_merged_by_block(ws, point.spec, point.group_coefficients, [{0}, {1}]), "validation"))
    assert {t: m["metric"] for t, m in running.metrics().items()} == {t: s["metric"] for t, s in independent.items()}


def _signature(result):
    return [(t.number, t.state, t.params, t.values, t.examples) for t in result.trials]


def test_a_seeded_search_is_reproducible(ws):
    space = SearchSpace(("task_arithmetic", "ties"))
    first, _ = _drive(search(ws, space, "tpe", trials=6, seed=5, score_test=False, **FAST))
    second, _ = _drive(search(ws, space, "tpe", trials=6, seed=5, score_test=False, **FAST))
    other, _ = _drive(search(ws, space, "tpe", trials=6, seed=6, score_test=False, **FAST))
    assert _signature(first) == _signature(second)
    assert _signature(first) != _signature(other)
    assert {t.params.get("method") for t in first.trials} <= {"task_arithmetic", "ties"}


def test_a_search_resumes_from_its_sqlite_storage_without_redoing_trials(ws, tmp_path):
    storage = tmp_path / "studies.sqlite"
    first, _ = _drive(search(ws, SearchSpace(), "tpe", trials=3, storage=storage, study_name="s", score_test=False, **FAST))
    second, events = _drive(search(ws, SearchSpace(), "tpe", trials=3, storage=storage, study_name="s", score_test=False, **FAST))
    assert [t.number for t in second.trials] == list(range(6))
    assert [e.trial.number for e in events] == [3, 4, 5]  # only new trials were scored
    assert _signature(second)[:3] == _signature(first)
    old = [t.params for t in first.trials]
    assert all(t.params not in old for t in second.trials[3:])
    assert second.examples["search"] == sum(t.examples for t in second.trials[3:])
    assert second.examples["reference"] == 0  # the single-adapter scores were kept with the study
    assert second.study_examples == first.study_examples + second.examples["search"]
    # the default name is a hash of the settings: the same search run again continues it
    a, _ = _drive(search(ws, SearchSpace(), "random", trials=2, storage=storage, score_test=False, **FAST))
    b, _ = _drive(search(ws, SearchSpace(), "random", trials=2, storage=storage, score_test=False, **FAST))
    assert a.study_name == b.study_name != "s" and len(b.trials) == 4
    with pytest.raises(OsrmError, match=r"study 's' was searched with other settings \(chunk\)"):
        search(ws, SearchSpace(), "tpe", trials=1, storage=storage, study_name="s", chunk=6)


def _self_labelled_workspace(tiny_base_dir, tiny_adapters, weights):
    """Tasks whose validation labels are the predictions of the merge with these adapter weights:
    that merge scores 1.0 on every chunk, and no other can beat it."""
    ws = open_workspace(tiny_base_dir, tiny_adapters, device="cpu")
    lora_sum = ws.lora_sum()
    lora_sum.set_weights(weights)
    with lora_sum.installed():
        for task in ws.tasks:
            encoded = encode_split(ws.base.tokenizer, task.split("validation"), ws.max_length)
            ws.base.set_head(ws.heads[task.name])
            task.splits["validation"].labels = run_to_end(predict_logits(ws.base, encoded, 64, "")).argmax(1)
    ws.base.set_head(None)
    return ws


def test_the_pruner_stops_trials_that_fall_behind_on_the_first_chunks(tiny_base_dir, tiny_adapters):
    ws = _self_labelled_workspace(tiny_base_dir, tiny_adapters, [1.0, 1.0])
    perfect = {"lambda": 1.0, "c[colour]": 1.0, "c[animal]": 1.0}
    # Hyperband puts a trial in a bracket by a hash of the study's name and its number; the default name hashes
    # the fixture's weights, which differ in their last bits between CPUs. This name puts the perfect trial and
    # 9 of the 12 others in the bracket that may prune after the first chunk, on every machine.
    result, events = _drive(search(ws, SearchSpace(), "random", trials=13, normalise=False, initial=[perfect], score_test=False,
                                   study_name="pruning", **FAST))
    full = sum(len(t.split("validation")) for t in ws.tasks)
    assert result.trials[0].params == perfect and result.trials[0].values == (1.0,) and result.trials[0].examples == full
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned, [(t.state, t.values) for t in result.trials]
    assert all(t.examples < full and t.fidelity < 1 and t.values[0] < 1.0 for t in pruned)
    assert result.examples["search"] == sum(t.examples for t in result.trials) < 13 * full
    assert result.best.number == 0


def test_the_objective_never_reads_the_test_split(ws, monkeypatch):
    log = []
    original = Task.split
    monkeypatch.setattr(Task, "split", lambda self, name: log.append(name) or original(self, name))
    run = Run(search(ws, SearchSpace(("task_arithmetic", "ties")), "tpe", trials=4, min_task_fraction=0.5, **FAST))
    for event in run:
        if isinstance(event, TrialEvent):
            log.append("trial")
    last_trial = max(i for i, e in enumerate(log) if e == "trial")
    assert "test" not in log[:last_trial] and "validation" in log[:last_trial]
    assert "test" in log[last_trial:]  # the best point is reported on test, after the search


def test_the_reported_scores_equal_an_independent_evaluation_of_the_best_point(ws):
    result, _ = _drive(search(ws, SearchSpace(("task_arithmetic", "ties")), "tpe", trials=5, seed=2, **FAST))
    spec = result.best_spec
    assert result.best.state == "complete" and result.best.params == result.trials[result.best.number].params
    assert result.test == {t: s["metric"] for t, s in run_to_end(ws.score(spec, "test")).items()}
    assert result.validation == {t: s["metric"] for t, s in run_to_end(ws.score(spec, "validation")).items()}
    assert result.examples["test"] == sum(len(t.split("test")) for t in ws.tasks)
    best = max((t for t in result.trials if t.state == "complete"), key=lambda t: t.values[0])
    assert result.best.values == best.values
    expected = np.mean([result.validation[t] / result.reference[t] for t in result.validation])
    assert result.best.values[0] == pytest.approx(expected)


def test_a_per_layer_group_search_reports_the_test_score_of_its_per_group_merge(ws):
    result, _ = _drive(search(ws, SearchSpace(layer_groups=2), "random", trials=4, seed=1, **FAST))
    point = result.best_point
    assert set(result.best.params) == {"lambda", "c[colour]@g0", "c[animal]@g0", "c[colour]@g1", "c[animal]@g1"}
    assert point.group_coefficients == [[result.best.params[f"c[{a}]@g{g}"] for a in ("colour", "animal")] for g in (0, 1)]
    independent = run_to_end(ws.evaluate(_merged_by_block(ws, point.spec, point.group_coefficients, [{0}, {1}]), "test"))
    assert result.test == {t: s["metric"] for t, s in independent.items()}
    assert result.layer_groups == ["block 0", "block 1"]


def test_cmaes_refuses_a_categorical_space(ws):
    with pytest.raises(OsrmError, match="CMA-ES searches continuous spaces only.*method \\(task_arithmetic, ties\\)"):
        search(ws, SearchSpace(("task_arithmetic", "ties")), "cmaes", trials=2)
    with pytest.raises(OsrmError, match="majority_sign_method \\(total, frequency\\)"):
        search(ws, SearchSpace(("ties",)), "cmaes", trials=2)


def test_cmaes_searches_a_continuous_space_from_uniform_weights(ws):
    pytest.importorskip("cmaes")
    space = SearchSpace(("ties",), fixed_params={"majority_sign_method": "total"})
    result, _ = _drive(search(ws, space, "cmaes", trials=4, min_task_fraction=0.9, score_test=False, **FAST))
    assert result.trials[0].params["c[colour]"] == 1.0 and result.trials[0].params["density"] == 0.5
    for t in result.trials:  # CMA-ES ignores constraints: an infeasible value is penalised by 1 + violation
        if t.state == "complete" and not t.feasible:
            assert t.values[0] < np.mean([t.scores[k] / result.reference[k] for k in t.scores]) - 1


def test_nsga2_returns_the_pareto_set_of_mean_and_worst_task(ws):
    result, _ = _drive(search(ws, SearchSpace(), "nsga2", trials=8, seed=3, score_test=False, **FAST))
    assert result.objectives == ("normalised mean", "normalised worst task")
    assert all(t.state == "complete" and t.fidelity == 1.0 for t in result.trials)  # no pruning
    for t in result.trials:
        normalised = [t.scores[k] / result.reference[k] for k in t.scores]
        assert t.values == pytest.approx((np.mean(normalised), np.min(normalised)))
    values = {t.number: t.values for t in result.trials}
    dominated = {i for i, a in values.items() for b in values.values() if b[0] >= a[0] and b[1] >= a[1] and b != a}
    assert result.pareto == sorted(set(values) - dominated) and result.pareto
    assert result.best.number in result.pareto
    assert result.best.values[0] == max(values[i][0] for i in result.pareto)


def _feasible_from_lambda(monkeypatch, cut):
    """Trials at λ ≥ cut score every example right, the others every one wrong: which trials meet a
    minimum then follows from the seeded sampler alone, not from how this CPU rounds the tiny model."""
    import osrm_gui.core.explore.search as search_module

    real = search_module.score_trial_chunk

    def decided(ws, point, *args):
        parts, examples = real(ws, point, *args)
        right = point.spec.lam >= cut
        return [(task, labels.copy() if right else np.where(labels == 0, 1, 0), labels) for task, _, labels in parts], examples

    monkeypatch.setattr(search_module, "score_trial_chunk", decided)


def test_a_minimum_per_task_goes_to_optunas_constraints(ws, monkeypatch):
    _feasible_from_lambda(monkeypatch, cut=0.75)
    result, _ = _drive(search(ws, SearchSpace(), "tpe", trials=8, seed=0, min_task_fraction=0.5, score_test=False, **FAST))
    by_number = {t.number: t for t in result._frozen}
    scored = [t for t in result.trials if t.state != "fail"]
    for t in scored:
        shortfall = {k: 0.5 * result.reference[k] - t.scores[k] for k in t.scores}
        assert t.feasible == all(v <= 0 for v in shortfall.values()) == (t.params["lambda"] >= 0.75)
        assert by_number[t.number].constraints == pytest.approx({f"min:{k}": v for k, v in shortfall.items()})
    assert {t.feasible for t in scored} == {True, False}  # the case exercises both sides
    assert result.best.feasible


def test_every_scored_trial_lands_in_the_run_history_with_its_fidelity(ws, tmp_path):
    history = History(tmp_path / "history.sqlite")
    result, _ = _drive(search(ws, SearchSpace(), "tpe", trials=10, seed=1, history=history, score_test=False, **FAST))
    points = history.points()
    scored = [t for t in result.trials if t.state != "fail"]
    assert len(points) == len(scored) and len({p.key for p in points}) == len(points)
    for point, trial in zip(points, scored):
        assert point.split == "validation" and point.scores == trial.scores and f"trial {trial.number} " in point.label
        per_task = trial.examples // len(ws.tasks)
        assert (point.kind, point.limit) == (("full", None) if trial.fidelity == 1 else ("preview", per_task))
        assert point.lam == trial.params["lambda"] and point.coefficients == [trial.params["c[colour]"], trial.params["c[animal]"]]
    assert any(p.kind == "preview" for p in points)


def test_importances_need_a_few_complete_trials(ws):
    one, _ = _drive(search(ws, SearchSpace(), "random", trials=1, score_test=False, **FAST))
    assert one.importances() == {}
    many, _ = _drive(search(ws, SearchSpace(), "random", trials=8, prune=False, score_test=False, **FAST))
    importances = many.importances()
    assert set(importances) == {"lambda", "c[colour]", "c[animal]"}
    assert sum(importances.values()) == pytest.approx(1.0)


def test_a_cancelled_search_leaves_no_running_trial_and_a_clean_base(ws, tmp_path):
    storage = tmp_path / "s.sqlite"
    job = search(ws, SearchSpace(), "tpe", trials=3, storage=storage, study_name="c", **FAST)
    for event in job:
        if getattr(event, "stage", "") == "search":
            break
    job.close()
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{storage}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
    assert not any(m._forward_hooks for m in ws.base.model.modules()) and not ws.base._originals


@pytest.mark.parametrize("kwargs, message", [
    (dict(sampler="bayes", trials=2), "sampler 'bayes'"),
    (dict(trials=None), "needs a budget"),
    (dict(trials=0), "expected at least one trial"),
    (dict(trials=2, min_task_fraction=1.5), "fraction in \\(0, 1\\]"),
    (dict(trials=2, space=SearchSpace(("ties",), layer_groups=2)), "weighted sum of task vectors"),
    (dict(trials=2, space=SearchSpace(layer_groups=3)), "3 layer groups asked for, but the adapters adapt 2"),
    (dict(trials=2, space=SearchSpace(("nope",))), "unknown merge method 'nope'"),
    (dict(trials=2, space=SearchSpace(lambda_ranges={"task_arithmetic": (1.0, 0.5)})), "the lower one first"),
    (dict(trials=2, space=SearchSpace(fixed_params={"density": 0.5})), "belongs to none of the searched methods"),
    (dict(trials=2, space=SearchSpace(("ties",), fixed_params={"density": 3})), "density must be ≤ 1"),
    (dict(trials=2, chunk=0), "chunk size 0"),
])
def test_bad_settings_fail_at_the_call_in_one_line(ws, kwargs, message):
    kwargs = {"space": SearchSpace(), **kwargs}
    space = kwargs.pop("space")
    with pytest.raises(OsrmError, match=message) as caught:
        search(ws, space, **kwargs)
    assert "\n" not in str(caught.value)


def test_a_run_history_or_a_foreign_file_is_no_study_storage(ws, tmp_path):
    History(tmp_path / "h.sqlite").record_all([])
    with pytest.raises(OsrmError, match="is a run history, not a study storage"):
        search(ws, SearchSpace(), trials=1, storage=tmp_path / "h.sqlite")
    (tmp_path / "x.sqlite").write_text("hello")
    with pytest.raises(OsrmError, match="not an SQLite file"):
        search(ws, SearchSpace(), trials=1, storage=tmp_path / "x.sqlite")


def test_cmaes_starts_from_uniform_weights_with_sigma_one_sixth(ws, monkeypatch):
    import sys
    import types

    from osrm_gui.core.explore.search_space import cmaes_start
    from osrm_gui.core.explore.search_study import make_sampler

    monkeypatch.setitem(sys.modules, "cmaes", sys.modules.get("cmaes") or types.ModuleType("cmaes"))  # only its presence is checked here
    space = SearchSpace(("ties",), fixed_params={"majority_sign_method": "total"})
    x0 = cmaes_start(space, ["colour", "animal"], _groups(ws, 1))
    assert x0 == {"lambda": 0.6, "c[colour]": 1.0, "c[animal]": 1.0, "density": 0.5}
    sampler = make_sampler("cmaes", 0, x0, 10)
    assert isinstance(sampler, optuna.samplers.CmaEsSampler) and sampler._x0 == x0 and sampler._sigma0 == pytest.approx(1 / 6)


def test_without_constraint_support_a_shortfall_is_a_penalty(ws, monkeypatch):
    import osrm_gui.core.explore.search as search_module

    # CMA-ES ignores Optuna's constraints; a random sampler stands in for it (the package may be missing)
    monkeypatch.setattr(search_module, "make_sampler", lambda *a, **k: optuna.samplers.RandomSampler(seed=a[1]))
    _feasible_from_lambda(monkeypatch, cut=0.75)
    result, _ = _drive(search(ws, SearchSpace(), "cmaes", trials=8, min_task_fraction=0.5, score_test=False, **FAST))
    assert all(not t.constraints for t in result._frozen)
    complete = [t for t in result.trials if t.state == "complete"]
    for t in complete:
        normalised = np.mean([t.scores[k] / result.reference[k] for k in t.scores])
        violation = sum(max(0.5 * result.reference[k] - t.scores[k], 0.0) for k in t.scores)
        assert t.values[0] == pytest.approx(normalised - (1.0 + violation if violation > 0 else 0.0))
        assert t.feasible == (violation == 0) == (t.params["lambda"] >= 0.75)
    assert {t.feasible for t in complete} == {True, False}
    assert result.best.feasible
