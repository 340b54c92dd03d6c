"""Executors run calls ``fn(workspace, *args)`` for a driver loop (a sweep, a search, a set of
training runs) and hand back their outcomes as they finish. The driver stays the only one that
decides (which point next, whether to prune) and the only writer of the run history and the
Optuna storage; the workers only compute.

``fn`` must be a module-level function (a worker imports it by name) returning plain values
(numbers, dicts, numpy arrays), or a job generator whose result is one. An :class:`OsrmError`
it raises comes back as the outcome's ``error``; anything else is a bug and is raised."""

from __future__ import annotations

import inspect
from collections import deque
from dataclasses import dataclass
from typing import Callable, Generator, Hashable

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.progress import Progress
from osrm_gui.core.workspace import Workspace


@dataclass(frozen=True)
class Call:
    key: Hashable  # the driver's name for it
    fn: Callable
    args: tuple
    label: str = ""  # what the worker is busy with, for progress displays
    worker: int | None = None  # run on this worker (it keeps state from earlier calls), or on any


@dataclass(frozen=True)
class Outcome:
    key: Hashable
    value: object = None
    error: str | None = None  # the OsrmError the call raised
    worker: int = 0


@dataclass(frozen=True)
class WorkerState:
    index: int
    where: str  # "this process", or "NODE-IP pid N"
    done: int  # calls finished
    busy: str  # the label of the call it runs ("" when idle or loading)
    restarts: int  # times it died and was started again
    alive: bool = True


@dataclass(frozen=True)
class WorkerStatus:
    """An event: each worker's state, and what just happened to them (a death, a re-queue)."""

    workers: tuple[WorkerState, ...]
    message: str = ""

    def summary(self) -> str:
        parts = [f"w{w.index + 1}: {w.done} done" + (f", {w.busy}" if w.busy else "") + ("" if w.alive else " (dead)") for w in self.workers]
        return " · ".join(parts)


class Executor:
    """Submit calls, then take outcomes one at a time with ``yield from next_outcome()``."""

    slots = 1  # calls that compute at once

    def submit(self, call: Call) -> None:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        """Calls submitted whose outcome has not been taken."""
        raise NotImplementedError

    def next_outcome(self) -> Generator[Progress | WorkerStatus, None, Outcome]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop every call still running or waiting (a cancelled driver calls this)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def call_on(ws: Workspace | None, fn: Callable, args: tuple) -> Generator[Progress, None, object]:
    """Run one call, passing on the progress of a job generator."""
    value = fn(ws, *args)
    if inspect.isgenerator(value):
        value = yield from value
    return value


class LocalExecutor(Executor):
    """Calls run in this process, one at a time, in the order submitted: the sweeps and searches
    of a single process, their progress passed through as before."""

    def __init__(self, ws: Workspace | None):
        self.ws = ws
        self._queue: deque[Call] = deque()

    def submit(self, call: Call) -> None:
        self._queue.append(call)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def next_outcome(self) -> Generator[Progress, None, Outcome]:
        call = self._queue.popleft()
        try:
            value = yield from call_on(self.ws, call.fn, call.args)
        except OsrmError as exc:
            return Outcome(call.key, error=str(exc))
        return Outcome(call.key, value)

    def close(self) -> None:
        self._queue.clear()


@dataclass(frozen=True)
class Finished:
    """An event of :func:`run_all`: item ``index`` is done."""

    index: int
    value: object


def run_all(executor: Executor, fn: Callable, items: list[tuple], labels: list[str] | None = None,
            ahead: int = 2) -> Generator[Progress | WorkerStatus | Finished, None, None]:
    """Every item's call ``fn(ws, *item)``, at most ``ahead`` × slots submitted at a time (so a
    cancelled run leaves little queued), each yielded as :class:`Finished` when it is done, in
    the order they finish. The first call that fails with an OsrmError stops the run with it."""
    waiting = deque(range(len(items)))
    limit = max(1, ahead * executor.slots)
    while waiting or executor.pending:
        while waiting and executor.pending < limit:
            index = waiting.popleft()
            executor.submit(Call(index, fn, tuple(items[index]), labels[index] if labels else ""))
        outcome = yield from executor.next_outcome()
        if outcome.error is not None:
            raise OsrmError(outcome.error)
        yield Finished(outcome.key, outcome.value)
