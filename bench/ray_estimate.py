"""What a 500-trial merge search would take through the Ray executor on one 8-GPU node, for a ~1B
and an ~8B decoder: the executor's own cost per call as bench/ray_executor.py measured it, the
Optuna driver's cost per trial and per chunk measured here, and everything else ASSUMED and
printed as such. No GPU was used: nothing about the models' speed is measured.

    .venv/bin/python bench/ray_estimate.py [--from /tmp/osrm-bench-ray-executor.json] [--trials 500]
        [--workers 8] [--tasks 8] [--validation 200] [--test 200] [--chunk 32] [--fraction 0.60]
        [--tokens 128] [--driver-trials 500] [--json FILE]

(The driver measurement runs a 500-trial synthetic study: about 2.5 minutes on 2 shared cores.)

How a search uses the executor (osrm_gui/core/explore/search.py): one trial per worker in flight;
each trial is scored chunk by chunk (``--chunk`` validation examples of every task per call,
Hyperband over the chunks as rungs), each chunk one call on the worker that holds the trial's
merge; the driver reports the running score, asks the pruner, then sends the next chunk. So per
chunk a worker idles for one call round trip plus the driver's report/should_prune, and per
trial for the driver's tell and ask. The merge is evaluated through forward hooks on the base
(the LoRA-sum engine: ``W0 x + B_cat (scale ⊙ (A_cat x))`` on each adapted layer), so a chunk costs
a forward of the base plus the stacked rank-Σr products; the search space is task arithmetic
(weighted-sum methods; TIES-like methods merge densely per trial and are not covered here).

The model (per worker, i.e. per GPU):
  chunk compute  = tasks × chunk × tokens × FLOPs/token ÷ (peak × achieved fraction)
  FLOPs/token    = 2 × transformer-block parameters + 4 × layers × tokens × hidden (attention
                   scores and mixing) + the hooks' 2 × Σr × (d_in + d_out) per adapted layer,
                   counted ÷ their assumed efficiency relative to the big matmuls
  worker time per trial = calls × (chunk compute + executor cost per call + driver per chunk)
                          + driver per trial,   calls = fraction × chunks per full trial
  executor cost per call = the no-op round trip + what a sweep point through Ray took beyond the
                          local one (if more) + network latency
  wall = start-up + reference pass (each adapter alone on validation, one worker)
         + ⌈trials ÷ workers⌉ × worker time per trial (or trials × the driver's own time per
           trial, if the single driver cannot keep the workers fed) + test pass of the best point
Left out: the driver's own bookkeeping besides Optuna (running metrics per chunk, the run
history's write per trial), queueing at the driver when it is nearly saturated, and stragglers
in the last wave of trials; all make the real run slower than this estimate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_FROM = os.path.join(tempfile.gettempdir(), "osrm-bench-ray-executor.json")

# -- ASSUMPTIONS (each printed with its source) -------------------------------------------------------
PEAK_BF16_TFLOPS = 989.4  # H100 SXM5 and H200: dense BF16 tensor-core peak, NVIDIA datasheets (1979 is with 2:4 sparsity)
GPU_MEMORY_GB = {"H100 SXM": 80, "H200": 141}
MODELS = {
    # achieved fraction of the peak for an eager HF transformers forward, no grad, bf16, on batches of
    # 32 sequences × 128 tokens (one task's chunk): our guess, not measured (no GPU here); small
    # matrices (1B: hidden 2048) keep the tensor cores busier for less of the time than 8B's
    "1B": {"label": "Llama-style 1B (bench/scale_1b.py's config)", "layers": 22, "hidden": 2048, "ffn": 5632, "heads": 32, "kv_heads": 4,
           "vocab": 32000, "fraction": (0.15, 0.30, 0.45)},
    "8B": {"label": "Llama-3.1-8B shape", "layers": 32, "hidden": 4096, "ffn": 14336, "heads": 32, "kv_heads": 8,
           "vocab": 128256, "fraction": (0.25, 0.40, 0.55)},
}
ADAPTER_RANK = 16  # per adapter, on q_proj and v_proj (bench/scale_1b.py's adapters, peft's usual targets)
HOOK_EFFICIENCY = 0.25  # the hooks' skinny matmuls (rank Σr = 128) run at ~¼ of the big ones' FLOP rate: a guess
READ_GB_PER_S = 2.0  # reading the weights at start-up: local NVMe or page cache, a guess (network storage: slower)
CUDA_INIT_S = 5.0  # CUDA context and cuBLAS handles per worker process: a guess
NETWORK_MS = 1.0  # added per call when driver and workers are on different machines: a guess (0 on the node itself)
HYPERBAND_FRACTION = 0.60  # BENCHMARKS.md, merge search: TPE + Hyperband scored 19072 of 32000 examples (40 trials, 3 seeds)


def block_params(m: dict) -> int:
    """Parameters of the transformer blocks (the matmuls every token goes through)."""
    kv = m["hidden"] * m["kv_heads"] // m["heads"]
    per_layer = 2 * m["hidden"] * m["hidden"] + 2 * m["hidden"] * kv + 3 * m["hidden"] * m["ffn"]
    return m["layers"] * per_layer


def hook_flops(m: dict, adapters: int) -> int:
    """Per token: the stacked LoRA factors on q_proj (d → d) and v_proj (d → kv) of every layer."""
    stacked = adapters * ADAPTER_RANK
    kv = m["hidden"] * m["kv_heads"] // m["heads"]
    per_layer = 2 * stacked * (m["hidden"] + m["hidden"]) + 2 * stacked * (m["hidden"] + kv)
    return m["layers"] * per_layer


def measure_driver(trials: int, workers: int, tasks: int, chunks: int, chunk_size: int, seed: int = 0) -> dict:
    """The driver's Optuna work in a search, timed with the search's own sampler (multivariate
    TPE, constant liar with several trials in flight), pruner (Hyperband over ``chunks`` rungs) and
    an SQLite storage, on a synthetic objective (no model): ask + suggest, report + should_prune
    per chunk, tell per trial; ``workers`` trials kept in flight, served in turn."""
    import numpy as np
    from optuna.trial import TrialState

    from osrm_gui.core.explore.search_space import LayerGroups, SearchSpace, suggest
    from osrm_gui.core.explore.search_study import make_sampler, open_study

    space = SearchSpace(("task_arithmetic",))
    names = [f"task{i}" for i in range(tasks)]
    groups = LayerGroups.of([], 1)
    rng = np.random.default_rng(seed)
    folder = tempfile.mkdtemp(prefix="osrm-driver-")
    study = open_study(os.path.join(folder, "studies.sqlite"), "driver", 1, {"synthetic": True}, True, chunks)
    study.sampler = make_sampler("tpe", seed, None, trials, parallel=workers > 1)
    asks, chunk_times, tells, active, asked, pruned = [], [], [], [], 0, 0
    while active or asked < trials:
        while len(active) < workers and asked < trials:
            started = time.perf_counter()
            trial = study.ask()
            point = suggest(trial, space, names, groups, seed)
            asks.append(time.perf_counter() - started)
            quality = 0.8 - 0.1 * float(np.mean((np.array(point.spec.coefficients) - 1.0) ** 2)) - 0.1 * (point.spec.lam - 0.6) ** 2
            active.append([trial, point, quality, 0])
            asked += 1
        state = active.pop(0)
        trial, point, quality, k = state
        k += 1
        value = quality + rng.normal(0, 0.04 / math.sqrt(k))  # a running mean over more examples: less noise
        started = time.perf_counter()
        stop = False
        if k < chunks:
            trial.report(value, k)
            stop = trial.should_prune()
        chunk_times.append(time.perf_counter() - started)
        if k < chunks and not stop:
            active.append([trial, point, quality, k])
            continue
        started = time.perf_counter()
        # the five attributes the search stores per trial, each one write to the storage
        trial.set_user_attr("scores", {name: value for name in names})
        trial.set_user_attr("examples", k * chunk_size * tasks)
        trial.set_user_attr("fidelity", k / chunks)
        trial.set_user_attr("spec", point.spec.to_dict())
        trial.set_user_attr("group_coefficients", None)
        study.tell(trial, state=TrialState.PRUNED) if stop else study.tell(trial, value)
        tells.append(time.perf_counter() - started)
        pruned += stop
    shutil.rmtree(folder, ignore_errors=True)
    last = max(1, len(asks) // 5)
    fifths = [statistics.fmean(asks[i * last:(i + 1) * last]) for i in range(min(5, len(asks)))]
    return {"ask_by_fifth_s": fifths, "trials": trials, "in_flight": workers, "chunks": chunks, "pruned": pruned,
            "ask_s": statistics.fmean(asks), "ask_last_fifth_s": statistics.fmean(asks[-last:]),
            "chunk_s": statistics.fmean(chunk_times), "tell_s": statistics.fmean(tells),
            "tell_last_fifth_s": statistics.fmean(tells[-last:]),
            "chunks_per_trial": len(chunk_times) / trials, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"}


def estimate(m: dict, fraction: float, args, measured: dict, driver: dict | None) -> dict:
    blocks = block_params(m)
    total = blocks + m["vocab"] * m["hidden"]  # no LM head: a sequence classifier's head is tiny
    flops_token = 2 * blocks + 4 * m["layers"] * args.tokens * m["hidden"] + hook_flops(m, args.tasks) / HOOK_EFFICIENCY
    rate = PEAK_BF16_TFLOPS * 1e12 * fraction
    chunk_s = args.tasks * args.chunk * args.tokens * flops_token / rate
    chunks_full = math.ceil(args.validation / args.chunk)
    calls = args.fraction * chunks_full
    per_call = measured["round_trip_s"] + max(0.0, measured["overhead_per_point_s"]) + NETWORK_MS / 1e3
    driver_chunk = driver["chunk_s"] if driver else 0.0
    driver_trial = (driver["ask_last_fifth_s"] + driver["tell_last_fifth_s"]) if driver else 0.0
    worker_trial = calls * (chunk_s + per_call + driver_chunk) + driver_trial
    driver_busy = calls * driver_chunk + driver_trial  # the one driver, serving every worker in turn
    worker_bound = math.ceil(args.trials / args.workers) * worker_trial
    driver_bound = args.trials * driver_busy
    search_s = max(worker_bound, driver_bound)
    weights_gb = 2 * total / 1e9
    startup = measured["ray_init_s"] + measured["worker_start_s"] + CUDA_INIT_S + weights_gb / READ_GB_PER_S
    example_s = args.tokens * flops_token / rate
    reference = args.tasks * args.validation * example_s + per_call
    test = args.tasks * args.test * example_s + per_call
    wall = startup + reference + search_s + test
    compute_only = args.trials * calls * chunk_s  # the same trials' forward passes on one GPU, nothing else
    return {"params_total": total, "params_blocks": blocks, "weights_bf16_gb": weights_gb, "flops_per_token": flops_token,
            "achieved_fraction": fraction, "chunk_s": chunk_s, "calls_per_trial": calls, "per_call_overhead_s": per_call,
            "driver_per_chunk_s": driver_chunk, "driver_per_trial_s": driver_trial, "worker_time_per_trial_s": worker_trial,
            "driver_bound": driver_bound > worker_bound, "driver_utilisation": args.workers * driver_busy / worker_trial,
            "startup_s": startup, "reference_s": reference, "test_s": test, "search_s": search_s, "wall_s": wall,
            "overhead_share": (calls * (per_call + driver_chunk) + driver_trial) / worker_trial,
            "one_gpu_compute_s": compute_only}


def read_measured(path: str | None, args) -> dict:
    if path and os.path.exists(path):
        with open(path) as fh:
            report = json.load(fh)
        p1 = report["part1"]
        return {"source": f"{path} ({report['command']}; {report['date']})", "round_trip_s": report["no_op"]["round_trip_s"]["mean"],
                "queued_s": report["no_op"]["queued_s"]["mean"], "overhead_per_point_s": p1["overhead_per_point_s"]["mean"],
                "overhead_sd_s": p1["overhead_per_point_s"]["sd"], "ratio": p1["ratio"]["mean"], "ray_init_s": report["setup"]["ray_init_s"],
                "worker_start_s": p1["ray_startup_s"]["mean"], "machine": report["machine"]}
    if args.round_trip_ms is None:
        raise SystemExit(f"{path}: not found; run bench/ray_executor.py first (it writes that file), or give --round-trip-ms, "
                         "--overhead-ms, --ray-init-s and --worker-start-s")
    return {"source": "given on the command line", "round_trip_s": args.round_trip_ms / 1e3, "queued_s": float("nan"),
            "overhead_per_point_s": args.overhead_ms / 1e3, "overhead_sd_s": float("nan"), "ratio": float("nan"),
            "ray_init_s": args.ray_init_s, "worker_start_s": args.worker_start_s, "machine": None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", default=DEFAULT_FROM, help=f"bench/ray_executor.py's JSON (default {DEFAULT_FROM})")
    parser.add_argument("--round-trip-ms", type=float, help="instead of --from: a no-op call's round trip")
    parser.add_argument("--overhead-ms", type=float, default=0.0, help="instead of --from: seconds added per sweep point, in ms")
    parser.add_argument("--ray-init-s", type=float, default=5.0, help="instead of --from: ray.init")
    parser.add_argument("--worker-start-s", type=float, default=7.0, help="instead of --from: a worker's start and MiniLM load")
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--workers", type=int, default=8, help="workers, one GPU each (default 8: one 8-GPU node)")
    parser.add_argument("--tasks", type=int, default=8, help="tasks = adapters merged (default 8)")
    parser.add_argument("--validation", type=int, default=200, help="validation examples per task (default 200, the demo's)")
    parser.add_argument("--test", type=int, default=200, help="test examples per task, scored once for the best point (default 200)")
    parser.add_argument("--chunk", type=int, default=32, help="examples per task per chunk (the search's default 32)")
    parser.add_argument("--fraction", type=float, default=HYPERBAND_FRACTION,
                        help=f"share of the validation examples a pruned trial scores on average (default {HYPERBAND_FRACTION}, BENCHMARKS.md)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per example (default 128)")
    parser.add_argument("--driver-trials", type=int, default=500, help="trials of the driver measurement (default 500; 0: leave the driver out)")
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args()

    measured = read_measured(args.source, args)
    chunks_full = math.ceil(args.validation / args.chunk)
    driver = None
    if args.driver_trials > 0:
        started = time.perf_counter()
        driver = measure_driver(args.driver_trials, args.workers, args.tasks, chunks_full, args.chunk)
        driver["seconds"] = time.perf_counter() - started

    print("MEASURED on this machine (CPU; no GPU involved)")
    print(f"  Ray executor, from {measured['source']}:")
    print(f"    no-op call round trip {measured['round_trip_s'] * 1e3:.2f} ms (one at a time: what each chunk of a search waits); "
          f"queued {measured['queued_s'] * 1e3:.2f} ms per call")
    print(f"    seconds added per sweep point against the local executor {measured['overhead_per_point_s'] * 1e3:+.1f} ms "
          f"(± {measured['overhead_sd_s'] * 1e3:.1f}; ratio {measured['ratio']:.3f}×); counted as max(0, ·)")
    print(f"    ray.init {measured['ray_init_s']:.1f} s; a worker's start (process, imports, MiniLM) {measured['worker_start_s']:.1f} s")
    if driver:
        print(f"  Optuna driver, {driver['trials']} synthetic trials, {driver['in_flight']} in flight, {driver['chunks']} rungs, SQLite storage "
              f"({driver['machine']}, {driver['seconds']:.0f} s): ask {driver['ask_s'] * 1e3:.1f} ms (last fifth "
              f"{driver['ask_last_fifth_s'] * 1e3:.1f}), report + should_prune {driver['chunk_s'] * 1e3:.1f} ms per chunk, tell "
              f"{driver['tell_s'] * 1e3:.1f} ms (last fifth {driver['tell_last_fifth_s'] * 1e3:.1f}); {driver['pruned']} pruned, "
              f"{driver['chunks_per_trial']:.2f} chunks per trial")
    else:
        print("  Optuna driver: not measured (--driver-trials 0): its time is left out")

    print("\nASSUMED (not measured)")
    print(f"  GPU: H100 SXM / H200, dense BF16 peak {PEAK_BF16_TFLOPS} TFLOP/s (NVIDIA datasheets); one GPU per worker, "
          f"{args.workers} workers on one node; achieved fraction of the peak (eager forward, bf16, 32 × {args.tokens}-token batches): "
          + ", ".join(f"{k} {m['fraction'][0]:.2f}–{m['fraction'][2]:.2f} (central {m['fraction'][1]:.2f})" for k, m in MODELS.items())
          + ": our guess")
    print(f"  FLOPs per token ≈ 2 × block parameters + attention 4·layers·{args.tokens}·hidden + hooks 2·Σr·(d_in + d_out) per adapted "
          f"layer at {HOOK_EFFICIENCY:.0%} efficiency (Σr = {args.tasks} adapters × rank {ADAPTER_RANK} on q_proj, v_proj)")
    print(f"  search: {args.trials} trials, {args.tasks} tasks × {args.validation} validation examples, chunks of {args.chunk} "
          f"({chunks_full} rungs), {args.tokens} tokens per example; pruned trials score {args.fraction:.0%} of the examples on average "
          f"(BENCHMARKS.md's 40-trial demo search: 0.60, per seed 0.38–0.73; assumed the same with {args.workers} trials in flight)")
    print(f"  start-up: weights read at {READ_GB_PER_S} GB/s, CUDA init {CUDA_INIT_S} s per worker; workers start in parallel; "
          f"{NETWORK_MS} ms network per call (driver off the node); test pass: {args.test} examples per task")

    rows = {}
    print(f"\nESTIMATE: {args.trials}-trial search, {args.workers} workers × 1 GPU (central achieved fraction; low–high in the last column)")
    header = (f"{'model':4} {'params':>7} {'bf16 GB':>7} {'GFLOP/tok':>9} {'chunk s':>8} {'calls/trial':>11} {'overhead/call ms':>16} "
              f"{'driver/trial ms':>15} {'s/trial/worker':>14} {'overhead %':>10} {'wall min':>8} {'1 GPU, no Ray, min':>18} {'wall min (low–high)':>19}")
    print(header)
    for key, m in MODELS.items():
        low, central, high = (estimate(m, f, args, measured, driver) for f in m["fraction"])
        rows[key] = {"model": m["label"], "central": central, "slow": low, "fast": high}
        e = central
        driver_ms = (e["calls_per_trial"] * e["driver_per_chunk_s"] + e["driver_per_trial_s"]) * 1e3
        print(f"{key:4} {e['params_total'] / 1e9:6.2f}B {e['weights_bf16_gb']:7.1f} {e['flops_per_token'] / 1e9:9.2f} {e['chunk_s']:8.3f} "
              f"{e['calls_per_trial']:11.2f} {e['per_call_overhead_s'] * 1e3:16.2f} {driver_ms:15.1f} {e['worker_time_per_trial_s']:14.2f} "
              f"{e['overhead_share']:10.1%} {e['wall_s'] / 60:8.1f} {e['one_gpu_compute_s'] / 60:18.1f} "
              f"{high['wall_s'] / 60:8.1f}–{low['wall_s'] / 60:.1f}")
    for key, row in rows.items():
        e = row["central"]
        fits = ", ".join(f"{gpu} {'fits' if e['weights_bf16_gb'] < gb * 0.8 else 'does NOT fit'}" for gpu, gb in GPU_MEMORY_GB.items())
        print(f"  {key}: {row['model']}: start-up {e['startup_s']:.0f} s, reference pass {e['reference_s']:.1f} s, search {e['search_s'] / 60:.1f} min, "
              f"test {e['test_s']:.1f} s; driver busy {e['driver_utilisation']:.0%} of the time"
              f"{' (the DRIVER limits the pace)' if e['driver_bound'] else ''}; weights {e['weights_bf16_gb']:.1f} GB per worker in bf16: {fits}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "measured": measured, "driver": driver, "estimate": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
