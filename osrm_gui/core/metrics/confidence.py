"""How sure a score on a few examples is: a 95 % interval per score (Wilson for accuracy, a seeded
percentile bootstrap for the other metrics) and a paired test of two predictions on the same
examples (McNemar's exact test for accuracy, a paired bootstrap otherwise).

The bootstrap evaluates every metric on all resamples at once (numpy over a resamples × examples
index matrix, in chunks): sklearn once per resample would take ~0.5 s per task, longer than the
preview it qualifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import comb, sqrt
from typing import Iterator

import numpy as np

LEVEL = 0.95
Z = 1.959963984540054  # the standard normal's 97.5 % quantile
RESAMPLES = 1000
SEED = 0
CHUNK = 250  # resamples evaluated at once: memory stays ~CHUNK × examples, whatever the split's size


@dataclass(frozen=True)
class Comparison:
    """Merged against single on the same examples."""

    test: str  # "McNemar exact" or "paired bootstrap"
    p_value: float  # two-sided, of "no difference"
    difference: float  # merged − single on these examples

    @property
    def distinguishable(self) -> bool:
        return self.p_value < 1 - LEVEL


@dataclass(frozen=True)
class TaskUncertainty:
    merged: tuple[float, float]  # 95 % interval of the merged score
    single: tuple[float, float] | None = None  # of the reference adapter alone
    comparison: Comparison | None = None

    def to_dict(self) -> dict:
        out: dict = {"merged": list(self.merged)}
        if self.single is not None:
            out["single"] = list(self.single)
        if self.comparison is not None:
            out["comparison"] = {"test": self.comparison.test, "p_value": self.comparison.p_value, "difference": self.comparison.difference}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TaskUncertainty":
        single = data.get("single")
        comparison = data.get("comparison")
        return cls(tuple(data["merged"]), tuple(single) if single is not None else None,
                   Comparison(comparison["test"], float(comparison["p_value"]), float(comparison["difference"])) if comparison else None)


# -- intervals -------------------------------------------------------------------------------

def wilson_interval(successes: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson's score interval of a proportion (no continuity correction); (0, 1) without examples."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def resamples(n: int, count: int = RESAMPLES, seed: int = SEED, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """Bootstrap index matrices (rows: resamples of ``range(n)`` with replacement), ``chunk`` rows at a time;
    the same ``seed`` gives the same resamples, so the merge and its reference are resampled alike."""
    rng = np.random.default_rng(seed)
    index_type = np.int16 if n < 2**15 else np.int64
    for start in range(0, count, chunk):
        yield rng.integers(0, n, size=(min(chunk, count - start), n)).astype(index_type, copy=False)


def batch_metric(name: str, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """``name`` (a metric of ``metrics.METRICS``) of each row of the 2-D ``labels`` and ``predictions``,
    with the same conventions as the single-sample metric (0 where a correlation or MCC is undefined)."""
    if name == "accuracy":
        return (labels == predictions).mean(axis=1)
    if name == "macro_f1":
        return _macro_f1(labels, predictions)
    if name == "mcc":
        return _mcc(labels, predictions)
    if name == "pearson":
        return _correlation(labels.astype(np.float64), predictions.astype(np.float64))
    if name == "spearman":
        from scipy.stats import rankdata

        return _correlation(rankdata(labels, axis=1), rankdata(predictions, axis=1))
    raise ValueError(f"no batched form of the metric {name!r}")


def _macro_f1(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    # sklearn's macro average runs over the classes present in the labels or predictions of each
    # sample; a class present in neither has 2·tp + fp + fn = 0 and is left out of the mean.
    total = np.zeros(len(y))
    present = np.zeros(len(y))
    for k in np.union1d(np.unique(y), np.unique(p)):
        true_k, predicted_k = y == k, p == k
        tp = (true_k & predicted_k).sum(axis=1)
        denominator = true_k.sum(axis=1) + predicted_k.sum(axis=1)  # 2·tp + fp + fn
        total += np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
        present += denominator > 0
    return total / np.maximum(present, 1)


def _mcc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    # the multiclass MCC from the confusion matrix's margins, as sklearn computes it
    n = float(y.shape[1])
    correct = (y == p).sum(axis=1).astype(np.float64)
    cross = np.zeros(len(y))
    true_sq = np.zeros(len(y))
    predicted_sq = np.zeros(len(y))
    for k in np.union1d(np.unique(y), np.unique(p)):
        t, q = (y == k).sum(axis=1).astype(np.float64), (p == k).sum(axis=1).astype(np.float64)
        cross += t * q
        true_sq += t * t
        predicted_sq += q * q
    denominator = np.sqrt((n * n - true_sq) * (n * n - predicted_sq))
    return np.where(denominator > 0, (correct * n - cross) / np.where(denominator > 0, denominator, 1.0), 0.0)


def _correlation(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    yc = y - y.mean(axis=1, keepdims=True)
    pc = p - p.mean(axis=1, keepdims=True)
    denominator = np.sqrt((yc * yc).sum(axis=1) * (pc * pc).sum(axis=1))
    return np.where(denominator > 0, (yc * pc).sum(axis=1) / np.where(denominator > 0, denominator, 1.0), 0.0)


def bootstrap_values(name: str, labels: np.ndarray, predictions: np.ndarray, count: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The metric on each of ``count`` seeded resamples of the examples."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return np.concatenate([batch_metric(name, labels[i], predictions[i]) for i in resamples(len(labels), count, seed)])


def _percentiles(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_interval(name: str, labels, predictions, count: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """The percentile bootstrap's 95 % interval of the metric ``name``."""
    return _percentiles(bootstrap_values(name, labels, predictions, count, seed))


def interval(name: str, labels, predictions) -> tuple[float, float]:
    """The 95 % interval of the metric ``name`` on these examples: Wilson for accuracy, else bootstrap."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if len(labels) == 0:
        return float("nan"), float("nan")
    if name == "accuracy":
        return wilson_interval(int((labels == predictions).sum()), len(labels))
    return bootstrap_interval(name, labels, predictions)


# -- paired tests ------------------------------------------------------------------------------

def mcnemar_exact(correct_a, correct_b) -> float:
    """Two-sided exact McNemar p-value: of the examples exactly one of the two gets right, is the
    split between them compatible with a fair coin? (1 when they never disagree.)"""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    disagreements = only_a + only_b
    if disagreements == 0:
        return 1.0
    tail = sum(comb(disagreements, i) for i in range(min(only_a, only_b) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**disagreements)))  # exact: no rounding in the tail sum


def paired_bootstrap(name: str, labels, predictions_a, predictions_b, count: int = RESAMPLES, seed: int = SEED) -> float:
    """Two-sided p-value of "a and b score the same" from the metric's difference on the same resamples:
    twice the smaller share of resampled differences on either side of zero."""
    labels, a, b = np.asarray(labels), np.asarray(predictions_a), np.asarray(predictions_b)
    differences = np.concatenate([batch_metric(name, labels[i], a[i]) - batch_metric(name, labels[i], b[i])
                                  for i in resamples(len(labels), count, seed)])
    return float(min(1.0, 2 * min((differences <= 0).mean(), (differences >= 0).mean())))


def compare(name: str, labels, merged, single, merged_score: float, single_score: float) -> Comparison:
    """The paired test that fits the metric ``name``, merged against single on the same examples."""
    labels = np.asarray(labels)
    if name == "accuracy":
        return Comparison("McNemar exact", mcnemar_exact(labels == np.asarray(merged), labels == np.asarray(single)), merged_score - single_score)
    return Comparison("paired bootstrap", paired_bootstrap(name, labels, merged, single), merged_score - single_score)


def task_uncertainty(name: str, labels, merged, single=None, merged_score: float | None = None,
                     single_score: float | None = None) -> TaskUncertainty:
    """Intervals of the merged (and single) score of one task and, given both, their paired test."""
    merged_interval = interval(name, labels, merged)
    if single is None:
        return TaskUncertainty(merged_interval)
    comparison = None
    if merged_score is not None and single_score is not None and len(labels):
        comparison = compare(name, labels, merged, single, merged_score, single_score)
    return TaskUncertainty(merged_interval, interval(name, labels, single), comparison)
