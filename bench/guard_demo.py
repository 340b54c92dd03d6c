"""The guard against a bad contributor on the demo suite: the 4 demo adapters plus one harmful
adapter — is the harmful one flagged, by which rule, are the honest ones left alone, and what does
including it cost the merged test average over the honest tasks?

    nice -n 10 .venv/bin/python bench/guard_demo.py [--variants shuffled,random] [--lam 0.5] [--tau 0.01] [--threads N]

Honest adapters: the demo's peft-default seed-0 adapters, trained (or reused) exactly as
``osrm demo compare``/``leaderboard`` train them (``compare.train_family``), so a fresh machine works.

Harmful adapters, each paired with the task ``<victim>-shuffled`` (a copy of the ``--victim`` demo
task whose *training* labels are permuted; validation and test keep the true labels):
* ``shuffled``: a LoRA trained on that task with the demo's settings — it learns noise;
* ``random``: the shuffled adapter's head with random Gaussian LoRA factors, rescaled so the whole
  adapter's ‖ΔW‖_F is ``--norm-factor`` × the median honest norm (a large-norm random update).

Per variant and method (task arithmetic at the fixed ``--lam``; TIES at density 0.5, λ 1): the guard
on the validation split (pre-screen, leave-one-out Δ, verdicts), then the merged test average over the
4 honest tasks with the harmful adapter included (M_all) and without it (the honest merge).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shuffled_task_file(victim: str, folder: Path, seed: int) -> Path:
    """``victim``'s demo data as a CSV with a split column, training labels permuted."""
    import numpy as np
    import pandas as pd

    from osrm_gui.core.inputs.demo_tasks import load_demo_task

    task = load_demo_task(victim)
    rng = np.random.default_rng(seed)
    frames = []
    for split, data in task.splits.items():
        labels = rng.permutation(data.labels) if split == "train" else data.labels
        frames.append(pd.DataFrame({"text": data.texts, "label": [task.label_names[i] for i in labels], "split": split}))
    path = folder / f"{victim}-shuffled.csv"
    text = pd.concat(frames).to_csv(index=False)
    if not path.is_file() or path.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def train_shuffled(task_file: Path, folder: Path, steps: int, device):
    """The adapter trained on the shuffled task with the demo's LoRA settings (reused when already there)."""
    from osrm_gui.cli.console import drive
    from osrm_gui.cli.demo import LORA
    from osrm_gui.core.inputs.tasks import resolve_task
    from osrm_gui.core.osrm.training import TrainSettings, train_adapter

    task = resolve_task(str(task_file))
    settings = TrainSettings(**{**LORA, "steps": steps, "seed": 900})
    meta_file = folder / "osrm_adapter.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("task_hash") == task.content_hash() and meta.get("settings", {}).get("steps") == steps:
            return folder
    drive(train_adapter(None, task, folder, settings, device, force=True), "train shuffled")
    return folder


def random_large(template: Path, folder: Path, norm: float, seed: int) -> Path:
    """``template`` (its head and task) with random Gaussian LoRA factors scaled to a whole-adapter ‖ΔW‖_F of ``norm``."""
    import torch
    from safetensors.torch import load_file, save_file

    from osrm_gui.core.analysis.prescreen import adapter_norm
    from osrm_gui.core.inputs.adapters import load_adapter

    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(template, folder)
    weights_file = folder / "adapter_model.safetensors"
    weights = load_file(weights_file)
    generator = torch.Generator().manual_seed(seed)
    for key, value in weights.items():
        if "lora_A" in key or "lora_B" in key:
            weights[key] = torch.randn(value.shape, generator=generator, dtype=torch.float32).to(value.dtype)
    save_file(weights, weights_file)
    scale = norm / adapter_norm(load_adapter(folder))  # ΔW = s·B·A is linear in B: scale B alone
    weights = {k: (v * scale if "lora_B" in k else v) for k, v in weights.items()}
    save_file(weights, weights_file)
    meta = json.loads((folder / "osrm_adapter.json").read_text())
    meta.update(name=folder.name, init="random-large", note=f"random Gaussian LoRA, whole-adapter norm {norm:.2f}")
    (folder / "osrm_adapter.json").write_text(json.dumps(meta, indent=2))
    return folder


def honest_average(scores: dict, honest: list[str]) -> float:
    return sum(scores[t]["metric"] for t in honest) / len(honest)


def run_variant(name, honest_paths, honest_specs, bad_path, bad_spec, methods, args, device) -> tuple[list[dict], list[dict]]:
    from osrm_gui.cli.console import drive, format_table
    from osrm_gui.cli.guard import report_steps
    from osrm_gui.core.explore.guard import guard, judge, score_without
    from osrm_gui.core.workspace import open_workspace

    ws = open_workspace(None, [*honest_paths, bad_path], [*honest_specs, bad_spec], device=device)
    honest = [t.name for t in ws.tasks[:-1]]
    bad = ws.adapters[-1].name
    rows, by_tau = [], []
    for label, spec in methods:
        started = time.perf_counter()
        result = drive(report_steps(guard(ws, spec, "validation", args.tau, args.limit)), f"{name} {label} guard")
        guard_seconds = time.perf_counter() - started
        print(f"\n=== harmful variant: {name} ({bad}), {label}: guard on validation, τ {args.tau:g}, {guard_seconds:.0f} s")
        print(format_table(result.prescreen.rows()))
        print(format_table(result.delta_rows()))
        for v in result.verdicts:
            print(f"  {v.adapter}: {v.status}" + "".join(f"\n    - {r}" for r in v.prescreen + v.leave_one_out))
        with_bad = drive(ws.score(spec, "test", args.test_limit), f"{name} {label} test with")
        without_bad = drive(score_without(ws, spec, len(ws.adapters) - 1, "test", args.test_limit), f"{name} {label} test without")
        verdict = result.verdicts[-1]
        honest_flags = [v.adapter for v in result.verdicts[:-1] if v.flagged]
        rows.append({"harmful": name, "method": label, "flagged": "yes" if verdict.flagged else "NO",
                     "by": ", ".join(r for r, why in (("pre-screen", verdict.prescreen), ("leave-one-out", verdict.leave_one_out)) if why) or "-",
                     "norm ratio": result.prescreen.adapters[-1].norm_ratio, "mean Δ (val)": verdict.mean_delta,
                     "honest flagged": ", ".join(honest_flags) or "none",
                     "test avg with": honest_average(with_bad, honest), "test avg without": honest_average(without_bad, honest),
                     "guard s": round(guard_seconds)})
        rows[-1]["cost"] = rows[-1]["test avg with"] - rows[-1]["test avg without"]
        owned = dict(zip(result.adapters, result.own_tasks))
        for tau in (float(t) for t in args.taus.split(",")):  # the same deltas judged at other τ: nothing rescored
            judged = judge(result.deltas, owned, tau, result.reference)
            by_tau.append({"harmful": name, "method": label, "τ": tau, "harmful flagged (LOO)": "yes" if judged[bad].reasons else "no",
                           "honest flagged (LOO)": ", ".join(a for a in result.adapters[:-1] if judged[a].reasons) or "none"})
    return rows, by_tau


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="where the demo adapters are kept (default: the user cache, as `osrm demo compare`)")
    parser.add_argument("--variants", default="shuffled,random", help="comma-separated: shuffled, random (default both)")
    parser.add_argument("--victim", default="review-or-plot", help="the demo task the harmful adapter's task copies (default review-or-plot)")
    parser.add_argument("--norm-factor", type=float, default=4.0, help="random variant: its norm over the median honest norm (default 4)")
    parser.add_argument("--lam", type=float, default=0.5, help="task arithmetic's fixed λ (default 0.5, the demo's)")
    parser.add_argument("--tau", type=float, default=0.01)
    parser.add_argument("--taus", default="0.01,0.02,0.03,0.05", help="also judge the same deltas at these τ (leave-one-out rule only)")
    parser.add_argument("--limit", type=int, help="validation examples per task for the guard (default all)")
    parser.add_argument("--test-limit", type=int, help="test examples per task (default all)")
    parser.add_argument("--methods", default="task_arithmetic,ties", help="comma-separated: task_arithmetic, ties")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, help="torch threads (default torch's; 1 is faster on a busy machine)")
    args = parser.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from osrm_gui.cli.console import drive, format_table
    from osrm_gui.cli.demo import LORA
    from osrm_gui.core.analysis.prescreen import adapter_norm
    from osrm_gui.core.explore.compare import train_family
    from osrm_gui.core.inputs.adapters import load_adapter
    from osrm_gui.core.inputs.demo_tasks import DEMO_TASKS, load_demo_task
    from osrm_gui.core.merge.spec import MergeSpec
    from osrm_gui.core.osrm.features import cache_dir
    from osrm_gui.core.osrm.training import TrainSettings

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
          f"with {torch.get_num_threads()} threads, python {sys.version.split()[0]}")
    print(" ".join(["bench/guard_demo.py", *sys.argv[1:]]))
    work = args.work or cache_dir().parent / "demo-compare"
    tasks = [load_demo_task(name) for name in DEMO_TASKS]
    honest_paths = drive(train_family("peft-default", 0, tasks, work, TrainSettings(**LORA), args.device), "train honest")
    honest_specs = [t.extra.get("spec") for t in tasks]
    extra = work / "guard-demo"
    task_file = shuffled_task_file(args.victim, extra, seed=0)
    shuffled = train_shuffled(task_file, extra / f"{args.victim}-shuffled", LORA["steps"], args.device)
    median_norm = float(np.median([adapter_norm(load_adapter(p)) for p in honest_paths]))
    harmful = {"shuffled": shuffled, "random": random_large(shuffled, extra / "random-large", args.norm_factor * median_norm, seed=0)}
    methods = {"task_arithmetic": (f"TA λ={args.lam:g}", MergeSpec("task_arithmetic", None, args.lam)),
               "ties": ("TIES d=0.5 λ=1", MergeSpec("ties", None, 1.0, {"density": 0.5}))}
    chosen = [methods[m] for m in args.methods.split(",")]
    rows, by_tau = [], []
    for variant in args.variants.split(","):
        variant_rows, variant_by_tau = run_variant(variant, honest_paths, honest_specs, harmful[variant], str(task_file), chosen, args,
                                                   args.device)
        rows, by_tau = rows + variant_rows, by_tau + variant_by_tau
    print("\n=== summary: the harmful adapter flagged? merged test average over the 4 honest tasks with and without it")
    print(format_table(rows))
    print("\n=== the leave-one-out rule at other τ (same validation deltas)")
    print(format_table(by_tau))
    return 0


if __name__ == "__main__":
    sys.exit(main())
