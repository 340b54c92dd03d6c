"""The Ray executor: each worker is a Ray actor that loads the base, the adapters and the task
data once, then runs many calls on them (no model reload per point). The driver hands calls
out (at most two per worker: one computing, one waiting, so a worker never idles while the
next call travels), takes outcomes as they finish, and is the only one that writes anything.

A worker that dies (its process killed, its node lost) takes its calls with it: the driver
starts a replacement (it loads the model again) and re-queues those calls, so the run ends
with the same outcomes. Closing the executor (a cancelled run) kills the workers, and with
them everything they were running or holding."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Generator

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.execution.executor import Call, Executor, Outcome, WorkerState, WorkerStatus, call_on
from osrm_gui.core.execution.recipe import WorkspaceRecipe
from osrm_gui.core.execution.settings import ExecutorSettings
from osrm_gui.core.progress import run_to_end

MAX_RESTARTS = 3  # per worker: a call that kills every worker it lands on is a bug, not bad luck
PER_WORKER = 2  # calls handed to a worker at once
POLL_S = 0.25  # how often the driver yields while waiting (a cancel lands within this)


def import_ray():
    try:
        import ray
    except ImportError:
        raise OsrmError("the ray executor needs Ray, which is not installed: pip install 'osrm-gui[ray]'") from None
    return ray


_joined: str | None = None  # the address this module joined Ray with ("" for a local instance); None: not joined by us


def connect(settings: ExecutorSettings) -> None:
    """Join (or, with no address, start) the Ray instance the settings name; once per process."""
    ray = import_ray()
    address = settings.address
    if address is not None and address.startswith("ray://"):
        _check_reachable(address)
    global _joined
    if ray.is_initialized():
        if _joined is None or _joined == (address or ""):
            return  # joined by the caller (a test, a notebook), or already the one asked for
        ray.shutdown()  # the app's setting moved to another cluster since the last run
    _joined = address or ""
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address is None:
        ray.init(**options)
        return
    try:
        # the workers of an existing cluster run another Python: the package travels with the job
        ray.init(address=address, runtime_env={"py_modules": [_package_dir()]}, **options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OsrmError(f"Ray cluster {address}: cannot connect ({first})") from None


def _check_reachable(address: str) -> None:
    """Ray Client retries an unreachable address for 30 s before it says so: ask the port first."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port or 10001)), timeout=5):
            pass
    except ValueError:
        raise OsrmError(f"Ray address {address}: expected ray://HOST:PORT") from None
    except OSError as exc:
        raise OsrmError(f"Ray cluster {address}: cannot reach it ({exc.strerror or exc})") from None


def _package_dir() -> str:
    import osrm_gui

    return os.path.dirname(osrm_gui.__file__)


class Worker:
    """A Ray actor's body (made remote at run time, so that importing this module needs no Ray)."""

    def __init__(self, recipe: WorkspaceRecipe | None, threads: int, device: str):
        import torch

        torch.set_num_threads(threads)
        self.failure = None
        self.ws = None
        try:
            self.ws = recipe.open(device) if recipe is not None else None
        except OsrmError as exc:
            self.failure = str(exc)  # said by every call: creating the actor itself must not fail, or Ray retries it

    def where(self) -> str:
        import ray

        return f"{ray.util.get_node_ip_address()} pid {os.getpid()}"

    def call(self, fn, args) -> tuple[str, object]:
        if self.failure is not None:
            return "fatal", self.failure
        try:
            return "ok", run_to_end(call_on(self.ws, fn, args))
        except OsrmError as exc:
            return "error", str(exc)


@dataclass
class _Slot:
    index: int
    actor: object
    where: str = "starting"
    where_ref: object = None
    done: int = 0
    restarts: int = 0
    alive: bool = True
    running: list = field(default_factory=list)  # the Calls handed to it, oldest first


class RayExecutor(Executor):
    def __init__(self, settings: ExecutorSettings, recipe: WorkspaceRecipe | None):
        self.ray = import_ray()
        connect(settings)
        self.settings = settings
        self.slots = settings.workers
        self._recipe = self.ray.put(recipe)
        self._remote = self.ray.remote(num_cpus=settings.threads, num_gpus=settings.gpus_per_worker, max_restarts=0)(Worker)
        self._device = "cuda" if settings.gpus_per_worker > 0 else "cpu"
        self._workers = [self._start(i) for i in range(settings.workers)]
        self._queue: deque[Call] = deque()
        self._refs: dict = {}  # object ref -> (Call, worker index)
        self._taken = 0
        self._submitted = 0

    def _start(self, index: int, restarts: int = 0) -> _Slot:
        actor = self._remote.remote(self._recipe, self.settings.threads, self._device)
        return _Slot(index, actor, where_ref=actor.where.remote(), restarts=restarts)

    def submit(self, call: Call) -> None:
        self._queue.append(call)
        self._submitted += 1

    @property
    def pending(self) -> int:
        return self._submitted - self._taken

    def status(self, message: str = "") -> WorkerStatus:
        return WorkerStatus(tuple(WorkerState(w.index, w.where, w.done, w.running[0].label if w.running else "", w.restarts, w.alive)
                                  for w in self._workers), message)

    def _dispatch(self) -> None:
        alive = [w for w in self._workers if w.alive]
        if not alive:
            raise OsrmError("every Ray worker died; see the Ray logs of the cluster for why")
        for call in list(self._queue):
            pinned = self._workers[call.worker % len(self._workers)] if call.worker is not None else None
            # a call for a worker gone for good (or for none) goes to the least busy one alive
            target = pinned if pinned is not None and pinned.alive else min(alive, key=lambda w: len(w.running))
            if len(target.running) >= PER_WORKER:
                continue
            self._queue.remove(call)
            target.running.append(call)
            self._refs[target.actor.call.remote(call.fn, call.args)] = (call, target.index)

    def next_outcome(self) -> Generator[WorkerStatus, None, Outcome]:
        ray = self.ray
        if not self.pending:
            raise RuntimeError("an outcome was asked for, and no call is pending")
        while True:
            self._dispatch()
            self._learn_where()
            ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=POLL_S)
            if not ready:
                yield self.status()
                continue
            ref = ready[0]
            call, index = self._refs.pop(ref)
            slot = self._workers[index]
            try:
                state, value = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                yield self._replace(slot, exc)
                continue
            slot.running.remove(call)
            if state == "fatal":
                raise OsrmError(f"Ray worker {index + 1} ({slot.where}): {value}")
            slot.done += 1
            self._taken += 1
            yield self.status()
            return Outcome(call.key, value if state == "ok" else None, value if state == "error" else None, index)

    def _learn_where(self) -> None:
        for slot in self._workers:
            if slot.where_ref is not None:
                ready, _ = self.ray.wait([slot.where_ref], timeout=0)
                if ready:
                    try:
                        slot.where = self.ray.get(slot.where_ref)
                    except self.ray.exceptions.RayActorError:
                        pass  # it died loading: its first call says so
                    slot.where_ref = None

    def _replace(self, slot: _Slot, exc: Exception) -> WorkerStatus:
        """``slot``'s actor is dead: its calls go back to the front of the queue, in order, and a
        new actor takes its place unless this one has died too often."""
        lost = slot.running
        for ref, (call, index) in list(self._refs.items()):
            if index == slot.index:
                del self._refs[ref]
        self._queue.extendleft(reversed(lost))
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        self._kill(slot.actor)
        if slot.restarts < MAX_RESTARTS:
            self._workers[slot.index] = self._start(slot.index, slot.restarts + 1)
            self._workers[slot.index].done = slot.done
            action = "started again"
        else:
            self._workers[slot.index] = replace(slot, alive=False, running=[])
            action = f"given up after {MAX_RESTARTS} restarts"
        return self.status(f"worker {slot.index + 1} ({slot.where}) died ({why}); {len(lost)} call(s) re-queued, worker {action}")

    def _kill(self, actor) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # already gone, or the cluster is: nothing left to stop
            pass

    def close(self) -> None:
        for slot in self._workers:
            self._kill(slot.actor)
        self._queue.clear()
        self._refs.clear()
        self._workers = [replace(w, alive=False, running=[]) for w in self._workers]


def wait_for_workers(executor: RayExecutor, timeout_s: float = 600) -> Generator[WorkerStatus, None, None]:
    """Until every worker says where it runs (it has loaded what it needs), for benchmarks that
    time the calls apart from the start-up."""
    started = time.monotonic()
    while any(w.where_ref is not None for w in executor._workers):
        if time.monotonic() - started > timeout_s:
            raise OsrmError(f"Ray workers still loading after {timeout_s:.0f} s")
        executor._learn_where()
        yield executor.status()
        time.sleep(POLL_S)
