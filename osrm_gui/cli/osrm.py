"""OSRM commands: ``osrm train``, ``features``, ``init`` and ``project``."""

from __future__ import annotations

import sys

from osrm_gui.cli.console import drive, format_table
from osrm_gui.cli.options import add_base, check_outputs, print_warnings, finite_float, non_negative_int, positive_int


def cmd_train(args):
    from osrm_gui.core.atomic import refuse_overlap
    from osrm_gui.core.inputs.tasks import resolve_task
    from osrm_gui.core.osrm.others import against_adapters
    from osrm_gui.core.osrm.training import TrainSettings, train_adapter

    refuse_overlap(args.out, args.against or [])
    task = resolve_task(args.task)
    print_warnings(task.warnings)
    # --against ADAPTER: its shipped statistics when it has them, else the task data it records
    against_specs, against_files = against_adapters(args.against or [])
    settings = TrainSettings(
        rank=args.rank, alpha=args.alpha, targets=args.targets.split(",") if args.targets else None, dropout=args.dropout,
        lr=args.lr, steps=None if args.epochs and not args.steps else (args.steps or 300), epochs=args.epochs,
        batch_size=args.batch_size, max_length=args.max_length, seed=args.seed, warmup=args.warmup, init=args.init,
        freeze_a=args.freeze_a, freeze_b=args.freeze_b, a_lr_multiplier=args.a_lr_multiplier, use_rslora=args.rslora,
        osrm_tasks=[*(args.osrm_task or []), *against_specs] or None, osrm_samples=args.osrm_samples,
        subspace_budget=args.subspace_budget, subspace_penalty=args.subspace_penalty,
        against_stats=[*(args.against_stats or []), *against_files] or None,
    )
    job = train_adapter(args.base, task, args.out, settings, None if args.device == "auto" else args.device, args.force, ship_stats=args.ship_stats)
    result = drive(job, f"train {task.name}")
    print(f"saved {result.path}  ({result.steps} steps, final loss {result.final_loss:.4f}, {result.seconds:.1f} s)")
    energy = _recorded_energy(result.path)
    if energy:
        print(f"other tasks' energy share in row(A): {energy['start']:.3%} at the start, {energy['end']:.3%} at the end")
    return 0


def _recorded_energy(folder) -> dict | None:
    import json

    from osrm_gui.core.inputs.adapters import METADATA_FILE

    return json.loads((folder / METADATA_FILE).read_text()).get("other_energy")


def _add_knobs(p):
    g = p.add_argument_group("keeping out of the other tasks' way while training (need the other tasks' statistics)")
    g.add_argument("--subspace-budget", type=positive_int, metavar="K",
                   help="constrain lora_A's rows to the m = K·rank eigenvectors of the other tasks' feature second moment with "
                        "the smallest eigenvalues (exactly: A = C·U_m, C trains); needs --init osrm-cov")
    g.add_argument("--subspace-penalty", type=finite_float, default=0.0, metavar="BETA",
                   help="add BETA × mean over layers of tr(A S̃ Aᵀ)/tr(A Aᵀ), S̃ = S/tr(S), to the loss (scale-free; any --init)")
    g.add_argument("--against", nargs="+", action="extend", metavar="ADAPTER",
                   help="trained adapters whose tasks count as other tasks: their osrm_stats.safetensors if shipped, else the task data they record")
    g.add_argument("--against-stats", nargs="+", action="extend", metavar="FILE",
                   help="other tasks' statistics files (osrm features --out, or an adapter's osrm_stats.safetensors)")
    g.add_argument("--ship-stats", action="store_true",
                   help="also write this task's own statistics to osrm_stats.safetensors in the adapter folder, for --against later")


def _add_osrm_tasks(p, required: bool = False):
    g = p.add_argument_group("OSRM")
    g.add_argument("--osrm-task", action="append", required=required, metavar="SPEC",
                   help="data of the OTHER tasks the adapter should stay out of the way of (demo:NAME or PATH[@…]); repeat per task")
    g.add_argument("--osrm-samples", type=positive_int, default=100, help="examples per other task for the statistics (default 100)")


def cmd_features(args):
    from pathlib import Path

    from osrm_gui.core.errors import OsrmError
    from osrm_gui.core.osrm.features import cached_features, cache_dir, features_key, save_features
    from osrm_gui.core.inputs.models import load_base
    from osrm_gui.core.inputs.tasks import resolve_task

    if args.out is not None:
        if len(args.task) != 1:
            raise OsrmError(f"--out {args.out}: one statistics file holds one task; give a single --task ({len(args.task)} given)")
        check_outputs(args, args.out)
    base = load_base(args.base, args.device, args.dtype, args.trust_remote_code)
    targets = args.targets.split(",") if args.targets else base.default_targets
    rows = []
    for spec in args.task:
        task = resolve_task(spec)
        print_warnings(task.warnings)
        features = drive(cached_features(base, task, targets, args.samples, args.max_length), f"features {task.name}")
        for warning in features.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        tokens = next(iter(features.layers.values())).count
        rows.append({"task": task.name, "examples": features.samples, "tokens": tokens, "layers": len(features.layers),
                     "targets": ",".join(targets), "cache": features.meta["cache"],
                     "file": str(cache_dir() / f"{features_key(base, task, targets, args.samples, args.max_length, 0)}.safetensors")})
        if args.out is not None:
            features.meta.pop("cache", None)
            save_features(features, Path(args.out))
            rows[-1]["file"] = str(args.out)
    print(format_table(rows))
    return 0


def cmd_init(args):
    from osrm_gui.core.inputs.tasks import resolve_task
    from osrm_gui.core.osrm.training import TrainSettings, train_adapter

    task = resolve_task(args.task)
    print_warnings(task.warnings)
    settings = TrainSettings(rank=args.rank, alpha=args.alpha, targets=args.targets.split(",") if args.targets else None, steps=0,
                             max_length=args.max_length, seed=args.seed, init=f"osrm-{args.variant}",
                             osrm_tasks=args.osrm_task, osrm_samples=args.osrm_samples)
    result = drive(train_adapter(args.base, task, args.out, settings, None if args.device == "auto" else args.device, args.force), "init")
    print(f"wrote untrained osrm-{args.variant} adapter for {task.name} to {result.path} (A from {len(args.osrm_task)} other task(s), B = 0)")
    return 0


def cmd_project(args):
    from osrm_gui.core.inputs.adapters import load_adapter, validate_adapter
    from osrm_gui.core.osrm.features import cached_features
    from osrm_gui.core.inputs.models import load_base
    from osrm_gui.core.osrm.subspaces import project_adapter, subspaces_from_others, write_projection
    from osrm_gui.core.inputs.tasks import resolve_task

    check_outputs(args, folders=[args.out])
    adapter = load_adapter(args.adapter)
    base = load_base(args.base, args.device, args.dtype, args.trust_remote_code)
    validate_adapter(adapter, base)
    own = args.task and resolve_task(args.task).name or adapter.task
    others = [t for t in map(resolve_task, args.osrm_task) if t.name != own]
    stats = [drive(cached_features(base, t, adapter.targets, args.osrm_samples, args.max_length), f"features {t.name}") for t in others]
    rank = args.rank or max(adapter.ranks)
    basis = subspaces_from_others(stats, rank, args.variant)
    projection = project_adapter(adapter, basis)
    write_projection(projection, base, args.out, args.variant, [t.name for t in others], args.force)
    rows = [{"layer": name, "kept ‖ΔW‖ fraction": kept} for name, kept in projection.kept.items()]
    print(format_table(rows))
    mean = sum(projection.kept.values()) / len(projection.kept)
    print(f"wrote {args.out} (osrm-{args.variant}, rank {rank}, head kept); mean fraction of ‖ΔW‖_F kept: {mean:.3f}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a LoRA adapter (and the task's head) on one task")
    p.add_argument("--task", required=True, metavar="SPEC", help="demo:NAME or PATH[@text=COL,label=COL,...]")
    p.add_argument("--out", required=True, help="adapter folder to write (PEFT format)")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    from osrm_gui.core.osrm.training import INITIALISERS, TrainSettings

    d = TrainSettings()
    p.add_argument("--rank", type=positive_int, default=d.rank)
    p.add_argument("--alpha", type=finite_float, default=d.alpha)
    p.add_argument("--targets", help="comma-separated module names (default per architecture, e.g. query,value for BERT)")
    p.add_argument("--dropout", type=finite_float, default=d.dropout)
    p.add_argument("--lr", type=finite_float, default=d.lr)
    p.add_argument("--steps", type=non_negative_int, help=f"optimiser steps (default {d.steps} unless --epochs)")
    p.add_argument("--epochs", type=finite_float)
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--max-length", type=positive_int, default=d.max_length)
    p.add_argument("--seed", type=non_negative_int, default=d.seed)
    p.add_argument("--warmup", type=finite_float, default=d.warmup, help="fraction of steps with linear warm-up")
    p.add_argument("--init", default=d.init, choices=list(INITIALISERS))
    p.add_argument("--freeze-a", action="store_true", help="keep lora_A at its initial value")
    p.add_argument("--freeze-b", action="store_true", help="keep lora_B at its initial value (with B=0: a head-only probe)")
    p.add_argument("--a-lr-multiplier", type=finite_float, default=1.0, help="learning rate of lora_A relative to --lr")
    p.add_argument("--rslora", action="store_true", help="rank-stabilised scaling alpha/sqrt(r)")
    _add_osrm_tasks(p)
    _add_knobs(p)
    add_base(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("features", help="collect (or show cached) feature statistics of tasks on the pretrained base")
    p.add_argument("--task", action="append", required=True, metavar="SPEC", help="demo:NAME or PATH[@…]; repeat per task")
    p.add_argument("--targets", help="comma-separated module names (default per architecture)")
    p.add_argument("--samples", type=positive_int, default=100, help="training examples per task (seeded; default 100)")
    p.add_argument("--max-length", type=positive_int, default=128)
    p.add_argument("--out", metavar="FILE", help="also write the (single) task's statistics to FILE, for osrm train --against-stats "
                   "(safetensors: per-layer float64 sums and Gram matrices, no text; match --samples/--max-length to osrm train's "
                   "--osrm-samples/--max-length and use --dtype float32, as training does)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    add_base(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("init", help="write an untrained OSRM-initialised adapter (PEFT format) to train with any trainer")
    p.add_argument("--task", required=True, metavar="SPEC", help="the task this adapter is for")
    p.add_argument("--out", required=True)
    p.add_argument("--variant", choices=["cov", "mean"], default="cov")
    p.add_argument("--rank", type=positive_int, default=d.rank)
    p.add_argument("--alpha", type=finite_float, default=d.alpha)
    p.add_argument("--targets", help="comma-separated module names (default per architecture)")
    p.add_argument("--max-length", type=positive_int, default=d.max_length)
    p.add_argument("--seed", type=non_negative_int, default=d.seed, help="seed of the classifier head's initialisation")
    p.add_argument("--force", action="store_true")
    _add_osrm_tasks(p, required=True)
    add_base(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("project", help="post-hoc OSRM: project a trained adapter onto its OSRM subspace (ΔW' = ΔW AᵀA)")
    p.add_argument("adapter", metavar="ADAPTER")
    p.add_argument("--task", metavar="SPEC", help="the adapter's own task (default: the one it records), left out of the statistics")
    p.add_argument("--out", required=True)
    p.add_argument("--variant", choices=["cov", "mean"], default="cov")
    p.add_argument("--rank", type=positive_int, help="rank of the projection (default: the adapter's rank)")
    p.add_argument("--max-length", type=positive_int, default=128)
    p.add_argument("--force", action="store_true")
    _add_osrm_tasks(p, required=True)
    add_base(p)
    p.set_defaults(func=cmd_project)
