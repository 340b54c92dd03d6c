"""The preview's numbers and how sure they are: every interval and paired test checked against an
independent computation (scipy, sklearn, a plain loop), and the session's progressive preview,
its named references and its single scores kept in the run history."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.evaluation import EvaluationCache
from osrm_gui.core.explore.history import History
from osrm_gui.core.metrics import METRICS
from osrm_gui.core.metrics.confidence import (
    batch_metric, bootstrap_interval, compare, interval, mcnemar_exact, paired_bootstrap, resamples, task_uncertainty, wilson_interval,
)
from osrm_gui.core.progress import Progress, Run, run_to_end
from osrm_gui.core.session import EvalResult, MergeSession
from osrm_gui.core.workspace import Workspace


def classes(n=100, k=3, seed=0, agreement=0.7):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    predictions = np.where(rng.random(n) < agreement, labels, rng.integers(0, k, n))
    return labels, predictions


def regression(n=80, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.normal(size=n)
    return labels, labels + rng.normal(scale=0.8, size=n)


def reference_metric(name, y, p):
    """The metric as the app computes it on one sample (sklearn / scipy)."""
    return METRICS[name][0](y, p)


# -- intervals -------------------------------------------------------------------------------

@pytest.mark.parametrize("k, n", [(0, 16), (3, 16), (13, 16), (16, 16), (80, 100), (1, 1), (57, 400)])
def test_wilson_matches_scipy(k, n):
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_accuracy_interval_is_wilson_of_the_correct_examples():
    labels, predictions = classes()
    k = int((labels == predictions).sum())
    expected = stats.binomtest(k, len(labels)).proportion_ci(method="wilson")
    assert interval("accuracy", labels, predictions) == pytest.approx((expected.low, expected.high))
    # a bar of 0.80 on 100 examples carries about ±0.08
    low, high = wilson_interval(80, 100)
    assert 0.07 < 0.8 - low < 0.09 and 0.06 < high - 0.8 < 0.08


@pytest.mark.parametrize("name", ["accuracy", "macro_f1", "mcc"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_classification_metrics_equal_sklearn_on_every_resample(name, seed):
    labels, predictions = classes(n=30, k=4, seed=seed, agreement=0.5)
    index = next(resamples(30, count=200, seed=seed))
    batched = batch_metric(name, labels[index], predictions[index])
    expected = [{"accuracy": accuracy_score, "macro_f1": lambda y, p: f1_score(y, p, average="macro"),
                 "mcc": matthews_corrcoef}[name](labels[i], predictions[i]) for i in index]
    assert batched == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", ["pearson", "spearman"])
def test_batched_correlations_equal_scipy_on_every_resample(name):
    labels, predictions = regression(n=25)
    index = next(resamples(25, count=100, seed=3))
    expected = [{"pearson": stats.pearsonr, "spearman": stats.spearmanr}[name](labels[i], predictions[i]).statistic for i in index]
    assert batch_metric(name, labels[index], predictions[index]) == pytest.approx(expected, abs=1e-10)


def test_degenerate_samples_follow_the_app_metrics():
    # a constant prediction: sklearn's MCC and the app's correlations are 0; a single class: F1 over the classes present
    y = np.array([[0, 1, 1, 0]])
    assert batch_metric("mcc", y, np.zeros_like(y)) == pytest.approx([matthews_corrcoef(y[0], np.zeros(4))])
    assert batch_metric("pearson", y.astype(float), np.ones((1, 4))) == pytest.approx([0.0])
    assert batch_metric("macro_f1", np.array([[2, 2, 2]]), np.array([[2, 2, 2]])) == pytest.approx([1.0])


@pytest.mark.parametrize("name", ["macro_f1", "mcc", "pearson", "spearman"])
def test_bootstrap_interval_is_the_percentiles_of_a_plain_loop(name):
    labels, predictions = regression() if name in ("pearson", "spearman") else classes(n=60)
    values = [reference_metric(name, labels[i], predictions[i]) for chunk in resamples(len(labels)) for i in chunk]
    assert bootstrap_interval(name, labels, predictions) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-10)
    assert interval(name, labels, predictions) == bootstrap_interval(name, labels, predictions)  # seeded: the same every time


@pytest.mark.parametrize("name", ["macro_f1", "pearson"])
def test_bootstrap_interval_agrees_with_scipy_bootstrap(name):
    labels, predictions = regression(n=150) if name == "pearson" else classes(n=200)
    ours = bootstrap_interval(name, labels, predictions)
    theirs = stats.bootstrap((labels, predictions), lambda y, p: reference_metric(name, y, p), paired=True, vectorized=False,
                             n_resamples=1000, method="percentile", random_state=np.random.default_rng(7)).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), abs=0.025)  # other resamples: the same interval up to Monte Carlo noise


def test_bootstrap_memory_is_chunked():
    chunks = list(resamples(5000, count=1000))
    assert sum(len(c) for c in chunks) == 1000 and max(len(c) for c in chunks) <= 250 and chunks[0].dtype == np.int16


# -- paired tests ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_mcnemar_exact_matches_a_binomial_test_of_the_disagreements(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random(100) < 0.75, rng.random(100) < 0.6 + 0.05 * seed
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    assert mcnemar_exact(a, b) == pytest.approx(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue, rel=1e-12)


def test_mcnemar_without_disagreements_and_with_many():
    same = np.array([True, False, True])
    assert mcnemar_exact(same, same) == 1.0
    a = np.r_[np.ones(3000, bool), np.zeros(1000, bool)]
    b = np.r_[np.zeros(1500, bool), np.ones(2500, bool)]
    assert mcnemar_exact(a, b) == pytest.approx(stats.binomtest(1500, 4000, 0.5).pvalue, rel=1e-9)


@pytest.mark.parametrize("name", ["macro_f1", "mcc", "spearman"])
def test_paired_bootstrap_is_a_plain_loop_over_the_same_resamples(name):
    if name == "spearman":
        labels, a = regression()
        b = labels + np.random.default_rng(9).normal(scale=1.2, size=len(labels))
    else:
        labels, a = classes(n=60, seed=1, agreement=0.8)
        b = classes(n=60, seed=1, agreement=0.5)[1]
    differences = np.array([reference_metric(name, labels[i], a[i]) - reference_metric(name, labels[i], b[i])
                            for chunk in resamples(len(labels)) for i in chunk])
    expected = min(1.0, 2 * min((differences <= 0).mean(), (differences >= 0).mean()))
    assert paired_bootstrap(name, labels, a, b) == pytest.approx(expected)


def test_identical_predictions_are_never_distinguishable_and_very_different_ones_are():
    labels, predictions = classes(n=100, agreement=0.9)
    assert not compare("macro_f1", labels, predictions, predictions, 0.5, 0.5).distinguishable
    assert not compare("accuracy", labels, predictions, predictions, 0.5, 0.5).distinguishable
    chance = classes(n=100, seed=5, agreement=0.0)[1]
    for name in ("accuracy", "macro_f1", "mcc"):
        comparison = compare(name, labels, predictions, chance, 0.9, 0.3)
        assert comparison.distinguishable and comparison.difference == pytest.approx(0.6)
    assert compare("accuracy", labels, predictions, chance, 0.9, 0.3).test == "McNemar exact"
    assert compare("mcc", labels, predictions, chance, 0.9, 0.3).test == "paired bootstrap"


def test_task_uncertainty_round_trips_through_a_dict():
    labels, predictions = classes()
    u = task_uncertainty("accuracy", labels, predictions, labels, 0.7, 1.0)
    assert type(u).from_dict(u.to_dict()) == u
    assert type(u).from_dict(task_uncertainty("mcc", labels, predictions).to_dict()).single is None


# -- the session's previews -------------------------------------------------------------------------

@pytest.fixture()
def session(tiny_base_dir, tiny_adapters, tmp_path):
    s = MergeSession(device="cpu", preview_limit=24, history=History(tmp_path / "history.sqlite"))
    s.load_base(tiny_base_dir)
    for path in tiny_adapters:
        s.add_slot(s.read_adapter(path))
    return s


def per_example(ws: Workspace, limit: int, single: bool = False, spec=None):
    """Labels and predictions of each task, through an independent path: the workspace's own evaluation."""
    ws.encoding_cache = EvaluationCache()
    if single:
        run_to_end(ws.evaluate_single(limit=limit))
    else:
        run_to_end(ws.score(spec, limit=limit))
    return dict(ws.encoding_cache.outcomes)


def test_preview_intervals_and_tests_match_an_independent_computation(session):
    result = run_to_end(session.evaluate_job())
    ws = session.workspace()
    merged = per_example(ws, 24, spec=result.spec)
    single = per_example(ws, 24, single=True)
    for task in ws.tasks:
        u = result.uncertainty[task.name]
        y, m, s = merged[task.name].labels, merged[task.name].predictions, single[task.name].predictions
        assert result.scores[task.name]["metric"] == pytest.approx(accuracy_score(y, m))
        for (low, high), predictions in ((u.merged, m), (u.single, s)):
            ci = stats.binomtest(int((y == predictions).sum()), len(y)).proportion_ci(method="wilson")
            assert (low, high) == pytest.approx((ci.low, ci.high))
        only_merged, only_single = int(((y == m) & (y != s)).sum()), int(((y != m) & (y == s)).sum())
        p = stats.binomtest(only_merged, only_merged + only_single, 0.5).pvalue if only_merged + only_single else 1.0
        assert u.comparison.test == "McNemar exact" and u.comparison.p_value == pytest.approx(p)
        assert u.comparison.difference == pytest.approx(accuracy_score(y, m) - accuracy_score(y, s))


def test_a_preview_scores_its_first_examples_then_only_the_rest(session):
    session.preview_first = 16
    run = Run(session.evaluate_job())
    events = list(run)
    partial = [e for e in events if isinstance(e, EvalResult)]
    assert len(partial) == 1 and partial[0].partial and all(s["n"] == 16 for s in partial[0].scores.values())
    final = run.result
    assert not final.partial and all(s["n"] == 24 for s in final.scores.values())
    after_first = events[events.index(partial[0]) + 1:]
    totals = {e.total for e in after_first if isinstance(e, Progress) and e.stage.startswith("eval:")}
    assert totals == {8}  # the full pass scored only the 8 examples after the first 16, for the merge and each adapter alone
    session.preview_first = 0  # one pass over all 24: the same numbers
    one_pass = run_to_end(session.evaluate_job())
    assert {t: s["metric"] for t, s in one_pass.scores.items()} == pytest.approx({t: s["metric"] for t, s in final.scores.items()})
    assert {t: s["metric"] for t, s in one_pass.single.items()} == pytest.approx({t: s["metric"] for t, s in final.single.items()})


def test_several_adapters_of_one_task_each_reference_is_named_and_chosen(session, tiny_base_dir, tiny_tasks, tmp_path):
    from tests.conftest import make_adapter

    other = make_adapter(tiny_base_dir, tmp_path / "colour-b", tiny_tasks["colour"], num_labels=2, seed=11)
    session.add_slot(session.read_adapter(other))
    first = run_to_end(session.evaluate_job())
    assert first.references["colour"] == str(session.slots[0].path)  # the first loaded; adding another never switches it
    session.set_reference("colour", other)
    chosen = run_to_end(session.evaluate_job())
    assert chosen.references["colour"] == str(session.slots[2].path)
    alone = Workspace(session.base, [session.slots[2].adapter], [session.slots[2].task], {"colour": session.slots[2].adapter})
    assert chosen.single["colour"] == run_to_end(alone.evaluate_single(limit=24))["colour"]
    assert list(chosen.scores) == ["colour", "animal"]  # each task scored once, through its reference's head


def test_single_predictions_are_kept_in_the_run_history_for_a_later_launch(session, tiny_base_dir, tiny_adapters, monkeypatch):
    first = run_to_end(session.evaluate_job())
    assert session.run_history().singles_path.is_file()
    later = MergeSession(device="cpu", preview_limit=16, history=History(session.run_history().path))
    later.load_base(tiny_base_dir)
    for path in tiny_adapters:
        later.add_slot(later.read_adapter(path))
    monkeypatch.setattr(Workspace, "evaluate_single", lambda *a, **k: pytest.fail("scored an adapter alone again"))
    shorter = run_to_end(later.evaluate_job())  # 16 examples: the first 16 of the 24 kept
    ws = later.workspace()
    monkeypatch.undo()
    expected = run_to_end(ws.evaluate_single(limit=16))
    assert shorter.single == {t: pytest.approx(s) for t, s in expected.items()}
    assert first.single.keys() == shorter.single.keys()


def test_an_unusable_single_store_is_ignored_not_fatal(session):
    session.run_history().singles_path.write_text("not sqlite\n")
    result = run_to_end(session.evaluate_job())
    assert result.single and session.run_history().singles_path.read_text() == "not sqlite\n"


def test_references_and_intervals_survive_a_saved_workspace(session, tiny_base_dir, tiny_tasks, tmp_path):
    from osrm_gui.core.session import open_session
    from tests.conftest import make_adapter

    other = make_adapter(tiny_base_dir, tmp_path / "colour-b", tiny_tasks["colour"], num_labels=2, seed=11)
    session.add_slot(session.read_adapter(other))
    session.set_reference("colour", other)
    session.last_result = run_to_end(session.evaluate_job())
    session.save(tmp_path / "ws" / "w.osrm.json")
    reopened = run_to_end(open_session(tmp_path / "ws" / "w.osrm.json", device="cpu"))
    assert reopened.reference_slots()["colour"].path.resolve() == other.resolve()
    assert reopened.last_result.references == session.last_result.references
    assert reopened.last_result.uncertainty == session.last_result.uncertainty
    with pytest.raises(OsrmError, match="not an enabled adapter of the task animal"):
        session.set_reference("animal", other)
