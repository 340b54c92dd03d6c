"""Task metrics, computed by scikit-learn and scipy (how sure they are on a few examples: ``confidence``)."""

from __future__ import annotations

import numpy as np


def _accuracy(y, p):
    from sklearn.metrics import accuracy_score

    return accuracy_score(y, p)


def _macro_f1(y, p):
    from sklearn.metrics import f1_score

    return f1_score(y, p, average="macro")


def _mcc(y, p):
    from sklearn.metrics import matthews_corrcoef

    return matthews_corrcoef(y, p)


def _pearson(y, p):
    from scipy.stats import pearsonr

    return float(pearsonr(y, p).statistic) if np.std(p) > 0 else 0.0


def _spearman(y, p):
    from scipy.stats import spearmanr

    return float(spearmanr(y, p).statistic) if np.std(p) > 0 else 0.0


# name -> (function of (labels, predictions), is for regression)
METRICS = {
    "accuracy": (_accuracy, False),
    "macro_f1": (_macro_f1, False),
    "mcc": (_mcc, False),
    "pearson": (_pearson, True),
    "spearman": (_spearman, True),
}


def default_metric(regression: bool) -> str:
    return "pearson" if regression else "accuracy"


def predictions_from_logits(logits: np.ndarray, regression: bool) -> np.ndarray:
    return logits[:, 0] if regression else logits.argmax(axis=1)


def compute_metrics(labels: np.ndarray, predictions: np.ndarray, regression: bool) -> dict[str, float]:
    """Every metric that applies to this kind of task."""
    return {name: float(fn(labels, predictions)) for name, (fn, for_regression) in METRICS.items() if for_regression == regression}
