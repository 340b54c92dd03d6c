"""Every merge method on the same adapter sets: λ chosen on the validation split, reported on test.

One *run* is an adapter set (a family of initialisations and a seed, see :mod:`.compare`). For
each run and method, every λ of the method's grid is scored on validation; the best average
(ties: the smaller λ) is then merged again, timed, scored on test and sized as an export.
Summaries give mean ± std over seeds per method and family, and say whether one family beats
another by more than the spread of the seeds.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generator

import numpy as np

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.merge import METHODS, get_method
from osrm_gui.core.merge.spec import MergedState, MergeSpec
from osrm_gui.core.progress import Progress
from osrm_gui.core.workspace import Workspace

# λ scales the merged update. Sums of task vectors want λ ≤ 1; averages (linear) up to the
# number of tasks; methods whose output scale is arbitrary (isotropic spectra, normalised
# task vectors) need far more: the ISO authors found 3.5–4.5 best for LoRA.
DEFAULT_GRID = (0.2, 0.4, 0.6, 0.8, 1.0)
WIDE_GRID = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
LAMBDA_GRIDS: dict[str, tuple[float, ...]] = {
    "linear": (1.0, 2.0, 3.0, 4.0),
    "regmean": (1.0, 2.0, 3.0, 4.0),
    "iso_c": WIDE_GRID,
    "iso_cts": WIDE_GRID,
    "tsv": WIDE_GRID,
    "knots_ties": WIDE_GRID,
    "knots_dare_ties": WIDE_GRID,
    # DOGE rescales every task vector to norm lamda (0.07) first, so λ·lamda is the norm each
    # task contributes; LoRA deltas on the demo have per-layer norms of ~5, so λ reaches ~50.
    "doge": (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0),
    "fisher": (1.0, 2.0, 3.0, 4.0),  # an average, like linear
}


def lambda_grid(method: str) -> tuple[float, ...]:
    return LAMBDA_GRIDS.get(method, DEFAULT_GRID)


@dataclass
class MethodRun:
    method: str
    family: str
    seed: int
    lam: float  # chosen on validation
    validation: dict[str, float]  # str(λ) -> average over tasks on validation
    test: dict[str, float]  # task -> metric on test at the chosen λ
    single: dict[str, float]  # task -> each adapter alone on test
    merge_seconds: float
    export_bytes: int  # what running every task takes, as the method's export writes it

    @property
    def average(self) -> float:
        return float(np.mean(list(self.test.values())))

    @property
    def normalised(self) -> float:
        return float(np.mean([self.test[t] / self.single[t] for t in self.test]))


def export_bytes(merged: MergedState) -> int:
    """float32 bytes of the merged update as it exports: LoRA factors when low-rank, dense
    otherwise, and for per-task methods (EMR) the shared update plus masks and scales."""
    if merged.per_task:
        from osrm_gui.core.merge.emr import emr_storage

        return emr_storage(merged)["total"]
    total = 0
    for result in merged.layers.values():
        total += 4 * (result.A.numel() + result.B.numel() if result.A is not None else result.delta.numel())
    return total


def _average(scores: dict) -> float:
    return float(np.mean([s["metric"] for s in scores.values()]))


def run_methods(
    ws: Workspace, family: str, seed: int, methods: list[str], limit: int | None = None,
) -> Generator[Progress, None, list[MethodRun]]:
    """Every method on one adapter set; λ chosen on validation, reported on test."""
    single = yield from ws.evaluate_single("test", limit)
    runs = []
    for done, name in enumerate(methods):
        yield Progress("leaderboard", done, len(methods), f"{family} seed {seed}: {name}")
        started = time.perf_counter()
        unit = yield from ws.merge(MergeSpec(name, None, 1.0))  # λ only scales it: one merge serves the grid
        seconds = time.perf_counter() - started
        validation = {}
        for lam in lambda_grid(name):
            scores = yield from ws.evaluate(unit.scaled(lam), "validation", limit)
            validation[f"{lam:g}"] = _average(scores)
        chosen = max(validation, key=lambda lam: (validation[lam], -float(lam)))
        merged = unit.scaled(float(chosen))
        test = yield from ws.evaluate(merged, "test", limit)
        runs.append(MethodRun(name, family, seed, float(chosen), validation, {t: s["metric"] for t, s in test.items()},
                              {t: s["metric"] for t, s in single.items()}, round(seconds, 3), export_bytes(merged)))
    yield Progress("leaderboard", len(methods), len(methods))
    return runs


def run_set(_ws, base_path, paths: list, task_specs: list[str], device: str | None, family: str, seed: int, methods: list[str],
            limit: int | None) -> Generator[Progress, None, list[MethodRun]]:
    """An executor's call: open one adapter set and run :func:`run_methods` on it."""
    from osrm_gui.core.workspace import open_workspace

    ws = open_workspace(base_path, paths, task_specs, device=device)
    return (yield from run_methods(ws, family, seed, methods, limit))


def _stat(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def summarise(runs: list[MethodRun]) -> list[dict]:
    """One row per method and family: test average and normalised (mean ± std over seeds), the
    λ chosen per seed, merge time and export size."""
    rows = []
    for method in dict.fromkeys(r.method for r in runs):
        for family in dict.fromkeys(r.family for r in runs):
            mine = [r for r in runs if r.method == method and r.family == family]
            if not mine:
                continue
            rows.append({"method": method, "family": family, "seeds": len(mine), "test average": _stat([r.average for r in mine]),
                         "normalised": _stat([r.normalised for r in mine]), "λ (validation)": ",".join(f"{r.lam:g}" for r in mine),
                         "merge s": f"{np.mean([r.merge_seconds for r in mine]):.2f}",
                         "export MB": f"{np.mean([r.export_bytes for r in mine]) / 1e6:.2f}"})
    return rows


def family_margin(runs: list[MethodRun], better: str, than: str) -> list[dict]:
    """Per method: does ``better`` beat ``than`` on test average by more than the seeds' spread
    (the difference of means against the combined standard deviation of the two)?"""
    rows = []
    for method in dict.fromkeys(r.method for r in runs):
        a = [r.average for r in runs if r.method == method and r.family == better]
        b = [r.average for r in runs if r.method == method and r.family == than]
        if len(a) < 2 or len(b) < 2:
            continue
        diff = float(np.mean(a) - np.mean(b))
        spread = float(np.sqrt(np.var(a, ddof=1) + np.var(b, ddof=1)))
        verdict = "yes" if diff > spread else ("worse" if -diff > spread else "within the spread")
        rows.append({"method": method, f"{better} − {than}": f"{diff:+.3f}", "spread": f"{spread:.3f}", f"{better} better?": verdict})
    return rows


def missing_methods(kept: list[MethodRun], family: str, seed: int, methods: list[str]) -> list[str]:
    """The methods still to run on one adapter set, given the runs a resumed leaderboard keeps."""
    done = {r.method for r in kept if (r.family, r.seed) == (family, seed)}
    return [m for m in methods if m not in done]


def all_methods() -> list[str]:
    return list(METHODS)


def check_methods(names: list[str]) -> list[str]:
    for name in names:
        try:
            get_method(name)
        except ValueError as exc:
            raise OsrmError(f"--methods: {exc}") from None
    return names


def save(runs: list[MethodRun], path: Path, meta: dict) -> None:
    from osrm_gui.core.atomic import atomic_write_text

    atomic_write_text(path, json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=2) + "\n", force=True)


def load(path: Path) -> tuple[dict, list[MethodRun]]:
    try:
        data = json.loads(Path(path).read_text())
        return data["meta"], [MethodRun(**r) for r in data["runs"]]
    except FileNotFoundError:
        raise OsrmError(f"{path}: no leaderboard there") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise OsrmError(f"{path}: not a leaderboard file ({type(exc).__name__}: {exc})") from None
