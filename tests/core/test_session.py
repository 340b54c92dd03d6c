import json

import pytest

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.session import MergeSession, open_session
from osrm_gui.core.explore.sweep import LAMBDA, SweepPoint, sweep_values


@pytest.fixture()
def session(tiny_base_dir, tiny_adapters):
    s = MergeSession(device="cpu", preview_limit=10)
    s.load_base(tiny_base_dir)
    for path in tiny_adapters:
        s.add_slot(s.read_adapter(path))
    return s


def test_adapters_are_paired_with_their_tasks(session):
    assert [slot.task.name for slot in session.slots] == ["colour", "animal"]
    with pytest.raises(OsrmError, match="already loaded"):
        session.read_adapter(session.slots[0].path)


def test_preview_and_full_evaluation(session):
    preview = run_to_end(session.evaluate_job())
    full = run_to_end(session.evaluate_job(full=True))
    assert preview.kind == "preview" and all(s["n"] == 10 for s in preview.scores.values())
    assert set(preview.single) == {"colour", "animal"} and all(s["n"] == 10 for s in preview.single.values())
    alone = run_to_end(session.workspace().evaluate_single(limit=10))
    assert preview.single == alone
    assert full.kind == "full" and all(s["n"] == 24 for s in full.scores.values())


def test_disabled_adapter_is_left_out(session):
    session.slots[1].enabled = False
    result = run_to_end(session.evaluate_job())
    assert list(result.scores) == ["colour"] and result.spec.coefficients == [1.0]


def test_sweep_streams_points_and_lambda_zero_is_the_bare_base(session):
    events = []
    job = session.sweep_job(LAMBDA, sweep_values(0.0, 1.0, 3))
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            result = stop.value
            break
    points = [e for e in events if isinstance(e, SweepPoint)]
    # streamed as scored (points the history already holds first); the result in grid order
    assert sorted(p.value for p in points) == [0.0, 0.5, 1.0] and result.points == sorted(points, key=lambda p: p.value)
    points = result.points
    ws = session.workspace()
    floor = run_to_end(ws.evaluate(None, limit=10))
    assert points[0].scores == {t: s["metric"] for t, s in floor.items()}
    session.lam = 1.0
    at_one = run_to_end(session.evaluate_job())
    assert points[2].scores == {t: s["metric"] for t, s in at_one.scores.items()}


def test_sweep_of_one_coefficient(session):
    session.slots[0].label = "first"
    result = run_to_end(session.sweep_job("first", [0.0, 2.0]))
    assert [p.value for p in result.points] == [0.0, 2.0]
    with pytest.raises(OsrmError, match="cannot sweep 'nope'"):
        run_to_end(session.sweep_job("nope", [0.0, 1.0]))


def test_pairing_data_with_the_wrong_label_count(session, tiny_tasks):
    with pytest.raises(OsrmError, match="3 labels, but adapter colour has a head with 2 outputs"):
        session.pair_task(0, str(tiny_tasks["animal"]))


def test_workspace_round_trip(session, tmp_path):
    session.slots[0].coefficient = 0.3
    session.slots[1].label = "renamed"
    session.method, session.params, session.lam = "ties", {"density": 0.7}, 0.8
    session.last_result = run_to_end(session.evaluate_job())
    session.sweeps.append(run_to_end(session.sweep_job(LAMBDA, [0.0, 1.0])))
    session.save(tmp_path / "ws" / "my.osrm.json")
    saved = json.loads((tmp_path / "ws" / "my.osrm.json").read_text())
    assert not saved["adapters"][0]["path"].startswith("/")  # relative paths
    reopened = run_to_end(open_session(tmp_path / "ws" / "my.osrm.json", device="cpu"))
    assert [(s.label, s.coefficient, s.enabled, s.task.name) for s in reopened.slots] == [
        (s.label, s.coefficient, s.enabled, s.task.name) for s in session.slots]
    assert (reopened.method, reopened.params, reopened.lam) == ("ties", {"density": 0.7}, 0.8)
    assert reopened.last_result.scores == session.last_result.scores
    assert reopened.sweeps[0].points == session.sweeps[0].points


def test_corrupt_workspace(tmp_path):
    (tmp_path / "w.json").write_text("{")
    with pytest.raises(OsrmError, match="w.json: corrupt JSON"):
        run_to_end(open_session(tmp_path / "w.json"))


def test_previews_reuse_the_stacked_factors_until_the_adapter_set_changes(session):
    run_to_end(session.evaluate_job())
    first = session.workspace().lora_sum()
    session.lam = 0.3
    run_to_end(session.evaluate_job())
    assert session.workspace().lora_sum() is first
    session.slots[1].enabled = False
    assert session.workspace().lora_sum().count == 1
