"""``osrm merge``, ``osrm eval`` and ``osrm export``: merge adapters, score them, write the result."""

from __future__ import annotations

import json

from osrm_gui.cli.console import drive, format_table, score_rows
from osrm_gui.cli.options import add_base, add_merge_command, add_tasks, check_outputs, positive_int, print_warnings, workspace_and_spec
from osrm_gui.core.atomic import atomic_write_text


def cmd_merge(args):
    from osrm_gui.core.export import get_method_needs_data

    check_outputs(args, args.save_recipe, args.json)
    ws, spec = workspace_and_spec(args, need_tasks=not args.no_eval or get_method_needs_data(args.method))
    merged = drive(ws.merge(spec), "merge")
    error = merged.truncation_error()
    print(f"merged {len(ws.adapters)} adapters with {merged.spec.method} (λ={merged.spec.lam}, coefficients {merged.spec.coefficients}, "
          f"params {merged.spec.params}) over {len(merged.layers)} layers" + (f"; worst relative truncation error {error:.4f}" if error is not None else ""))
    if args.save_recipe:
        from osrm_gui.core.export import build_recipe, write_recipe

        write_recipe(build_recipe(ws.base, ws.adapters, merged.spec, ws.data_record(merged.spec)), args.save_recipe, args.force,
                     ws.input_paths())
        print(f"recipe written to {args.save_recipe}")
    if args.no_eval:
        return 0
    scores = drive(ws.evaluate(merged, args.split, args.limit, args.batch_size, args.max_length), "eval")
    single = drive(ws.evaluate_single(args.split, args.limit, args.batch_size, args.max_length), "single") if args.single else None
    print()
    print(format_table(score_rows(ws, scores, single)))
    if args.json:
        atomic_write_text(args.json, json.dumps({"spec": merged.spec.to_dict(), "scores": scores, "single": single}, indent=2) + "\n",
                          force=args.force, inputs=ws.input_paths())
    return 0


def cmd_eval(args):
    from osrm_gui.core.workspace import open_workspace

    ws = open_workspace(args.base, args.adapters, args.task, args.device, args.dtype, args.trust_remote_code)
    print_warnings(ws.warnings)
    single = drive(ws.evaluate_single(args.split, args.limit, args.batch_size, args.max_length), "single")
    floor = drive(ws.evaluate(None, args.split, args.limit, args.batch_size, args.max_length), "heads on bare base")
    rows = [{"task": t.name, "metric": t.metric, "n": single[t.name]["n"], "adapter": ws.pairs[t.name].name,
             "adapter alone": single[t.name]["metric"], "head on bare base": floor[t.name]["metric"]} for t in ws.tasks]
    print(format_table(rows))
    return 0


def cmd_export(args):
    from osrm_gui.core.export import export_merge, get_method_needs_data

    if args.kind == "recipe":
        check_outputs(args, args.out)
    else:
        check_outputs(args, folders=[args.out])
    ws, spec = workspace_and_spec(args, need_tasks=args.kind != "recipe" or get_method_needs_data(args.method))
    written = drive(export_merge(ws, spec, args.kind, args.out, args.rank, args.force), "export")
    if args.kind == "recipe":
        print(f"recipe written to {written['path']}")
    elif args.kind == "full":
        print(f"wrote {len(written['tasks'])} transformers models to {written['path']}/: {', '.join(written['tasks'])}")
    else:
        print(f"wrote {len(written['tasks'])} PEFT adapters to {written['path']}/: {', '.join(written['tasks'])}; "
              f"worst relative truncation error {written['truncation_error']:.4g}")
    if "per_task_storage" in written:
        print(f"each task runs with its own update: {written['per_task_storage'] / 1e6:.2f} MB for the shared update, masks and "
              f"scales, against {written['adapters_storage'] / 1e6:.2f} MB for the adapters merged")
    return 0


def add_parsers(sub) -> None:
    p = add_merge_command(sub, "merge", "merge adapters and score every task through its own head")
    p.add_argument("--single", action="store_true", help="also score each adapter alone (single-task reference)")
    p.add_argument("--no-eval", action="store_true", help="merge only")
    p.add_argument("--save-recipe", metavar="FILE", help="write the merge as a replayable recipe")
    p.add_argument("--json", metavar="FILE", help="write the scores as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing recipe or JSON file")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("eval", help="score each adapter alone, and each head on the bare base (the floor)")
    p.add_argument("adapters", nargs="+", metavar="ADAPTER", help="PEFT LoRA adapter folders or Hub ids org/name[@revision]")
    add_tasks(p)
    add_base(p)
    p.set_defaults(func=cmd_eval)

    p = add_merge_command(sub, "export", "write a merge: full models, PEFT adapters, or a recipe")
    p.add_argument("--kind", choices=["full", "adapter", "recipe"], default="full",
                   help="full: a transformers model folder per task; adapter: a PEFT adapter per task; recipe: JSON to replay")
    p.add_argument("--out", required=True, help="folder (full/adapter) or file (recipe) to write")
    p.add_argument("--rank", type=positive_int, help="adapter export: SVD-compress to this rank (needed for dense methods like TIES)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_export)
