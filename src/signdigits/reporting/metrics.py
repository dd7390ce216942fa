"""Classification metrics in numpy, as scikit-learn defines them (tests/test_evaluation.py checks they agree).

Not scikit-learn itself: importing sklearn.metrics pulls in scipy.stats and costs about 0.8 s at every
evaluate start (measured by benchmarks/bench.py; benchmarks/README.md, "On this machine"), more than
these few lines, on the command people run most (`dvc exp run`). The bootstrap interval and McNemar's
test have no scikit-learn counterpart.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: actual class index, columns: predicted class index."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class index; 0 where undefined (scikit-learn's zero_division=0)."""
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    true_positive = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    both = predicted + actual  # F1 as 2 TP / (2 TP + FP + FN): scikit-learn's formula, so ties round alike
    f1 = np.divide(2 * true_positive, both, out=np.zeros_like(true_positive), where=both > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve for binary labels: the Mann-Whitney U statistic, ties counted half."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0  # average rank of each distinct score
    rank_sum = mid_ranks[inverse][y_true].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
