"""``osrm guard``: catch a bad contributor before it spoils a merge — a data-free pre-screen of the
adapters, then the merge scored with and without each of them (see ``osrm_gui.core.explore.guard``)."""

from __future__ import annotations

import json
import math
import sys

from osrm_gui.cli.console import drive, format_table, print_events
from osrm_gui.cli.options import add_merge_command, check_outputs, finite_float, workspace_and_spec
from osrm_gui.core.errors import OsrmError

FLAGGED_EXIT = 3  # with --fail-on-flag: a pipeline can stop on it


def _plain(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _rules(args):
    from osrm_gui.core.analysis.prescreen import ScreenRules

    rules = ScreenRules(args.norm_ratio, args.z, args.density)
    rules.check()
    return rules


def report_steps(job):
    """The job's Progress events for the progress bar; each adapter's deltas printed as soon as it is scored."""
    from osrm_gui.core.explore.guard import LeftOut

    def line(event) -> str:
        deltas = "  ".join(f"{t} {d:+.4f}" for t, d in event.deltas.items())
        return f"[{event.index + 1}/{event.total}] without {event.adapter}: Δ {deltas}"

    return print_events(job, LeftOut, line)


def _print_prescreen(screen) -> None:
    layers = f"{len(screen.layers)} layers every adapter adapts" if screen.layers else "no layer every adapter adapts"
    print(f"pre-screen (data-free; pairwise statistics over the {layers}):")
    print(format_table(screen.rows()))
    print()


def _print_verdicts(result) -> None:
    """A table of verdicts (the averages over the tasks each verdict counts), then every reason on its own line."""
    rows = [{k: v for k, v in row.items() if k != "why"} for row in result.verdict_rows()]
    print(format_table(rows))
    for verdict in result.verdicts:
        for source, reasons in (("pre-screen", verdict.prescreen), ("leave-one-out", verdict.leave_one_out)):
            for reason in reasons:
                print(f"  {verdict.adapter} ({source}): {reason}")


def cmd_guard(args):
    from osrm_gui.core.analysis.prescreen import prescreen
    from osrm_gui.core.explore.guard import check_tau, guard

    # every option and the output are checked before a model loads
    tau = check_tau(args.tau)
    rules = _rules(args)
    check_outputs(args, args.json)
    ws, spec = workspace_and_spec(args, need_tasks=not args.prescreen_only)
    if len(ws.adapters) < 2:
        raise OsrmError(f"the guard compares adapters with each other, so it needs 2 adapters or more ({len(ws.adapters)} given)")
    if args.prescreen_only:
        screen = drive(prescreen(ws.adapters, rules), "guard")
        _print_prescreen(screen)
        flagged, data = screen.flagged, {"prescreen": screen.to_dict(), "flagged": screen.flagged}
    else:
        result = drive(report_steps(guard(ws, spec, args.split, tau, args.limit, rules, args.reference)), "guard")
        print()
        _print_prescreen(result.prescreen)
        against = "against the other adapters' median Δ" if args.reference == "others" else "against 0"
        print(f"leave-one-out on {args.split}: Δ = score(all) − score(without the adapter); flagged when the mean excess "
              f"({against}) is below -{tau:g} or one task's is below -{2 * tau:g}")
        print(format_table(result.delta_rows()))
        print()
        _print_verdicts(result)
        flagged, data = result.flagged, result.to_dict()
    print()
    print(f"flagged: {', '.join(flagged)}" if flagged else "no adapter flagged")
    if args.json:
        from osrm_gui.core.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(_plain(data), indent=2, allow_nan=False) + "\n", force=args.force, inputs=ws.input_paths())
        print(f"wrote {args.json}")
    if flagged and args.fail_on_flag:
        print(f"osrm guard: {len(flagged)} adapter(s) flagged (--fail-on-flag)", file=sys.stderr)
        return FLAGGED_EXIT
    return 0


def add_parsers(sub) -> None:
    p = add_merge_command(sub, "guard", "flag a bad contributor: data-free pre-screen, then the merge scored with and without each adapter")
    p.description = ("Pre-screen the adapters (norm, cosine, sign-conflict and overlap outliers), then score the merge (the same "
                     "method, parameters and λ) with every adapter and without each one on --split (default validation: the "
                     "guard decides what to merge, so the test split stays for reporting). Each adapter needs its task.")
    p.set_defaults(split="validation")
    g = p.add_argument_group("guard")
    g.add_argument("--tau", type=finite_float, default=0.01,
                   help="flag an adapter whose inclusion lowers the other tasks by more than τ on average, or one task by more than "
                        "2τ, beyond what the other adapters' inclusion does (metric units; default 0.01, one accuracy point)")
    g.add_argument("--reference", choices=["others", "zero"], default="others",
                   help="what a loss is measured against: the other adapters' median Δ on the task (default), or zero (any loss)")
    g.add_argument("--norm-ratio", type=finite_float, default=3.0, help="pre-screen: flag a norm above this many times the others' median (default 3)")
    g.add_argument("--z", type=finite_float, default=3.5, help="pre-screen: flag a cosine, sign-conflict or overlap this many robust "
                   "standard deviations off the others' (default 3.5)")
    g.add_argument("--density", type=finite_float, default=0.2, help="pre-screen: TIES density before counting sign conflicts (default 0.2)")
    g.add_argument("--prescreen-only", action="store_true", help="only the data-free pre-screen: no task data, nothing merged or scored")
    g.add_argument("--fail-on-flag", action="store_true", help=f"exit with status {FLAGGED_EXIT} when an adapter is flagged (for CI pipelines)")
    g.add_argument("--json", metavar="FILE", help="write every number and verdict as JSON")
    g.add_argument("--force", action="store_true", help="replace an existing JSON file")
    p.set_defaults(func=cmd_guard)
