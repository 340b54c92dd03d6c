"""Time and peak memory of the heavy steps on a ~1B-parameter Llama-style decoder.

    .venv/bin/python bench/scale_1b.py [--work /tmp/osrm-bench-1b] [--steps features,ties,export,sweep]
                                       [--samples 16] [--limit 4] [--threads N]

Nothing is downloaded. The first run builds, in ``--work`` (kept for later runs):

* a randomly initialised ``LlamaForSequenceClassification`` from a ``LlamaConfig`` (hidden
  2048, intermediate 5632, 22 layers, 32 heads, 4 key/value heads, vocabulary 32000:
  1.1B parameters, float32 on disk), saved with ``save_pretrained`` next to a tiny
  word-level tokenizer (a ``BertTokenizerFast`` over 29 words, as tests/conftest.py does);
* 8 synthetic keyword tasks (CSV, 120 rows of 4 words each, as tests/conftest.py writes);
* 8 rank-16 LoRA adapters on q_proj and v_proj written by peft (``get_peft_model`` +
  ``save_pretrained``) with random non-zero A and B, a random ``score`` head in
  ``modules_to_save`` and an ``osrm_adapter.json`` sidecar naming the task.

Each step then runs in its own fresh process, which loads what it needs as the CLI would
(``load_base`` / ``open_workspace``), does the step, and reports its wall time and its
memory: the peak resident set of the whole process (``ru_maxrss``, the kernel's VmHWM,
loading included), the resident set after loading, and the peak of the step alone (VmHWM
reset through ``/proc/self/clear_refs`` once loading is done). The target compares the
whole-process peak with the parameter bytes of the model (target: below 1.5×).

Steps:
  features  feature statistics of the 8 tasks on the base, uncached, as ``osrm features``
            does (its loop over tasks, ``cached_features`` into an empty cache folder),
            ``--samples`` train examples per task (default 16; the texts are 4 words, so
            about 6 tokens each), the default targets q_proj,v_proj
  ties      one TIES merge of the 8 adapters (``Workspace.merge``, default density/sign)
  export    that TIES merge, then the full-model export of the first task
            (``export_full_models``: one complete transformers model folder)
  sweep     λ points of task arithmetic on ``--limit`` test examples per task (default
            8 tasks × 4 short sequences): the fast engine (``Workspace.score``) against a
            dense re-merge per point (``Workspace.merge`` + ``Workspace.evaluate``); each path
            is warmed up with one point at λ = 0.5, then ``--points`` points (default 3,
            λ from 0.1 to 0.9) are timed, the two paths interleaved; every point's scores
            must agree between the two
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = [
    "red", "green", "blue", "yellow", "cat", "dog", "bird", "fish", "run", "jump", "swim", "fly",
    "big", "small", "fast", "slow", "good", "bad", "happy", "sad", "the", "a", "is", "very",
]
# 8 tasks: which keyword decides the label
TASKS = {
    "colour": {"red": "warm", "yellow": "warm", "blue": "cold", "green": "cold"},
    "animal": {"cat": "land", "dog": "land", "fish": "water", "bird": "water"},
    "motion": {"run": "ground", "jump": "ground", "swim": "other", "fly": "other"},
    "size": {"big": "large", "small": "little"},
    "speed": {"fast": "quick", "slow": "sluggish"},
    "quality": {"good": "pos", "bad": "neg"},
    "mood": {"happy": "up", "sad": "down"},
    "pets": {"cat": "yes", "dog": "yes", "bird": "no", "fish": "no"},
}
MODEL = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4, max_position_embeddings=2048)
RANK, ALPHA = 16, 32


# -- memory ---------------------------------------------------------------------------------
def proc_status() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process, in MiB."""
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) // 1024 for key in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
        return True
    except OSError:
        return False


# -- set-up -----------------------------------------------------------------------------------
def write_task_csv(path: Path, keyword_labels: dict[str, str], n: int = 120, seed: int = 0) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed)
    keywords = list(keyword_labels)
    filler = [w for w in WORDS if w not in keywords]
    rows = ["text,label"]
    for _ in range(n):
        key = keywords[rng.integers(len(keywords))]
        words = list(rng.choice(filler, size=3)) + [key]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{keyword_labels[key]}")
    path.write_text("\n".join(rows) + "\n")
    return path


def build(work: Path) -> None:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BertTokenizerFast, LlamaConfig, LlamaForSequenceClassification

    base_dir, task_dir, adapter_dir = work / "base", work / "tasks", work / "adapters"
    for folder in (base_dir, task_dir, adapter_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    started = time.perf_counter()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (base_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(base_dir / "vocab.txt"))
    torch.manual_seed(0)
    config = LlamaConfig(**MODEL, pad_token_id=0, num_labels=2)
    model = LlamaForSequenceClassification(config).eval()
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    print(f"built {params / 1e9:.3f}B-parameter base in {time.perf_counter() - started:.0f} s", flush=True)

    csvs = {name: write_task_csv(task_dir / f"{name}.csv", labels, seed=i + 1) for i, (name, labels) in enumerate(TASKS.items())}
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=RANK, lora_alpha=ALPHA, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = None
    for i, (name, csv) in enumerate(csvs.items()):
        if peft_model is None:
            peft_model = get_peft_model(model, lora, adapter_name=name)
        else:
            peft_model.add_adapter(name, lora)
        generator = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for key, p in peft_model.named_parameters():
                if f".{name}." in key and ("lora_" in key or "modules_to_save" in key):
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
        peft_model.save_pretrained(adapter_dir, selected_adapters=[name])
        (adapter_dir / name / "osrm_adapter.json").write_text(json.dumps({"task": name, "task_spec": str(csv), "init": "random"}))
    print(f"wrote 8 tasks and 8 adapters in {time.perf_counter() - started:.0f} s", flush=True)


def paths(work: Path) -> tuple[Path, list[Path], list[Path]]:
    return work / "base", [work / "adapters" / n for n in TASKS], [work / "tasks" / f"{n}.csv" for n in TASKS]


# -- steps (each in its own process) ------------------------------------------------------------
def run_step(step: str, work: Path, args) -> dict:
    import torch

    from osrm_gui.core.merge.spec import MergeSpec
    from osrm_gui.core.inputs.models import load_base
    from osrm_gui.core.progress import run_to_end
    from osrm_gui.core.workspace import open_workspace

    torch.set_num_threads(args.threads or os.cpu_count())
    base_dir, adapter_dirs, csvs = paths(work)
    out: dict = {"step": step}
    started = time.perf_counter()
    if step == "features":
        base = load_base(base_dir, device="cpu")
    else:
        ws = open_workspace(base_dir, adapter_dirs, device="cpu")
        base = ws.base
    out["load_s"] = time.perf_counter() - started
    out["param_bytes"] = sum(p.numel() * p.element_size() for p in base.model.parameters())
    out["params"] = sum(p.numel() for p in base.model.parameters())
    after_load = proc_status()
    out["after_load"] = after_load
    out["peak_reset"] = reset_peak()

    started = time.perf_counter()
    if step == "features":
        # the loop of `osrm features` (cli.cmd_features), into an empty cache folder
        from osrm_gui.core.osrm.features import cached_features
        from osrm_gui.core.inputs.tasks import resolve_task

        cache = Path(tempfile.mkdtemp(prefix="features-", dir=work))
        try:
            rows = []
            for spec in map(str, csvs):
                task = resolve_task(spec)
                features = run_to_end(cached_features(base, task, None, args.samples, 128, cache=cache))
                rows.append((task.name, features.samples, next(iter(features.layers.values())).count, len(features.layers), features.meta["cache"]))
            out["detail"] = {"tasks": len(rows), "examples": sum(r[1] for r in rows), "tokens": sum(r[2] for r in rows),
                             "layers": rows[0][3], "cache": sorted({r[4] for r in rows}),
                             "cache_bytes": sum(f.stat().st_size for f in cache.iterdir())}
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    elif step in ("ties", "export"):
        merged = run_to_end(ws.merge(MergeSpec("ties", None, 1.0)))
        out["merge_s"] = time.perf_counter() - started
        out["detail"] = {"layers": len(merged.layers), "params": merged.spec.params}
        if step == "export":
            from osrm_gui.core.export import export_full_models

            folder = work / "export"
            shutil.rmtree(folder, ignore_errors=True)
            t0 = time.perf_counter()
            run_to_end(export_full_models(ws.base, merged, ws.pairs, ws.tasks[:1], folder))
            out["export_s"] = time.perf_counter() - t0
            out["detail"]["export_bytes"] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            out["detail"]["export_task"] = ws.tasks[0].name
            shutil.rmtree(folder, ignore_errors=True)
    elif step == "sweep":
        fast = lambda lam: run_to_end(ws.score(MergeSpec("task_arithmetic", None, lam), "test", args.limit))  # noqa: E731

        def dense(lam):
            merged = run_to_end(ws.merge(MergeSpec("task_arithmetic", None, lam)))
            return run_to_end(ws.evaluate(merged, "test", args.limit))

        timings = {}
        for name, fn in (("engine", fast), ("dense", dense)):
            t0 = time.perf_counter()
            fn(0.5)  # warm-up: tokenising, heads, stacked factors / first weight copies
            timings[f"{name}_warmup_s"] = round(time.perf_counter() - t0, 2)
        lams = [round(0.1 + 0.8 * i / max(args.points - 1, 1), 3) for i in range(args.points)]
        scores = {"engine": [], "dense": []}
        for lam in lams:  # interleaved, so both see the same machine
            for name, fn in (("engine", fast), ("dense", dense)):
                t0 = time.perf_counter()
                scores[name].append(fn(lam))
                timings.setdefault(f"{name}_s", []).append(round(time.perf_counter() - t0, 2))
        out.update(timings)
        diff = max(abs(e[t]["metric"] - d[t]["metric"]) for e, d in zip(scores["engine"], scores["dense"]) for t in e)
        out["detail"] = {"lambdas": lams, "sequences": sum(s["n"] for s in scores["engine"][0].values()), "tasks": len(scores["engine"][0]),
                         "max_abs_score_diff": diff}
    else:
        raise SystemExit(f"unknown step {step!r}")
    out["step_s"] = time.perf_counter() - started
    out["end"] = proc_status()
    out["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return out


class AnonPeak(threading.Thread):
    """Samples RssAnon every 20 ms (anonymous memory only: no mapped file pages)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, proc_status()["RssAnon"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "osrm-bench-1b")
    parser.add_argument("--steps", default="features,ties,export,sweep")
    parser.add_argument("--samples", type=int, default=16, help="train examples per task for the feature statistics")
    parser.add_argument("--limit", type=int, default=4, help="test examples per task for the sweep point")
    parser.add_argument("--points", type=int, default=3, help="timed λ points per path in the sweep step (after one warm-up point each)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--rebuild", action="store_true", help="build the model, tasks and adapters again")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    args = parser.parse_args()

    if args.step:
        sampler = AnonPeak()
        sampler.start()
        result = run_step(args.step, args.work, args)
        sampler.stop.set()
        result["anon_peak_mib"] = sampler.peak
        print("RESULT " + json.dumps(result, default=str), flush=True)
        return 0

    import torch

    import osrm_gui

    args.work.mkdir(parents=True, exist_ok=True)
    if args.rebuild or not (args.work / "adapters" / list(TASKS)[-1] / "osrm_adapter.json").is_file():
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                        f"from scale_1b import build; from pathlib import Path; build(Path({str(args.work)!r}))"], check=True)
    threads = args.threads or os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM, torch {torch.__version__} "
          f"with {threads} threads, python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}")
    print(f"code: osrm_gui from {Path(osrm_gui.__file__).parent}")
    results = []
    for step in args.steps.split(","):
        command = [sys.executable, __file__, "--step", step, "--work", str(args.work), "--samples", str(args.samples),
                   "--limit", str(args.limit), "--points", str(args.points), "--threads", str(threads)]
        proc = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"step {step} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            return 1
        results.append(json.loads(lines[-1][len("RESULT "):]))

    first = results[0]
    size = first["param_bytes"]
    print(f"model: Llama-style, {first['params'] / 1e9:.3f}B parameters, float32, {size / 2**30:.2f} GiB of parameters; "
          f"8 rank-{RANK} LoRA adapters on q_proj,v_proj; target: peak < 1.5 × {size / 2**30:.2f} = {1.5 * size / 2**30:.2f} GiB")
    print("memory in GiB; 'peak' = ru_maxrss of the step's own process (VmHWM, loading included); 'step peak' = VmHWM reset after loading;"
          " 'anon peak' = RssAnon sampled every 20 ms")
    print(f"{'step':9s} {'load s':>7s} {'step s':>8s} {'after load':>11s} {'step peak':>10s} {'anon peak':>10s} {'peak':>7s} {'peak/model':>11s}  detail")
    for r in results:
        gib = lambda mib: mib / 1024  # noqa: E731
        parts = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k.endswith("_s") and k not in ("load_s", "step_s")}
        detail = {**parts, **r.get("detail", {})}
        step_peak = f"{gib(r['end']['VmHWM']):10.2f}" if r["peak_reset"] else f"{'n/a':>10s}"
        print(f"{r['step']:9s} {r['load_s']:7.1f} {r['step_s']:8.1f} {gib(r['after_load']['VmRSS']):11.2f} {step_peak} "
              f"{gib(r['anon_peak_mib']):10.2f} {gib(r['ru_maxrss_mib']):7.2f} {r['ru_maxrss_mib'] * 2**20 / size:10.2f}×  {json.dumps(detail)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
