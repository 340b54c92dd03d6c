"""``osrm analyze``: compare adapters layer by layer (overlaps, cosine, sign conflict, interference)."""

from __future__ import annotations

import sys

from osrm_gui.cli.console import drive, format_table
from osrm_gui.cli.options import add_base, check_outputs, finite_float, print_warnings, write_csv
from osrm_gui.core.errors import OsrmError


def _check_layer_choice(choice: str, layers: list[str]) -> None:
    from osrm_gui.core.analysis.pairwise import layer_type

    kinds = sorted({layer_type(name) for name in layers})
    if choice not in ("mean", "max") and choice not in kinds and choice not in layers:
        raise OsrmError(f"--layer {choice!r}: expected mean, max, a layer type ({', '.join(kinds)}) or one of the adapters' layer names")


def _chosen_matrix(per_layer: dict, choice: str):
    """The matrix --layer asks for, and what it is, in words."""
    from osrm_gui.core.analysis import pairwise as analysis

    if choice in ("mean", "max"):
        return analysis.aggregate(per_layer, choice), f"{choice} over {len(per_layer)} layers"
    if choice in per_layer:
        return per_layer[choice], f"layer {choice}"
    count = sum(analysis.layer_type(name) == choice for name in per_layer)
    return analysis.by_layer_type(per_layer)[choice], f"mean over the {count} {choice} layers"


def _analysis_grams(ws, task_specs, skip_if_unknown: bool):
    """Each adapter's Gram matrices on its own task's inputs; None (with a warning) when
    ``skip_if_unknown`` and some adapter's task data is unknown."""
    from osrm_gui.core.merge.spec import pair_tasks
    from osrm_gui.core.workspace import tasks_for

    try:
        ws.tasks = tasks_for(ws.adapters, task_specs)
        print_warnings([w for t in ws.tasks for w in t.warnings])
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
    from osrm_gui.core.analysis import pairwise as analysis
    from osrm_gui.core.workspace import open_workspace

    if args.metric != "all" and args.metric not in analysis.METRICS:
        raise OsrmError(f"unknown metric {args.metric!r}; one of {', '.join(analysis.METRICS)} or all")
    if not 0 < args.density <= 1:
        raise OsrmError(f"--density {args.density:g}: expected 0 < density ≤ 1")
    if args.csv:
        check_outputs(args, args.csv)
    metrics = list(analysis.METRICS) if args.metric == "all" else [args.metric]
    ws = open_workspace(args.base, args.adapters, None, args.device, args.dtype, args.trust_remote_code, need_tasks=False)
    print_warnings(ws.warnings)
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
        write_csv(args.csv, csv_rows, args.force)
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("analyze", help="compare adapters layer by layer: subspace overlaps, cosine, TIES sign conflict, interference")
    p.add_argument("adapters", nargs="+", metavar="ADAPTER", help="PEFT LoRA adapter folders or Hub ids org/name[@revision]")
    p.add_argument("--task", action="append", metavar="SPEC", help="each adapter's task data, for interference (default: the tasks the adapters record)")
    p.add_argument("--metric", default="all", metavar="NAME",
                   help="row_overlap, col_overlap, delta_overlap, cosine, sign_conflict, interference, or all (default; "
                        "interference is left out when task data is unknown)")
    p.add_argument("--density", type=finite_float, default=0.2, help="TIES density for sign_conflict: fraction of entries kept (default 0.2)")
    p.add_argument("--layer", default="mean", metavar="NAME",
                   help="the matrix to print: mean (default) or max over layers, a layer type (query), or one layer's name")
    p.add_argument("--csv", metavar="FILE", help="write every layer's values: layer, metric, adapter_i, adapter_j, value")
    p.add_argument("--force", action="store_true", help="replace an existing CSV file")
    add_base(p)
    p.set_defaults(func=cmd_analyze)
