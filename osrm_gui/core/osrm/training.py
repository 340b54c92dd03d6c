"""LoRA fine-tuning of one task (adapter + the task's head) as a generator:
it yields progress, returns where the adapter went, and stops cleanly when the
consumer closes it (nothing half-written is left).

When the other tasks' statistics are known (``osrm_tasks`` and/or ``against_stats``)
they are gathered once per run and serve the OSRM inits, the subspace budget and
penalty (constraints.py), and the other tasks' energy share reported each step."""

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
    """How one adapter trains. The other tasks' statistics (``osrm_tasks`` data and/or
    ``against_stats`` files; S = their pooled un-centred second moment per layer) feed the OSRM
    inits and two knobs that keep the orthogonality during training:

    - ``subspace_budget`` k: exact constraint ``A = C·U_m``, m = k·rank smallest eigenvectors of S.
    - ``subspace_penalty`` β: ``loss += β · mean_layers tr(A S̃ Aᵀ)/tr(A Aᵀ)``, ``S̃ = S/tr(S)``.
      Scale-free in the features and in A, so β means the same on any base; for A with
      orthonormal rows a layer's term is its energy share divided by the rank.
    """

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
    osrm_tasks: list[str] | None = None  # task specs of the *other* tasks, for the OSRM inits and the knobs below
    osrm_samples: int = 100
    # k: A = C·U_m, U_m the m = k·rank eigenvectors of the other tasks' S with the smallest
    # eigenvalues; row(A) stays in span(U_m) exactly while C trains. Needs init osrm-cov.
    # Where m equals a layer's input size the constraint is empty and that layer trains as free A.
    subspace_budget: int | None = None
    # β: loss += β · mean over adapted layers of tr(A S̃ Aᵀ)/tr(A Aᵀ), S̃ = S/tr(S). Both ratios
    # are scale-free (features' and A's scale cancel), so a given β weighs the same on any base.
    subspace_penalty: float = 0.0
    against_stats: list[str] | None = None  # statistics files of other tasks (osrm features --out, --ship-stats)

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
        self._check_knobs()

    def _check_knobs(self) -> None:
        budget, beta = self.subspace_budget, self.subspace_penalty
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise OsrmError(f"--subspace-budget {budget!r}: expected a whole number of at least 1 (m = k·rank eigenvectors)")
        if budget is not None and self.init != "osrm-cov":
            raise OsrmError(f"--subspace-budget needs --init osrm-cov (A starts at the r smallest of the m eigenvectors), not {self.init!r}")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
            raise OsrmError(f"--subspace-penalty {beta!r}: expected a finite number at least 0")
        files = self.against_stats
        if files is not None and (isinstance(files, (str, Path)) or not all(isinstance(f, (str, Path)) for f in files)):
            raise OsrmError(f"--against-stats {files!r}: expected a list of statistics files")
        missing = [f for f in files or [] if not Path(f).is_file()]
        if missing:
            raise OsrmError(f"--against-stats {missing[0]}: statistics file not found")
        if (budget is not None or beta > 0) and not (self.osrm_tasks or files):
            knob = "--subspace-budget" if budget is not None else "--subspace-penalty"
            raise OsrmError(f"{knob} needs the other tasks' statistics: give --osrm-task, --against or --against-stats")

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
    # the other tasks' share of feature energy in row(A), mean over adapted layers; NaN when unknown
    other_energy: float = float("nan")


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
    ``prepare(base, task, settings, others)`` runs on the pretrained base before LoRA is
    added (``others``: the other tasks' ``OtherStatistics``, or None); its result goes to
    ``after_create(peft_model, state)``, which may then overwrite the weights."""

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
    def prepare(base, task, settings, others):
        if others is None:
            raise OsrmError(f"init osrm-{variant} needs the other tasks' data (osrm_tasks / --osrm-task, --against, --against-stats); "
                            f"{task.name!r} alone has no 'other' tasks")
        rank = settings.rank
        if variant == "cov":
            # one eigendecomposition serves the init (the r smallest) and the budget (the m smallest)
            count = rank * (settings.subspace_budget or 1)
            bases = others.cov_bases(count)
            basis = {name: U[:rank].contiguous() for name, U in bases.items()}
            # layers where m is the whole input: no constraint, they train as free A
            rowspace = {name: U for name, U in bases.items() if U.shape[0] < U.shape[1]} if settings.subspace_budget else {}
        else:
            from osrm_gui.core.osrm.subspaces import subspaces_from_others

            basis, rowspace = subspaces_from_others(others.features, rank, variant), {}
        return {"basis": basis, "rowspace": rowspace, "others": others.names}

    return prepare


def _install_lora_a(peft_model, state) -> None:
    from osrm_gui.core.osrm.constraints import constrain_rows

    with torch.no_grad():
        for name, A in state["basis"].items():
            module = peft_model.base_model.model.get_submodule(name)
            module.lora_A["default"].weight.copy_(A.to(module.lora_A["default"].weight.dtype))
            module.lora_B["default"].weight.zero_()
    for name, U in state.get("rowspace", {}).items():
        lora_a = peft_model.base_model.model.get_submodule(name).lora_A["default"]
        rank = lora_a.weight.shape[0]
        # C = [I_r 0]: A = C·U_m starts exactly at the r smallest, the init above
        constrain_rows(lora_a, U, start=torch.eye(rank, U.shape[0]))


for _variant, _doc in (("cov", "OSRM (cov): A = eigenvectors of the other tasks' feature second moment with the smallest eigenvalues, B = 0"),
                       ("mean", "OSRM (mean, as the official code): A = null space of the other tasks' mean features, B = 0")):
    register_init(Initialiser(f"osrm-{_variant}", _doc, True, _osrm_prepare(_variant), _install_lora_a))


def _lora_params(model, part: str):
    return [p for n, p in model.named_parameters() if f".{part}." in n]


def _task_files(specs) -> list[Path]:
    """The data files behind task specs (``PATH@options``); registered sources (``demo:``) have none."""
    return [Path(spec.partition("@")[0]) for spec in specs if spec and Path(spec.partition("@")[0]).exists()]


# per-step energy shares cost Σ d²·r float64 flops; above this they are computed every few steps
ENERGY_FLOPS_PER_STEP = 2e8


def train_adapter(
    base_path: str | Path | None,
    task: Task,
    out_dir: str | Path,
    settings: TrainSettings | None = None,
    device: str | None = None,
    force: bool = False,
    ship_stats: bool = False,
) -> Generator[TrainProgress, None, TrainResult]:
    """Train one adapter into ``out_dir``. ``ship_stats``: also write the task's own feature
    statistics (its training rows, as the feature cache computes them) to ``osrm_stats.safetensors``
    in the adapter folder, so later adapters can be trained against this task without its data."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    from osrm_gui.core.osrm.constraints import mean_energy_share, penalty_term, release_rows
    from osrm_gui.core.osrm.features import cached_features, save_features, target_layers
    from osrm_gui.core.osrm.others import SHIPPED_STATS, gather_other_statistics
    from osrm_gui.core.inputs.models import linear_shape

    settings = settings or TrainSettings()
    settings.check()
    if settings.init not in INITIALISERS:
        raise OsrmError(f"unknown init {settings.init!r}; choose one of {', '.join(INITIALISERS)}")
    out_dir = Path(out_dir)
    inputs = [base_path, *_task_files([task.extra.get("spec"), *(settings.osrm_tasks or [])]), *(settings.against_stats or [])]
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
    adapted = target_layers(base, targets)
    if settings.subspace_budget is not None:
        m = settings.subspace_budget * settings.rank
        name, d_in = min(((n, linear_shape(mod)[1]) for n, mod in adapted.items()), key=lambda item: item[1])
        if m > d_in:
            raise OsrmError(f"--subspace-budget {settings.subspace_budget}: m = k·rank = {m} exceeds the input size {d_in} of {name}; "
                            f"use k ≤ {d_in // settings.rank}")
    # one gathering of the other tasks' statistics serves the init, the budget, the penalty and the energy share
    others = yield from gather_other_statistics(base, task, sorted(adapted), settings.osrm_tasks, settings.against_stats,
                                                settings.osrm_samples, settings.max_length, targets)
    if others is None and (settings.subspace_budget is not None or settings.subspace_penalty > 0):
        knob = "--subspace-budget" if settings.subspace_budget is not None else "--subspace-penalty"
        raise OsrmError(f"{knob} needs the statistics of tasks other than {task.name!r} (--osrm-task, --against, --against-stats); none were given")
    own_stats = (yield from cached_features(base, task, targets, settings.osrm_samples, settings.max_length)) if ship_stats else None
    prepared = init.prepare(base, task, settings, others) if init.prepare is not None else None
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

    lora_a = {name: model.base_model.model.get_submodule(name).lora_A["default"] for name in sorted(adapted)}
    moments = others.second_moments() if others is not None else {}

    def energy() -> float:
        if not moments:
            return float("nan")
        with torch.no_grad():
            return mean_energy_share({name: module.weight for name, module in lora_a.items()}, moments)

    every = max(1, math.ceil(sum(S.shape[0] ** 2 * settings.rank for S in moments.values()) / ENERGY_FLOPS_PER_STEP))
    beta = settings.subspace_penalty
    scaled = others.scaled_moments(base.device, torch.float32) if beta > 0 else {}
    energy_start = energy_now = energy()

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
            objective = loss
            if beta > 0:
                objective = loss + beta * penalty_term([lora_a[n].weight for n in lora_a], [scaled[n] for n in lora_a])
            objective.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % every == 0 or step == total:
                energy_now = energy()
            value = float(loss.detach())  # the task's loss: curves stay comparable across penalties
            smoothed = value if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * value
            elapsed = time.perf_counter() - started
            message = f"loss {smoothed:.4f}" + (f" · others' energy {100 * energy_now:.3g}%" if math.isfinite(energy_now) else "")
            yield TrainProgress("train", step, total, message, value, smoothed, step * settings.batch_size / elapsed, energy_now)
            if step >= total:
                break
    model.eval()
    if total and not math.isfinite(smoothed):
        raise OsrmError(f"training {task.name!r} diverged (loss {smoothed}); lower the learning rate")
    release_rows(model)  # A = C·U_m becomes a plain lora_A weight: the file is an ordinary PEFT adapter

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
            "settings": {**asdict(settings), "targets": targets,
                         "against_stats": [str(f) for f in settings.against_stats] if settings.against_stats is not None else None},
            "train": {"steps": step, "final_loss": smoothed, "seconds": round(time.perf_counter() - started, 2)},
            "against": ({"tasks": others.names, "stats_files": others.files, **({"warnings": others.warnings} if others.warnings else {})}
                        if others is not None else None),
            "other_energy": {"start": energy_start, "end": energy_now} if others is not None else None,
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        if own_stats is not None:
            own_stats.meta.pop("cache", None)  # where this process found them says nothing about the file
            save_features(own_stats, tmp / SHIPPED_STATS)
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
