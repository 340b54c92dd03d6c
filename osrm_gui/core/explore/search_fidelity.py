"""Multi-fidelity scoring for the merge search: each task's validation split cut into disjoint
chunks in a fixed seeded order, a merge installed on the base once per trial, and running
per-task metrics after every chunk (so a pruner can stop a poor trial early).

After the last chunk the metrics are those of the whole split: every example scored once,
through the same heads, batch size and truncation as :meth:`Workspace.evaluate`.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Generator

import numpy as np

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.evaluation import EncodedSplit, encode_split, predict_logits
from osrm_gui.core.explore.search_space import LayerGroups, SearchPoint
from osrm_gui.core.inputs.tasks import Task, TaskSplit
from osrm_gui.core.merge import get_method
from osrm_gui.core.metrics import METRICS, predictions_from_logits
from osrm_gui.core.progress import Progress, run_to_end
from osrm_gui.core.workspace import Workspace


def subset(split: TaskSplit, rows: np.ndarray) -> TaskSplit:
    return TaskSplit([split.texts[i] for i in rows], split.labels[rows], [split.pairs[i] for i in rows] if split.pairs else None)


class ValidationChunks:
    """Task ``t``'s chunk ``k``: rows ``k·size … (k+1)·size`` of a permutation of its split drawn
    with ``(seed, t)``; a task with fewer examples than others has empty chunks at the end."""

    def __init__(self, ws: Workspace, size: int, seed: int, split: str = "validation"):
        if size < 1:
            raise OsrmError(f"chunk size {size}: expected 1 or more examples per task")
        self.ws, self.size, self.seed, self.split = ws, size, seed, split
        self.order = {t.name: np.random.default_rng([seed, i]).permutation(len(t.split(split))) for i, t in enumerate(ws.tasks)}
        sizes = [len(order) for order in self.order.values()]
        if not sizes or min(sizes) == 0:
            empty = [t.name for t in ws.tasks if len(self.order[t.name]) == 0]
            raise OsrmError(f"task {', '.join(empty) or '(none)'} has no {split} examples to search on")
        self.count = max(math.ceil(n / size) for n in sizes)
        self._hashes = {t.name: t.content_hash() for t in ws.tasks}  # hashing every text per chunk would cost more than scoring it

    def rows(self, task: Task, k: int) -> np.ndarray:
        return self.order[task.name][k * self.size : (k + 1) * self.size]

    def examples(self, k: int) -> int:
        """Examples chunk ``k`` holds over all tasks (forward passes to score it)."""
        return sum(len(self.rows(t, k)) for t in self.ws.tasks)

    def seen(self, task: Task, chunks: int) -> int:
        return min(chunks * self.size, len(self.order[task.name]))

    def encoded(self, task: Task, k: int) -> EncodedSplit:
        """Tokenised once, kept in the workspace's encoding cache (keys no plain evaluation uses)."""
        key = ("search-chunk", task.name, self._hashes[task.name], self.split, self.seed, self.size, k, self.ws.max_length)
        if key not in self.ws.encoding_cache:
            data = subset(task.split(self.split), self.rows(task, k))
            self.ws.encoding_cache[key] = encode_split(self.ws.base.tokenizer, data, self.ws.max_length)
        return self.ws.encoding_cache[key]


class RunningScores:
    """Per task, the predictions so far, and its metric over all of them (exact for every metric,
    not a mean of per-chunk metrics, so MCC and F1 come out as on the whole split). Only the
    task's own metric is computed: scikit-learn's take milliseconds each, after every chunk."""

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks
        self.predictions: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
        self.labels: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}

    def add(self, task: Task, predictions: np.ndarray, labels: np.ndarray) -> None:
        self.predictions[task.name].append(predictions)
        self.labels[task.name].append(labels)

    def metrics(self) -> dict[str, dict[str, float]]:
        out = {}
        for task in self.tasks:
            labels = np.concatenate(self.labels[task.name])
            with warnings.catch_warnings():  # a first small chunk may hold one class only: the metric is still defined
                warnings.simplefilter("ignore", UserWarning)
                value = METRICS[task.metric][0](labels, np.concatenate(self.predictions[task.name]))
            out[task.name] = {"metric": float(value), "n": len(labels)}
        return out


class InstalledMerge:
    """A merge living on the base for a while: LoRA-sum hooks (weighted-sum methods, per layer
    group when the point has groups) or dense deltas, per task for methods that give each task
    its own update (EMR). Enter it, call :meth:`for_task` before each task's batches."""

    def __init__(self, ws: Workspace, lora_sum=None, merged=None):
        self.ws, self.lora_sum, self.merged = ws, lora_sum, merged
        self._hooks = None

    def __enter__(self):
        if self.lora_sum is not None:
            self._hooks = self.lora_sum.installed()
            self._hooks.__enter__()
        elif not self.merged.per_task:
            self.ws.base.set_deltas(self.merged.dense_deltas())
        return self

    def for_task(self, task: Task) -> None:
        if self.merged is not None and self.merged.per_task:
            index = next(i for i, a in enumerate(self.ws.adapters) if a is self.ws.pairs[task.name])
            self.ws.base.set_deltas(self.merged.dense_deltas(index))

    def __exit__(self, *exc):
        if self._hooks is not None:
            self._hooks.__exit__(*exc)
            self._hooks = None
        else:
            self.ws.base.clear_deltas()
        self.ws.base.set_head(None)
        return False


def install(ws: Workspace, point: SearchPoint, groups: LayerGroups, merges: dict | None = None) -> InstalledMerge:
    """Prepare ``point``'s merge (for layer-by-layer methods, merge it: its progress is not passed
    on, as a merge takes a fraction of a trial's evaluation). ``merges``: a one-entry cache of
    the last layer-by-layer merge, for a trial scored one chunk per call."""
    spec = point.spec
    method = get_method(spec.method)
    if method.adapter_weights is None:
        key = json.dumps(spec.to_dict(), sort_keys=True, default=str)
        merged = merges.get(key) if merges is not None else None
        if merged is None:
            merged = run_to_end(ws.merge(spec))
            if merges is not None:
                merges.clear()
                merges[key] = merged
        return InstalledMerge(ws, merged=merged)
    lora_sum = ws.lora_sum()
    try:
        if point.group_coefficients is not None:
            lora_sum.set_layer_weights(point.layer_weights(groups))
        else:
            lora_sum.set_weights(method.adapter_weights(tuple(spec.coefficients), spec.lam, spec.params))
    except ValueError as exc:
        raise OsrmError(str(exc)) from None
    return InstalledMerge(ws, lora_sum=lora_sum)


def score_chunk(ws: Workspace, chunks: ValidationChunks, k: int, merge: InstalledMerge, running: RunningScores) -> int:
    """Score chunk ``k`` of every task under the installed merge; the examples scored."""
    examples = 0
    for task in ws.tasks:
        rows = chunks.rows(task, k)
        if len(rows) == 0:
            continue
        encoded = chunks.encoded(task, k)
        merge.for_task(task)
        ws.base.set_head(ws.heads[task.name])
        logits = run_to_end(predict_logits(ws.base, encoded, ws.batch_size, ""))
        running.add(task, predictions_from_logits(logits, task.is_regression), task.split(chunks.split).labels[rows])
        examples += len(rows)
    return examples


def score_split(ws: Workspace, point: SearchPoint, groups: LayerGroups, split: str) -> Generator[Progress, None, dict]:
    """Metrics per task of ``point`` on a whole split (the report on test), as ``Workspace.score``
    gives them; with layer groups through the LoRA-sum hooks at per-layer weights."""
    if point.group_coefficients is None:
        return (yield from ws.score(point.spec, split))
    with install(ws, point, groups):
        return (yield from ws.evaluate(None, split))


def chunks_of(ws: Workspace, size: int, seed: int, split: str = "validation") -> ValidationChunks:
    """The workspace's chunking (made once: it hashes every task), which also keeps the last merge."""
    key = ("search-chunks", size, seed, split)
    if key not in ws.encoding_cache:
        chunks = ValidationChunks(ws, size, seed, split)
        chunks.merges = {}
        ws.encoding_cache[key] = chunks
    return ws.encoding_cache[key]


def score_trial_chunk(ws: Workspace, point: SearchPoint, groups: LayerGroups, size: int, seed: int, k: int
                      ) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], int]:
    """An executor's call: chunk ``k`` of every task under ``point``'s merge, as (task, predictions,
    labels) for the driver's running scores, and the examples scored."""
    chunks = chunks_of(ws, size, seed)
    running = RunningScores(ws.tasks)
    with install(ws, point, groups, chunks.merges) as merge:
        examples = score_chunk(ws, chunks, k, merge, running)
    return [(t.name, np.concatenate(running.predictions[t.name]), np.concatenate(running.labels[t.name]))
            for t in ws.tasks if running.predictions[t.name]], examples


def reference_scores(ws: Workspace) -> Generator[Progress, None, dict]:
    """An executor's call: each adapter alone on its task's validation split."""
    return (yield from ws.evaluate_single("validation"))
