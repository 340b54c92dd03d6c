"""The Ray executor against the local executor on the demo sweep: what scoring the points on a
Ray worker adds per point, how long the workers take to start, and, on this machine, one worker
using every core against one single-threaded worker per core.

    nice -n 10 .venv/bin/python bench/ray_executor.py [--points 11] [--limit 100] [--split validation]
        [--threads 1] [--repeats 3] [--calls 40] [--no-scaling] [--json FILE] [--markdown FILE]

Setup: the demo's bundled adapters (resources/demo/adapters, 4 tasks) on the embedded
all-MiniLM-L6-v2 base, on CPU. The sweep: task arithmetic, λ from 0 to 1 in ``--points`` points,
scored on the first ``--limit`` examples per task of the ``--split`` split (default 100 of the 200
per task, so that the whole run takes about 6 minutes on 2 quiet cores; 0: all), no run history;
every contender runs the very same ``run_sweep`` call. Ray runs on an instance this script starts
on this machine (``ray.init(address="local")``, one CPU per core), never on a cluster found by
address.

1. Overhead per point (goal: the Ray executor ≤ 1.15× the local one). ``local``: run_sweep in
   this process with ``torch.set_num_threads(T)``; ``ray``: run_sweep with
   ``ExecutorSettings("ray", workers=1, threads_per_worker=T)``, i.e. one worker of T threads.
   The workers' start-up is timed apart from the points: ``ray.init`` once, then per repeat the
   executor is opened and ``wait_for_workers`` waits until every worker has loaded the
   workspace (to within its 0.25 s poll); then each worker scores one warm-up point (tokenising
   the split, building the heads and the stacked LoRA factors: what the local workspace did once
   before any timing), and only then is the executor handed to run_sweep (run_sweep opens its
   executor itself; the script swaps in the one already started, and run_sweep closes it). The
   two contenders alternate order from repeat to repeat (local first, then Ray first, …) so
   that a drift of the machine's load hits both alike. Every repeat's scores must equal the
   first local sweep's exactly, point by point; the script stops at once if they do not.
2. Calls that do nothing (``no_op``), on the started 1-worker executor before its sweep: one at
   a time (submit, wait for the outcome: what each chunk of a search pays, since a search keeps
   one trial per worker in flight), and ``--calls`` at once through ``run_all`` (two per worker
   queued: what a sweep pays).
3. This machine's cores (skipped with ``--no-scaling``): 1 worker × C threads against C workers ×
   1 thread (C = the CPU count), the same sweep, the same start-up and warm-up handling, the
   order alternating; their scores are compared with the local ones and any difference is
   reported (different thread counts may round differently), not fatal.

Output: a progress log, then a markdown section for BENCHMARKS.md (also written to
``--markdown``), and every timing in ``--json``. bench/ray_estimate.py reads that JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GOAL = 1.15  # the Ray executor's seconds per point over the local executor's
DEFAULT_OUT = os.path.join(tempfile.gettempdir(), "osrm-bench-ray-executor")


def no_op(ws, value):
    """A call that computes nothing: what is left of its time is the executor's own."""
    return value


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def show(stats: dict, digits: int = 3, unit: str = "") -> str:
    return f"{stats['mean']:.{digits}f}{unit} ± {stats['sd']:.{digits}f}" if stats["n"] > 1 else f"{stats['mean']:.{digits}f}{unit}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def handed(executor):
    """run_sweep opens its executor itself: hand it this one, already started and warm, so that
    its time is the points' alone. run_sweep still closes it (its workers are killed)."""
    import osrm_gui.core.explore.sweep as sweep_module

    original = sweep_module.open_executor
    sweep_module.open_executor = lambda settings, ws: executor
    try:
        yield
    finally:
        sweep_module.open_executor = original


def timed_sweep(ws, spec, axes, split, limit, settings=None) -> dict:
    """One run_sweep, drained: its result's points, its seconds, and when each point came back."""
    from osrm_gui.core.explore.sweep import SweepPoint, run_sweep
    from osrm_gui.core.progress import Run

    started = time.perf_counter()
    run = Run(run_sweep(ws, spec, axes, split, limit, executor=settings))
    arrivals = [time.perf_counter() - started for event in run if isinstance(event, SweepPoint)]
    seconds = time.perf_counter() - started
    points = [(p.values, p.scores) for p in run.result.points]
    return {"seconds": seconds, "per_point": seconds / len(points), "arrivals": arrivals, "points": points}


def started_executor(settings, ws, warm_spec, split, limit) -> tuple[object, dict]:
    """An open Ray executor whose workers have loaded the workspace and scored one point each."""
    from osrm_gui.core.execution import Call, open_executor
    from osrm_gui.core.execution.ray_executor import wait_for_workers
    from osrm_gui.core.explore.sweep import score_spec
    from osrm_gui.core.progress import run_to_end

    started = time.perf_counter()
    executor = open_executor(settings, ws)
    run_to_end(wait_for_workers(executor))
    loaded = time.perf_counter()
    for worker in range(executor.slots):
        executor.submit(Call(("warm-up", worker), score_spec, (warm_spec, split, limit), "warm-up", worker))
    for _ in range(executor.slots):
        outcome = run_to_end(executor.next_outcome())
        if outcome.error is not None:
            raise SystemExit(f"warm-up point failed on a Ray worker: {outcome.error}")
    return executor, {"startup_s": loaded - started, "warmup_s": time.perf_counter() - loaded,
                      "where": [w.where for w in executor.status().workers]}


def round_trips(executor, calls: int) -> dict:
    """Seconds per no-op call: one at a time, and ``calls`` queued through run_all."""
    from osrm_gui.core.execution import Call, run_all
    from osrm_gui.core.progress import run_to_end

    one_at_a_time = []
    for i in range(calls):
        started = time.perf_counter()
        executor.submit(Call(("no-op", i), no_op, (i,)))
        outcome = run_to_end(executor.next_outcome())
        one_at_a_time.append(time.perf_counter() - started)
        assert outcome.value == i
    started = time.perf_counter()
    run_to_end(run_all(executor, no_op, [(i,) for i in range(calls)]))
    queued = (time.perf_counter() - started) / calls
    return {"round_trip_s": spread(one_at_a_time), "queued_s": queued}


def differences(reference: list, points: list) -> list[str]:
    """The points whose scores differ from the reference's, described."""
    out = []
    for (values, scores), (ref_values, ref_scores) in zip(points, reference):
        if values != ref_values or scores != ref_scores:
            deltas = {t: scores.get(t, float("nan")) - ref_scores[t] for t in ref_scores}
            out.append(f"λ={values[0]:g}: " + ", ".join(f"{t} {d:+.4f}" for t, d in deltas.items() if d != 0 or math.isnan(d)))
    if len(points) != len(reference):
        out.append(f"{len(points)} points against {len(reference)}")
    return out


def machine_facts(torch, ray) -> dict:
    return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "ray": ray.__version__, "python": sys.version.split()[0], "nice": os.nice(0)}


def command_line() -> str:
    niceness = os.nice(0)
    prefix = f"nice -n {niceness} " if niceness else ""
    return f"{prefix}.venv/bin/python bench/ray_executor.py {shlex.join(sys.argv[1:])}".rstrip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=11, help="λ points from 0 to 1 (default 11)")
    parser.add_argument("--limit", type=int, default=100, help="examples per task (default 100; 0: the whole split, 200 per demo task)")
    parser.add_argument("--split", default="validation", help="split scored (default validation)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads T of the local executor and of the one Ray worker in part 1 (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each contender, order alternating (default 3)")
    parser.add_argument("--calls", type=int, default=40, help="no-op calls per measurement of the executor's own cost (default 40)")
    parser.add_argument("--no-scaling", action="store_true", help="skip part 3 (1 worker × C threads against C workers × 1 thread)")
    parser.add_argument("--json", default=DEFAULT_OUT + ".json", help=f"every timing (default {DEFAULT_OUT}.json)")
    parser.add_argument("--markdown", default=DEFAULT_OUT + ".md", help=f"the BENCHMARKS.md section (default {DEFAULT_OUT}.md)")
    args = parser.parse_args()
    if args.points < 2 or args.repeats < 1 or args.threads < 1 or args.calls < 1 or args.limit < 0:
        parser.error("--points needs 2 or more, --repeats, --threads and --calls 1 or more, --limit 0 or more")
    args.limit = args.limit or None  # the sweep's own spelling of "every example"
    load_at_start = os.getloadavg()[0]
    wall_started = time.perf_counter()

    import ray
    import torch
    from transformers.utils import logging as hf_logging

    from osrm_gui.core.execution import ExecutorSettings
    from osrm_gui.core.explore.sweep import Axis, sweep_values
    from osrm_gui.core.inputs.demo_set import demo_adapter_paths
    from osrm_gui.core.merge.spec import MergeSpec
    from osrm_gui.core.progress import run_to_end
    from osrm_gui.core.workspace import open_workspace

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    cores = os.cpu_count() or 1
    facts = machine_facts(torch, ray)
    log(f"machine: {facts['processor']}, {cores} logical CPUs, load {load_at_start:.2f}, torch {facts['torch']}, "
        f"Ray {facts['ray']}, python {facts['python']}, nice {facts['nice']}")

    started = time.perf_counter()
    ws = open_workspace(None, demo_adapter_paths(), device="cpu")
    open_s = time.perf_counter() - started
    spec = MergeSpec("task_arithmetic", None, 1.0)
    warm_spec = MergeSpec("task_arithmetic", None, 0.5).resolved(len(ws.adapters))
    axes = [Axis("lambda", tuple(sweep_values(0.0, 1.0, args.points)))]
    examples = sum(len(t.split(args.split).head(args.limit)) if args.limit else len(t.split(args.split)) for t in ws.tasks)
    started = time.perf_counter()
    run_to_end(ws.score(warm_spec, args.split, args.limit))  # tokenise, heads, stacked factors: once, untimed
    local_warm_s = time.perf_counter() - started
    log(f"workspace: {len(ws.adapters)} demo adapters on MiniLM, opened in {open_s:.1f} s; first point (tokenise, heads) {local_warm_s:.1f} s; "
        f"{examples} {args.split} examples per point")

    started = time.perf_counter()
    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ray_init_s = time.perf_counter() - started
    log(f"ray.init (a local instance, {cores} CPUs): {ray_init_s:.1f} s")

    one = ExecutorSettings("ray", workers=1, threads_per_worker=args.threads)
    reference = None
    local_runs, ray_runs, calls = [], [], []
    part1_started = time.perf_counter()
    try:
        for repeat in range(args.repeats):
            order = ("local", "ray") if repeat % 2 == 0 else ("ray", "local")
            for contender in order:
                if contender == "local":
                    run = timed_sweep(ws, spec, axes, args.split, args.limit)
                    local_runs.append(run)
                    reference = reference or run["points"]
                    log(f"repeat {repeat + 1} local, {args.threads} thread(s): {run['per_point']:.3f} s per point")
                else:
                    executor, start = started_executor(one, ws, warm_spec, args.split, args.limit)
                    calls.append(round_trips(executor, args.calls))
                    with handed(executor):
                        run = timed_sweep(ws, spec, axes, args.split, args.limit, one)
                    run.update(start)
                    ray_runs.append(run)
                    log(f"repeat {repeat + 1} Ray 1 worker × {args.threads} thread(s): start-up {start['startup_s']:.1f} s, "
                        f"warm-up point {start['warmup_s']:.1f} s, {run['per_point']:.3f} s per point; no-op round trip "
                        f"{calls[-1]['round_trip_s']['mean'] * 1e3:.1f} ms, queued {calls[-1]['queued_s'] * 1e3:.1f} ms per call")
                wrong = differences(reference, run["points"])  # the first repeat runs local first: a reference exists
                if wrong:
                    raise SystemExit(f"FAIL: the {contender} sweep of repeat {repeat + 1} scored other values than the first local "
                                     f"sweep: {'; '.join(wrong)}")
            if repeat == 0:
                first = time.perf_counter() - part1_started
                # part 3: two sweeps per repeat on every core, each about half a 1-thread sweep, plus their start-ups
                rest = first * (args.repeats - 1) + (0 if args.no_scaling or cores == 1 else first * args.repeats * 0.75)
                log(f"projected wall time: about {(time.perf_counter() - wall_started + rest) / 60:.1f} min in all (rough)")

        scaling = {}
        if not args.no_scaling and cores > 1:
            configs = {f"1 × {cores}": ExecutorSettings("ray", workers=1, threads_per_worker=cores),
                       f"{cores} × 1": ExecutorSettings("ray", workers=cores, threads_per_worker=1)}
            scaling = {name: [] for name in configs}
            for repeat in range(args.repeats):
                names = list(configs) if repeat % 2 == 0 else list(configs)[::-1]
                for name in names:
                    executor, start = started_executor(configs[name], ws, warm_spec, args.split, args.limit)
                    with handed(executor):
                        run = timed_sweep(ws, spec, axes, args.split, args.limit, configs[name])
                    run.update(start)
                    run["differences"] = differences(reference, run["points"])
                    scaling[name].append(run)
                    log(f"repeat {repeat + 1} Ray {name} (workers × threads): start-up {start['startup_s']:.1f} s, "
                        f"{run['per_point']:.3f} s per point" + (f"; scores differ: {'; '.join(run['differences'])}" if run["differences"] else ""))
    finally:
        ray.shutdown()

    report = summarise(args, facts, load_at_start, os.getloadavg()[0], time.perf_counter() - wall_started, open_s, local_warm_s,
                       ray_init_s, examples, local_runs, ray_runs, calls, scaling)
    text = markdown(report)
    with open(args.json, "w") as fh:
        json.dump(report, fh, indent=2)
    with open(args.markdown, "w") as fh:
        fh.write(text)
    print("\n" + text)
    log(f"wrote {args.json} and {args.markdown}")
    return 0  # a missed goal is reported, not an error; scores that differ stop the run above


def summarise(args, facts, load_start, load_end, wall_s, open_s, local_warm_s, ray_init_s, examples, local_runs, ray_runs, calls, scaling) -> dict:
    local = [r["per_point"] for r in local_runs]
    remote = [r["per_point"] for r in ray_runs]
    # each repeat's Ray run against its own local run: the same stretch of the machine's load
    ratios = [r / l for l, r in zip(local, remote)]
    overheads = [r - l for l, r in zip(local, remote)]
    out = {
        "command": command_line(), "machine": facts, "load_average": [load_start, load_end], "wall_s": wall_s,
        "date": time.strftime("%Y-%m-%d"),
        "sweep": {"method": "task_arithmetic", "points": args.points, "split": args.split, "limit": args.limit,
                  "examples_per_point": examples, "adapters": 4, "base": "embedded all-MiniLM-L6-v2", "device": "cpu"},
        "setup": {"open_workspace_s": open_s, "local_first_point_s": local_warm_s, "ray_init_s": ray_init_s},
        "part1": {
            "threads": args.threads, "repeats": args.repeats,
            "local_per_point_s": spread(local), "ray_per_point_s": spread(remote), "ratio": spread(ratios),
            "ratio_of_means": statistics.fmean(remote) / statistics.fmean(local),
            "overhead_per_point_s": spread(overheads),
            "ray_startup_s": spread([r["startup_s"] for r in ray_runs]), "ray_warmup_s": spread([r["warmup_s"] for r in ray_runs]),
            "identical": True, "compared": len(local_runs) + len(ray_runs),
            "runs": {"local": [_raw(r) for r in local_runs], "ray": [_raw(r) for r in ray_runs]},
        },
        "no_op": {"calls": args.calls, "round_trip_s": spread([c["round_trip_s"]["mean"] for c in calls]),
                  "queued_s": spread([c["queued_s"] for c in calls]), "runs": calls},
    }
    if scaling:
        rows = {}
        for name, runs in scaling.items():
            per_point = [r["per_point"] for r in runs]
            rows[name] = {"per_point_s": spread(per_point), "points_per_s": spread([1 / p for p in per_point]),
                          "startup_s": spread([r["startup_s"] for r in runs]), "warmup_s": spread([r["warmup_s"] for r in runs]),
                          "differences": sorted({d for r in runs for d in r["differences"]}), "runs": [_raw(r) for r in runs]}
        out["part3"] = rows
    return out


def _raw(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "points"}


def markdown(report: dict) -> str:
    m, s, p1, noop = report["machine"], report["sweep"], report["part1"], report["no_op"]
    examples = "all" if s["limit"] is None else f"{s['limit']}"
    t = p1["threads"]
    lines = [
        f"## The Ray executor against the local executor on the demo sweep (goal: ≤ {GOAL}× per point)",
        "",
        "```",
        f"$ {report['command']}",
        "```",
        "",
        (f"Machine: {m['processor']}, {m['cpus']} logical CPUs, torch {m['torch']}, Ray {m['ray']}, python {m['python']}; "
         f"1-minute load average {report['load_average'][0]:.2f} at the start, {report['load_average'][1]:.2f} at the end; "
         f"whole run {report['wall_s'] / 60:.1f} min ({report['date']}). Sweep: {s['method']}, {s['points']} λ points 0…1 on the "
         f"{s['split']} split ({examples} examples per task, {s['examples_per_point']} per point), the {s['adapters']} demo adapters on the "
         f"{s['base']}, CPU, no run history; Ray on a local instance started by the script. {p1['repeats']} run{'s' * (p1['repeats'] != 1)} of each contender, "
         "order alternating; mean ± standard deviation over the repeats."),
        "",
        "| contender | start-up s | s per point | points/s | vs local (paired) |",
        "|---|---|---|---|---|",
        f"| local, {t} thread{'s' * (t != 1)} | – | {show(p1['local_per_point_s'])} | {1 / p1['local_per_point_s']['mean']:.3f} | 1.00× |",
        (f"| Ray, 1 worker × {t} thread{'s' * (t != 1)} | ray.init {report['setup']['ray_init_s']:.1f} once; worker load "
         f"{show(p1['ray_startup_s'], 1)}; first point {show(p1['ray_warmup_s'], 1)} | {show(p1['ray_per_point_s'])} | "
         f"{1 / p1['ray_per_point_s']['mean']:.3f} | {show(p1['ratio'])}× |"),
        "",
        (f"* Ratio (each repeat's Ray run over its own local run): **{show(p1['ratio'])}×** "
         f"(min {p1['ratio']['min']:.3f}, max {p1['ratio']['max']:.3f}; ratio of the means {p1['ratio_of_means']:.3f}×): goal "
         f"≤ {GOAL}× **{'met' if p1['ratio']['mean'] <= GOAL else 'NOT met'}**. Seconds added per point: "
         f"{show(p1['overhead_per_point_s'])}."),
        f"* Scores: identical point by point ({s['points']} points × 4 tasks) in all {p1['compared']} sweeps, Ray and local.",
        (f"* Start-up, not in the per-point times: ray.init {report['setup']['ray_init_s']:.1f} s once per process; then per executor "
         f"the worker's start and workspace load {show(p1['ray_startup_s'], 1)} s (to within 0.25 s), and its first point "
         f"{show(p1['ray_warmup_s'], 1)} s (tokenising, heads, stacked LoRA factors; the local workspace's own first point took "
         f"{report['setup']['local_first_point_s']:.1f} s, and opening it {report['setup']['open_workspace_s']:.1f} s)."),
        (f"* Calls that compute nothing, through the 1-worker executor ({noop['calls']} per measurement): "
         f"{show(_ms(noop['round_trip_s']), 2)} ms per round trip one at a time (what each chunk of a search waits), "
         f"{show(_ms(noop['queued_s']), 2)} ms per call queued two per worker (what a sweep pays)."),
    ]
    if "part3" in report:
        rows = report["part3"]
        first = next(iter(rows.values()))["per_point_s"]["mean"]
        lines += ["", f"On this machine's {m['cpus']} cores, the same sweep through Ray (workers × threads each):", "",
                  "| workers × threads | worker start-up s | s per point | points/s | s per point vs first row | scores vs local |", "|---|---|---|---|---|---|"]
        for name, row in rows.items():
            same = "identical" if not row["differences"] else "differ: " + "; ".join(row["differences"])
            lines.append(f"| {name} | {show(row['startup_s'], 1)} | {show(row['per_point_s'])} | {show(row['points_per_s'])} | "
                         f"{row['per_point_s']['mean'] / first:.2f}× | {same} |")
    return "\n".join(lines) + "\n"


def _ms(stats: dict) -> dict:
    return {k: v * 1e3 if k != "n" else v for k, v in stats.items()}


if __name__ == "__main__":
    sys.exit(main())
