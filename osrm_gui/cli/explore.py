"""``osrm sweep`` and ``osrm history``: score many merge points and keep them."""

from __future__ import annotations

from pathlib import Path

from osrm_gui.cli.console import format_table
from osrm_gui.cli.options import (
    add_executor, add_history, add_merge_command, check_outputs, executor_from, finite_float, open_history, positive_int, workspace_and_spec,
    write_csv,
)
from osrm_gui.core.errors import OsrmError


def cmd_sweep(args):
    from osrm_gui.core.explore.sweep import run_sweep
    from osrm_gui.core.progress import Run

    # every option and output is checked before a model loads or a point is scored
    axes, methods = sweep_axes(args), sweep_methods(args)
    check_sweep_options(args)
    executor = executor_from(args)
    ws, spec = workspace_and_spec(args)
    history = open_history(args)
    run = Run(run_sweep(ws, spec, axes, args.split, args.limit, methods=methods, history=history, executor=executor))
    result, reused = print_sweep(run, axes, [t.name for t in ws.tasks], bool(methods and len(methods) > 1))
    if history is not None:
        print(f"{len(result.points) - reused} points scored, {reused} taken from the history {history.path}")
    if args.csv:
        write_csv(args.csv, result.rows(), args.force)
    return 0


def sweep_axes(args) -> list:
    from osrm_gui.core.explore.sweep import Axis, parse_axis, sweep_values
    from osrm_gui.core.merge.spec import finite_number

    start, stop = finite_number(args.start, "--from"), finite_number(args.stop, "--to")
    if args.axis:
        return [parse_axis(a) for a in args.axis]
    try:
        values = sweep_values(start, stop, args.points)
    except OsrmError as exc:
        raise OsrmError(f"--points {args.points}: {exc}") from None
    return [Axis(args.target, tuple(values))]


def sweep_methods(args) -> list[str] | None:
    from osrm_gui.core.merge import get_method

    if not args.methods:
        return None
    methods = [m.strip() for m in args.methods.split(",")]
    for method in methods:
        try:
            get_method(method)
        except ValueError as exc:
            raise OsrmError(f"--methods {args.methods!r}: {exc}") from None
    if len(set(methods)) != len(methods):
        raise OsrmError(f"--methods {args.methods!r}: a method is named twice")
    return methods


def check_sweep_options(args) -> None:
    """The merge's magnitudes (argparse refused NaN and ±inf), and the outputs: the CSV and the run history."""
    from osrm_gui.core.explore.history import check_history, default_history_path
    from osrm_gui.core.merge.spec import finite_number

    finite_number(args.lam, "--lambda")
    for c in args.coef or []:
        finite_number(c, "--coef")
    check_outputs(args, args.csv)
    if not args.no_history:
        check_history(args.history or default_history_path())  # read-only: a sweep that fails later leaves no file


def print_sweep(run, axes, names: list[str], many: bool):
    """Each point as soon as it is scored; the sweep's result and how many points came from the history."""
    from osrm_gui.cli.console import worker_message
    from osrm_gui.core.explore.sweep import SweepPoint

    # an axis names an adapter, which may share its task's name: mark coefficients as c[…]
    header = (["method"] if many else []) + [a.target if a.target == "lambda" else f"c[{a.target}]" for a in axes] + names + ["average"]
    widths = [max(16 if i == 0 and many else 12, len(h)) for i, h in enumerate(header)]
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    reused = 0
    for event in run:
        if isinstance(event, SweepPoint):
            reused += event.reused
            cells = ([event.method] if many else []) + [f"{v:.4f}" for v in [*event.values, *(event.scores[n] for n in names), event.average]]
            print("  ".join(f"{c:>{w}}" for c, w in zip(cells, widths)) + ("  (history)" if event.reused else ""), flush=True)
        elif not hasattr(event, "stage"):
            worker_message(event)
    return run.result, reused


def cmd_history(args):
    from osrm_gui.core.atomic import atomic_write_text
    from osrm_gui.core.explore.history import to_csv

    if args.no_history:
        raise OsrmError("--no-history: there is no history to list then; name one with --history FILE, or leave both out")
    if args.history and not Path(args.history).is_file():
        raise OsrmError(f"{args.history}: no run history there")
    check_outputs(args, args.csv)
    history = open_history(args)
    points = history.points()
    if args.csv:
        atomic_write_text(args.csv, to_csv(points), force=args.force)
        print(f"wrote {len(points)} points to {args.csv}")
        return 0
    shown = points[-args.last:] if args.last else points
    rows = [{"id": p.id, "kind": p.kind, "split": p.split, "method": p.method, "λ": f"{p.lam:g}",
             "coefficients": " ".join(f"{c:g}" for c in p.coefficients), "average": f"{p.average:.4f}", "label": p.label or ""} for p in shown]
    print(f"{history.path}: {len(points)} points")
    if rows:
        print(format_table(rows))
    return 0


def add_parsers(sub) -> None:
    p = add_merge_command(sub, "sweep", "score a merge over a range of λ or coefficients (1-D or 2-D grid, one or several methods)")
    p.add_argument("--target", default="lambda", help="'lambda' (default) or the name of one adapter, whose coefficient varies")
    p.add_argument("--from", dest="start", type=finite_float, default=0.0)
    p.add_argument("--to", dest="stop", type=finite_float, default=1.0)
    p.add_argument("--points", type=positive_int, default=11)
    p.add_argument("--axis", action="append", metavar="TARGET=START:STOP:COUNT",
                   help="instead of --target/--from/--to/--points; give it twice for a 2-D grid (TARGET=v1,v2,… also works)")
    p.add_argument("--methods", metavar="M1,M2", help="run the same points for several methods (others use their default parameters)")
    add_history(p)
    p.add_argument("--csv", metavar="FILE", help="also write the points as CSV")
    p.add_argument("--force", action="store_true", help="replace an existing CSV file")
    add_executor(p, "points")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("history", help="list the scored merge points of the run history, or export them as CSV")
    add_history(p)
    p.add_argument("--last", type=positive_int, metavar="N", help="show only the last N points")
    p.add_argument("--csv", metavar="FILE", help="write every point as CSV")
    p.add_argument("--force", action="store_true", help="replace an existing CSV file")
    p.set_defaults(func=cmd_history)
