"""The per-task chart's numbers at a glance: error bars from the result's intervals, the adapter
behind each grey bar named and chosen, old numbers marked while they update, settings already
scored never scored again, a first pass shown before the full one, and the adapters-alone scores
of an earlier window reused from the run history."""

import time

import numpy as np
import pytest
from scipy import stats

from osrm_gui.core.metrics.confidence import Comparison, TaskUncertainty
from osrm_gui.core.progress import Progress, run_to_end
from osrm_gui.core.session import EvalResult
from osrm_gui.core.workspace import Workspace
from tests.conftest import make_adapter
from tests.gui.conftest import open_window, wait_idle


def open_progressive(qtbot, base, adapters):
    """The app with previews of all 24 test examples per task: a first pass of 16, then all 24."""
    return open_window(qtbot, base, adapters, preview_size=24)


@pytest.fixture()
def window(qtbot, tiny_base_dir, tiny_adapters):
    win = open_progressive(qtbot, tiny_base_dir, tiny_adapters)
    assert win.model.result is not None and not win.model.result.partial
    yield win
    win.model.jobs.cancel()
    win.model.jobs.wait(20)


def preview_starts(model) -> list[str]:
    started = []
    model.jobs.started.connect(lambda label: started.append(label) if label == "Preview" else None)
    return started


def test_error_bars_show_each_scores_wilson_interval(window):
    result, chart = window.model.result, window.results
    for task, (alone_interval, merged_interval) in chart.intervals().items():
        for score, shown in ((result.scores[task], merged_interval), (result.single[task], alone_interval)):
            ci = stats.binomtest(round(score["metric"] * score["n"]), score["n"]).proportion_ci(method="wilson")
            assert shown == pytest.approx((ci.low, ci.high))
    tasks = list(result.scores)
    merged = chart.merged_errors.opts
    assert len(merged["x"]) == len(tasks)
    for i, task in enumerate(tasks):
        low, high = result.uncertainty[task].merged
        assert merged["y"][i] + merged["top"][i] == pytest.approx(high)
        assert merged["y"][i] - merged["bottom"][i] == pytest.approx(low)
    assert len(chart.single_errors.opts["x"]) == len(tasks)
    assert "Wilson" in chart.summary.toolTip() and "McNemar exact p =" in chart.summary.toolTip()


def test_the_headline_says_when_merged_and_alone_are_not_distinguishable(window):
    result = window.model.result
    same = TaskUncertainty((0.5, 0.9), (0.5, 0.9), Comparison("McNemar exact", 0.4, 0.02))
    apart = TaskUncertainty((0.8, 0.95), (0.2, 0.4), Comparison("McNemar exact", 0.001, 0.6))
    tasks = list(result.scores)
    window.model.session.last_result = EvalResult("preview", result.spec, result.scores, result.single, result.references,
                                                  {tasks[0]: same, tasks[1]: apart})
    window.model.resultChanged.emit()
    assert f"Not distinguishable from the adapter alone</b> on these examples: {tasks[0]} " in window.results.summary.text()
    window.model.session.last_result = EvalResult("preview", result.spec, result.scores, result.single, result.references,
                                                  {t: same for t in tasks})
    window.model.resultChanged.emit()
    assert "merged and alone are not distinguishable</b> for any task" in window.results.summary.text()


def test_each_grey_bar_names_its_adapter_and_the_user_picks_the_reference(qtbot, window, tiny_base_dir, tiny_tasks, tmp_path):
    assert window.results.reference_names() == {"colour": "colour", "animal": "animal"}
    assert not window.results.reference_row.isVisibleTo(window)  # one adapter per task: nothing to choose
    ticks = window.results.plot.getAxis("bottom")._tickLevels[0]
    assert [label for _, label in ticks] == ["colour\nalone: colour", "animal\nalone: animal"]
    before = window.results.values()["colour"]
    other = make_adapter(tiny_base_dir, tmp_path / "colour-20-steps", tiny_tasks["colour"], num_labels=2, seed=13)
    window.model.add_adapters([str(other)])
    qtbot.waitUntil(lambda: len(window.model.slots) == 3, timeout=20000)
    wait_idle(qtbot, window)
    assert window.results.reference_names()["colour"] == "colour"  # adding an adapter never switches the reference
    assert window.results.values()["colour"][0] == before[0]
    combo = window.results.reference_combos["colour"]
    assert window.results.reference_row.isVisibleTo(window) and [combo.itemText(i) for i in range(combo.count())] == ["colour", "colour-20-steps"]
    combo.setCurrentIndex(1)
    combo.activated.emit(1)
    wait_idle(qtbot, window)
    assert window.results.reference_names()["colour"] == "colour-20-steps"
    slot = window.model.slots[2]
    alone = Workspace(window.model.session.base, [slot.adapter], [slot.task], {"colour": slot.adapter})
    expected = run_to_end(alone.evaluate_single(limit=24))["colour"]["metric"]
    assert window.results.values()["colour"][0] == pytest.approx(expected)
    values = window.results.values()
    normalised = np.mean([merged / single for single, merged in values.values()])
    assert f"normalised {normalised:.3f}" in window.results.summary.text()


def test_old_numbers_are_marked_while_they_update(qtbot, window):
    chart = window.results
    assert not chart.dimmed() and "updating" not in chart.summary.text()
    window.model.set_coefficient(0, 0.35, final=False)  # dragging: the preview waits for the debounce
    assert window.model.updating and chart.dimmed() and chart.summary.text().startswith("<i>updating…</i>")
    wait_idle(qtbot, window)
    assert not window.model.updating and not chart.dimmed() and "updating" not in chart.summary.text()
    assert window.model.result.spec.coefficients[0] == pytest.approx(0.35)


def test_a_value_already_scored_is_not_scored_again(qtbot, window):
    model = window.model
    model.set_coefficient(0, 0.3)
    wait_idle(qtbot, window)
    at_03 = model.result
    model.set_coefficient(0, 0.6)
    wait_idle(qtbot, window)
    started = preview_starts(model)
    model.set_coefficient(0, 0.3)  # back to a value scored a moment ago
    assert model.result is at_03 and not model.jobs.busy and not model.updating
    model.set_coefficient(0, 0.6, final=False)  # dragged to another one scored before
    wait_idle(qtbot, window)
    assert started == [] and model.result.spec.coefficients[0] == pytest.approx(0.6)


def test_releasing_a_slider_where_it_was_dragged_does_not_start_again(qtbot, window):
    model = window.model
    started = preview_starts(model)
    model.set_coefficient(0, 0.45, final=False)
    qtbot.waitUntil(lambda: model.jobs.busy, timeout=5000)  # the debounced preview of 0.45 runs
    model.set_coefficient(0, 0.45, final=True)  # released there
    wait_idle(qtbot, window)
    assert started == ["Preview"] and model.result.spec.coefficients[0] == pytest.approx(0.45)


def test_a_first_pass_is_shown_then_the_full_preview(qtbot, window):
    shown = []
    window.model.resultChanged.connect(lambda: shown.append((window.model.result.partial, {s["n"] for s in window.model.result.scores.values()},
                                                             window.results.summary.text())))
    window.model.set_lambda(0.8)
    wait_idle(qtbot, window)
    assert [(partial, n) for partial, n, _ in shown] == [(True, {16}), (False, {24})]
    assert shown[0][2].startswith("<b>First look</b> (refining…)") and shown[1][2].startswith("<b>Preview</b>")


def test_a_new_setting_cancels_the_refinement(qtbot, window, monkeypatch):
    from osrm_gui.core import session as session_module

    score_rows = session_module._outcomes_of_rows

    def slow_refinement(ws, tasks, rows, score, cache):
        if any(start >= 16 for start, _ in rows.values()):  # the full pass: slow enough to be overtaken
            for _ in range(200):
                time.sleep(0.02)
                yield Progress("refine", 0, 1)
        return (yield from score_rows(ws, tasks, rows, score, cache))

    monkeypatch.setattr(session_module, "_outcomes_of_rows", slow_refinement)
    model = window.model
    finished = []
    model.jobs.finished.connect(lambda label, outcome: finished.append(outcome))
    with qtbot.waitSignal(model.resultChanged, timeout=20000):
        model.set_lambda(0.2)
    assert model.result.partial  # the first pass is shown; the full one runs
    model.set_lambda(0.3)
    wait_idle(qtbot, window)
    assert "cancelled" in finished and model.result.spec.lam == pytest.approx(0.3) and not model.result.partial


def test_a_second_window_shows_the_adapters_alone_from_the_run_history(qtbot, window, tiny_base_dir, tiny_adapters, monkeypatch):
    first = window.results.values()
    scored_alone = []
    evaluate_single = Workspace.evaluate_single
    monkeypatch.setattr(Workspace, "evaluate_single", lambda *a, **k: scored_alone.append(a) or evaluate_single(*a, **k))
    again = open_progressive(qtbot, tiny_base_dir, tiny_adapters)
    try:
        assert scored_alone == []  # a new session: its adapters alone came from the run history
        assert {t: v[0] for t, v in again.results.values().items()} == pytest.approx({t: v[0] for t, v in first.items()})
        assert again.results.reference_names() == window.results.reference_names()
    finally:
        again.model.jobs.cancel()
        again.model.jobs.wait(20)


def test_task_labels_fit_their_share_of_a_narrow_chart(qtbot, window):
    from PySide6.QtGui import QFontMetrics

    chart = window.results
    chart.tick_texts = [(0.0, "moral-foundation\nalone: moral-foundation-seed-2"), (1.0, "debate-party\nalone: debate-party")]
    axis = chart.plot.getAxis("bottom")
    metrics = QFontMetrics(axis.style["tickFont"] or chart.plot.font())
    for width in (900, 420, 260, 150):
        chart.plot.resize(width, 300)
        qtbot.wait(20)
        view = chart.plot.getViewBox()
        share = view.width() / (view.viewRange()[0][1] - view.viewRange()[0][0])
        labels = [label for _, label in axis._tickLevels[0]]
        assert all(metrics.horizontalAdvance(line) <= share for label in labels for line in label.split("\n")), (width, labels)
        if width == 900:
            assert labels[1] == "debate-party\nalone: debate-party"  # room enough: unchanged
    assert any("…" in label for label in labels)
