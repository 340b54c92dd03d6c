"""Feature statistics (what ``osrm features`` computes on a cache miss) against a plain
forward pass of the base over the same samples with the same batching.

    .venv/bin/python bench/features_speed.py [--samples 100] [--repeats 3] [--threads N] [--base PATH --task SPEC …]

Default: the embedded all-MiniLM-L6-v2 and the 4 demo tasks, 100 train samples each,
the base's default targets (query, value), max length 128, batch 32 — the defaults of
``collect_features``. Both contenders do the same work apart from the statistics:
draw the seeded sample, tokenise it, length-sort, pad each batch and run the base;
``collect_features`` also accumulates the per-layer token count, sum and Gram matrix
through its forward hooks. The two run interleaved, task by task, ``--repeats`` times;
per task the fastest run of each counts (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=None, help="base model folder (default: the embedded MiniLM)")
    parser.add_argument("--task", action="append", help="task spec, repeatable (default: the 4 demo tasks)")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--targets", default=None, help="comma-separated (default: the base's default targets)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]

    import torch

    import osrm_gui
    from osrm_gui.core.inputs.demo_tasks import DEMO_TASKS
    from osrm_gui.core.evaluation import encode_split, iter_batches
    from osrm_gui.core.osrm.features import collect_features, sample_split
    from osrm_gui.core.inputs.models import load_base
    from osrm_gui.core.progress import run_to_end
    from osrm_gui.core.inputs.tasks import resolve_task

    torch.set_num_threads(args.threads or os.cpu_count())
    base = load_base(args.base, device="cpu")
    tasks = [resolve_task(spec) for spec in (args.task or [f"demo:{n}" for n in DEMO_TASKS])]
    targets = args.targets.split(",") if args.targets else base.default_targets
    batch_size, seed = 32, 0  # collect_features' defaults

    def plain(task):
        data = sample_split(task.split("train"), args.samples, seed)
        encoded = encode_split(base.tokenizer, data, args.max_length)
        tokens = 0
        with torch.inference_mode():
            for _, inputs in iter_batches(encoded, batch_size, base.tokenizer.pad_token_id or 0, base.device):
                tokens += int(inputs["attention_mask"].sum())
                base.model(**inputs)
        return tokens

    def features(task):
        stats = run_to_end(collect_features(base, task, targets, args.samples, args.max_length, seed, batch_size))
        return next(iter(stats.layers.values())).count, stats

    plain(tasks[0])  # warm-up
    best = {"plain": {}, "features": {}}
    tokens = {}
    for r in range(args.repeats):
        for task in tasks:
            for key in (("plain", "features") if r % 2 == 0 else ("features", "plain")):
                started = time.perf_counter()
                result = plain(task) if key == "plain" else features(task)
                seconds = time.perf_counter() - started
                best[key][task.name] = min(seconds, best[key].get(task.name, float("inf")))
                if key == "plain":
                    tokens[task.name] = result
                else:
                    assert result[0] == tokens.get(task.name, result[0]), "both contenders must see the same tokens"
                    stats = result[1]

    d_in = {name: s.gram.shape[0] for name, s in stats.layers.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
          f"with {torch.get_num_threads()} threads, python {sys.version.split()[0]}")
    print(f"load average (1 min): {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print(f"code: osrm_gui from {os.path.dirname(osrm_gui.__file__)}")
    print(f"base {base.name} ({base.parameter_count() / 1e6:.1f}M parameters), targets {','.join(targets)} "
          f"({len(d_in)} layers, d_in {sorted(set(d_in.values()))}), {args.samples} samples per task, batch {batch_size}, "
          f"max length {args.max_length}; fastest of {args.repeats} runs per task")
    print(f"{'task':18s} {'tokens':>7s} {'forward s':>10s} {'features s':>11s} {'ratio':>6s}")
    for task in tasks:
        f, p = best["features"][task.name], best["plain"][task.name]
        print(f"{task.name:18s} {tokens[task.name]:7d} {p:10.3f} {f:11.3f} {f / p:5.2f}×")
    total_f, total_p = sum(best["features"].values()), sum(best["plain"].values())
    print(f"{'all':18s} {sum(tokens.values()):7d} {total_p:10.3f} {total_f:11.3f} {total_f / total_p:5.2f}×  (target ≤ 1.3×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
