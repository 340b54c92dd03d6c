"""How soon a live-preview update shows numbers on the demo, and how soon a launch does.

    .venv/bin/python bench/preview_progressive.py [--repeats 5] [--launches 1] [--threads N] [--preview-size 100] [--first 16]

1. A slider release (a coefficient of the 4 demo adapters moved to a value not scored yet), timed
   three ways on the same session, in turn: the single pass the app ran before (merge, score the
   whole preview; no intervals), the same single pass with the intervals and paired tests, and the
   progressive preview (the first ``--first`` examples of each task, shown, then the rest). Prints
   the time to the first numbers and to the final ones, mean ± standard deviation over the repeats.
2. A launch of the app on the demo (offscreen), from building the session model to its first and
   final numbers, in a fresh process: a first launch with an empty run history, then a second one
   that finds the adapters-alone predictions there. ``--launches`` such pairs, each in a new folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
STARTED = time.perf_counter()


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {deviation:.3f} s"


# -- 1. a slider release ----------------------------------------------------------------------

def slider_releases(args) -> None:
    import torch

    from osrm_gui.core.explore.history import History
    from osrm_gui.core.explore.sweep import history_point
    from osrm_gui.core.inputs.demo_set import demo_adapter_paths
    from osrm_gui.core.progress import Run, run_to_end
    from osrm_gui.core.session import EvalResult, MergeSession

    torch.set_num_threads(args.threads)
    folder = tempfile.mkdtemp(prefix="osrm-bench-")
    session = MergeSession(device="cpu", preview_limit=args.preview_size, lam=0.5, history=History(os.path.join(folder, "history.sqlite")))
    session.load_base(None)
    for path in demo_adapter_paths():
        session.add_slot(session.read_adapter(path))
    run_to_end(session.evaluate_job())  # tokenise, score each adapter alone: what every later update reuses

    def before():
        """The app's preview before this change: one pass of ws.score over the whole preview."""
        ws = session.workspace()
        spec = session.spec().resolved(len(ws.adapters))
        scores = run_to_end(ws.score(spec, limit=session.preview_limit))
        session.run_history().record(history_point(ws, spec, "test", session.preview_limit, [s.label for s in session.slots], scores))
        return None

    def one_pass():
        session.preview_first = 0
        run_to_end(session.evaluate_job())
        return None

    def progressive():
        """Runs to its first numbers; returns when they came, and the rest of the run."""
        session.preview_first = args.first
        events = iter(Run(session.evaluate_job()))  # one iterator: leaving a for loop over it would close the job
        for event in events:
            if isinstance(event, EvalResult):
                return time.perf_counter(), events
        return None

    ways = {"one pass (before)": before, "one pass, with intervals": one_pass, f"progressive ({args.first} first)": progressive}
    times: dict[str, tuple[list, list]] = {name: ([], []) for name in ways}
    step = 0
    for repeat in range(-1, args.repeats):  # -1: each way once untimed (its own tokenised ranges)
        for name, way in ways.items():
            step += 1
            session.slots[step % len(session.slots)].coefficient = 0.3 + 0.013 * step  # never a value scored before
            started = time.perf_counter()
            first = way()
            if first is not None:  # the progressive preview: its first numbers came; then its refinement
                first, run = first
                for _ in run:
                    pass
            final = time.perf_counter() - started
            if repeat >= 0:
                times[name][0].append(final if first is None else first - started)
                times[name][1].append(final)
    n = sum(min(args.preview_size, len(s.task.split("test"))) for s in session.slots)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
          f"with {torch.get_num_threads()} threads, python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    print(f"demo: {len(session.slots)} tasks, preview size {args.preview_size} ({n} examples), {args.repeats} repeats, in turn")
    print(f"{'slider release':<28} {'first numbers':>17} {'final numbers':>17}")
    for name, (first, final) in times.items():
        print(f"{name:<28} {spread(first):>17} {spread(final):>17}")


# -- 2. launches ----------------------------------------------------------------------------

def launch_child(args) -> None:
    """One launch, in this (fresh) process: prints when the model was loaded and the numbers shown."""
    import torch
    from PySide6.QtWidgets import QApplication

    torch.set_num_threads(args.threads)
    app = QApplication.instance() or QApplication([])
    imported = time.perf_counter() - STARTED
    from osrm_gui.core.session import MergeSession
    from osrm_gui.gui.state import SessionModel

    started = time.perf_counter()
    model = SessionModel(MergeSession(preview_limit=args.preview_size, device="cpu"))
    seen: dict[str, float] = {}
    model.baseChanged.connect(lambda: seen.setdefault("loaded", time.perf_counter() - started))

    def result():
        if model.result is not None:
            seen.setdefault("first", time.perf_counter() - started)
            if not model.result.partial:
                seen.setdefault("final", time.perf_counter() - started)

    model.resultChanged.connect(result)
    model.open_demo()
    while "final" not in seen and time.perf_counter() - started < 600:
        app.processEvents()
        time.sleep(0.002)
    print(json.dumps({"imports": imported, **seen}))


def launches(args) -> None:
    rows = {"first launch": [], "second launch": []}
    for _ in range(args.launches):
        data = tempfile.mkdtemp(prefix="osrm-bench-launch-")
        env = {**os.environ, "OSRM_GUI_DATA": data, "QT_QPA_PLATFORM": "offscreen", "HF_HUB_OFFLINE": "1"}
        for name in rows:
            command = [sys.executable, __file__, "--launch-child", "--threads", str(args.threads), "--preview-size", str(args.preview_size)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            rows[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"launch on the demo, from building the session model (imports before it: {spread([r['imports'] for r in rows['first launch']])});")
    print("then the same from the moment the model and adapters were loaded")
    print(f"{'':<15} {'model loaded':>17} {'first numbers':>17} {'final numbers':>17} {'loaded → first':>17} {'loaded → final':>17}")
    for name, runs in rows.items():
        cells = [spread([r[k] for r in runs]) for k in ("loaded", "first", "final")]
        cells += [spread([r[k] - r["loaded"] for r in runs]) for k in ("first", "final")]
        print(f"{name:<15} " + " ".join(f"{c:>17}" for c in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--launches", type=int, default=1, help="first/second launch pairs (0: none)")
    parser.add_argument("--preview-size", type=int, default=100)
    parser.add_argument("--first", type=int, default=16, help="examples per task of the progressive preview's first pass")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--launch-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.launch_child:
        launch_child(args)
        return 0
    slider_releases(args)
    if args.launches:
        launches(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
