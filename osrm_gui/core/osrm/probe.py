"""The head-only baseline: the best linear head on the frozen base's features
(logistic regression, its regularisation picked on the validation split). This
is the floor an adapter has to beat to be worth merging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator

import numpy as np
import torch
from torch import nn

from osrm_gui.core.evaluation import encode_split, iter_batches
from osrm_gui.core.metrics import compute_metrics
from osrm_gui.core.inputs.models import BaseModel
from osrm_gui.core.progress import Progress
from osrm_gui.core.inputs.tasks import Task

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class ProbeResult:
    head_state: dict[str, torch.Tensor]  # for the head's last linear layer (BERT: the whole head)
    C: float
    validation: float
    test: float


def head_features(base: BaseModel, task: Task, split: str, batch_size: int = 64, max_length: int = 128) -> Generator[Progress, None, np.ndarray]:
    """What the head's last linear layer sees, one row per example, in split order."""
    head = base.model.get_submodule(base.head_name)
    last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[np.ndarray] = []
    hook = last.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].float().cpu().numpy()))
    encoded = encode_split(base.tokenizer, task.split(split), max_length)
    n = len(encoded.input_ids)
    try:
        with torch.inference_mode():
            for start, inputs in iter_batches(encoded, batch_size, base.tokenizer.pad_token_id or 0, base.device):
                base.model(**inputs)
                yield Progress(f"features:{split}", min(start + batch_size, n), n)
    finally:
        hook.remove()
    features = np.concatenate(captured)
    restored = np.empty_like(features)
    restored[encoded.order] = features
    return restored


def fit_linear_probe(base: BaseModel, task: Task, max_length: int = 128) -> Generator[Progress, None, ProbeResult]:
    from sklearn.linear_model import LogisticRegression

    base.clear_deltas()
    features = {}
    for split in ("train", "validation", "test"):
        features[split] = yield from head_features(base, task, split, max_length=max_length)
    labels = {s: task.split(s).labels for s in features}
    best = None
    for C in C_GRID:
        model = LogisticRegression(C=C, max_iter=2000).fit(features["train"], labels["train"])
        score = compute_metrics(labels["validation"], model.predict(features["validation"]), False)[task.metric]
        if best is None or score > best[0]:
            best = (score, C, model)
    score, C, model = best
    test = compute_metrics(labels["test"], model.predict(features["test"]), False)[task.metric]
    weight, bias = model.coef_, model.intercept_
    if weight.shape[0] == 1:  # binary: sklearn keeps one row; logits (0, w·x+b) give the same decision
        weight = np.vstack([np.zeros_like(weight), weight])
        bias = np.array([0.0, bias[0]])
    head_state = {"weight": torch.tensor(weight, dtype=torch.float32), "bias": torch.tensor(bias, dtype=torch.float32)}
    return ProbeResult(head_state, C, float(score), float(test))
