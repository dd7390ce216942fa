"""Every trained model on the train, val and test parts: accuracy, macro and per-class scores, a bootstrap interval.

Only this stage reads the test part. It scores the train and val parts too, so the study's tables
(training and validation precision, recall, F1) come from one place, computed one way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from signdigits.core import paths
from signdigits.core.data import PARTS, load_prepared, load_split, select_digits
from signdigits.core.errors import PipelineError
from signdigits.core.files import csv_text, digest_text, read_arrays, write_text_atomic
from signdigits.core.params import EvaluateParams
from signdigits.reporting.metrics import confusion_matrix, per_class_scores, roc_auc
from signdigits.training.engine import Evaluation, Part, accuracy, evaluate
from signdigits.training.model import Classifier, describe
from signdigits.training.model_file import load_model, tensor_digest

PREDICTION_COLUMNS = ("file", "actual", "predicted", "probability")
SCORE_COLUMNS = (
    "model", "part", "network", "ensemble", "images", "correct", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high",
    "precision_macro", "recall_macro", "f1_macro", "loss", "roc_auc",
)  # fmt: skip
PER_CLASS_COLUMNS = ("model", "digit", "precision", "recall", "f1", "support")
TEST_ACCURACY_COLUMNS = (
    "model",
    "classes",
    "images",
    "correct",
    "accuracy",
    "accuracy_ci95_low",
    "accuracy_ci95_high",
)  # fmt: skip; classes: how many digits the model tells apart (the chart sets 2-digit models apart)
TEST_ACCURACY = paths.PLOTS / "evaluate" / "test_accuracy.csv"  # chart data: one row per model
FINAL_PER_DIGIT = paths.PLOTS / "evaluate" / f"per_digit_{paths.FINAL_MODEL}.csv"  # chart data: one row per digit


@dataclass
class ModelResult:
    name: str
    model: Classifier
    scores: dict[str, dict]  # part -> scores
    per_class: list[dict]  # test part, one row per digit
    files: np.ndarray  # test files the model was scored on (its classes only)
    pixels: np.ndarray  # their uint8 images, for the figure of mistakes
    actual: np.ndarray  # digits
    predicted: np.ndarray  # digits
    probability: np.ndarray  # of the predicted digit

    @property
    def confusion(self) -> np.ndarray:
        to_index = {c: i for i, c in enumerate(self.model.classes)}
        index = np.vectorize(to_index.get)
        return confusion_matrix(index(self.actual), index(self.predicted), len(self.model.classes))


@dataclass
class PartResult:
    """One model on one part: the images' indices, their class indices, and what the model said."""

    indices: np.ndarray
    labels: np.ndarray
    evaluation: Evaluation


def evaluate_models(names: tuple[str, ...], params: EvaluateParams, device: torch.device) -> list[ModelResult]:
    prepared = load_prepared(paths.PREPARED)
    split = load_split(paths.SPLIT, len(prepared.labels))
    results = []
    for name in names:
        model = load_model(paths.model_path(name), image_size=prepared.pixels.shape[1], device=device)
        classes = np.array(model.classes)
        parts = {part: _evaluate_part(name, model, prepared, split[part], part, device) for part in PARTS}
        scores = {part: _part_scores(model, r) for part, r in parts.items()}
        test = parts["test"]  # what the interval, the per-digit scores and the per-image rows describe
        predictions, labels, idx = test.evaluation.predictions, test.labels, test.indices
        low, high = bootstrap_accuracy(predictions == labels, params.bootstrap, params.seed)
        scores["test"].update(accuracy_ci95_low=low, accuracy_ci95_high=high)
        per_digit = per_class_scores(labels, predictions, len(classes))
        per_class = [
            {"model": name, "digit": int(c), "precision": p, "recall": r, "f1": f, "support": int(n)}
            for c, p, r, f, n in zip(
                classes, *(per_digit[k] for k in ("precision", "recall", "f1", "support")), strict=True
            )
        ]
        results.append(
            ModelResult(
                name=name,
                model=model,
                scores=scores,
                per_class=per_class,
                files=prepared.files[idx],
                pixels=prepared.pixels[idx],
                actual=prepared.labels[idx],
                predicted=classes[predictions],
                probability=test.evaluation.probabilities[np.arange(len(idx)), predictions],
            )
        )
    return results


def _evaluate_part(name: str, model: Classifier, prepared, part_indices: np.ndarray, part: str, device) -> PartResult:
    idx, labels = select_digits(prepared.labels, part_indices, model.classes)
    if len(idx) == 0:
        raise PipelineError(f"{paths.model_path(name)}: the {part} part holds none of its digits {model.classes}")
    return PartResult(idx, labels, evaluate(model, Part.from_arrays(prepared.pixels[idx], labels, device)))


def _part_scores(model: Classifier, part: PartResult) -> dict:
    ev, labels, n_classes = part.evaluation, part.labels, len(model.classes)
    return {
        "network": describe(model.arch),
        "ensemble": len(model.members),
        **classification_scores(labels, ev.predictions, n_classes),
        "loss": ev.loss,
        "roc_auc": roc_auc(labels == 1, ev.probabilities[:, 1]) if n_classes == 2 else "",
    }


def classification_scores(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> dict:
    """Accuracy and macro precision/recall/F1 (0 where undefined), over all of the model's classes."""
    per_class = per_class_scores(labels, predictions, n_classes)
    return {
        "images": len(labels),
        "correct": int((labels == predictions).sum()),
        "accuracy": accuracy(predictions, labels),
        "precision_macro": float(per_class["precision"].mean()),
        "recall_macro": float(per_class["recall"].mean()),
        "f1_macro": float(per_class["f1"].mean()),
    }


def bootstrap_accuracy(correct: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of accuracy over images resampled with replacement."""
    rng = np.random.default_rng(seed)
    correct = np.asarray(correct, dtype=np.float64)
    draws = rng.integers(0, len(correct), size=(resamples, len(correct)))
    low, high = np.quantile(correct[draws].mean(axis=1), [0.025, 0.975])
    return float(low), float(high)


def write_tables(results: list[ModelResult]) -> None:
    """Per-image predictions (confusion plots, McNemar's pairs), scores per part, per-class scores.

    scores.csv and per_class.csv hold every model (and part): tables, not charts. A chart's file holds
    one row per bar, so that no chart sums rows into one bar: each model's test accuracy, the final
    model's digits.
    """
    for r in results:
        rows = (
            {"file": file, "actual": int(a), "predicted": int(p), "probability": f"{prob:.6f}"}
            for file, a, p, prob in zip(r.files, r.actual, r.predicted, r.probability, strict=True)
        )
        write_text_atomic(paths.predictions_path(r.name), csv_text(rows, PREDICTION_COLUMNS))
    scores = ({"model": r.name, "part": part, **s} for r in results for part, s in r.scores.items())
    write_text_atomic(paths.SCORES, csv_text(scores, SCORE_COLUMNS))
    write_text_atomic(paths.PER_CLASS, csv_text((row for r in results for row in r.per_class), PER_CLASS_COLUMNS))
    tests = ({"model": r.name, "classes": len(r.model.classes), **r.scores["test"]} for r in results)
    write_text_atomic(TEST_ACCURACY, csv_text(_only(tests, TEST_ACCURACY_COLUMNS), TEST_ACCURACY_COLUMNS))
    digit_columns = PER_CLASS_COLUMNS[1:]
    for final in (r for r in results if r.name == paths.FINAL_MODEL):
        write_text_atomic(FINAL_PER_DIGIT, csv_text(_only(final.per_class, digit_columns), digit_columns))


def write_digests() -> None:
    """metrics/digests/<stage>.tsv: each array and tensor of the outputs kept in the DVC cache, for git diff.

    Written here rather than by the stages that make those outputs: a plain `cache: false` output turns
    off its stage's run-cache (DVC restores no stage whose uncached output it cannot compare), and
    evaluate has none to lose.
    """
    for stage, path in (("prepare", paths.PREPARED), ("split", paths.SPLIT)):
        write_text_atomic(paths.digest_path(stage), digest_text(read_arrays(path, required=())))
    for name in paths.TRAINED_MODELS:
        write_text_atomic(paths.digest_path(name), tensor_digest(paths.model_path(name)))


def _only(rows, columns: tuple[str, ...]):
    return ({c: row[c] for c in columns} for row in rows)


def summary(results: list[ModelResult], sweep: dict, familiarity: dict) -> dict:
    """metrics/evaluate.json: what a reviewer compares, final model first (dvc exp show keeps this order)."""
    by_name = {r.name: r.scores for r in results}
    final = by_name[paths.FINAL_MODEL]
    out = {
        "final": {
            "test_accuracy": final["test"]["accuracy"],
            "test_f1_macro": final["test"]["f1_macro"],
            "val_accuracy": final["val"]["accuracy"],
            "val_f1_macro": final["val"]["f1_macro"],
        },
        "familiarity": familiarity,
    }
    for name in (n for n in paths.STUDY_MODELS if n != paths.FINAL_MODEL):
        out[name] = {
            "test_accuracy": by_name[name]["test"]["accuracy"],
            "test_f1_macro": by_name[name]["test"]["f1_macro"],
        }
    for name in paths.BEYOND_STUDY:  # test accuracy only: `dvc exp show` stays within a screen's columns
        out[name] = {"test_accuracy": by_name[name]["test"]["accuracy"]}
    out["sweep_winner"] = {"run": sweep["winner"]["run"], "val_accuracy": sweep["winner"]["val_accuracy"]}
    return out
