"""The Ray executor on a real local Ray instance (2 CPUs, no dashboard): sweeps and searches
score exactly what the local executor scores, a worker killed midway has its calls re-queued,
cancelling kills the workers, and a cluster that cannot be reached is a one-line error."""

import os
import signal
from pathlib import Path

import pytest

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.execution import Call, ExecutorSettings, WorkerStatus, open_executor, run_all
from osrm_gui.core.execution.executor import Finished
from osrm_gui.core.explore.search import TrialEvent, search
from osrm_gui.core.explore.search_space import SearchSpace
from osrm_gui.core.explore.sweep import Axis, SweepPoint, run_sweep, score_spec
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import Run
from osrm_gui.core.workspace import open_workspace
from tests.job_support import drive, one_torch_thread

ray = pytest.importorskip("ray", reason="the ray extra is not installed (make test installs it)")

ONE = ExecutorSettings("ray", workers=1, threads_per_worker=1)
TWO = ExecutorSettings("ray", workers=2, threads_per_worker=1)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ws(tiny_base_dir, tiny_adapters):
    return open_workspace(tiny_base_dir, tiny_adapters, device="cpu")


def test_a_sweep_on_two_workers_scores_what_the_local_sweep_scores(ws):
    spec = MergeSpec("ties", None, 1.0, {"density": 0.5})
    axes = [Axis("lambda", (0.0, 0.5, 1.0)), Axis(ws.adapters[0].name, (0.5, 1.0))]
    local, _ = drive(run_sweep(ws, spec, axes, "validation", methods=["ties", "task_arithmetic"]))
    remote, events = drive(run_sweep(ws, spec, axes, "validation", methods=["ties", "task_arithmetic"], executor=TWO))
    assert [(p.method, p.values, p.scores) for p in remote.points] == [(p.method, p.values, p.scores) for p in local.points]
    assert len([e for e in events if isinstance(e, SweepPoint)]) == 12
    statuses = [e for e in events if isinstance(e, WorkerStatus)]
    assert statuses and {w.index for w in statuses[-1].workers} == {0, 1}
    # both workers took a share, and the counts add up
    assert sum(w.done for w in statuses[-1].workers) == 12 and all(w.done > 0 for w in statuses[-1].workers)


def _die_once(ws, marker: str, spec, split):
    """Score ``spec``, but kill this worker's process the first time (a crash midway)."""
    if not Path(marker).exists():
        Path(marker).write_text("died here once")
        os._exit(1)
    return (yield from score_spec(ws, spec, split, None))


def test_a_worker_that_dies_midway_has_its_calls_requeued_and_the_results_are_the_same(ws, tmp_path):
    specs = [MergeSpec("task_arithmetic", None, lam) for lam in (0.25, 0.5, 0.75, 1.0)]
    marker, spared = tmp_path / "died", tmp_path / "spared"
    spared.write_text("")  # an existing marker: the call lives
    items = [(str(marker if i == 2 else spared), s, "validation") for i, s in enumerate(specs)]
    with open_executor(ONE, ws) as runner:
        events = list(run_all(runner, _die_once, items))
    died = [e for e in events if isinstance(e, WorkerStatus) and "died" in e.message]
    assert marker.exists() and len(died) == 1 and "re-queued" in died[0].message
    finished = {e.index: e.value for e in events if isinstance(e, Finished)}
    assert finished == {i: run_to_end(ws.score(s, "validation")) for i, s in enumerate(specs)}
    assert died[-1].workers[0].restarts == 1


def test_closing_the_executor_kills_its_workers(ws):
    runner = open_executor(TWO, ws)
    runner.submit(Call(0, score_spec, (MergeSpec("task_arithmetic", None, 1.0), "validation", None)))
    actors = [w.actor for w in runner._workers]
    runner.close()
    for actor in actors:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.where.remote(), timeout=30)


def test_an_unreachable_cluster_is_a_one_line_error():
    from osrm_gui.core.execution.ray_executor import connect

    with pytest.raises(OsrmError, match=r"^Ray cluster ray://127\.0\.0\.1:9: cannot reach it"):
        connect(ExecutorSettings("ray", address="ray://127.0.0.1:9"))


def test_a_sweep_whose_worker_is_killed_midway_finishes_with_the_same_points(ws):
    spec = MergeSpec("task_arithmetic", None, 1.0)
    axes = [Axis("lambda", tuple(i / 7 for i in range(8)))]
    local, _ = drive(run_sweep(ws, spec, axes, "validation"))
    job, events, killed = run_sweep(ws, spec, axes, "validation", executor=TWO), [], []
    run = Run(job)
    for event in run:
        events.append(event)
        if isinstance(event, SweepPoint) and not killed:
            busy = [w for w in _last_status(events).workers if w.busy and "pid" in w.where]
            if busy:  # kill a worker that holds calls, as a crash would
                killed.append(busy[0].index)
                os.kill(int(busy[0].where.split("pid ")[1]), signal.SIGKILL)
    assert killed, "no worker was busy after the first point"
    assert [(p.values, p.scores) for p in run.result.points] == [(p.values, p.scores) for p in local.points]
    assert any("died" in e.message and "re-queued" in e.message for e in events if isinstance(e, WorkerStatus))
    assert _last_status(events).workers[killed[0]].restarts == 1


def _last_status(events) -> WorkerStatus:
    return [e for e in events if isinstance(e, WorkerStatus)][-1]


def _trials(events):
    return [(e.trial.number, e.trial.state, e.trial.params, e.trial.values, e.trial.examples) for e in events if isinstance(e, TrialEvent)]


def test_a_search_on_one_worker_is_the_local_search(ws, tmp_path):
    settings = dict(trials=6, seed=3, chunk=4)
    local, local_events = drive(search(ws, SearchSpace(("task_arithmetic", "ties")), "tpe", storage=tmp_path / "local.sqlite", **settings))
    remote, remote_events = drive(search(ws, SearchSpace(("task_arithmetic", "ties")), "tpe", storage=tmp_path / "ray.sqlite",
                                          executor=ONE, **settings))
    assert _trials(remote_events) == _trials(local_events)
    assert remote.test == local.test and remote.validation == local.validation and remote.reference == local.reference
    assert any(isinstance(e, WorkerStatus) for e in remote_events)


def test_a_search_on_two_workers_scores_each_point_as_the_local_engine_does(ws, tmp_path):
    from osrm_gui.core.explore.history import History

    history = History(tmp_path / "history.sqlite")
    result, events = drive(search(ws, SearchSpace(("task_arithmetic",)), "random", trials=8, seed=1, chunk=4, prune=False,
                                   normalise=False, storage=tmp_path / "studies.sqlite", history=history, executor=TWO))
    trials = [e.trial for e in events if isinstance(e, TrialEvent)]
    assert len(trials) == 8 and len(result.trials) == 8 and all(t.state == "complete" for t in trials)
    by_number = {t.number: t for t in result.trials}
    for frozen in result._frozen:
        from osrm_gui.core.merge.spec import MergeSpec as Spec

        scores = run_to_end(ws.score(Spec(**frozen.user_attrs["spec"]), "validation"))
        assert by_number[frozen.number].scores == {t: s["metric"] for t, s in scores.items()}
    # the driver alone wrote the history: one point per trial
    assert len([p for p in history.points() if p.split == "validation"]) == 8
    # both workers scored trials
    assert {w.done > 0 for w in _last_status(events).workers} == {True}


def test_a_comparison_trained_on_two_workers_is_the_one_trained_here(tiny_base_dir, tiny_tasks, tmp_path, monkeypatch):
    import torch

    from osrm_gui.core.execution import ray_executor

    opened = []

    class Counted(ray_executor.RayExecutor):
        def __init__(self, *args, **kwargs):
            opened.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ray_executor, "RayExecutor", Counted)

    from osrm_gui.core.explore.compare import compare
    from osrm_gui.core.inputs.adapters import load_adapter
    from osrm_gui.core.inputs.tasks import resolve_task
    from osrm_gui.core.osrm.training import TrainSettings

    tasks = [resolve_task(str(p)) for p in tiny_tasks.values()]
    settings = TrainSettings(rank=4, alpha=8, steps=3, batch_size=8, max_length=16, osrm_samples=20)
    families = ["peft-default", "osrm-cov"]
    with one_torch_thread():  # as each worker computes: the same sums in the same order
        here = run_to_end(compare(families, [0], tasks, tmp_path / "here", settings, "cpu", 10, tiny_base_dir))
    job = compare(families, [0], tasks, tmp_path / "ray", settings, "cpu", 10, tiny_base_dir, executor=TWO)
    there, events = drive(job)
    assert [(r.family, r.seed, r.single, r.task_arithmetic, r.ties) for r in there] == \
        [(r.family, r.seed, r.single, r.task_arithmetic, r.ties) for r in here]
    for a, b in zip(here, there):
        for p, q in zip(a.paths, b.paths):
            # the same tensors (the metadata differs: it records the training time)
            mine, theirs = load_adapter(p), load_adapter(q)
            assert all(torch.equal(mine.layers[n].delta(), theirs.layers[n].delta()) for n in mine.layers)
            assert all(torch.equal(mine.head[k], theirs.head[k]) for k in mine.head)
    # one set of workers trained every adapter and then evaluated every set
    assert len(opened) == 1 and sum(w.done for w in _last_status(events).workers) == len(families) * (len(tasks) + 1)


def test_osrm_sweep_and_search_with_the_ray_executor(capsys, tiny_base_dir, tiny_adapters, tmp_path):
    from tests.cli_support import run

    sweep = ["sweep", *tiny_adapters, "--base", tiny_base_dir, "--split", "validation", "--points", 3, "--no-history"]
    code, local, err = run(capsys, *sweep)
    assert code == 0, err
    code, remote, err = run(capsys, *sweep, "--executor", "ray", "--workers", 2, "--threads-per-worker", 1)
    assert code == 0, err
    assert "executor: Ray on a local Ray instance: 2 workers × 1 thread" in err
    # the same rows, in the order they finished
    assert sorted(remote.splitlines()) == sorted(local.splitlines())
    code, out, err = run(capsys, "search", *tiny_adapters, "--base", tiny_base_dir, "--chunk", 4, "--trials", 4,
                         "--history", tmp_path / "h.sqlite", "--storage", tmp_path / "s.sqlite", "--executor", "ray", "--workers", 2)
    assert code == 0, err
    assert "4 trials" in out and "best point (trial" in out


@pytest.mark.parametrize("options, message", [
    (["--workers", "2"], "--workers: only with --executor ray"),
    (["--executor", "ray", "--address", "ray://127.0.0.1:9"], "Ray cluster ray://127.0.0.1:9: cannot reach it"),
    (["--executor", "ray", "--workers", "0"], "argument --workers: 0 is less than 1"),
])
def test_bad_executor_options_are_one_line_before_any_model_loads(capsys, tiny_adapters, tmp_path, options, message):
    from tests.cli_support import one_error_line, run

    code, _, err = run(capsys, "sweep", *tiny_adapters, "--base", tmp_path / "no-such-base", *options)
    line = one_error_line(err)
    assert code == 2 and line.startswith("osrm") and message in line, line
