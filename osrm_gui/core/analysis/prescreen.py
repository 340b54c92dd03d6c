"""A data-free pre-screen for a bad contributor: which adapter stands out from the others by
its size or by how it relates to them, before anything is merged or scored (METHODS.md §8.2).

Per adapter j:
- **norm ratio** ‖ΔW_j‖_F / median_{i≠j} ‖ΔW_i‖_F, with ‖ΔW_j‖_F² = Σ over the layers j adapts of
  ‖s_j B_j A_j‖_F² (from the factors: tr((BᵀB)(AAᵀ)), no dense ΔW). The median is over the *other*
  adapters so an outlier does not set its own yardstick, and so that two adapters can be compared.
- **mean cosine**, **sign conflict** and **output-subspace overlap** against the others: the pairwise
  metrics of :mod:`.pairwise` on every layer all adapters adapt (cosine from the factors; sign conflict
  after TIES trimming, dense; overlap ‖U_jᵀU_i‖_F² / min(r_j, r_i) of the column spaces of B, which hold
  ΔW's left singular vectors), averaged over those layers, then over the other adapters.

Rules (each can be changed in :class:`ScreenRules`):
- norm ratio above ``norm_ratio`` (3×): the magnitude outliers DO-Merging warns about dominate a sum;
- a pairwise statistic whose robust z-score against the other adapters' values passes ``z`` (3.5, the
  modified z-score cut of Iglewicz & Hoaglin): z = (x_j − median_{i≠j} x_i) / max(1.4826·MAD_{i≠j}, floor).
  Only the harmful direction counts: a low mean cosine (pulls against the others), a high sign conflict,
  a high overlap (writes where the others write). ``min_spread`` floors the spread, in the metric's own
  units, so that near-identical honest adapters do not turn a small difference into a huge z; a z needs
  at least two other adapters (three in all).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Generator

import numpy as np

from osrm_gui.core.analysis.pairwise import _inner, aggregate, common_layers, nan_mean, pairwise
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.adapters import Adapter
from osrm_gui.core.progress import Progress

MAD_TO_SIGMA = 1.4826  # 1 / Φ⁻¹(3/4): the MAD of a normal sample times this estimates its σ
PAIR_STATISTICS = {  # name -> (pairwise metric, direction that is suspicious, words)
    "mean_cosine": ("cosine", -1, "mean cosine"),
    "sign_conflict": ("sign_conflict", +1, "sign conflict"),
    "overlap": ("col_overlap", +1, "output-subspace overlap"),
}


@dataclass(frozen=True)
class ScreenRules:
    norm_ratio: float = 3.0  # flag an adapter more than this many times the others' median norm
    z: float = 3.5  # flag a pairwise statistic this many robust standard deviations off the others'
    density: float = 0.2  # TIES trimming before the sign-conflict count
    min_spread: float = 0.05  # floor of the robust spread of a pairwise statistic (its own units)

    def check(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise OsrmError(f"--{name.replace('_', '-')} {value!r}: expected a finite number greater than 0 (pre-screen rule)")
        if self.density > 1:
            raise OsrmError(f"--density {self.density!r}: expected at most 1 (pre-screen rule: the fraction of entries TIES keeps)")


@dataclass
class AdapterScreen:
    """One adapter's pre-screen numbers and, when it stands out, why."""

    name: str
    layers: int  # how many layers it adapts
    norm: float  # ‖ΔW‖_F over those layers
    norm_ratio: float  # norm / median norm of the other adapters
    mean_cosine: float
    sign_conflict: float
    overlap: float
    z: dict[str, float] = field(default_factory=dict)  # robust z of each pairwise statistic against the others'
    reasons: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


@dataclass
class PreScreen:
    adapters: list[AdapterScreen]
    layers: list[str]  # the layers every adapter adapts: where the pairwise statistics are computed
    rules: ScreenRules
    matrices: dict[str, np.ndarray]  # pairwise metric -> N × N, mean over the common layers

    @property
    def flagged(self) -> list[str]:
        return [a.name for a in self.adapters if a.flagged]

    def rows(self) -> list[dict]:
        """One row per adapter, for a table."""
        return [{"adapter": a.name, "layers": a.layers, "norm": a.norm, "norm ratio": a.norm_ratio, "mean cosine": a.mean_cosine,
                 "z cosine": a.z.get("mean_cosine", math.nan), "sign conflict": a.sign_conflict, "z conflict": a.z.get("sign_conflict", math.nan),
                 "overlap": a.overlap, "z overlap": a.z.get("overlap", math.nan), "pre-screen": "; ".join(a.reasons) or "pass"}
                for a in self.adapters]

    def to_dict(self) -> dict:
        return {"rules": asdict(self.rules), "common_layers": self.layers,
                "adapters": [{**asdict(a), "flagged": a.flagged} for a in self.adapters],
                "matrices": {name: matrix.tolist() for name, matrix in self.matrices.items()}}


def adapter_norm(adapter: Adapter) -> float:
    """‖ΔW‖_F of the whole adapter: the root of the sum over its layers of ‖s B A‖_F², from the factors."""
    return math.sqrt(sum(max(_inner(layer, layer), 0.0) for layer in adapter.layers.values()))


def robust_z(values: np.ndarray, j: int, min_spread: float) -> float:
    """(x_j − median of the others) / max(1.4826 · their MAD, min_spread); NaN with fewer than two others."""
    others = np.delete(np.asarray(values, dtype=float), j)
    others = others[~np.isnan(others)]
    if len(others) < 2 or math.isnan(values[j]):
        return math.nan
    centre = float(np.median(others))
    spread = max(MAD_TO_SIGMA * float(np.median(np.abs(others - centre))), min_spread)
    return (float(values[j]) - centre) / spread


def _mean_against_others(matrix: np.ndarray, j: int) -> float:
    return nan_mean(np.delete(matrix[j], j)) if matrix.size else math.nan


def prescreen(adapters: list[Adapter], rules: ScreenRules = ScreenRules()) -> Generator[Progress, None, PreScreen]:
    """The pre-screen of ``adapters`` (see the module docstring); yields one Progress per statistic."""
    rules.check()
    steps = 1 + len(PAIR_STATISTICS)
    yield Progress("prescreen", 0, steps, "norms")
    norms = np.array([adapter_norm(a) for a in adapters])
    layers = common_layers(adapters)
    matrices: dict[str, np.ndarray] = {}
    for done, (metric, _, words) in enumerate(PAIR_STATISTICS.values(), 1):
        yield Progress("prescreen", done, steps, words)
        per_layer = pairwise(adapters, metric, rules.density)
        matrices[metric] = aggregate(per_layer) if per_layer else np.full((len(adapters), len(adapters)), math.nan)
    stats = {name: np.array([_mean_against_others(matrices[metric], j) for j in range(len(adapters))])
             for name, (metric, _, _) in PAIR_STATISTICS.items()}
    screens = []
    for j, adapter in enumerate(adapters):
        others = np.delete(norms, j)
        median = float(np.median(others)) if len(others) else math.nan
        ratio = norms[j] / median if median > 0 else (math.inf if norms[j] > 0 else math.nan)
        reasons = []
        if ratio > rules.norm_ratio:
            reasons.append(f"norm {ratio:.1f}× the median of the others (limit {rules.norm_ratio:g}×)")
        z = {name: robust_z(stats[name], j, rules.min_spread) for name in PAIR_STATISTICS}
        for name, (_, direction, words) in PAIR_STATISTICS.items():
            if direction * z[name] > rules.z:
                side = "above" if direction > 0 else "below"
                reasons.append(f"{words} {stats[name][j]:.3f}, far {side} the others' (robust z {z[name]:+.1f}, limit ±{rules.z:g})")
        screens.append(AdapterScreen(adapter.name, len(adapter.layers), float(norms[j]), float(ratio), float(stats["mean_cosine"][j]),
                                     float(stats["sign_conflict"][j]), float(stats["overlap"][j]), z, reasons))
    yield Progress("prescreen", steps, steps)
    return PreScreen(screens, layers, rules, matrices)
