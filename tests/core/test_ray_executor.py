"""The Ray executor on a real local Ray instance (2 CPUs, no dashboard): sweeps and searches
score exactly what the local executor scores, a worker killed midway has its calls re-queued,
cancelling kills the workers, and a cluster that cannot be reached is a one-line error."""

import os
from pathlib import Path

import pytest

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.execution import Call, ExecutorSettings, WorkerStatus, open_executor, run_all
from osrm_gui.core.execution.executor import Finished
from osrm_gui.core.explore.sweep import Axis, SweepPoint, run_sweep, score_spec
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import Run
from osrm_gui.core.workspace import open_workspace

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


def _drive(job):
    run = Run(job)
    events = list(run)
    return run.result, events


def test_a_sweep_on_two_workers_scores_what_the_local_sweep_scores(ws):
    spec = MergeSpec("ties", None, 1.0, {"density": 0.5})
    axes = [Axis("lambda", (0.0, 0.5, 1.0)), Axis(ws.adapters[0].name, (0.5, 1.0))]
    local, _ = _drive(run_sweep(ws, spec, axes, "validation", methods=["ties", "task_arithmetic"]))
    remote, events = _drive(run_sweep(ws, spec, axes, "validation", methods=["ties", "task_arithmetic"], executor=TWO))
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
    from osrm_gui.core.progress import run_to_end

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
