"""How long a live-preview update takes on the demo: merge the 4 demo adapters
with new coefficients and score the preview subset of each task.

    .venv/bin/python bench/preview.py [--repeats 10] [--preview-size 100] [--threads N]

Prints the cold first update (tokenising and each adapter alone, cached after)
and the median/min/max of warm updates, which is what a slider release costs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--preview-size", type=int, default=100)
    parser.add_argument("--method", default="task_arithmetic")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    from osrm_gui.core.progress import run_to_end
    from osrm_gui.core.session import MergeSession
    from osrm_gui.core.inputs.demo_set import demo_adapter_paths

    if args.threads:
        torch.set_num_threads(args.threads)
    session = MergeSession(device="cpu", preview_limit=args.preview_size, method=args.method)
    started = time.perf_counter()
    session.load_base(None)
    for path in demo_adapter_paths():
        session.add_slot(session.read_adapter(path))
    load = time.perf_counter() - started

    started = time.perf_counter()
    run_to_end(session.evaluate_job())
    cold = time.perf_counter() - started
    warm = []
    for i in range(args.repeats):
        session.slots[i % len(session.slots)].coefficient = 0.5 + 0.05 * i  # a slider moved
        started = time.perf_counter()
        run_to_end(session.evaluate_job())
        warm.append(time.perf_counter() - started)
    n = sum(len(s.task.split("test").head(args.preview_size)) for s in session.slots)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
          f"with {torch.get_num_threads()} threads, python {sys.version.split()[0]}")
    print(f"demo: {len(session.slots)} tasks, preview size {args.preview_size} ({n} examples), method {args.method}")
    print(f"load base + adapters: {load:.2f} s")
    print(f"first preview (tokenise, each adapter alone, merge, score): {cold:.2f} s")
    print(f"preview update over {args.repeats} runs: median {statistics.median(warm):.3f} s, min {min(warm):.3f} s, max {max(warm):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
