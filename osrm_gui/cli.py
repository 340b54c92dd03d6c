"""``osrm`` — every action of the app, headless. A thin layer over ``osrm_gui.core``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from . import __version__  # noqa: E402
from .console import drive, format_table, score_rows  # noqa: E402
from .core.errors import OsrmError  # noqa: E402

EXAMPLES = """\
examples:
  osrm demo run                                   merge the built-in demo adapters and print per-task metrics
  osrm info resources/demo/adapters/*             what the adapters are, and whether they fit the base
  osrm train --task demo:word-topic --out my-adapter --steps 300
  osrm merge ADAPTER1 ADAPTER2 --method ties --param density=0.5 --lambda 1.0
  osrm export ADAPTER1 ADAPTER2 --kind full --out merged-models
  osrm merge --recipe merged.recipe.json          replay a saved merge
"""


# -- argument groups ----------------------------------------------------------
def _add_base(p):
    g = p.add_argument_group("base model")
    g.add_argument("--base", metavar="PATH", help="local Hugging Face model folder (default: the embedded all-MiniLM-L6-v2)")
    g.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 …")
    g.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    g.add_argument("--trust-remote-code", action="store_true", help="allow model code from the folder to run (off by default)")


def _add_tasks(p):
    g = p.add_argument_group("evaluation data")
    g.add_argument("--task", action="append", metavar="SPEC", help="demo:NAME or PATH[@text=COL,pair=COL,label=COL,name=NAME,metric=M]; repeat per task "
                   "(default: the tasks recorded in the adapters)")
    g.add_argument("--split", default="test", choices=["train", "validation", "test"])
    g.add_argument("--limit", type=int, metavar="N", help="score only the first N examples of each task")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--max-length", type=int, default=128)


def _add_merge(p):
    g = p.add_argument_group("merge")
    g.add_argument("adapters", nargs="*", metavar="ADAPTER", help="PEFT LoRA adapter folders")
    g.add_argument("--method", default="task_arithmetic", help="merge method (see `osrm methods`)")
    g.add_argument("--coef", type=float, nargs="+", metavar="C", help="one coefficient per adapter (default 1.0 each)")
    g.add_argument("--lambda", dest="lam", type=float, default=1.0, help="global scale λ of the merged update (default 1.0)")
    g.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="method parameter, e.g. density=0.5; repeatable")
    g.add_argument("--seed", type=int, default=0, help="seed of random methods (DARE)")
    g.add_argument("--recipe", metavar="FILE", help="replay a recipe written by `osrm export --kind recipe` (replaces the options above)")


def _add_history(p):
    p.add_argument("--history", metavar="FILE", help="run-history database (default: the per-user one; the app keeps one next to each workspace)")
    p.add_argument("--no-history", action="store_true", help="neither read nor record points")


def parse_params(items: list[str]) -> dict:
    """``--param NAME=VALUE`` options as a dict (values are validated by the method)."""
    params = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise OsrmError(f"--param {item!r}: expected NAME=VALUE")
        params[key] = value
    return params


def _spec_from(args):
    from .core.merging import MergeSpec

    return MergeSpec(args.method, args.coef, args.lam, parse_params(args.param), args.seed)


def _workspace_and_spec(args, need_tasks=True):
    from .core.export import read_recipe
    from .core.workspace import open_workspace

    if args.recipe:
        recipe, adapters, spec = read_recipe(args.recipe)
        base_path = args.base or (None if recipe["base"].get("embedded") else recipe["base"]["path"])
        paths = [a.path for a in adapters]
    else:
        if not args.adapters:
            raise OsrmError("no adapters given (name adapter folders, or --recipe FILE)")
        base_path, paths, spec = args.base, args.adapters, _spec_from(args)
    ws = open_workspace(base_path, paths, getattr(args, "task", None), args.device, args.dtype, args.trust_remote_code, need_tasks)
    if args.recipe and ws.base.fingerprint != recipe["base"]["fingerprint"]:
        print(f"warning: base {ws.base.path} differs from the recipe's ({recipe['base']['name']})", file=sys.stderr)
    for warning in ws.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return ws, spec


def _merge(ws, spec, quiet=False):
    return drive(ws.merge(spec), "merge", quiet)


# -- commands ------------------------------------------------------------------
def cmd_info(args):
    from .core.adapters import load_adapter
    from .core.merging import validate_all
    from .core.models import load_base
    from .core.device import describe_device

    adapters = [load_adapter(p) for p in args.adapters]
    base = load_base(args.base, args.device, args.dtype, args.trust_remote_code)
    print(f"base: {base.name}  ({base.model_type}, {base.parameter_count() / 1e6:.1f}M parameters, {base.dtype}, {describe_device(base.device)})")
    print(f"      {base.path}")
    print(f"      default LoRA targets: {','.join(base.default_targets)}; head: {base.head_name}")
    for warning in validate_all(base, adapters):
        print(f"warning: {warning}", file=sys.stderr)
    if adapters:
        print()
        print(format_table([{k: v for k, v in a.summary().items() if k != "path"} for a in adapters]))
    return 0


def _bounds(param) -> str:
    if param.choices:
        return "one of " + ", ".join(param.choices)
    low = "" if param.minimum is None else f"{param.minimum:g} {'<' if param.min_exclusive else '≤'} "
    high = "" if param.maximum is None else f" ≤ {param.maximum:g}"
    return f"{low}{param.name}{high}"


def cmd_methods(args):
    from .core.merge import METHODS

    for method in METHODS.values():
        print(f"{method.name}  — {method.label}")
        print(f"    {method.doc}")
        for p in method.params:
            print(f"    --param {p.name}=… (default {p.default}; {_bounds(p)}): {p.doc}")
    return 0


def cmd_train(args):
    from .core.tasks import resolve_task
    from .core.training import TrainSettings, train_adapter

    task = resolve_task(args.task)
    settings = TrainSettings(
        rank=args.rank, alpha=args.alpha, targets=args.targets.split(",") if args.targets else None, dropout=args.dropout,
        lr=args.lr, steps=None if args.epochs and not args.steps else (args.steps or 300), epochs=args.epochs,
        batch_size=args.batch_size, max_length=args.max_length, seed=args.seed, warmup=args.warmup, init=args.init,
        freeze_a=args.freeze_a, freeze_b=args.freeze_b, a_lr_multiplier=args.a_lr_multiplier, use_rslora=args.rslora,
        osrm_tasks=args.osrm_task, osrm_samples=args.osrm_samples,
    )
    result = drive(train_adapter(args.base, task, args.out, settings, None if args.device == "auto" else args.device, args.force), f"train {task.name}")
    print(f"saved {result.path}  ({result.steps} steps, final loss {result.final_loss:.4f}, {result.seconds:.1f} s)")
    return 0


def _add_osrm_tasks(p, required: bool = False):
    g = p.add_argument_group("OSRM")
    g.add_argument("--osrm-task", action="append", required=required, metavar="SPEC",
                   help="data of the OTHER tasks the adapter should stay out of the way of (demo:NAME or PATH[@…]); repeat per task")
    g.add_argument("--osrm-samples", type=int, default=100, help="examples per other task for the statistics (default 100)")


def cmd_features(args):
    from .core.features import cached_features, cache_dir, features_key
    from .core.models import load_base
    from .core.tasks import resolve_task

    base = load_base(args.base, args.device, args.dtype, args.trust_remote_code)
    targets = args.targets.split(",") if args.targets else base.default_targets
    rows = []
    for spec in args.task:
        task = resolve_task(spec)
        features = drive(cached_features(base, task, targets, args.samples, args.max_length), f"features {task.name}")
        for warning in features.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        tokens = next(iter(features.layers.values())).count
        rows.append({"task": task.name, "examples": features.samples, "tokens": tokens, "layers": len(features.layers),
                     "targets": ",".join(targets), "cache": features.meta["cache"],
                     "file": str(cache_dir() / f"{features_key(base, task, targets, args.samples, args.max_length, 0)}.safetensors")})
    print(format_table(rows))
    return 0


def cmd_init(args):
    from .core.tasks import resolve_task
    from .core.training import TrainSettings, train_adapter

    task = resolve_task(args.task)
    settings = TrainSettings(rank=args.rank, alpha=args.alpha, targets=args.targets.split(",") if args.targets else None, steps=0,
                             max_length=args.max_length, seed=args.seed, init=f"osrm-{args.variant}",
                             osrm_tasks=args.osrm_task, osrm_samples=args.osrm_samples)
    result = drive(train_adapter(args.base, task, args.out, settings, None if args.device == "auto" else args.device, args.force), "init")
    print(f"wrote untrained osrm-{args.variant} adapter for {task.name} to {result.path} (A from {len(args.osrm_task)} other task(s), B = 0)")
    return 0


def cmd_project(args):
    from .core.adapters import load_adapter, validate_adapter
    from .core.atomic import refuse_existing
    from .core.features import cached_features
    from .core.models import load_base
    from .core.osrm import project_adapter, subspaces_from_others, write_projection
    from .core.tasks import resolve_task

    refuse_existing(args.out, args.force)
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


def cmd_merge(args):
    ws, spec = _workspace_and_spec(args, need_tasks=not args.no_eval)
    merged = _merge(ws, spec)
    error = merged.truncation_error()
    print(f"merged {len(ws.adapters)} adapters with {merged.spec.method} (λ={merged.spec.lam}, coefficients {merged.spec.coefficients}, "
          f"params {merged.spec.params}) over {len(merged.layers)} layers" + (f"; worst relative truncation error {error:.4f}" if error is not None else ""))
    if args.save_recipe:
        from .core.export import build_recipe, write_recipe

        write_recipe(build_recipe(ws.base, ws.adapters, merged.spec), args.save_recipe, args.force)
        print(f"recipe written to {args.save_recipe}")
    if args.no_eval:
        return 0
    scores = drive(ws.evaluate(merged, args.split, args.limit, args.batch_size, args.max_length), "eval")
    single = drive(ws.evaluate_single(args.split, args.limit, args.batch_size, args.max_length), "single") if args.single else None
    print()
    print(format_table(score_rows(ws, scores, single)))
    if args.json:
        Path(args.json).write_text(json.dumps({"spec": merged.spec.to_dict(), "scores": scores, "single": single}, indent=2))
    return 0


def cmd_eval(args):
    from .core.workspace import open_workspace

    ws = open_workspace(args.base, args.adapters, args.task, args.device, args.dtype, args.trust_remote_code)
    single = drive(ws.evaluate_single(args.split, args.limit, args.batch_size, args.max_length), "single")
    floor = drive(ws.evaluate(None, args.split, args.limit, args.batch_size, args.max_length), "heads on bare base")
    rows = [{"task": t.name, "metric": t.metric, "n": single[t.name]["n"], "adapter": ws.pairs[t.name].name,
             "adapter alone": single[t.name]["metric"], "head on bare base": floor[t.name]["metric"]} for t in ws.tasks]
    print(format_table(rows))
    return 0


def cmd_export(args):
    from .core.atomic import refuse_existing
    from .core.export import export_merge

    refuse_existing(args.out, args.force)
    ws, spec = _workspace_and_spec(args, need_tasks=args.kind != "recipe")
    written = drive(export_merge(ws, spec, args.kind, args.out, args.rank, args.force), "export")
    if args.kind == "recipe":
        print(f"recipe written to {written['path']}")
    elif args.kind == "full":
        print(f"wrote one transformers model per task to {written['path']}/ ({', '.join(written['tasks'])})")
    else:
        print(f"wrote one PEFT adapter per task to {written['path']}/; worst relative truncation error {written['truncation_error']:.4g}")
    return 0


def _history(args):
    from .core.history import History, default_history_path

    if getattr(args, "no_history", False):
        return None
    return History(args.history or default_history_path())


def cmd_sweep(args):
    from .core.progress import Run
    from .core.sweep import Axis, SweepPoint, parse_axis, run_sweep, sweep_values

    axes = [parse_axis(a) for a in args.axis] if args.axis else [Axis(args.target, tuple(sweep_values(args.start, args.stop, args.points)))]
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    ws, spec = _workspace_and_spec(args)
    history = _history(args)
    run = Run(run_sweep(ws, spec, axes, args.split, args.limit, methods=methods, history=history))
    names = [t.name for t in ws.tasks]
    many = bool(methods and len(methods) > 1)
    # an axis names an adapter, which may share its task's name: mark coefficients as c[…]
    header = (["method"] if many else []) + [a.target if a.target == "lambda" else f"c[{a.target}]" for a in axes] + names + ["average"]
    widths = [max(16 if i == 0 and many else 12, len(h)) for i, h in enumerate(header)]
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    reused = 0
    for event in run:
        if isinstance(event, SweepPoint):  # print each point as soon as it is scored
            reused += event.reused
            cells = ([event.method] if many else []) + [f"{v:.4f}" for v in [*event.values, *(event.scores[n] for n in names), event.average]]
            print("  ".join(f"{c:>{w}}" for c, w in zip(cells, widths)) + ("  (history)" if event.reused else ""), flush=True)
    result = run.result
    if history is not None:
        print(f"{len(result.points) - reused} points scored, {reused} taken from the history {history.path}")
    if args.csv:
        _write_csv(args.csv, result.rows(), args.force)
    return 0


def _write_csv(path, rows: list[dict], force: bool) -> None:
    from .core.atomic import atomic_write_text
    from .core.tables import rows_to_csv

    atomic_write_text(path, rows_to_csv(rows), force=force)
    print(f"wrote {path}")


def cmd_history(args):
    from .core.atomic import atomic_write_text
    from .core.history import to_csv

    if args.history and not Path(args.history).is_file():
        raise OsrmError(f"{args.history}: no run history there")
    history = _history(args)
    points = history.points()
    if args.csv:
        atomic_write_text(args.csv, to_csv(points), force=args.force)
        print(f"wrote {len(points)} points to {args.csv}")
        return 0
    shown = points[-args.last:] if args.last else points
    rows = [{"id": p.id, "kind": p.kind, "method": p.method, "λ": f"{p.lam:g}",
             "coefficients": " ".join(f"{c:g}" for c in p.coefficients), "average": f"{p.average:.4f}", "label": p.label or ""} for p in shown]
    print(f"{history.path}: {len(points)} points")
    if rows:
        print(format_table(rows))
    return 0


def _check_layer_choice(choice: str, layers: list[str]) -> None:
    from .core.analysis import layer_type

    kinds = sorted({layer_type(name) for name in layers})
    if choice not in ("mean", "max") and choice not in kinds and choice not in layers:
        raise OsrmError(f"--layer {choice!r}: expected mean, max, a layer type ({', '.join(kinds)}) or one of the adapters' layer names")


def _chosen_matrix(per_layer: dict, choice: str):
    """The matrix --layer asks for, and what it is, in words."""
    from .core import analysis

    if choice in ("mean", "max"):
        return analysis.aggregate(per_layer, choice), f"{choice} over {len(per_layer)} layers"
    if choice in per_layer:
        return per_layer[choice], f"layer {choice}"
    count = sum(analysis.layer_type(name) == choice for name in per_layer)
    return analysis.by_layer_type(per_layer)[choice], f"mean over the {count} {choice} layers"


def _analysis_grams(ws, task_specs, skip_if_unknown: bool):
    """Each adapter's Gram matrices on its own task's inputs; None (with a warning) when
    ``skip_if_unknown`` and some adapter's task data is unknown."""
    from .core.merging import pair_tasks
    from .core.workspace import tasks_for

    try:
        ws.tasks = tasks_for(ws.adapters, task_specs)
        ws.pairs = pair_tasks(ws.adapters, ws.tasks)
        unpaired = [str(a.path) for a in ws.adapters if all(a is not b for b in ws.pairs.values())]
        if unpaired:
            raise OsrmError(f"no task data for {', '.join(unpaired)}; name it with --task")
    except OsrmError as exc:
        if not skip_if_unknown:
            raise OsrmError(f"interference needs every adapter's task data: {exc}") from None
        print(f"warning: interference skipped: {exc}", file=sys.stderr)
        return None
    return drive(ws.adapter_grams(), "features")


def cmd_analyze(args):
    from .core import analysis
    from .core.atomic import refuse_existing
    from .core.workspace import open_workspace

    if args.metric != "all" and args.metric not in analysis.METRICS:
        raise OsrmError(f"unknown metric {args.metric!r}; one of {', '.join(analysis.METRICS)} or all")
    if not 0 < args.density <= 1:
        raise OsrmError(f"--density {args.density:g}: expected 0 < density ≤ 1")
    if args.csv:
        refuse_existing(args.csv, args.force)
    metrics = list(analysis.METRICS) if args.metric == "all" else [args.metric]
    ws = open_workspace(args.base, args.adapters, None, args.device, args.dtype, args.trust_remote_code, need_tasks=False)
    for warning in ws.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    layers = analysis.common_layers(ws.adapters)
    if not layers:
        raise OsrmError("the adapters have no layer in common, so there is nothing to compare")
    _check_layer_choice(args.layer, layers)
    grams = None
    if analysis.NEEDS_GRAMS & set(metrics):
        grams = _analysis_grams(ws, args.task, skip_if_unknown=args.metric == "all")
        if grams is None:
            metrics = [m for m in metrics if m not in analysis.NEEDS_GRAMS]
    names = [a.name for a in ws.adapters]
    csv_rows = []
    for metric in metrics:
        per_layer = analysis.METRICS[metric].compute(ws.adapters, grams, args.density)
        matrix, what = _chosen_matrix(per_layer, args.layer)
        corner = "adapter i \\ task j" if metric == "interference" else "adapter"
        print(f"{analysis.METRICS[metric].label} [{metric}], {what}")
        print(format_table([{corner: name, **{other: float(v) for other, v in zip(names, row)}} for name, row in zip(names, matrix)]))
        print()
        by_type = {}
        for name, layer_matrix in per_layer.items():
            by_type.setdefault(analysis.layer_type(name), {})[name] = layer_matrix
        print(format_table([{"layer type": kind, "layers": len(v), "off-diagonal mean": analysis.mean_off_diagonal(v)}
                            for kind, v in sorted(by_type.items())]))
        print(f"off-diagonal mean over layers: {analysis.mean_off_diagonal(per_layer):.4f}")
        print()
        csv_rows += analysis.to_rows(per_layer, names, metric)
    if args.csv:
        _write_csv(args.csv, csv_rows, args.force)
    return 0


def cmd_demo(args):
    from . import demo

    return demo.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osrm", description="Merge LoRA adapters headless: inspect, train, merge, evaluate, export.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"osrm-gui {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="summarise the base model and adapters, and check they fit")
    p.add_argument("adapters", nargs="*", metavar="ADAPTER")
    _add_base(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("methods", help="list the merge methods and their parameters")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("train", help="fine-tune a LoRA adapter (and the task's head) on one task")
    p.add_argument("--task", required=True, metavar="SPEC", help="demo:NAME or PATH[@text=COL,label=COL,...]")
    p.add_argument("--out", required=True, help="adapter folder to write (PEFT format)")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    from .core.training import INITIALISERS, TrainSettings

    d = TrainSettings()
    p.add_argument("--rank", type=int, default=d.rank)
    p.add_argument("--alpha", type=float, default=d.alpha)
    p.add_argument("--targets", help="comma-separated module names (default per architecture, e.g. query,value for BERT)")
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--steps", type=int, help=f"optimiser steps (default {d.steps} unless --epochs)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--warmup", type=float, default=d.warmup, help="fraction of steps with linear warm-up")
    p.add_argument("--init", default=d.init, choices=list(INITIALISERS))
    p.add_argument("--freeze-a", action="store_true", help="keep lora_A at its initial value")
    p.add_argument("--freeze-b", action="store_true", help="keep lora_B at its initial value (with B=0: a head-only probe)")
    p.add_argument("--a-lr-multiplier", type=float, default=1.0, help="learning rate of lora_A relative to --lr")
    p.add_argument("--rslora", action="store_true", help="rank-stabilised scaling alpha/sqrt(r)")
    _add_osrm_tasks(p)
    _add_base(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("features", help="collect (or show cached) feature statistics of tasks on the pretrained base")
    p.add_argument("--task", action="append", required=True, metavar="SPEC", help="demo:NAME or PATH[@…]; repeat per task")
    p.add_argument("--targets", help="comma-separated module names (default per architecture)")
    p.add_argument("--samples", type=int, default=100, help="training examples per task (seeded; default 100)")
    p.add_argument("--max-length", type=int, default=128)
    _add_base(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("init", help="write an untrained OSRM-initialised adapter (PEFT format) to train with any trainer")
    p.add_argument("--task", required=True, metavar="SPEC", help="the task this adapter is for")
    p.add_argument("--out", required=True)
    p.add_argument("--variant", choices=["cov", "mean"], default="cov")
    p.add_argument("--rank", type=int, default=d.rank)
    p.add_argument("--alpha", type=float, default=d.alpha)
    p.add_argument("--targets", help="comma-separated module names (default per architecture)")
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the classifier head's initialisation")
    p.add_argument("--force", action="store_true")
    _add_osrm_tasks(p, required=True)
    _add_base(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("project", help="post-hoc OSRM: project a trained adapter onto its OSRM subspace (ΔW' = ΔW AᵀA)")
    p.add_argument("adapter", metavar="ADAPTER")
    p.add_argument("--task", metavar="SPEC", help="the adapter's own task (default: the one it records), left out of the statistics")
    p.add_argument("--out", required=True)
    p.add_argument("--variant", choices=["cov", "mean"], default="cov")
    p.add_argument("--rank", type=int, help="rank of the projection (default: the adapter's rank)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--force", action="store_true")
    _add_osrm_tasks(p, required=True)
    _add_base(p)
    p.set_defaults(func=cmd_project)

    p = sub.add_parser("merge", help="merge adapters and score every task through its own head")
    _add_merge(p)
    _add_tasks(p)
    _add_base(p)
    p.add_argument("--single", action="store_true", help="also score each adapter alone (single-task reference)")
    p.add_argument("--no-eval", action="store_true", help="merge only")
    p.add_argument("--save-recipe", metavar="FILE", help="write the merge as a replayable recipe")
    p.add_argument("--json", metavar="FILE", help="write the scores as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing recipe file")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("sweep", help="score a merge over a range of λ or coefficients (1-D or 2-D grid, one or several methods)")
    _add_merge(p)
    _add_tasks(p)
    _add_base(p)
    p.add_argument("--target", default="lambda", help="'lambda' (default) or the name of one adapter, whose coefficient varies")
    p.add_argument("--from", dest="start", type=float, default=0.0)
    p.add_argument("--to", dest="stop", type=float, default=1.0)
    p.add_argument("--points", type=int, default=11)
    p.add_argument("--axis", action="append", metavar="TARGET=START:STOP:COUNT",
                   help="instead of --target/--from/--to/--points; give it twice for a 2-D grid (TARGET=v1,v2,… also works)")
    p.add_argument("--methods", metavar="M1,M2", help="run the same points for several methods (others use their default parameters)")
    _add_history(p)
    p.add_argument("--csv", metavar="FILE", help="also write the points as CSV")
    p.add_argument("--force", action="store_true", help="replace an existing CSV file")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("history", help="list the scored merge points of the run history, or export them as CSV")
    _add_history(p)
    p.add_argument("--last", type=int, metavar="N", help="show only the last N points")
    p.add_argument("--csv", metavar="FILE", help="write every point as CSV")
    p.add_argument("--force", action="store_true", help="replace an existing CSV file")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("analyze", help="compare adapters layer by layer: subspace overlaps, cosine, TIES sign conflict, interference")
    p.add_argument("adapters", nargs="+", metavar="ADAPTER", help="PEFT LoRA adapter folders")
    p.add_argument("--task", action="append", metavar="SPEC", help="each adapter's task data, for interference (default: the tasks the adapters record)")
    p.add_argument("--metric", default="all", metavar="NAME",
                   help="row_overlap, col_overlap, delta_overlap, cosine, sign_conflict, interference, or all (default; "
                        "interference is left out when task data is unknown)")
    p.add_argument("--density", type=float, default=0.2, help="TIES density for sign_conflict: fraction of entries kept (default 0.2)")
    p.add_argument("--layer", default="mean", metavar="NAME",
                   help="the matrix to print: mean (default) or max over layers, a layer type (query), or one layer's name")
    p.add_argument("--csv", metavar="FILE", help="write every layer's values: layer, metric, adapter_i, adapter_j, value")
    p.add_argument("--force", action="store_true", help="replace an existing CSV file")
    _add_base(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("eval", help="score each adapter alone, and each head on the bare base (the floor)")
    p.add_argument("adapters", nargs="+", metavar="ADAPTER")
    _add_tasks(p)
    _add_base(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="write a merge: full models, PEFT adapters, or a recipe")
    _add_merge(p)
    _add_tasks(p)
    _add_base(p)
    p.add_argument("--kind", choices=["full", "adapter", "recipe"], default="full",
                   help="full: a transformers model folder per task; adapter: a PEFT adapter per task; recipe: JSON to replay")
    p.add_argument("--out", required=True, help="folder (full/adapter) or file (recipe) to write")
    p.add_argument("--rank", type=int, help="adapter export: SVD-compress to this rank (needed for dense methods like TIES)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_export)

    from . import demo

    demo.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Library deprecation notices are for developers, not for someone merging adapters.
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OsrmError as exc:
        print(f"osrm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("osrm: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
