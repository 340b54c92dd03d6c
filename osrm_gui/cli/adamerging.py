"""``osrm adamerge``: learn the merge coefficients on unlabelled inputs (AdaMerging), print them and
the result's scores, and optionally write them as JSON and export the merge."""

from __future__ import annotations

import json

from osrm_gui.cli.console import drive, format_table
from osrm_gui.cli.options import (
    add_base,
    add_tasks,
    check_outputs,
    finite_float,
    non_negative_int,
    positive_int,
    print_warnings,
)
from osrm_gui.core.errors import OsrmError


def cmd_adamerge(args):
    from osrm_gui.core.atomic import atomic_write_text
    from osrm_gui.core.explore.adamerging import adamerge, export_result
    from osrm_gui.core.workspace import open_workspace

    if args.out and not args.export_kind:
        raise OsrmError("--out needs --export-kind full, adapter or recipe")
    if args.export_kind and not args.out:
        raise OsrmError(f"--export-kind {args.export_kind} needs --out, where to write it")
    if args.export_kind == "recipe" and (args.mode != "task" or args.plus):
        raise OsrmError("--export-kind recipe: only a plain task-wise AdaMerging (--mode task, no --plus) replays as a recipe; "
                        "export full or adapter instead")
    if args.export_kind == "adapter" and args.plus and args.rank is None:
        raise OsrmError("--export-kind adapter with --plus: the trimmed updates are dense; choose --rank to SVD-compress them")
    check_outputs(args, args.json, args.out if args.export_kind == "recipe" else None,
                  folders=[args.out] if args.export_kind in ("full", "adapter") else ())
    if not args.adapters:
        raise OsrmError("no adapters given")
    ws = open_workspace(args.base, args.adapters, args.task, args.device, args.dtype, args.trust_remote_code)
    ws.batch_size, ws.max_length = args.batch_size, args.max_length
    print_warnings(ws.warnings)
    job = adamerge(ws, args.mode, args.plus, args.steps, args.lr, args.init, args.pool_batch, not args.no_clamp, args.pool,
                   args.eval_every, args.seed, args.limit, args.density)
    result = drive(job, "adamerge")
    history = result.history
    if history:
        print(f"{result.label}: {len(history)} steps on the {args.pool} inputs in {result.seconds:.1f} s; "
              f"entropy {history[0].entropy:.4f} → {history[-1].entropy:.4f}")
    groups, table = result.grouped()
    print("\nlearned coefficients λ (" + ("one per adapter" if result.mode == "task" else "mean over each block's adapted modules") + ")")
    print(format_table([{"task": task, **{g: float(v) for g, v in zip(groups, row)}} for task, row in zip(result.tasks, table)]))
    validation = drive(ws.evaluate(result.merged, "validation", args.limit), "eval validation")
    report = validation if args.split == "validation" else drive(ws.evaluate(result.merged, args.split, args.limit), f"eval {args.split}")
    rows = [{"task": t.name, "metric": t.metric, "validation": validation[t.name]["metric"], args.split: report[t.name]["metric"]}
            for t in ws.tasks]
    rows.append({"task": "average", "metric": "", "validation": sum(r["validation"] for r in rows) / len(rows),
                 args.split: sum(r[args.split] for r in rows) / len(rows)})
    print()
    print(format_table(rows))
    if args.json:
        document = {**result.to_dict(), "scores": {"validation": validation, args.split: report}}
        atomic_write_text(args.json, json.dumps(document, indent=2) + "\n", force=args.force, inputs=ws.input_paths())
        print(f"wrote {args.json}")
    if args.export_kind:
        written = drive(export_result(ws, result, args.export_kind, args.out, args.rank, args.force), "export")
        print(f"wrote {args.export_kind} export to {written['path']}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("adamerge", help="learn merge coefficients by minimising prediction entropy on unlabelled inputs (AdaMerging)")
    p.add_argument("adapters", nargs="*", metavar="ADAPTER", help="PEFT LoRA adapter folders or Hub ids org/name[@revision]; each must serve a task")
    g = p.add_argument_group("AdaMerging")
    g.add_argument("--mode", choices=["task", "layer"], default="task", help="one λ per adapter (task) or per adapter and adapted module (layer)")
    g.add_argument("--plus", action="store_true", help="AdaMerging++: trim each task vector first (TIES: top --density by magnitude, "
                   "elected sign); the updates become dense")
    g.add_argument("--density", type=finite_float, default=0.2, help="with --plus: the fraction of each task vector kept (default 0.2)")
    g.add_argument("--steps", type=non_negative_int, default=500, help="Adam steps (default 500)")
    g.add_argument("--lr", type=finite_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument("--init", type=finite_float, default=0.3, help="initial λ (default 0.3)")
    g.add_argument("--pool", choices=["validation", "train", "test"], default="validation",
                   help="the split whose inputs (never its labels) λ learns from (default validation; test is refused: "
                   "it is what results are reported on)")
    g.add_argument("--pool-batch", type=positive_int, default=16, help="inputs per task per step (default 16)")
    g.add_argument("--no-clamp", action="store_true", help="let λ leave [0, 1]")
    g.add_argument("--eval-every", type=non_negative_int, default=0, help="score labelled validation every N steps, for display (default never)")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seed of the batch shuffling")
    add_tasks(p)
    add_base(p)
    o = p.add_argument_group("outputs")
    o.add_argument("--json", metavar="FILE", help="write the coefficients, history and scores as JSON")
    o.add_argument("--export-kind", choices=["full", "adapter", "recipe"],
                   help="also export the learned merge: full models, PEFT adapters, or (plain task-wise only) a recipe")
    o.add_argument("--out", metavar="PATH", help="where --export-kind writes")
    o.add_argument("--rank", type=positive_int, help="adapter export of --plus: SVD-compress to this rank")
    o.add_argument("--force", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_adamerge)
