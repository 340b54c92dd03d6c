"""Multi-fidelity merge search (TPE + Hyperband over validation chunks) against full-fidelity
random search, at the same number of trials, on the demo suite: how many forward passes
(examples scored) each needs to come within 0.5 points of the best validation score the random
search finds, and the test score of the point each picks.

    nice -n 10 .venv/bin/python bench/search_efficiency.py [--trials 40] [--seeds 0,1,2] [--chunk 32]
                                                            [--threads 1] [--ablation] [--json FILE]
    .venv/bin/python bench/search_efficiency.py --summarise run1.json run2.json   (seeds run apart)

Setup: the demo's peft-default adapters of seed 0 (4 tasks, trained as ``osrm demo compare`` /
``demo leaderboard`` do, or reused from the user cache), the embedded all-MiniLM-L6-v2 base.
Search space: task arithmetic, λ in [0.2, 1] and one coefficient per adapter in [0, 1.5] (5
dimensions). Objective: the mean validation accuracy over the 4 tasks (raw, not normalised, so
"points" are accuracy points); 200 validation examples per task, in chunks of ``--chunk``.

Arms, each ``--trials`` trials per seed (the seed drives the sampler and the chunk order; the
TPE arms use seed + 1000, since TPE's first 10 trials are random draws that would otherwise be
exactly the random search's first 10):
* random, full: RandomSampler, every trial scores all 800 validation examples (the reference);
* TPE + Hyperband: TPESampler(multivariate) with HyperbandPruner(1, n_chunks, η = 3);
* TPE, full (``--ablation``): TPE without pruning, to tell the sampler's share from pruning's.

Target per seed: the best validation mean of the random search minus 0.5 points. An arm
reaches it at the first trial that scored every validation example with a value at least the
target; its cost is every example scored until then, pruned trials included. Also shown: the
best the random search had found after as many examples as each other arm spent in all (equal
cost). The issue's goal:
multi-fidelity search needs at most 1/5 of random search's forward passes for the same quality.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOLERANCE = 0.005  # 0.5 points of mean accuracy


def reach(result, target: float) -> tuple[int | None, int | None]:
    """(examples scored up to and including the first full-fidelity trial at or above ``target``,
    its trial number); (None, None) if no trial got there."""
    spent = 0
    for trial in result.trials:
        spent += trial.examples
        if trial.state == "complete" and trial.fidelity == 1.0 and trial.values[0] >= target:
            return spent, trial.number
    return None, None


def best_within(result, budget: int) -> float:
    """The best full-fidelity validation value among the trials finished within ``budget`` examples."""
    spent, best = 0, float("nan")
    for trial in result.trials:
        spent += trial.examples
        if spent > budget:
            break
        if trial.state == "complete" and trial.fidelity == 1.0 and not trial.values[0] <= best:
            best = trial.values[0]
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40, help="trials per arm and seed (default 40)")
    parser.add_argument("--seeds", default="0,1,2", help="search seeds (default 0,1,2)")
    parser.add_argument("--chunk", type=int, default=32, help="validation examples per task per chunk (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared 2-core machine the fastest)")
    parser.add_argument("--ablation", action="store_true", help="also run TPE without pruning")
    parser.add_argument("--json", help="write every number to this file")
    parser.add_argument("--summarise", nargs="+", metavar="JSON", help="only print the summary of runs written with --json")
    args = parser.parse_args()
    if args.summarise:
        runs = [json.load(open(path)) for path in args.summarise]
        records = [r for run in runs for r in run["records"]]
        summarise(records, list(dict.fromkeys(r["arm"] for r in records)), runs[0]["trials"])
        return 0

    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    from osrm_gui.cli.demo import LORA
    from osrm_gui.core.explore.compare import train_family
    from osrm_gui.core.explore.search import search
    from osrm_gui.core.explore.search_space import SearchSpace
    from osrm_gui.core.inputs.demo_tasks import DEMO_TASKS, load_demo_task
    from osrm_gui.core.osrm.features import cache_dir
    from osrm_gui.core.osrm.training import TrainSettings
    from osrm_gui.core.progress import run_to_end
    from osrm_gui.core.workspace import open_workspace

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, load {os.getloadavg()[0]:.1f} at start, "
          f"torch {torch.__version__} with {torch.get_num_threads()} thread(s), python {sys.version.split()[0]}")
    tasks = [load_demo_task(name) for name in DEMO_TASKS]
    paths = run_to_end(train_family("peft-default", 0, tasks, cache_dir().parent / "demo-compare", TrainSettings(**LORA)))
    ws = open_workspace(None, paths, [t.extra.get("spec") for t in tasks])
    space = SearchSpace(("task_arithmetic",))
    n_val = sum(len(t.split("validation")) for t in ws.tasks)
    print(f"demo peft-default seed-0 adapters: {', '.join(a.name for a in ws.adapters)}; {n_val} validation examples "
          f"({args.chunk} per task per chunk), {sum(len(t.split('test')) for t in ws.tasks)} test examples")
    print(f"space: task_arithmetic, λ in {space.lambda_range('task_arithmetic')}, coefficients in {space.coefficient_range}; "
          f"objective: mean validation accuracy; {args.trials} trials per arm and seed\n")
    arms = [("random, full", dict(sampler="random", prune=False)), ("TPE + Hyperband", dict(sampler="tpe", prune=True))]
    if args.ablation:
        arms.append(("TPE, full", dict(sampler="tpe", prune=False)))
    # TPE's first trials are random draws from its seed: the TPE arms take other seeds than the
    # random search, or both would start from the very same points
    records = []
    for seed in seeds:
        results = {}
        for name, options in arms:
            started = time.perf_counter()
            arm_seed = seed if options["sampler"] == "random" else seed + 1000
            result = run_to_end(search(ws, space, trials=args.trials, seed=arm_seed, chunk=args.chunk, normalise=False, **options))
            results[name] = (result, time.perf_counter() - started)
        reference = results["random, full"][0]
        best_full = max(t.values[0] for t in reference.trials if t.state == "complete" and t.fidelity == 1.0)
        target = best_full - TOLERANCE
        baseline_cost, _ = reach(reference, target)
        rows = []
        for name, (result, seconds) in results.items():
            cost, at = reach(result, target)
            states = [t.state for t in result.trials]
            record = {
                "seed": seed, "arm": name, "complete": states.count("complete"), "pruned": states.count("pruned"),
                "examples": result.examples["search"], "to_target": cost, "reached_at_trial": at,
                "ratio_to_random": None if cost is None else cost / baseline_cost,
                "best_validation": result.best.values[0], "test_of_pick": float(np.mean(list(result.test.values()))),
                "seconds": round(seconds, 1), "best": result.best_point.summary(),
                "random_best_at_same_cost": best_within(reference, result.examples["search"]),
            }
            records.append(record)
            rows.append(record)
        print(f"seed {seed}: random search's best validation mean {best_full:.4f}; target {target:.4f}")
        header = f"  {'arm':<16} {'complete':>8} {'pruned':>6} {'examples':>9} {'to target':>10} {'at trial':>8} {'× random':>8} " \
                 f"{'best val':>8} {'test':>7} {'seconds':>8}"
        print(header)
        for r in rows:
            to_target = "not reached" if r["to_target"] is None else str(r["to_target"])
            ratio = "" if r["ratio_to_random"] is None else f"{r['ratio_to_random']:.2f}"
            print(f"  {r['arm']:<16} {r['complete']:>8} {r['pruned']:>6} {r['examples']:>9} {to_target:>10} {str(r['reached_at_trial']):>8} "
                  f"{ratio:>8} {r['best_validation']:>8.4f} {r['test_of_pick']:>7.4f} {r['seconds']:>8}")
        for r in rows[1:]:
            print(f"  random search's best within the {r['examples']} examples {r['arm']} spent: {r['random_best_at_same_cost']:.4f} "
                  f"(vs {r['best_validation']:.4f})")
        print("  picks: " + "; ".join(f"{r['arm']}: {r['best']}" for r in rows) + "\n", flush=True)

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"trials": args.trials, "chunk": args.chunk, "seeds": seeds, "records": records}, fh, indent=2)
    summarise(records, [name for name, _ in arms], args.trials)
    return 0


def summarise(records: list[dict], arms: list[str], trials: int) -> None:
    import numpy as np

    print("summary over seeds (mean; 'to target' and its ratio over the seeds where the arm reached it):")
    for name in arms:
        mine = [r for r in records if r["arm"] == name]
        reached = [r for r in mine if r["to_target"] is not None]
        ratios = [r["ratio_to_random"] for r in reached]
        total_ratio = np.mean([r["examples"] / next(b["examples"] for b in records if b["seed"] == r["seed"] and b["arm"] == "random, full")
                               for r in mine])
        print(f"  {name:<16} reached {len(reached)}/{len(mine)} seeds; examples to target "
              f"{np.mean([r['to_target'] for r in reached]) if reached else float('nan'):.0f} "
              f"(× random {np.mean(ratios) if ratios else float('nan'):.2f}, per seed {', '.join(f'{x:.2f}' for x in ratios)}); "
              f"all {trials} trials {np.mean([r['examples'] for r in mine]):.0f} examples (× random {total_ratio:.2f}); "
              f"best validation {np.mean([r['best_validation'] for r in mine]):.4f}, test of pick {np.mean([r['test_of_pick'] for r in mine]):.4f}")
    mf = [r for r in records if r["arm"] == "TPE + Hyperband"]
    met = all(r["ratio_to_random"] is not None and r["ratio_to_random"] <= 0.2 for r in mf)
    print(f"\ngoal (multi-fidelity reaches the target with ≤ 1/5 of random search's forward passes, every seed): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
