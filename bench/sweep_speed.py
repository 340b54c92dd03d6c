"""A 21-point task-arithmetic λ sweep (λ = 0…1) over the demo suite: this engine
(``run_sweep`` → ``Workspace.score``, the stacked-LoRA fast path) against the loops a
competent user writes by hand with peft, and against the floor (bare forward passes).

    .venv/bin/python bench/sweep_speed.py [--limit 100] [--points 21] [--repeats 3] [--threads N] [--check 0,0.5,1]

Contenders, all on the same pre-tokenised, length-sorted test examples (``--limit`` per
task), batch size 64, max length 128, each task through its own head:

* engine: ``run_sweep(ws, MergeSpec("task_arithmetic"), [Axis("lambda", …)])``, no history.
* peft cat: one ``PeftModel`` holding the 4 demo adapters; per point
  ``add_weighted_adapter(names, [λ]*4, "merged", combination_type="cat")`` (peft's exact
  sum), ``set_adapter("merged")``, evaluate, ``delete_adapter("merged")``.
* peft merge_and_unload: per point a ``deepcopy`` of that 4-adapter ``PeftModel`` (kept in
  memory, so no disk reads), ``add_weighted_adapter`` (cat), ``set_adapter``,
  ``merge_and_unload()``, evaluate the plain merged model.
* floor: the base model alone (no adapter), each task's head, the same batches, once per point.

Heads: the demo heads have 4, 5, 2 and 2 labels, and peft refuses ``add_weighted_adapter``
when several adapters wrap the same ``modules_to_save`` module, so the peft contenders load
the LoRA weights without the head (config ``task_type=None, modules_to_save=None``) and
read each adapter's ``classifier`` tensors into an ``nn.Linear`` that is installed as the
model's ``classifier`` before that task's batches: one forward per batch through the
normal model call, exactly what the engine does with ``BaseModel.set_head``.

The contenders run interleaved, point by point (engine, peft cat, merge_and_unload, floor,
the order rotating), in ``--repeats`` whole passes over the λ grid (the engine through one
sweep generator per pass), and per point the fastest of the passes counts: on a shared
machine a burst of other work then rarely spoils a point for good, and every contender
sees the same machine. The
engine's time is the time spent inside its generator; its forward time is the time
inside ``evaluation.predict_logits`` (which also pads each batch: the baselines get
ready-padded tensors). Tokenising is done once before timing for everybody.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BATCH = 64  # what Workspace.score uses
MAX_LENGTH = 128


def machine_line(torch) -> str:
    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"with {torch.get_num_threads()} threads, python {sys.version.split()[0]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=100, help="test examples per task (default 100)")
    parser.add_argument("--points", type=int, default=21, help="λ points from 0 to 1 (default 21)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the λ grid per contender; per point the fastest counts (default 3)")
    parser.add_argument("--per-point", action="store_true", help="also print every run's seconds, point by point")
    parser.add_argument("--check", default="0,0.5,1", help="λ values where every contender's scores are compared with the engine's")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]

    import numpy as np
    import torch
    from peft import PeftConfig, PeftModel
    from safetensors.torch import load_file
    from torch import nn
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    import osrm_gui.core.evaluation as evaluation
    from osrm_gui.core.merge.spec import MergeSpec
    from osrm_gui.core.inputs.models import embedded_model_path
    from osrm_gui.core.progress import run_to_end
    from osrm_gui.core.explore.sweep import Axis, SweepPoint, run_sweep, sweep_values
    from osrm_gui.core.workspace import open_workspace
    from osrm_gui.core.inputs.demo_set import demo_adapter_paths

    torch.set_num_threads(args.threads or os.cpu_count())
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    lambdas = sweep_values(0.0, 1.0, args.points)
    check = [float(v) for v in args.check.split(",")] if args.check else []
    paths = demo_adapter_paths()

    # -- the engine, and the shared inputs ---------------------------------------------
    started = time.perf_counter()
    ws = open_workspace(None, paths)
    tasks = ws.tasks
    encoded = {}
    for task in tasks:
        enc = evaluation.encode_split(ws.base.tokenizer, task.split("test").head(args.limit), MAX_LENGTH)
        ws.encoding_cache[(task.name, "test", args.limit, MAX_LENGTH)] = enc  # the key evaluate_tasks looks up
        encoded[task.name] = enc
    pad_id = ws.base.tokenizer.pad_token_id or 0
    batches = {name: [inputs for _, inputs in evaluation.iter_batches(enc, BATCH, pad_id, torch.device("cpu"))] for name, enc in encoded.items()}
    n_examples = sum(len(enc.input_ids) for enc in encoded.values())
    run_to_end(ws.score(MergeSpec("task_arithmetic", None, 0.5), "test", args.limit))  # builds heads and the stacked factors
    engine_setup = time.perf_counter() - started

    # -- what the peft user loads once ---------------------------------------------------
    started = time.perf_counter()
    plain = AutoModelForSequenceClassification.from_pretrained(embedded_model_path()).eval()
    floor_model = copy.deepcopy(plain)  # the floor: base only

    def lora_only(path):
        config = PeftConfig.from_pretrained(path)
        config.task_type, config.modules_to_save = None, None
        return config

    names = [p.name for p in paths]
    peft_model = PeftModel.from_pretrained(plain, paths[0], adapter_name=names[0], config=lora_only(paths[0]), ignore_mismatched_sizes=True)
    for name, path in zip(names[1:], paths[1:]):
        peft_model.add_adapter(name, lora_only(path))
        peft_model.load_adapter(path, adapter_name=name, ignore_mismatched_sizes=True)
    peft_model.eval()
    template = copy.deepcopy(peft_model)  # for merge_and_unload: base + 4 adapters kept in memory
    heads = {}
    for task, path in zip(tasks, paths):
        state = load_file(path / "adapter_model.safetensors")
        weight, bias = state["base_model.model.classifier.weight"], state["base_model.model.classifier.bias"]
        head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
        heads[task.name] = head.eval()
    assert [t.name for t in tasks] == names, "adapters and tasks must pair in order"
    peft_setup = time.perf_counter() - started

    def evaluate(model, owner=None) -> tuple[dict, dict, float]:
        """Accuracy and logits (split order) per task; seconds of forward passes. ``owner``: the
        transformers model whose ``classifier`` is swapped (``model`` itself unless it is a PeftModel)."""
        scores, logits_by_task, seconds = {}, {}, 0.0
        owner = owner if owner is not None else model
        with torch.inference_mode():
            for task in tasks:
                enc = encoded[task.name]
                owner.classifier = heads[task.name]
                t0 = time.perf_counter()
                logits = torch.cat([model(**inputs).logits for inputs in batches[task.name]]).numpy()
                seconds += time.perf_counter() - t0
                scores[task.name] = float((logits.argmax(1) == enc.labels).mean())
                restored = np.empty_like(logits)
                restored[enc.order] = logits
                logits_by_task[task.name] = restored
        return scores, logits_by_task, seconds

    # -- contenders, one point each ---------------------------------------------------------
    totals = {k: {} for k in ("engine", "peft cat", "merge_and_unload", "floor")}
    results = {k: {} for k in totals}  # λ -> (scores, logits)

    def peft_cat(lam):
        t0 = time.perf_counter()
        peft_model.add_weighted_adapter(names, [lam] * len(names), adapter_name="merged", combination_type="cat")
        peft_model.set_adapter("merged")
        scores, logits, forward = evaluate(peft_model, peft_model.base_model.model)
        peft_model.delete_adapter("merged")
        return time.perf_counter() - t0, forward, scores, logits

    def merge_unload(lam):
        t0 = time.perf_counter()
        fresh = copy.deepcopy(template)
        fresh.add_weighted_adapter(names, [lam] * len(names), adapter_name="merged", combination_type="cat")
        fresh.set_adapter("merged")
        merged = fresh.merge_and_unload()
        scores, logits, forward = evaluate(merged)
        del fresh, merged
        return time.perf_counter() - t0, forward, scores, logits

    def floor(_lam):
        t0 = time.perf_counter()
        scores, logits, forward = evaluate(floor_model)
        return time.perf_counter() - t0, forward, scores, logits

    # engine: step the sweep generator one point at a time, timing only what runs inside it
    engine_logits: dict = {}
    engine_forward = [0.0]
    original_predict = evaluation.predict_logits

    def timed_predict(base, enc, batch_size, stage):
        t0 = time.perf_counter()
        gen = original_predict(base, enc, batch_size, stage)
        try:
            while True:
                event = next(gen)
                engine_forward[0] += time.perf_counter() - t0
                yield event
                t0 = time.perf_counter()
        except StopIteration as stop:
            engine_forward[0] += time.perf_counter() - t0
            engine_logits[stage.removeprefix("eval:")] = stop.value
            return stop.value

    evaluation.predict_logits = timed_predict
    spec = MergeSpec("task_arithmetic", None, 1.0)
    sweeps = [run_sweep(ws, spec, [Axis("lambda", tuple(lambdas))], "test", args.limit) for _ in range(args.repeats)]

    def engine_run(sweep):
        def engine(lam):
            engine_forward[0] = 0.0
            seconds = 0.0
            while True:
                t0 = time.perf_counter()
                event = next(sweep)
                seconds += time.perf_counter() - t0
                if isinstance(event, SweepPoint):
                    assert abs(event.value - lam) < 1e-12
                    return seconds, engine_forward[0], dict(event.scores), dict(engine_logits)
        return engine

    contenders = {"engine": None, "peft cat": peft_cat, "merge_and_unload": merge_unload, "floor": floor}
    order = list(contenders)
    runs = {k: [[] for _ in lambdas] for k in contenders}  # per point: list over repeats of (total, forward)
    for r in range(args.repeats):  # whole passes over the λ grid, so a burst of other work rarely hits one point in every pass
        for i, lam in enumerate(lambdas):
            shift = (i + r) % len(order)
            for key in order[shift:] + order[:shift]:
                fn = engine_run(sweeps[r]) if key == "engine" else contenders[key]
                total, forward, scores, logits = fn(lam)
                runs[key][i].append((total, forward))
                if r == 0 and any(abs(lam - c) < 1e-9 for c in check):
                    results[key][lam] = (scores, logits)
                elif r > 0 and lam in results[key]:
                    assert scores == results[key][lam][0], f"{key}: scores changed between repeats"
    for sweep in sweeps:
        for _ in sweep:  # the sweeps' final progress events
            pass
    evaluation.predict_logits = original_predict
    for key, per_point in runs.items():
        best = [min(point) for point in per_point]  # the fastest repeat of each point
        totals[key]["total"] = [t for t, _ in best]
        totals[key]["forward"] = [f for _, f in best]
        totals[key]["mean"] = sum(t for point in per_point for t, _ in point) / args.repeats

    # -- report ---------------------------------------------------------------------------------
    print(machine_line(torch))
    print(f"load average (1 min): {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print(f"demo: {len(tasks)} tasks × {args.limit} test examples ({n_examples}), {len(lambdas)} λ points {lambdas[0]:g}…{lambdas[-1]:g}, "
          f"task arithmetic, batch {BATCH}, max length {MAX_LENGTH}, contenders interleaved point by point")
    print(f"untimed set-up: engine open_workspace + tokenise + first point {engine_setup:.2f} s; "
          f"peft load base + 4 adapters + heads + template copy {peft_setup:.2f} s")
    for key in ("peft cat", "merge_and_unload", "floor"):
        # the floor has no adapter, so it should equal the engine only at λ = 0
        compared = {lam: v for lam, v in results[key].items() if key != "floor" or lam == 0}
        if not compared:
            continue
        diffs, logit_diffs = [], []
        for lam, (scores, logits) in compared.items():
            engine_scores, engine_logit = results["engine"][lam]
            diffs += [abs(scores[t] - engine_scores[t]) for t in scores]
            logit_diffs += [float(np.abs(logits[t] - engine_logit[t]).max()) for t in logits]
        at = ",".join(f"{lam:g}" for lam in compared)
        print(f"agreement with the engine, {key:16s} at λ={at}: max |Δ accuracy| {max(diffs):.4f}, max |Δ logit| {max(logit_diffs):.2e}")
    for lam in results["engine"]:
        print(f"  engine accuracies at λ={lam:g}: " + ", ".join(f"{t} {s:.2f}" for t, s in results["engine"][lam][0].items()))
    engine_total = sum(totals["engine"]["total"])
    print(f"times: per point the fastest of {args.repeats} passes, summed over the {len(lambdas)} points (last column: mean total of a pass)")
    print(f"{'contender':17s} {'total s':>8s} {'vs engine':>10s} {'set-up s':>9s} {'forward s':>10s} {'median/point s':>15s} {'mean total s':>13s}")
    for key, row in totals.items():
        total, forward = sum(row["total"]), sum(row["forward"])
        print(f"{key:17s} {total:8.2f} {total / engine_total:9.2f}× {total - forward:9.2f} {forward:10.2f} "
              f"{statistics.median(row['total']):15.3f} {row['mean']:13.2f}")
    floor_total = sum(totals["floor"]["total"])
    print(f"engine overhead over the floor: {engine_total / floor_total:.3f}× (target ≤ 1.2×)")
    if args.per_point:
        for key in totals:
            print(key, " ".join("/".join(f"{t:.2f}" for t, _ in point) for point in runs[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
