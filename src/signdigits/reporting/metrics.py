"""Classification metrics in numpy (no scikit-learn import at stage start; tests check they agree),
a bootstrap interval for accuracy, and McNemar's test for two models on the same images."""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: actual class, columns: predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list[int]) -> dict:
    """Accuracy, macro and per-class precision/recall/F1 (0 where undefined, as scikit-learn's zero_division=0)."""
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    true_positive = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return {
        "accuracy": float(true_positive.sum() / max(len(y_true), 1)),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "per_class": {
            str(c): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(actual[i]),
            }
            for i, c in enumerate(classes)
        },
    }


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve for binary labels: the Mann-Whitney U statistic, ties counted half."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0  # average rank of each distinct score
    rank_sum = mid_ranks[inverse][y_true].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_accuracy(correct: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of accuracy over images resampled with replacement."""
    rng = np.random.default_rng(seed)
    correct = np.asarray(correct, dtype=np.float64)
    draws = rng.integers(0, len(correct), size=(resamples, len(correct)))
    accuracies = correct[draws].mean(axis=1)
    low, high = np.quantile(accuracies, [0.025, 0.975])
    return float(low), float(high)


def mcnemar(correct_old: np.ndarray, correct_new: np.ndarray) -> dict:
    """Exact two-sided McNemar test: do two models on the same images err on different ones more than chance allows?"""
    correct_old, correct_new = np.asarray(correct_old, bool), np.asarray(correct_new, bool)
    only_old = int((correct_old & ~correct_new).sum())
    only_new = int((~correct_old & correct_new).sum())
    n = only_old + only_new
    tail = sum(math.comb(n, k) for k in range(min(only_old, only_new) + 1))
    p_value = min(1.0, 2 * tail / 2**n) if n else 1.0
    return {"only_old_correct": only_old, "only_new_correct": only_new, "p_value": p_value}


def rounded(obj, digits: int = 6):
    """Round every float in a nested structure, so metrics files read and diff well."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj
