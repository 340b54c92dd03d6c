"""``osrm demo``: the built-in demo suite — list its tasks, build its adapters, run a merge on it."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from osrm_gui import __version__
from osrm_gui.cli.console import drive, format_table, score_rows
from osrm_gui.cli.options import add_executor, check_outputs, executor_from, finite_float, non_negative_int, positive_int
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.demo_set import BASELINE, MANIFEST, adapters_folder, demo_adapter_paths, file_hashes, read_manifest
from osrm_gui.core.paths import demo_dir

LORA = {"rank": 8, "alpha": 16.0, "steps": 300, "lr": 2e-3, "batch_size": 32, "max_length": 64, "warmup": 0.06}


def add_parsers(sub) -> None:
    p = sub.add_parser("demo", help="the built-in demo suite: list, run, build, compare, leaderboard")
    demo_sub = p.add_subparsers(dest="demo_command", required=True, metavar="ACTION")
    q = demo_sub.add_parser("list", help="the demo tasks, their sizes and sources")
    q.set_defaults(func=main)
    q = demo_sub.add_parser("run", help="merge the demo adapters and print per-task metrics (what `make run` shows)")
    q.add_argument("--method", default="task_arithmetic")
    q.add_argument("--lambda", dest="lam", type=finite_float, default=None, help="global λ (default 0.5 for task arithmetic — a common starting point, sweep it — else 1)")
    q.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    q.add_argument("--limit", type=positive_int, help="score only the first N test examples of each task")
    q.add_argument("--family", default=BASELINE, help="which demo adapters: peft-default (default) or a family built with `demo build --family`")
    q.add_argument("--device", default="auto")
    q.set_defaults(func=main)
    q = demo_sub.add_parser("build", help="train one adapter per demo task, measure it against a head-only probe, write the manifest")
    q.add_argument("--out", type=Path, default=None, help="where to write (default: the bundled resources/demo)")
    q.add_argument("--tasks", help="comma-separated subset of demo tasks")
    q.add_argument("--steps", type=positive_int, default=LORA["steps"])
    q.add_argument("--seed", type=non_negative_int, default=0, help="task i trains with seed 100·SEED + i, so no two adapters share an initial A")
    q.add_argument("--family", default=BASELINE, help="initialisation family (see `osrm demo compare --help`); "
                   "peft-default fills adapters/, others adapters-FAMILY/")
    q.add_argument("--reuse", type=Path, help="take adapters that `osrm demo compare --work DIR` trained with the very same settings "
                   "instead of training them again")
    q.add_argument("--device", default="auto")
    q.set_defaults(func=main)
    _add_leaderboard(demo_sub)
    q = demo_sub.add_parser("compare", help="compare initialisation families (peft default vs OSRM …) on the demo over seeds")
    q.add_argument("--families", default="peft-default,osrm-cov,osrm-cov-frozen,peft-default-frozen",
                   help="comma-separated, from: " + ", ".join(_families()))
    q.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; task i of seed s trains with seed 100·s + i")
    q.add_argument("--steps", type=positive_int, default=LORA["steps"])
    q.add_argument("--work", type=Path, help="where the trained adapters are kept and reused (default: the user cache)")
    q.add_argument("--limit", type=positive_int, help="score only the first N test examples of each task")
    q.add_argument("--json", type=Path, help="write every run's numbers to this JSON file")
    q.add_argument("--from-json", type=Path, action="append", help="only print the summary of JSON files written before (no training); "
                   "repeat to combine runs, with --json to save them together")
    q.add_argument("--device", default="auto")
    add_executor(q, "adapters and adapter sets")
    q.set_defaults(func=main)
    _add_tradeoff(demo_sub)


def _add_tradeoff(demo_sub) -> None:
    from osrm_gui.core.explore.tradeoff import STUDY_FAMILIES

    q = demo_sub.add_parser("tradeoff", help="the trade-off study: single-task accuracy against merged accuracy per training setting, "
                            "over seeds, with its Pareto front")
    q.add_argument("--families", default=",".join(STUDY_FAMILIES), help="comma-separated settings (default: peft-default, osrm-cov, "
                   "the budgets k1–k16, the penalties pen1–pen1000, the A learning-rate multipliers a0.1 and a0.01); any of "
                   "`osrm demo compare --help`'s families")
    q.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (adapters trained as `demo compare` does, and shared with it)")
    q.add_argument("--steps", type=positive_int, default=LORA["steps"])
    q.add_argument("--work", type=Path, help="where the trained adapters are kept and reused (default: the user cache, as demo compare)")
    q.add_argument("--limit", type=positive_int, help="score only the first N examples of each task and split")
    q.add_argument("--json", type=Path, help="write every run's numbers to this JSON file (rewritten after every adapter set)")
    q.add_argument("--resume", action="store_true", help="keep the runs already in --json and evaluate only the missing sets")
    q.add_argument("--from-json", type=Path, action="append", help="only print the summary (and --plot) of JSON files written before; "
                   "repeat to combine them")
    q.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the Pareto plot there (offscreen, with the app's plotting: needs PySide6 and pyqtgraph)")
    q.add_argument("--device", default="auto")
    add_executor(q, "adapters and adapter sets")
    q.set_defaults(func=main)


def _add_leaderboard(demo_sub) -> None:
    q = demo_sub.add_parser("leaderboard", help="every merge method on the demo families over seeds: λ chosen on validation, reported on test")
    q.add_argument("--families", default="peft-default,osrm-cov", help="comma-separated initialisation families")
    q.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (adapters trained as `demo compare` does, and shared with it)")
    q.add_argument("--methods", default="all", help="comma-separated merge methods, or all (default)")
    q.add_argument("--steps", type=positive_int, default=LORA["steps"])
    q.add_argument("--work", type=Path, help="where the trained adapters are kept and reused (default: the user cache, as demo compare)")
    q.add_argument("--limit", type=positive_int, help="score only the first N examples of each task and split")
    q.add_argument("--json", type=Path, help="write every run's numbers to this JSON file")
    q.add_argument("--from-json", type=Path, help="only print the summary of a JSON file written before")
    q.add_argument("--resume", action="store_true", help="keep the runs already in --json and add only the missing ones "
                   "(the file is rewritten after every adapter set, so an interrupted leaderboard loses at most one)")
    q.add_argument("--device", default="auto")
    add_executor(q, "adapters and adapter sets")
    q.set_defaults(func=main)


def leaderboard(args) -> int:
    from osrm_gui.core.explore import compare as cmp
    from osrm_gui.core.explore import leaderboard as board
    from osrm_gui.core.inputs.demo_tasks import DEMO_TASKS, load_demo_task
    from osrm_gui.core.osrm.features import cache_dir
    from osrm_gui.core.osrm.training import TrainSettings

    if args.from_json:
        meta, runs = board.load(args.from_json)
    else:
        families = args.families.split(",")
        for family in families:
            if family not in cmp.FAMILIES:
                raise OsrmError(f"--families: unknown family {family!r}; choose from {', '.join(cmp.FAMILIES)}")
        seeds = [int(s) for s in args.seeds.split(",")]
        methods = board.all_methods() if args.methods == "all" else board.check_methods(args.methods.split(","))
        if args.resume and not args.json:
            raise OsrmError("--resume needs --json FILE, the leaderboard to add to")
        kept = board.load(args.json)[1] if args.resume and args.json.is_file() else []
        if args.json and not args.resume:
            check_outputs(args, args.json)
        executor = executor_from(args)
        tasks = [load_demo_task(name) for name in DEMO_TASKS]
        work = args.work or cache_dir().parent / "demo-compare"
        settings = TrainSettings(**{**LORA, "steps": args.steps})
        device = None if args.device == "auto" else args.device
        meta = {"command": f"osrm demo leaderboard --families {args.families} --seeds {args.seeds} --methods {args.methods}"
                + (f" --limit {args.limit}" if args.limit else ""), "lora": {**LORA, "steps": args.steps}, "built_with": f"osrm-gui {__version__}"}
        runs = list(kept)
        wanted = [(family, seed) for family in families for seed in seeds if board.missing_methods(kept, family, seed, methods)]
        with cmp.using(executor) as runner:  # one set of workers trains, then evaluates
            sets = drive(cmp.train_sets(wanted, tasks, work, settings, device, executor=runner), "train")
            specs = [t.extra.get("spec") for t in tasks]

            def args_of(family, seed, paths):
                return None, paths, specs, device, family, seed, board.missing_methods(kept, family, seed, methods), args.limit

            def saving(events):
                for event in events:
                    if not isinstance(event, tuple):
                        yield event
                        continue
                    runs.extend(event[2])
                    if args.json:
                        board.save(runs, args.json, meta)  # after every adapter set: an interruption loses one at most

            drive(saving(cmp.over_sets(sets, board.run_set, args_of, runner, "leaderboard")), "leaderboard")
    print(meta["command"])
    print("test average over the demo tasks at the λ each run chose on validation; ± is the standard deviation over seeds\n")
    print(format_table(board.summarise(runs)))
    families = list(dict.fromkeys(r.family for r in runs))
    if len(families) == 2:
        print()
        print(format_table(board.family_margin(runs, families[1], families[0])))
    if args.json and not args.from_json:
        print(f"wrote {args.json}")
    return 0


def _families():
    from osrm_gui.core.explore.compare import FAMILIES

    return list(FAMILIES)


def main(args) -> int:
    from osrm_gui.core.inputs.demo_tasks import DEMO_TASKS, load_demo_task

    if args.demo_command == "list":
        rows = []
        for name, spec in DEMO_TASKS.items():
            task = load_demo_task(name)
            rows.append({**task.summary(), "source": spec.source, "licence": spec.licence})
        print(format_table(rows))
        return 0
    if args.demo_command == "build":
        return build(args)
    if args.demo_command == "compare":
        return compare(args)
    if args.demo_command == "leaderboard":
        return leaderboard(args)
    if args.demo_command == "tradeoff":
        return tradeoff(args)
    return run(args)


def tradeoff(args) -> int:
    """Train (or reuse) every setting's adapters over the seeds, evaluate each set, print the
    summary, the Pareto front and the verdict; the JSON is rewritten after every set."""
    from osrm_gui.core.explore import compare as cmp
    from osrm_gui.core.explore import tradeoff as study

    if args.plot:
        check_outputs(args, args.plot)
    if args.from_json:
        meta, runs = {"command": []}, []
        for path in args.from_json:
            part_meta, part_runs = _load_study(path)
            runs += part_runs
            meta["command"].append(part_meta.get("command", str(path)))
            meta.setdefault("families", {}).update(part_meta.get("families", {}))
            meta["seeds"] = sorted({*meta.get("seeds", []), *part_meta.get("seeds", []), *(r.seed for r in part_runs)})
        meta["command"] = " && ".join(meta["command"])
        if args.json:
            check_outputs(args, args.json)
            cmp.save_runs(runs, args.json, meta)
    else:
        runs, meta = _run_tradeoff(args, cmp, study)
    print(meta["command"])
    print("test accuracy averaged over the tasks; normalised = merged / each adapter alone, at the λ chosen on validation; "
          "± is the standard deviation over seeds\n")
    print(format_table(study.summarise(runs)))
    described = meta.get("families", {})
    for family in study.in_study_order(described):
        print(f"  {family}: {described[family]}")
    partial = study.coverage(meta, runs)
    if partial:
        print(f"\n{partial}")
    points = study.pareto_points(runs)
    print(f"\nPareto front (single-task accuracy, TA normalised; means over seeds): {', '.join(study.non_dominated(points))}")
    references = [r for r in study.REFERENCES if any(run.family == r for run in runs)]
    if len(references) == len(study.REFERENCES) and len(points) > len(references):
        print(format_table(study.dominance(runs)))
        print(f"does any setting dominate {' and '.join(study.REFERENCES)} by more than the seed spread? {study.verdict(runs)}")
    if args.json and not args.from_json:
        print(f"wrote {args.json}")
    if args.plot:
        _draw(args, runs, meta)
    return 0


def _load_study(path: Path):
    from osrm_gui.core.explore import compare as cmp
    from osrm_gui.core.explore.tradeoff import is_study_run

    try:
        meta, runs = cmp.load_runs(path)
    except FileNotFoundError:
        raise OsrmError(f"{path}: no such file") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise OsrmError(f"{path}: not a demo compare/tradeoff file ({type(exc).__name__}: {exc})") from None
    if not all(is_study_run(r) for r in runs):
        raise OsrmError(f"{path}: written by `osrm demo compare`, not `demo tradeoff` (no TIES λ grid or held-out interference)")
    return meta, runs


def _run_tradeoff(args, cmp, study):
    from osrm_gui.core.inputs.demo_tasks import DEMO_TASKS, load_demo_task
    from osrm_gui.core.osrm.features import cache_dir
    from osrm_gui.core.osrm.training import TrainSettings

    families = args.families.split(",")
    for family in families:
        if family not in cmp.FAMILIES:
            raise OsrmError(f"--families: unknown family {family!r}; choose from {', '.join(cmp.FAMILIES)}")
    seeds = [_seed(s) for s in args.seeds.split(",")]
    if args.resume and not args.json:
        raise OsrmError("--resume needs --json FILE, the study to add to")
    base_settings = TrainSettings(**{**LORA, "steps": args.steps})
    for family in families:  # a knob this version cannot train, or a setting training refuses: one line before anything loads
        cmp.family_settings(family, base_settings, 0, 0, [f"demo:{name}" for name in DEMO_TASKS]).check()
    command = (f"osrm demo tradeoff --families {args.families} --seeds {args.seeds}" + (f" --steps {args.steps}" if args.steps != LORA["steps"] else "")
               + (f" --limit {args.limit}" if args.limit else ""))
    kept = []
    if args.resume and args.json.is_file():
        old_meta, kept = _load_study(args.json)
        if old_meta.get("limit") != args.limit or old_meta.get("lora") != {**LORA, "steps": args.steps}:
            raise OsrmError(f"{args.json}: its runs were made with other settings ({old_meta.get('command')}); resume with those")
    elif args.json:
        check_outputs(args, args.json)
    executor = executor_from(args)
    tasks = [load_demo_task(name) for name in DEMO_TASKS]
    work = args.work or cache_dir().parent / "demo-compare"
    device = None if args.device == "auto" else args.device
    meta = {"command": command, "lora": {**LORA, "steps": args.steps}, "limit": args.limit, "built_with": f"osrm-gui {__version__}",
            "families": {f: cmp.FAMILIES[f][1] for f in dict.fromkeys([*(r.family for r in kept), *families])},
            "seeds": sorted({*seeds, *(r.seed for r in kept)}),
            "lambdas": list(study.FINE_LAMBDAS), "ties_lambdas": list(study.TIES_LAMBDAS), "width_tolerance": study.WIDTH_TOLERANCE,
            "heldout": "test"}
    save = (lambda runs: cmp.save_runs(runs, args.json, meta)) if args.json else None  # noqa: E731
    runs = drive(study.study(families, seeds, tasks, work, base_settings, device, args.limit, executor=executor, kept=kept, save=save),
                 "tradeoff")
    if save is not None:
        save(runs)  # in families × seeds order
    return runs, meta


def _seed(text: str) -> int:
    import argparse

    try:
        return non_negative_int(text)
    except argparse.ArgumentTypeError as exc:
        raise OsrmError(f"--seeds: {exc}") from None


def _draw(args, runs, meta) -> None:
    import os
    import subprocess
    import sys
    import tempfile

    from osrm_gui.core.explore import compare as cmp

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "tradeoff.json"
        cmp.save_runs(runs, data, meta)
        env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
        # the figure is Qt's, which the CLI never imports: drawn by the app's plotting module in a child process
        done = subprocess.run([sys.executable, "-m", "osrm_gui.gui.plots.tradeoff_figure", str(data), str(args.plot)], env=env,
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise OsrmError(f"--plot {args.plot}: drawing the figure failed ({last})")
    print(f"wrote {args.plot}")


def run(args) -> int:
    from osrm_gui.cli.options import parse_params
    from osrm_gui.core.merge.spec import MergeSpec
    from osrm_gui.core.workspace import open_workspace

    paths = demo_adapter_paths(family=args.family)
    ws = open_workspace(None, paths, device=args.device)
    lam = args.lam if args.lam is not None else (0.5 if args.method == "task_arithmetic" else 1.0)
    spec = MergeSpec(args.method, None, lam, parse_params(args.param))
    merged = drive(ws.merge(spec), "merge")
    single = drive(ws.evaluate_single(limit=args.limit), "single")
    scores = drive(ws.evaluate(merged, limit=args.limit), "merged")
    print(f"Demo suite: {len(ws.tasks)} tasks on {ws.base.name}; merge = {merged.spec.method}, λ = {lam:g}, params {merged.spec.params}")
    print("single = each adapter alone; merged = one backbone for all tasks, each task through its own head\n")
    print(format_table(score_rows(ws, scores, single)))
    return 0


def compare(args) -> int:
    from osrm_gui.core.explore import compare as cmp
    from osrm_gui.core.inputs.demo_tasks import DEMO_TASKS, load_demo_task
    from osrm_gui.core.osrm.features import cache_dir
    from osrm_gui.core.osrm.training import TrainSettings

    if args.from_json:
        meta, runs = {"command": [], "families": {}}, []
        for path in args.from_json:
            part_meta, part_runs = cmp.load_runs(path)
            runs += part_runs
            meta["command"].append(part_meta["command"])
            meta["families"].update(part_meta.get("families", {}))
            meta.setdefault("lora", part_meta.get("lora"))
        meta["command"] = " && ".join(meta["command"])
        if args.json:
            cmp.save_runs(runs, args.json, meta)
    else:
        families = args.families.split(",")
        seeds = [int(s) for s in args.seeds.split(",")]
        executor = executor_from(args)
        tasks = [load_demo_task(name) for name in DEMO_TASKS]
        work = args.work or cache_dir().parent / "demo-compare"
        base_settings = TrainSettings(**{**LORA, "steps": args.steps})
        device = None if args.device == "auto" else args.device
        runs = drive(cmp.compare(families, seeds, tasks, work, base_settings, device, args.limit, executor=executor), "compare")
        meta = {"command": "osrm demo compare --families " + args.families + " --seeds " + args.seeds
                + (f" --steps {args.steps}" if args.steps != LORA["steps"] else "") + (f" --limit {args.limit}" if args.limit else ""),
                "lora": {**LORA, "steps": args.steps}, "built_with": f"osrm-gui {__version__}", "families": {f: cmp.FAMILIES[f][1] for f in families}}
        if args.json:
            cmp.save_runs(runs, args.json, meta)
    manifest = read_manifest()
    probe = sum(e["test"]["head_only_probe"] for e in manifest["tasks"].values()) / len(manifest["tasks"])
    print(f"{meta['command']}")
    print("average over the 4 demo tasks of the test accuracy; ± is the standard deviation over seeds")
    print(f"floor: head-only probe on the frozen base {probe:.3f} (from the manifest)\n")
    print(format_table(cmp.summarise(runs)))
    print()
    print(format_table(cmp.per_task(runs)))
    for family, text in meta.get("families", {}).items():
        print(f"  {family}: {text}")
    print()
    print(_energy_table(LORA))
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _energy_table(lora: dict) -> str:
    """Why OSRM does (not) help here: how much of each task's own feature energy its OSRM subspace holds."""
    from osrm_gui.core.inputs.demo_tasks import DEMO_TASKS, load_demo_task
    from osrm_gui.core.osrm.features import cached_features
    from osrm_gui.core.inputs.models import load_base
    from osrm_gui.core.osrm.subspaces import subspace_energy

    base = load_base(None)
    features = {n: drive(cached_features(base, load_demo_task(n), ["query", "value"], 100, lora["max_length"]), f"features {n}")
                for n in DEMO_TASKS}
    rows = []
    for variant in ("cov", "mean"):
        for task, (own, others) in subspace_energy(features, lora["rank"], variant).items():
            rows.append({"variant": variant, "task": task, "own energy in A": f"{own:.2e}", "other tasks' energy in A": f"{others:.2e}"})
    d = next(iter(next(iter(features.values())).layers.values())).gram.shape[0]
    return (f"share of feature energy inside each task's OSRM subspace (rank {lora['rank']}; a random subspace holds {lora['rank'] / d:.2e}):\n"
            + format_table(rows))


def build(args) -> int:
    from osrm_gui.core.explore.compare import family_settings
    from osrm_gui.core.inputs.demo_tasks import DEMO_TASKS, load_demo_task
    from osrm_gui.core.osrm.probe import fit_linear_probe
    from osrm_gui.core.osrm.training import TrainSettings, train_adapter
    from osrm_gui.core.workspace import open_workspace

    out = args.out or demo_dir()
    family = args.family
    baseline = family == BASELINE
    names = args.tasks.split(",") if args.tasks else list(DEMO_TASKS)
    unknown = [n for n in names if n not in DEMO_TASKS]
    if unknown:
        raise OsrmError(f"unknown demo task(s) {', '.join(unknown)}; choose from {', '.join(DEMO_TASKS)}")
    device = None if args.device == "auto" else args.device
    folder = adapters_folder(family)
    scratch = out / ".build"
    shutil.rmtree(scratch, ignore_errors=True)
    specs = [f"demo:{n}" for n in names]
    entries = {}
    started = time.time()
    try:
        for i, name in enumerate(names):
            task = load_demo_task(name)
            settings = family_settings(family, TrainSettings(**{**LORA, "steps": args.steps}), args.seed, i, specs)
            adapter_dir = scratch / folder / name
            reused = _reusable(args.reuse, family, args.seed, name, settings, task) if args.reuse else None
            if reused is not None:
                shutil.copytree(reused, adapter_dir)
                seconds = json.loads((reused / "osrm_adapter.json").read_text())["train"]["seconds"]
            else:
                seconds = drive(train_adapter(None, task, adapter_dir, settings, device), f"{name} {family}").seconds
            ws = open_workspace(None, [adapter_dir], [f"demo:{name}"], device=device)
            lora_scores = drive(ws.evaluate_single(), f"{name} eval")[name]
            entries[name] = {"adapter": f"{folder}/{name}", "files": file_hashes(adapter_dir), "task_hash": task.content_hash(),
                             "seed": settings.seed, "metric": task.metric, "test": {"lora": lora_scores["metric"], "n": lora_scores["n"]},
                             "train_seconds": round(seconds, 1), **({"reused_from_compare": f"{family}/seed{args.seed}/{name}"} if reused is not None else {})}
            line = f"{name}: {family} adapter {lora_scores['metric']:.4f}"
            if baseline:
                probe = drive(fit_linear_probe(ws.base, task), f"{name} probe")
                entries[name]["test"]["head_only_probe"] = probe.test
                entries[name]["probe_C"] = probe.C
                line += f" vs head-only probe {probe.test:.4f}"
            print(f"{line} ({task.metric}, {lora_scores['n']} test examples)")
        manifest = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else {}
        command = "osrm demo build" + (f" --family {family}" if not baseline else "") + \
            (f" --steps {args.steps}" if args.steps != LORA["steps"] else "") + (f" --seed {args.seed}" if args.seed else "")
        overrides = {k: v for k, v in asdict(settings).items() if k not in ("seed", "osrm_tasks")}
        section = {"command": command, "built_with": f"osrm-gui {__version__}", "settings": {**overrides, "targets": ["query", "value"]},
                   "seconds": round(time.time() - started, 1), "tasks": entries}
        if baseline:
            manifest.update(base="all-MiniLM-L6-v2", probe="logistic regression on the frozen base's pooled features, C picked on the validation split",
                            **section)
        else:
            manifest.setdefault("families", {})[family] = section
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _swap_in(scratch, out, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = [{"task": n, "metric": e["metric"], family: e["test"]["lora"], **({"head-only probe": e["test"]["head_only_probe"],
             "gain": e["test"]["lora"] - e["test"]["head_only_probe"]} if baseline else {})} for n, e in entries.items()]
    print(format_table(rows))
    print(f"wrote {out / MANIFEST}")
    return 0


def _reusable(work: Path, family: str, seed: int, name: str, settings, task) -> Path | None:
    """An adapter `osrm demo compare` already trained with exactly these settings on this data."""
    folder = work / family / f"seed{seed}" / name
    meta_path = folder / "osrm_adapter.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    wanted = {**asdict(settings), "targets": meta.get("settings", {}).get("targets")}
    if meta.get("settings") != wanted or meta.get("task_hash") != task.content_hash():
        return None
    return folder


def _swap_in(scratch: Path, out: Path, folder: str) -> None:
    """Replace the previous demo set only once the whole new one is built."""
    old_adapters = out / folder
    if old_adapters.exists():
        shutil.rmtree(old_adapters)
    (scratch / folder).rename(old_adapters)
    (scratch / MANIFEST).replace(out / MANIFEST)
