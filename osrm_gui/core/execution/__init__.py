"""Where the work of a sweep, a search or a set of training runs is done: in this process, or
on the workers of a Ray cluster (:mod:`.ray_executor`)."""

from __future__ import annotations

from osrm_gui.core.execution.executor import Call, Executor, Finished, LocalExecutor, Outcome, WorkerStatus, run_all
from osrm_gui.core.execution.settings import LOCAL, ExecutorSettings
from osrm_gui.core.workspace import Workspace

__all__ = ["Call", "Executor", "ExecutorSettings", "Finished", "LOCAL", "LocalExecutor", "Outcome", "WorkerStatus", "open_executor", "run_all"]


def open_executor(settings: ExecutorSettings | None, ws: Workspace | None) -> Executor:
    """The executor ``settings`` name, its workers holding ``ws`` (None: workers that need no
    workspace, e.g. for training runs)."""
    if settings is None or not settings.remote:
        return LocalExecutor(ws)
    from osrm_gui.core.execution.ray_executor import RayExecutor
    from osrm_gui.core.execution.recipe import WorkspaceRecipe

    return RayExecutor(settings, WorkspaceRecipe.of(ws) if ws is not None else None)
