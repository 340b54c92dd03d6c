"""AdaMerging on the demo suite against task arithmetic at its validation-best λ, over seeds.

    nice -n 10 .venv/bin/python bench/adamerging_demo.py [--seeds 0,1,2] [--steps 500] [--lr 1e-3]
        [--methods task,layer] [--threads 1] [--limit N] [--json FILE]

Per seed, the four peft-default demo adapters of that seed (trained as ``osrm demo compare`` /
``demo leaderboard`` do, reused from the user cache when present, so a fresh machine trains them):

* task arithmetic: λ chosen on the labelled validation split from the leaderboard's grid
  (0.2, 0.4, 0.6, 0.8, 1.0), reported on test (``leaderboard.run_methods``);
* AdaMerging task-wise / layer-wise (``--methods``; ``task++``/``layer++`` for AdaMerging++):
  λ learned on the validation split's *inputs only* (never its labels), the paper's settings
  (init 0.3, Adam lr 1e-3, batches of 16 per task, λ clamped to [0, 1]), seed = the run's seed,
  reported on test.

Everything is reported on test: the average metric over the 4 tasks and the normalised score
(mean over tasks of merged / the task's adapter alone), mean ± standard deviation over seeds.
The machine here has 2 shared cores; ``--threads 1`` is the default because two threads on
busy cores ran 2–4× slower than one.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _stat(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" if len(values) > 1 else f"{values.mean():.4f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--methods", default="task,layer", help="comma-separated: task, layer, task++, layer++")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="first N examples per task and split (default all)")
    parser.add_argument("--work", type=Path, default=None, help="where the demo adapters are kept (default: the user cache)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from osrm_gui.cli.console import drive, format_table
    from osrm_gui.cli.demo import LORA
    from osrm_gui.core.explore import leaderboard as board
    from osrm_gui.core.explore.adamerging import adamerge
    from osrm_gui.core.explore.compare import train_family
    from osrm_gui.core.inputs.demo_tasks import DEMO_TASKS, load_demo_task
    from osrm_gui.core.osrm.features import cache_dir
    from osrm_gui.core.osrm.training import TrainSettings
    from osrm_gui.core.workspace import open_workspace

    methods = args.methods.split(",")
    for method in methods:
        if method.rstrip("+") not in ("task", "layer"):
            parser.error(f"--methods: unknown {method!r}")
    seeds = [int(s) for s in args.seeds.split(",")]
    tasks = [load_demo_task(name) for name in DEMO_TASKS]
    work = args.work or cache_dir().parent / "demo-compare"
    print(f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}")
    print(f"AdaMerging: {args.steps} steps, lr {args.lr:g}, init 0.3, 16 inputs per task per step, pool = validation inputs; "
          f"task arithmetic: λ ∈ {board.DEFAULT_GRID} chosen on validation; all reported on test" + (f" (first {args.limit})" if args.limit else ""))
    runs: list[dict] = []
    started = time.perf_counter()
    for seed in seeds:
        paths = drive(train_family("peft-default", seed, tasks, work, TrainSettings(**LORA), "cpu"), f"adapters seed {seed}", quiet=True)
        ws = open_workspace(None, paths, [t.extra.get("spec") for t in tasks], device="cpu")
        t0 = time.perf_counter()
        (ta,) = drive(board.run_methods(ws, "peft-default", seed, ["task_arithmetic"], args.limit), "task arithmetic", quiet=True)
        single = ta.single
        runs.append({"method": "task arithmetic", "seed": seed, "test": ta.test, "single": single, "average": ta.average,
                     "normalised": ta.normalised, "lambda": f"{ta.lam:g}", "seconds": time.perf_counter() - t0})
        print(f"seed {seed} task arithmetic: λ={ta.lam:g} (validation {ta.validation}), test average {ta.average:.4f}, "
              f"normalised {ta.normalised:.4f}", flush=True)
        for method in methods:
            mode, plus = method.rstrip("+"), method.endswith("++")
            t0 = time.perf_counter()
            result = drive(adamerge(ws, mode, plus, steps=args.steps, lr=args.lr, seed=seed, limit=args.limit), method, quiet=True)
            learn_s = time.perf_counter() - t0
            test = drive(ws.evaluate(result.merged, "test", args.limit), "eval", quiet=True)
            scores = {t: s["metric"] for t, s in test.items()}
            average = float(np.mean(list(scores.values())))
            normalised = float(np.mean([scores[t] / single[t] for t in scores]))
            per_task = result.task_coefficients()
            lam = ",".join(f"{v:.2f}" for v in per_task)
            runs.append({"method": result.label, "seed": seed, "test": scores, "single": single, "average": average, "normalised": normalised,
                         "lambda": lam, "coefficients": result.to_dict()["coefficients"], "tasks": result.tasks,
                         "entropy": [result.history[0].entropy, result.history[-1].entropy] if result.history else None,
                         "seconds": learn_s})
            entropy = f"entropy {result.history[0].entropy:.3f} → {result.history[-1].entropy:.3f}" if result.history else "no steps"
            print(f"seed {seed} {result.label}: λ per task ({'mean over layers' if mode == 'layer' else 'one each'}) {lam}; {entropy}; "
                  f"test average {average:.4f}, normalised {normalised:.4f}; learning {learn_s:.0f} s", flush=True)
        if args.json:
            args.json.write_text(json.dumps({"argv": sys.argv, "runs": runs}, indent=2) + "\n")
    print(f"\ntest average over the {len(tasks)} demo tasks ({', '.join(t.name for t in tasks)}), mean ± std over seeds {args.seeds}\n")
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]
        row = {"method": method, "seeds": len(mine), "test average": _stat([r["average"] for r in mine]),
               "normalised": _stat([r["normalised"] for r in mine])}
        for task in tasks:
            row[task.name] = _stat([r["test"][task.name] for r in mine])
        row["λ per seed"] = " / ".join(r["lambda"] for r in mine)
        row["seconds"] = f"{np.mean([r['seconds'] for r in mine]):.0f}"
        rows.append(row)
    print(format_table(rows))
    single_rows = {t.name: _stat([r["single"][t.name] for r in runs if r["method"] == "task arithmetic"]) for t in tasks}
    print("\neach adapter alone (test): " + ", ".join(f"{k} {v}" for k, v in single_rows.items()))
    print(f"wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
