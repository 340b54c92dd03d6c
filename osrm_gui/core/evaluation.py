"""Per-task evaluation of the base model's current (possibly merged) backbone,
each task through its own head: batched, length-sorted, dynamically padded.

A caller that keeps an :class:`EvaluationCache` also gets each task's per-example labels and
predictions, from which the preview draws its confidence intervals and paired tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator

import numpy as np
import torch
from torch import nn

from osrm_gui.core.metrics import compute_metrics, predictions_from_logits
from osrm_gui.core.inputs.models import BaseModel
from osrm_gui.core.progress import Progress
from osrm_gui.core.inputs.tasks import Task, TaskSplit


@dataclass(frozen=True, eq=False)
class Outcomes:
    """One task's labels and predictions per example, in the split's order, compactly typed
    (a hundred examples take a few hundred bytes)."""

    labels: np.ndarray
    predictions: np.ndarray

    @classmethod
    def of(cls, labels, predictions, regression: bool) -> "Outcomes":
        kind = np.float32 if regression else _class_type(labels, predictions)
        return cls(np.asarray(labels).astype(kind, copy=False), np.asarray(predictions).astype(kind, copy=False))

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> "Outcomes":
        return self if n >= len(self) else Outcomes(self.labels[:n], self.predictions[:n])

    def then(self, later: "Outcomes") -> "Outcomes":
        """These examples followed by ``later``'s."""
        return Outcomes(np.concatenate([self.labels, later.labels]), np.concatenate([self.predictions, later.predictions]))


def _class_type(labels, predictions):
    largest = max(int(np.max(labels, initial=0)), int(np.max(predictions, initial=0)))
    return np.int16 if largest < 2**15 else np.int64


class EvaluationCache(dict):
    """What a caller keeps across evaluations: the tokenised splits (the dict itself) and, in
    ``outcomes``, each task's per-example outcomes from its latest evaluation. With ``metrics``
    false, evaluations through it return only each task's ``n``: the caller scores the outcomes
    itself (a preview scores parts of a split and their union, and needs no metric of each part)."""

    def __init__(self, *args, metrics: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, Outcomes] = {}
        self.metrics = metrics


@dataclass
class EncodedSplit:
    """Token ids of one split, ordered by length so batches pad little."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    order: np.ndarray  # position in the split of each encoded row
    labels: np.ndarray


def encode_split(tokenizer, split: TaskSplit, max_length: int) -> EncodedSplit:
    encoded = tokenizer(split.texts, split.pairs, truncation=True, max_length=max_length)
    lengths = np.array([len(ids) for ids in encoded["input_ids"]])
    order = np.argsort(-lengths, kind="stable")
    ids = [encoded["input_ids"][i] for i in order]
    types = [encoded["token_type_ids"][i] for i in order] if "token_type_ids" in encoded else None
    return EncodedSplit(ids, types, order, split.labels[order])


def iter_batches(encoded: EncodedSplit, batch_size: int, pad_id: int, device: torch.device):
    """Padded ``(start, inputs)`` batches in the encoded (length-sorted) order."""
    for start in range(0, len(encoded.input_ids), batch_size):
        rows = encoded.input_ids[start : start + batch_size]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if encoded.token_type_ids is not None:
            types = torch.zeros_like(ids)
            for i, row in enumerate(encoded.token_type_ids[start : start + batch_size]):
                types[i, : len(row)] = torch.tensor(row)
            inputs["token_type_ids"] = types.to(device)
        yield start, inputs


def predict_logits(base: BaseModel, encoded: EncodedSplit, batch_size: int, stage: str) -> Generator[Progress, None, np.ndarray]:
    """Logits for every encoded row, in the split's original order."""
    n = len(encoded.input_ids)
    outputs: list[np.ndarray] = []
    pad_id = base.tokenizer.pad_token_id or 0
    if base.tokenizer.padding_side == "left":
        # Sequence classification on decoders pools the last non-pad token, found from pad ids:
        # right padding keeps that rule valid, so always pad right here.
        base.tokenizer.padding_side = "right"
    with torch.inference_mode():
        for start, inputs in iter_batches(encoded, batch_size, pad_id, base.device):
            logits = base.model(**inputs).logits
            outputs.append(logits.float().cpu().numpy())
            yield Progress(stage, min(start + batch_size, n), n)
    logits = np.concatenate(outputs) if outputs else np.zeros((0, 1), np.float32)
    restored = np.empty_like(logits)
    restored[encoded.order] = logits
    return restored


def evaluate_tasks(
    base: BaseModel,
    heads: dict[str, nn.Module],
    tasks: list[Task],
    split: str = "test",
    batch_size: int = 64,
    max_length: int = 128,
    limit: int | None = None,
    cache: dict | None = None,
) -> Generator[Progress, None, dict[str, dict[str, float]]]:
    """Metrics per task for the backbone as it is now; ``heads`` maps task name → head.

    ``cache`` (a dict the caller keeps) saves re-tokenising across calls; an
    :class:`EvaluationCache` also keeps each task's per-example outcomes.
    """
    results: dict[str, dict[str, float]] = {}
    try:
        for task in tasks:
            data = task.split(split).head(limit)
            key = (task.name, split, limit, max_length)
            encoded = cache.get(key) if cache is not None else None
            if encoded is None:
                encoded = encode_split(base.tokenizer, data, max_length)
                if cache is not None:
                    cache[key] = encoded
            base.set_head(heads[task.name])
            logits = yield from predict_logits(base, encoded, batch_size, f"eval:{task.name}")
            predictions = predictions_from_logits(logits, task.is_regression)
            if isinstance(cache, EvaluationCache):
                cache.outcomes[task.name] = Outcomes.of(data.labels, predictions, task.is_regression)
                if not cache.metrics:
                    results[task.name] = {"n": len(data)}
                    continue
            scores = compute_metrics(data.labels, predictions, task.is_regression)
            results[task.name] = {"metric": scores[task.metric], **scores, "n": len(data)}
    finally:
        base.set_head(None)
    return results
