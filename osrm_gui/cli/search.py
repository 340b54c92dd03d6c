"""``osrm search``: multi-fidelity merge search with Optuna — chosen on validation, reported on test."""

from __future__ import annotations

import json
from pathlib import Path

from osrm_gui.cli.console import drive, format_table
from osrm_gui.cli.options import (
    add_base, add_executor, add_history, check_outputs, executor_from, finite_float, non_negative_int, open_history, parse_params, positive_int,
    print_warnings,
)
from osrm_gui.core.errors import OsrmError


def cmd_search(args) -> int:
    from osrm_gui.core.explore.history import check_history, default_history_path
    from osrm_gui.core.explore.search import check_settings, default_storage_path, search
    from osrm_gui.core.workspace import open_workspace

    space = search_space(args)
    trials = args.trials if args.trials or args.timeout else 50
    check_settings(space, args.sampler, trials, args.timeout, args.min_task_fraction)  # every option before a model loads
    if not args.adapters:
        raise OsrmError("no adapters given: name the adapter folders to merge")
    check_outputs(args, args.json)
    if not args.no_history:
        check_history(args.history or default_history_path())  # read-only: a search refused later leaves no file
    storage = args.storage or default_storage_path(args.history or default_history_path())
    executor = executor_from(args)
    ws = open_workspace(args.base, args.adapters, args.task, args.device, args.dtype, args.trust_remote_code)
    ws.batch_size, ws.max_length = args.batch_size, args.max_length
    print_warnings(ws.warnings)
    job = search(ws, space, args.sampler, trials, args.timeout, args.seed, storage, args.study, args.chunk, args.min_task_fraction,
                 open_history(args), normalise=not args.raw, prune=not args.no_prune, executor=executor)
    result = drive(_with_best_so_far(job), "search")
    print_result(result, args.top)
    if args.json:
        from osrm_gui.core.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(result_json(result), indent=2) + "\n", force=args.force)
        print(f"wrote {args.json}")
    return 0


def search_space(args):
    from osrm_gui.core.explore.search_space import SearchSpace

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    ranges = {}
    for item in args.lambda_range:
        method, eq, span = item.rpartition("=")
        targets = [method] if eq else list(methods)
        for target in targets:
            ranges[target] = _span(span, f"--lambda-range {item!r}")
    coefficients = _span(args.coefficient_range, "--coefficient-range")
    fixed = parse_params(args.param)
    return SearchSpace(methods, ranges, coefficients, args.per_layer_groups, fixed, not args.no_method_params)


def _span(text: str, option: str) -> tuple[float, float]:
    from osrm_gui.core.merge.spec import finite_number

    low, colon, high = text.partition(":")
    if not colon:
        raise OsrmError(f"{option}: expected LOW:HIGH, e.g. 0.2:1")
    return finite_number(low, f"{option} lower bound"), finite_number(high, f"{option} upper bound")


def _with_best_so_far(job):
    """The job's Progress as is; each finished trial as a Progress whose message is the best so far
    (with a timeout only, the chunks' Progress counts the seconds, and trials pass silently)."""
    from osrm_gui.core.explore.search import TrialEvent
    from osrm_gui.core.progress import Progress

    try:
        while True:
            event = next(job)
            if isinstance(event, TrialEvent):
                if event.total is None:
                    continue
                best = f"best {event.best.values[0]:.4f} (trial {event.best.number})" if event.best else "no complete trial yet"
                event = Progress("search", event.done, event.total, f"trial {event.trial.number} {event.trial.state}; {best}")
            yield event
    except StopIteration as stop:
        return stop.value
    finally:
        job.close()


def print_result(result, top: int) -> None:
    from osrm_gui.core.explore.search import best_trial_rows

    states = [t.state for t in result.trials]
    print(f"study {result.study_name} ({result.storage or 'in memory'}), {result.sampler}: {len(states)} trials "
          f"({states.count('complete')} complete, {states.count('pruned')} pruned, {states.count('fail')} failed)")
    title = "Pareto set (mean, worst task), best mean first" if result.pareto else f"best {min(top, states.count('complete'))} trials"
    print(f"\n{title}, scored on validation:")
    print(format_table(best_trial_rows(result.trials, result.objectives, result.pareto, top)))
    if result.best_point is None:
        print("\nno trial completed: nothing to report on test")
    else:
        print(f"\nbest point (trial {result.best.number}): {result.best_point.summary()}")
        if result.best_point.group_coefficients is not None:
            print("layer groups: " + ", ".join(f"g{i} = {label}" for i, label in enumerate(result.layer_groups)))
        print(format_table(score_rows(result)))
    ex = result.examples
    print(f"\nforward passes (examples scored): search {ex['search']} this run ({result.study_examples} over the study), "
          f"single-adapter reference {ex['reference']}, test {ex['test']}")
    importances = result.importances()
    if importances:
        print("\nparameter importances (Optuna PED-ANOVA, complete trials):")
        print(format_table([{"parameter": k, "importance": v} for k, v in importances.items()]))
    else:
        print("\nparameter importances: too few complete trials")


def score_rows(result) -> list[dict]:
    rows = []
    for task, value in result.validation.items():
        row = {"task": task}
        if result.reference:
            row["single (validation)"] = result.reference[task]
        row["validation"] = value
        if result.test:
            row["test"] = result.test[task]
        rows.append(row)
    average = {"task": "average"}
    for key in rows[0] if rows else []:
        if key != "task":
            average[key] = sum(r[key] for r in rows) / len(rows)
    return rows + [average]


def result_json(result) -> dict:
    from dataclasses import asdict

    best = None
    if result.best_point is not None:
        best = {"trial": result.best.number, "values": list(result.best.values), "spec": result.best_point.spec.to_dict(),
                "group_coefficients": result.best_point.group_coefficients, "layer_groups": result.layer_groups,
                "validation": result.validation, "test": result.test}
    return {"study": result.study_name, "storage": str(result.storage) if result.storage else None, "sampler": result.sampler,
            "objectives": list(result.objectives), "best": best, "reference": result.reference, "pareto": result.pareto,
            "examples": {**result.examples, "study": result.study_examples}, "importances": result.importances(),
            "trials": [asdict(t) for t in result.trials]}


def add_parsers(sub) -> None:
    from osrm_gui.core.explore.search_study import SAMPLERS

    p = sub.add_parser("search", help="search merge methods, λ and coefficients with Optuna on validation (multi-fidelity), report the best on test")
    p.add_argument("adapters", nargs="*", metavar="ADAPTER", help="PEFT LoRA adapter folders or Hub ids org/name[@revision]")
    g = p.add_argument_group("search space")
    g.add_argument("--methods", default="task_arithmetic", metavar="M1,M2", help="merge methods to choose among (default task_arithmetic)")
    g.add_argument("--lambda-range", action="append", default=[], metavar="[METHOD=]LOW:HIGH",
                   help="λ range (default: the span of the method's leaderboard λ grid); repeatable, per method")
    g.add_argument("--coefficient-range", default="0:1.5", metavar="LOW:HIGH", help="range of each adapter's coefficient (default 0:1.5)")
    g.add_argument("--per-layer-groups", type=positive_int, default=1, metavar="K",
                   help="a coefficient per adapter and group of K groups of consecutive blocks (weighted-sum methods only; default 1)")
    g.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="hold a method parameter at a value instead of searching it")
    g.add_argument("--no-method-params", action="store_true", help="keep every method parameter at its default")
    g = p.add_argument_group("search")
    g.add_argument("--sampler", default="tpe", choices=SAMPLERS,
                   help="tpe (default), cmaes (continuous spaces only), nsga2 (mean and worst task, no pruning), random")
    g.add_argument("--trials", type=positive_int, help="new trials in this run (default 50 when no --timeout)")
    g.add_argument("--timeout", type=finite_float, metavar="SECONDS", help="start no trial after this long")
    g.add_argument("--chunk", type=positive_int, default=32, metavar="N", help="validation examples per task per fidelity step (default 32)")
    g.add_argument("--no-prune", action="store_true", help="score every trial on all validation examples (no Hyperband pruning)")
    g.add_argument("--raw", action="store_true", help="maximise the mean raw metric instead of the mean normalised by each adapter alone")
    g.add_argument("--min-task-fraction", type=finite_float, metavar="F",
                   help="constraint: no task below F times its adapter's own validation score")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seeds the sampler and the validation chunks' order")
    g.add_argument("--storage", type=Path, metavar="FILE", help="Optuna SQLite storage (default: history.studies.sqlite next to the run history)")
    g.add_argument("--study", metavar="NAME", help="study name; a run with the same name continues it (default: a hash of the settings)")
    g.add_argument("--top", type=positive_int, default=10, metavar="N", help="best trials to list (default 10)")
    add_history(p)
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the result (best point, scores, trials, importances) as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing JSON file")
    g = p.add_argument_group("evaluation data")
    g.add_argument("--task", action="append", metavar="SPEC", help="demo:NAME or PATH[@…]; repeat per task (default: the tasks recorded in the adapters)")
    g.add_argument("--batch-size", type=positive_int, default=64)
    g.add_argument("--max-length", type=positive_int, default=128)
    add_base(p)
    add_executor(p, "trials")
    p.set_defaults(func=cmd_search)
