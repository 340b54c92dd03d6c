"""``osrm continual``: adapters merged one at a time (OPCM), every arrived task scored after each arrival."""

from __future__ import annotations

import math

from osrm_gui.cli.console import drive, format_table, print_events
from osrm_gui.cli.options import (
    add_base, check_outputs, finite_float, non_negative_int, positive_int, print_warnings, write_csv,
)
from osrm_gui.core.errors import OsrmError

DEFAULT_ORDERS = 3


def cmd_continual(args):
    from osrm_gui.core.explore.continual import continual_run
    from osrm_gui.core.workspace import open_workspace

    # every argument and the output are checked before a model loads or a step is scored
    orders = arrival_orders(args)
    alpha = check_alpha(args.alpha)
    check_outputs(args, args.csv)
    ws = open_workspace(args.base, args.adapters, args.task, args.device, args.dtype, args.trust_remote_code)
    ws.batch_size, ws.max_length = args.batch_size, args.max_length
    print_warnings(ws.warnings)
    how = "the order given" if args.order else f"{len(orders)} random order{'s' if len(orders) > 1 else ''} (seed {args.seed})"
    print(f"OPCM continual merge of {len(ws.adapters)} adapters, α = {alpha:g}, {how}; {args.split} split"
          + (f", first {args.limit} examples per task" if args.limit else ""))
    names = [a.name for a in ws.adapters]
    for index, order in enumerate(orders, 1):
        print(f"order {index}: " + " → ".join(names[i] for i in order))
    result = drive(_printing(continual_run(ws, orders, alpha, args.split, args.limit)), "continual")
    print()
    print(format_table(summary_table(result)))
    if args.csv:
        write_csv(args.csv, result.csv_rows(), args.force, ws.input_paths())
    return 0


def arrival_orders(args) -> list[list[int]]:
    """``--order`` (1-based positions of the adapters) or ``--orders`` random ones, as 0-based indices."""
    from osrm_gui.core.explore.continual import random_orders

    n = len(args.adapters)
    if args.order is not None:
        if args.orders is not None:
            raise OsrmError("--order and --orders: give one arrival order or a number of random ones, not both")
        try:
            positions = [int(item) for item in args.order.split(",")]
        except ValueError:
            raise OsrmError(f"--order {args.order!r}: expected the adapters' positions, e.g. 2,1,3") from None
        if sorted(positions) != list(range(1, n + 1)):
            raise OsrmError(f"--order {args.order!r}: must list each of the {n} adapters' positions (1…{n}) once")
        return [[p - 1 for p in positions]]
    count = DEFAULT_ORDERS if args.orders is None else args.orders
    if args.orders is None:
        count = min(count, math.factorial(n))  # the default never asks for more orders than there are
    try:
        return random_orders(n, count, args.seed)
    except OsrmError as exc:
        raise OsrmError(f"--orders {count}: {exc}") from None


def check_alpha(value: float) -> float:
    from osrm_gui.core.merge.opcm import ALPHA

    try:
        return ALPHA.validate(value)
    except ValueError as exc:
        raise OsrmError(f"--alpha: {exc}") from None


def _printing(run):
    """The run's progress for the bars; each scored step printed as it arrives."""
    from osrm_gui.core.explore.continual import ArrivalScores

    def line(event) -> str:
        values = ", ".join(f"{task} {value:.4f}" for task, value in event.scores.items())
        return f"order {event.order + 1}, step {event.step} (+{event.adapter}): {values or 'no task arrived yet'}"

    return print_events(run, ArrivalScores, line)

def summary_table(result) -> list[dict]:
    """One row per step: the average over the tasks arrived and each task (mean ± std over the orders when several;
    a task arrived by that step in only some orders says in how many)."""
    several = len(result.orders) > 1
    rows = []
    for row in result.summary_rows():
        out = {"step": row["step"]} if several else {"step": row["step"], "arrived": result.order_names(0)[row["step"] - 1]}
        for name in ["average", *result.tasks]:
            out[name] = _cell(row[name], row[f"{name} std"], row[f"{name} orders"], len(result.orders))
        rows.append(out)
    return rows


def _cell(mean: float | None, std: float, count: int, orders: int) -> str:
    if mean is None:
        return ""
    if orders == 1:
        return f"{mean:.4f}"
    if count == 1:
        return f"{mean:.4f} (1 order)"  # no spread to show
    return f"{mean:.4f} ± {std:.4f}" + (f" ({count} orders)" if count < orders else "")


def add_parsers(sub) -> None:
    p = sub.add_parser("continual", help="merge adapters one at a time (OPCM) and score every arrived task after each arrival, "
                       "averaged over random arrival orders")
    p.add_argument("adapters", nargs="+", metavar="ADAPTER", help="PEFT LoRA adapter folders or Hub ids org/name[@revision]")
    g = p.add_argument_group("arrival orders")
    g.add_argument("--orders", type=positive_int, metavar="N",
                   help=f"how many different random arrival orders to average over (default {DEFAULT_ORDERS}, or every order when fewer)")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random orders (default 0)")
    g.add_argument("--order", metavar="I,J,K", help="one arrival order instead: the adapters' positions on the command line, e.g. 2,1,3")
    g.add_argument("--alpha", type=finite_float, default=0.5,
                   help="OPCM's α in [0, 1]: the share of the merged update's spectrum whose top directions a new adapter is "
                   "projected out of (default 0.5)")
    g = p.add_argument_group("evaluation data")
    g.add_argument("--task", action="append", metavar="SPEC",
                   help="demo:NAME or PATH[@…]; repeat per task (default: the tasks recorded in the adapters)")
    g.add_argument("--split", default="test", choices=["validation", "test"])
    g.add_argument("--limit", type=positive_int, metavar="N", help="score only the first N examples of each task")
    g.add_argument("--batch-size", type=positive_int, default=64)
    g.add_argument("--max-length", type=positive_int, default=128)
    add_base(p)
    p.add_argument("--csv", metavar="FILE", help="also write every order's steps, and the mean and std per step, as CSV")
    p.add_argument("--force", action="store_true", help="replace an existing CSV file")
    p.set_defaults(func=cmd_continual)
