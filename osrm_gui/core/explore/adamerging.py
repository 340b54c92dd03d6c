"""AdaMerging (Yang et al., ICLR 2024): learn the merge coefficients λ by minimising the
entropy of each task's predictions on unlabelled inputs.

λ is trained with Adam on L = Σ_tasks mean_x H(softmax(h_t(f_λ(x)))), each task's inputs through
its own head, over a pool of *inputs only* (a split's texts; its labels are never read), by
default the validation split, never the test split. Task-wise learns one λ per adapter,
layer-wise one per adapter and adapted module; AdaMerging++ learns them over task vectors first
trimmed as TIES does, each separately (see :mod:`osrm_gui.core.merge.learnable_lora`).

Each step draws one seeded, shuffled batch per task (fusion_bench's schedule), sums the tasks'
mean entropies and takes one Adam step (lr 1e-3, betas 0.9/0.999, no weight decay). With
``clamp`` (the default) λ is projected back into [0, 1] after every step; the original clamps
inside the forward pass instead, whose gradient is zero outside the range, so a coefficient that
leaves it stops learning there. Entropy is computed from log-softmax (the original AdaMerging's
``softmax_entropy``; fusion_bench adds 1e-8 inside the log instead).

The result exports exactly: task-wise and layer-wise as a concat LoRA (B = [λ_1 s_1 B_1 | …],
A = [A_1; …], per layer), ++ as dense updates. Only a plain task-wise result is a registered
merge (``concat`` with the learned coefficients), so only it can be written as a recipe; the
others record method ``adamerging`` with their coefficients in the spec's params, which no
replay understands, and :func:`export_result` refuses their recipe in one line.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from osrm_gui.core.atomic import refuse_existing
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.evaluation import EncodedSplit, encode_split, iter_batches
from osrm_gui.core.export import (
    EXPORT_KINDS,
    build_recipe,
    export_full_models,
    export_peft_adapters,
    export_units,
    write_recipe,
)
from osrm_gui.core.inputs.tasks import TaskSplit
from osrm_gui.core.merge.learnable_lora import LearnableLoraMerge, trim_task_vectors
from osrm_gui.core.merge.spec import MergedState, MergeSpec, finite_number
from osrm_gui.core.progress import Progress
from osrm_gui.core.workspace import Workspace

MODES = ("task", "layer")
POOL_SPLITS = ("validation", "train")
STAGE = "adamerging"


@dataclass(frozen=True)
class AdaMergingStep(Progress):
    """One optimisation step, as plain numbers (a Progress, so a progress bar shows it as is).

    ``done`` is the step (1-based); ``entropy`` the step's loss, Σ over tasks of the batch's mean
    prediction entropy, at the coefficients before the update; ``task_entropy`` each task's part
    (in the workspace's task order); ``coefficients`` λ after the update, adapters × layers as in
    :attr:`AdaMergingResult.coefficients`; ``validation`` the average labelled validation metric
    after the update, every ``eval_every`` steps and at the last (display only: it never feeds
    back into λ), else None."""

    entropy: float = math.nan
    task_entropy: tuple[float, ...] = ()
    coefficients: tuple[tuple[float, ...], ...] = ()
    validation: float | None = None

    @property
    def step(self) -> int:
        return self.done


@dataclass
class AdaMergingResult:
    mode: str  # "task" or "layer"
    plus: bool  # AdaMerging++ (trimmed task vectors)
    tasks: list[str]  # row labels: the task each adapter serves, in adapter order
    adapters: list[str]
    layers: list[str]  # column labels: the adapted modules, sorted
    # λ as adapters × layers. Task-wise repeats each adapter's one λ across the layers; NaN
    # where an adapter does not adapt a layer (its λ there has no effect).
    coefficients: np.ndarray
    history: list[AdaMergingStep]
    merged: MergedState  # evaluate with ws.evaluate(result.merged, …), export with export_result
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"AdaMerging{'++' if self.plus else ''} ({self.mode}-wise)"

    @property
    def replayable(self) -> bool:
        """Whether a recipe can replay it: only a plain task-wise result is a registered merge."""
        return self.mode == "task" and not self.plus

    def task_coefficients(self) -> np.ndarray:
        """One number per adapter: task-wise its λ, layer-wise the mean over the layers it adapts."""
        return np.nanmean(self.coefficients, axis=1)

    def grouped(self) -> tuple[list[str], np.ndarray]:
        """λ averaged per transformer block (the first number in a layer's name; names without one
        stay their own group): group names and an adapters × groups table. Task-wise: one group."""
        if self.mode == "task":
            return ["all layers"], self.task_coefficients()[:, None]
        groups: dict[str, list[int]] = {}
        for column, name in enumerate(self.layers):
            found = re.search(r"\.(\d+)\.", f".{name}.")
            groups.setdefault(f"block {found.group(1)}" if found else name, []).append(column)
        with np.errstate(all="ignore"):
            table = np.stack([np.nanmean(self.coefficients[:, columns], axis=1) for columns in groups.values()], axis=1)
        return list(groups), table

    def to_dict(self) -> dict:
        """Plain JSON-able data (NaN written as null)."""
        return {
            "method": self.label, "mode": self.mode, "plus": self.plus, "tasks": self.tasks, "adapters": self.adapters,
            "layers": self.layers, "coefficients": _plain(self.coefficients), "settings": self.settings,
            "seconds": round(self.seconds, 3), "spec": self.merged.spec.to_dict(),
            "history": [{"step": e.step, "entropy": e.entropy, "task_entropy": list(e.task_entropy), "validation": e.validation}
                        for e in self.history],
        }


def _plain(table: np.ndarray) -> list[list[float | None]]:
    return [[None if not math.isfinite(v) else float(v) for v in row] for row in np.asarray(table, dtype=float)]


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """mean over the batch of H(softmax(logits)) = −Σ_c p_c log p_c, in float32."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1).mean()


def adamerge(
    ws: Workspace, mode: str = "task", plus: bool = False, steps: int = 500, lr: float = 1e-3, init: float = 0.3,
    batch_size: int = 16, clamp: bool = True, pool: str = "validation", eval_every: int = 0, seed: int = 0,
    limit: int | None = None, density: float = 0.2,
) -> Generator[Progress, None, AdaMergingResult]:
    """The AdaMerging job on ``ws``'s adapters and tasks (every adapter must serve a task).

    ``pool``: the split whose inputs (not labels) λ learns from, validation or train; ``limit``:
    only its first N examples per task (and the display validation's); ``batch_size``: inputs per
    task per step; ``eval_every``: score the labelled validation split every that many steps for
    display (0: never); ``density``: the fraction AdaMerging++ keeps of each task vector.
    Bad settings raise OsrmError at the call; the generator yields Progress (the validation
    scoring's) and :class:`AdaMergingStep` events, and is cancelled by closing it between yields.
    """
    if mode not in MODES:
        raise OsrmError(f"AdaMerging mode {mode!r}: choose task or layer")
    if pool == "test":
        raise OsrmError("AdaMerging pool 'test': λ would be tuned on the inputs it is reported on; use validation or train")
    if pool not in POOL_SPLITS:
        raise OsrmError(f"AdaMerging pool {pool!r}: choose validation or train")
    for name, value, low in (("steps", steps, 0), ("batch size", batch_size, 1), ("eval every", eval_every, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise OsrmError(f"AdaMerging {name} {value!r}: expected a whole number ≥ {low}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise OsrmError(f"AdaMerging limit {limit!r}: expected a whole number ≥ 1")
    if finite_number(lr, "AdaMerging learning rate") <= 0:
        raise OsrmError(f"AdaMerging learning rate {lr!r}: expected a number > 0")
    init = finite_number(init, "AdaMerging initial λ")
    if not 0 < finite_number(density, "AdaMerging++ density") <= 1:
        raise OsrmError(f"AdaMerging++ density {density!r}: expected a number in (0, 1]")
    if not ws.adapters:
        raise OsrmError("AdaMerging: no adapters to merge")
    for task in ws.tasks:
        if task.is_regression:
            raise OsrmError(f"task {task.name!r} is a regression: AdaMerging minimises prediction entropy, which needs a softmax "
                            "(classification) head")
        if not task.split(pool).texts:  # a missing split is one line now, not after the set-up
            raise OsrmError(f"task {task.name!r}: its {pool} split is empty, so AdaMerging has no inputs to learn from")
    served = {id(ws.pairs[t.name]): t.name for t in reversed(ws.tasks)}
    for adapter in ws.adapters:
        if id(adapter) not in served:
            raise OsrmError(f"{adapter.path}: serves none of the tasks, and AdaMerging learns each adapter's λ from its task's "
                            "inputs; name its task with --task")
    settings = {"mode": mode, "plus": bool(plus), "steps": int(steps), "lr": float(lr), "init": init, "batch_size": int(batch_size),
                "clamp": bool(clamp), "pool": pool, "eval_every": int(eval_every), "seed": int(seed), "limit": limit,
                **({"density": float(density)} if plus else {})}
    return _run(ws, settings, [served[id(a)] for a in ws.adapters])


def _pool(ws: Workspace, task, pool: str, limit: int | None) -> EncodedSplit:
    """The pool's inputs tokenised, without its labels: a split of texts with placeholder labels."""
    key = ("adamerging-pool", task.name, pool, limit, ws.max_length)
    if key not in ws.encoding_cache:
        split = task.split(pool)  # its texts (and text pairs) only: the labels are never touched
        texts = list(split.texts[:limit])
        inputs_only = TaskSplit(texts, np.zeros(len(texts), dtype=np.int64), list(split.pairs[:limit]) if split.pairs else None)
        ws.encoding_cache[key] = encode_split(ws.base.tokenizer, inputs_only, ws.max_length)
    return ws.encoding_cache[key]


class _Batches:
    """Seeded shuffled batches of one pool, reshuffled at every pass."""

    def __init__(self, encoded: EncodedSplit, batch_size: int, rng: np.random.Generator):
        self.encoded, self.batch_size, self.rng = encoded, batch_size, rng
        self.order, self.at = np.zeros(0, dtype=np.int64), 0

    def next_rows(self) -> np.ndarray:
        n = len(self.encoded.input_ids)
        if self.at >= len(self.order):
            self.order, self.at = self.rng.permutation(n), 0
        rows = self.order[self.at:self.at + self.batch_size]
        self.at += self.batch_size
        return rows

    def next_inputs(self, pad_id: int, device) -> dict:
        rows = self.next_rows()
        e = self.encoded
        chosen = EncodedSplit([e.input_ids[i] for i in rows], [e.token_type_ids[i] for i in rows] if e.token_type_ids is not None else None,
                              np.arange(len(rows)), np.zeros(len(rows), dtype=np.int64))
        return next(iter_batches(chosen, len(rows), pad_id, device))[1]


def _run(ws: Workspace, settings: dict, row_tasks: list[str]) -> Generator[Progress, None, AdaMergingResult]:
    started = time.perf_counter()
    base = ws.base
    base.clear_deltas()
    trimmed = None
    if settings["plus"]:
        yield Progress(STAGE, 0, settings["steps"], "trimming task vectors")
        trimmed = trim_task_vectors(ws.adapters, settings["density"], base.device)
    engine = LearnableLoraMerge(base, ws.adapters, settings["mode"] == "layer", settings["init"], trimmed)
    optimiser = torch.optim.Adam([engine.coefficients], lr=settings["lr"], betas=(0.9, 0.999), weight_decay=0.0)
    rng = np.random.default_rng(settings["seed"])
    batches = [_Batches(_pool(ws, task, settings["pool"], settings["limit"]), settings["batch_size"], rng) for task in ws.tasks]
    pad_id = base.tokenizer.pad_token_id or 0
    steps, eval_every = settings["steps"], settings["eval_every"]
    history: list[AdaMergingStep] = []
    yield Progress(STAGE, 0, steps, "")
    with engine.installed():
        try:
            for step in range(1, steps + 1):
                optimiser.zero_grad(set_to_none=True)
                entropies = []
                for task, source in zip(ws.tasks, batches):
                    base.set_head(ws.heads[task.name])
                    with torch.enable_grad():
                        loss = mean_entropy(base.model(**source.next_inputs(pad_id, base.device)).logits)
                        loss.backward()  # a graph per task: memory holds one task's activations at a time
                    entropies.append(float(loss.detach()))
                optimiser.step()
                if settings["clamp"]:
                    engine.clamp_(0.0, 1.0)
                validation = None
                if eval_every and (step % eval_every == 0 or step == steps):
                    scores = yield from ws.evaluate(None, "validation", settings["limit"])  # the hooks carry the merge
                    validation = float(np.mean([s["metric"] for s in scores.values()]))
                event = AdaMergingStep(STAGE, step, steps, f"entropy {sum(entropies):.4f}", float(sum(entropies)), tuple(entropies),
                                       tuple(tuple(float(v) for v in row) for row in engine.table()), validation)
                history.append(event)
                yield event
        finally:
            base.set_head(None)
    return AdaMergingResult(settings["mode"], settings["plus"], row_tasks, [a.name for a in ws.adapters], list(engine.layer_names),
                            engine.table(), history, MergedState(_spec(engine, settings), engine.layer_results()), settings,
                            time.perf_counter() - started)


def _spec(engine: LearnableLoraMerge, settings: dict) -> MergeSpec:
    """How the result is recorded: a plain task-wise result is exactly ``concat`` with the learned
    coefficients (a registered merge, so it replays); the others are method ``adamerging``, with
    the learned table in the params for the record."""
    if settings["mode"] == "task" and not settings["plus"]:
        return MergeSpec("concat", [float(v) for v in engine.coefficients.detach().cpu()[:, 0]], 1.0, {}, settings["seed"])
    params = {k: v for k, v in settings.items() if k != "seed"}
    return MergeSpec("adamerging", None, 1.0, {**params, "layers": list(engine.layer_names), "coefficients": _plain(engine.table())},
                     settings["seed"])


def export_result(ws: Workspace, result: AdaMergingResult, kind: str, out: str | Path, rank: int | None = None,
                  force: bool = False) -> Generator[Progress, None, dict]:
    """Write the learned merge as ``kind`` (see core.export.EXPORT_KINDS): full models per task,
    PEFT adapters per task (exact concat LoRA; ++ is dense, so it needs ``rank`` to SVD-compress),
    or a recipe, which only a plain task-wise result can be (the others are refused in one line)."""
    if kind not in EXPORT_KINDS:
        raise OsrmError(f"unknown export kind {kind!r}; choose one of {', '.join(EXPORT_KINDS)}")
    if kind == "recipe" and not result.replayable:
        raise OsrmError(f"{result.label} cannot be written as a recipe: its coefficients are no registered merge to replay; "
                        "export full models or adapters instead")
    if kind == "adapter" and result.plus and rank is None:
        raise OsrmError(f"{result.label} gives dense (trimmed) updates; choose a rank to export them as LoRA adapters")
    inputs = ws.input_paths()
    refuse_existing(out, force, inputs)
    if kind == "recipe":
        return {"kind": kind, "path": write_recipe(build_recipe(ws.base, ws.adapters, result.merged.spec), out, force, inputs)}
    written = [name for name, _, _ in export_units(ws.pairs, ws.tasks, ws.adapters)]
    if kind == "full":
        path = yield from export_full_models(ws.base, result.merged, ws.pairs, ws.tasks, out, force, ws.adapters, inputs)
        return {"kind": kind, "path": path, "tasks": written}
    error = yield from export_peft_adapters(ws.base, result.merged, ws.pairs, ws.tasks, out, rank, force, ws.adapters, inputs)
    return {"kind": kind, "path": Path(out), "tasks": written, "truncation_error": error}
