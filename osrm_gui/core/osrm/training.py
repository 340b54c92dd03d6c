"""LoRA fine-tuning of one task (adapter + the task's head) as a generator:
it yields progress, returns where the adapter went, and stops cleanly when the
consumer closes it (nothing half-written is left)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Generator

import numpy as np
import torch

from osrm_gui.core.inputs.adapters import CONFIG_FILE, METADATA_FILE
from osrm_gui.core.atomic import atomic_dir, refuse_existing
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.evaluation import EncodedSplit, encode_split, iter_batches
from osrm_gui.core.inputs.models import load_base
from osrm_gui.core.progress import Progress
from osrm_gui.core.inputs.tasks import Task


@dataclass
class TrainSettings:
    rank: int = 8
    alpha: float = 16.0
    targets: list[str] | None = None  # None: the architecture's default (query,value for BERT)
    dropout: float = 0.0
    lr: float = 2e-3
    steps: int | None = 300  # wins over epochs when both are given
    epochs: float | None = None
    batch_size: int = 32
    max_length: int = 128
    seed: int = 0
    warmup: float = 0.06  # fraction of the steps
    weight_decay: float = 0.0
    init: str = "peft-default"
    freeze_a: bool = False
    freeze_b: bool = False
    a_lr_multiplier: float = 1.0
    use_rslora: bool = False
    osrm_tasks: list[str] | None = None  # task specs of the *other* tasks, for the OSRM inits
    osrm_samples: int = 100

    def check(self) -> None:
        """One-line errors for settings no training can use (the CLI, the app and scripts all pass here)."""
        whole = {"rank": (self.rank, 1), "batch_size": (self.batch_size, 1), "max_length": (self.max_length, 1),
                 "osrm_samples": (self.osrm_samples, 1), "steps": (0 if self.steps is None else self.steps, 0)}
        for name, (value, low) in whole.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OsrmError(f"--{name.replace('_', '-')} {value!r}: expected a whole number of at least {low}")
        ranges = {"alpha": (self.alpha, 0, None), "lr": (self.lr, 0, None), "a_lr_multiplier": (self.a_lr_multiplier, -1e-300, None),
                  "dropout": (self.dropout, -1e-300, 1), "warmup": (self.warmup, -1e-300, 1), "weight_decay": (self.weight_decay, -1e-300, None),
                  "epochs": (1 if self.epochs is None else self.epochs, 0, None)}
        for name, (value, above, at_most) in ranges.items():
            ok = isinstance(value, (int, float)) and math.isfinite(value) and value > above and (at_most is None or value <= at_most)
            if not ok:
                bound = ("greater than 0" if above == 0 else "at least 0") + (f" and at most {at_most:g}" if at_most is not None else "")
                raise OsrmError(f"--{name.replace('_', '-')} {value!r}: expected a finite number {bound}")

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None and (self.steps or not self.epochs):
            return int(self.steps)  # 0: initialise and save without training
        epochs = self.epochs or 1.0
        return max(1, math.ceil(epochs * n_train / self.batch_size))


@dataclass(frozen=True)
class TrainProgress(Progress):
    loss: float = float("nan")  # this step's loss
    smoothed_loss: float = float("nan")  # exponential moving average, for display
    examples_per_s: float = 0.0


@dataclass
class TrainResult:
    path: Path
    steps: int
    final_loss: float
    seconds: float
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Initialiser:
    """How a new adapter's A and B start. ``peft_init`` goes to LoraConfig;
    ``prepare(base, task, settings)`` runs on the pretrained base before LoRA is
    added and may yield progress; its result goes to ``after_create(peft_model, state)``,
    which may then overwrite the weights."""

    name: str
    doc: str
    peft_init: bool | str = True
    prepare: Callable | None = None
    after_create: Callable | None = None


INITIALISERS: dict[str, Initialiser] = {}
UNTRAINED_NOTE = """# Untrained LoRA adapter ({init}) for task {task}

Written by `osrm init`: lora_A holds the {init} initialisation and lora_B is zero, so the
adapter does not change the base model yet; the classifier head is freshly initialised.
Train it with any trainer that loads PEFT adapters, e.g.
`PeftModel.from_pretrained(base, this_folder, is_trainable=True)` with the Hugging Face
Trainer or TRL, or with `osrm train`.
"""


def register_init(init: Initialiser) -> None:
    INITIALISERS[init.name] = init


register_init(Initialiser("peft-default", "peft's default: Kaiming-uniform A, B = 0", True))
register_init(Initialiser("gaussian", "peft's Gaussian: A ~ N(0, 1/r), B = 0", "gaussian"))


def _osrm_prepare(variant: str):
    def prepare(base, task, settings):
        from osrm_gui.core.osrm.features import cached_features
        from osrm_gui.core.osrm.subspaces import subspaces_from_others
        from osrm_gui.core.inputs.tasks import resolve_task

        others = [resolve_task(spec) for spec in settings.osrm_tasks or []]
        others = [t for t in others if t.name != task.name]
        if not others:
            raise OsrmError(f"init osrm-{variant} needs the other tasks' data (osrm_tasks / --osrm-task); {task.name!r} alone has no 'other' tasks")
        targets = settings.targets or base.default_targets
        stats = []
        for other in others:
            stats.append((yield from cached_features(base, other, targets, settings.osrm_samples, settings.max_length)))
        return {"basis": subspaces_from_others(stats, settings.rank, variant), "others": [t.name for t in others],
                "warnings": [w for s in stats for w in s.warnings]}

    return prepare


def _install_lora_a(peft_model, state) -> None:
    with torch.no_grad():
        for name, A in state["basis"].items():
            module = peft_model.base_model.model.get_submodule(name)
            module.lora_A["default"].weight.copy_(A.to(module.lora_A["default"].weight.dtype))
            module.lora_B["default"].weight.zero_()


for _variant, _doc in (("cov", "OSRM (cov): A = eigenvectors of the other tasks' feature second moment with the smallest eigenvalues, B = 0"),
                       ("mean", "OSRM (mean, as the official code): A = null space of the other tasks' mean features, B = 0")):
    register_init(Initialiser(f"osrm-{_variant}", _doc, True, _osrm_prepare(_variant), _install_lora_a))


def _lora_params(model, part: str):
    return [p for n, p in model.named_parameters() if f".{part}." in n]


def _task_files(specs) -> list[Path]:
    """The data files behind task specs (``PATH@options``); registered sources (``demo:``) have none."""
    return [Path(spec.partition("@")[0]) for spec in specs if spec and Path(spec.partition("@")[0]).exists()]


def train_adapter(
    base_path: str | Path | None,
    task: Task,
    out_dir: str | Path,
    settings: TrainSettings | None = None,
    device: str | None = None,
    force: bool = False,
) -> Generator[TrainProgress, None, TrainResult]:
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    settings = settings or TrainSettings()
    settings.check()
    if settings.init not in INITIALISERS:
        raise OsrmError(f"unknown init {settings.init!r}; choose one of {', '.join(INITIALISERS)}")
    out_dir = Path(out_dir)
    inputs = [base_path, *_task_files([task.extra.get("spec"), *(settings.osrm_tasks or [])])]
    refuse_existing(out_dir, force, inputs)
    train = task.split("train")
    if len(train) == 0:
        raise OsrmError(f"task {task.name!r} has no training examples")
    init = INITIALISERS[settings.init]

    # the task head is drawn while the base loads: seeded here, an adapter depends on its seed
    # alone, not on what the process drew before (a Ray worker has drawn other things)
    torch.manual_seed(settings.seed)
    base = load_base(base_path, device=device, dtype="float32", num_labels=task.num_labels)
    targets = settings.targets or base.default_targets
    missing = [t for t in targets if not any(n.rsplit(".", 1)[-1] == t for n in base.linear_modules())]
    if missing:
        raise OsrmError(f"target module(s) {', '.join(missing)} not found in {base.name}; its linear layers end in {', '.join(sorted({n.rsplit('.', 1)[-1] for n in base.linear_modules()}))}")
    prepared = (yield from init.prepare(base, task, settings)) if init.prepare is not None else None
    torch.manual_seed(settings.seed)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=settings.rank,
        lora_alpha=settings.alpha,
        target_modules=targets,
        lora_dropout=settings.dropout,
        init_lora_weights=init.peft_init,
        use_rslora=settings.use_rslora,
    )
    model = get_peft_model(base.model, config)
    if init.after_create is not None:
        init.after_create(model, prepared)
    for part, frozen in (("lora_A", settings.freeze_a), ("lora_B", settings.freeze_b)):
        for p in _lora_params(model, part):
            p.requires_grad_(not frozen)
    groups = [
        {"params": [p for p in _lora_params(model, "lora_A") if p.requires_grad], "lr": settings.lr * settings.a_lr_multiplier},
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and ".lora_A." not in n], "lr": settings.lr},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=settings.weight_decay)
    total = settings.total_steps(len(train))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup * total), total)
    encoded = encode_split(base.tokenizer, train, settings.max_length)
    loss_fn = torch.nn.MSELoss() if task.is_regression else torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(settings.seed)
    pad_id = base.tokenizer.pad_token_id or 0

    model.train()
    started = time.perf_counter()
    smoothed = float("nan")
    step = 0
    while step < total:
        for inputs, labels in _shuffled_batches(encoded, settings.batch_size, pad_id, base.device, rng):
            logits = model(**inputs).logits
            if task.is_regression:
                loss = loss_fn(logits[:, 0], labels.float())
            else:
                loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            value = float(loss.detach())
            smoothed = value if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * value
            elapsed = time.perf_counter() - started
            yield TrainProgress("train", step, total, f"loss {smoothed:.4f}", value, smoothed, step * settings.batch_size / elapsed)
            if step >= total:
                break
    model.eval()
    if total and not math.isfinite(smoothed):
        raise OsrmError(f"training {task.name!r} diverged (loss {smoothed}); lower the learning rate")

    with atomic_dir(out_dir, force=force, inputs=inputs) as tmp:
        model.save_pretrained(tmp)
        config_path = tmp / CONFIG_FILE
        saved = json.loads(config_path.read_text())
        saved["base_model_name_or_path"] = base.name  # a portable name, not this machine's path
        config_path.write_text(json.dumps(saved, indent=2, sort_keys=True))
        metadata = {
            "name": out_dir.name,
            "task": task.name,
            "task_spec": task.extra.get("spec"),
            "label_names": task.label_names,
            "metric": task.metric,
            "init": settings.init,
            "osrm": {"other_tasks": prepared["others"], "samples": settings.osrm_samples} if isinstance(prepared, dict) and "others" in prepared else None,
            "base": base.name,
            "base_fingerprint": base.fingerprint,
            "task_hash": task.content_hash(),
            "settings": {**asdict(settings), "targets": targets},
            "train": {"steps": step, "final_loss": smoothed, "seconds": round(time.perf_counter() - started, 2)},
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        if step == 0:
            (tmp / "README.md").write_text(UNTRAINED_NOTE.format(init=settings.init, task=task.name))
    return TrainResult(out_dir, step, smoothed, time.perf_counter() - started, metadata["settings"])


def _shuffled_batches(encoded: EncodedSplit, batch_size: int, pad_id: int, device, rng):
    perm = rng.permutation(len(encoded.input_ids))
    shuffled = EncodedSplit(
        [encoded.input_ids[i] for i in perm],
        [encoded.token_type_ids[i] for i in perm] if encoded.token_type_ids is not None else None,
        perm,
        encoded.labels[perm],
    )
    for start, inputs in iter_batches(shuffled, batch_size, pad_id, device):
        labels = torch.as_tensor(shuffled.labels[start : start + batch_size]).to(device)
        yield inputs, labels
