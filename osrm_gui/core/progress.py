"""Plain events that long-running core generators yield (never tensors or widgets)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    stage: str  # e.g. "merge", "eval:topic", "train"
    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


class Run:
    """Iterate a job generator's events; its return value lands in ``result``."""

    def __init__(self, generator):
        self._generator = generator
        self.result = None

    def __iter__(self):
        self.result = yield from self._generator


def run_to_end(generator):
    """Drain a job generator and return its result (for callers that do not show progress)."""
    run = Run(generator)
    for _ in run:
        pass
    return run.result
