"""evaluate: every trained model on the test part, which no other stage reads."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np
import torch

from signdigits.core import paths
from signdigits.core.data import load_prepared, load_split, select_digits
from signdigits.core.errors import PipelineError
from signdigits.core.files import csv_text, write_text_atomic
from signdigits.core.params import EvaluateParams
from signdigits.reporting.metrics import bootstrap_accuracy, classification_scores, confusion_matrix, roc_auc
from signdigits.training.engine import Split, evaluate
from signdigits.training.model import Classifier, describe, load_model

PREDICTION_COLUMNS = ("file", "actual", "predicted", "probability")


@dataclass
class ModelResult:
    name: str
    model: Classifier
    files: np.ndarray  # test files the model was scored on (its classes only)
    pixels: np.ndarray  # their uint8 images, for the figure of mistakes
    actual: np.ndarray  # digits
    predicted: np.ndarray  # digits
    probability: np.ndarray  # of the predicted digit
    scores: dict


def evaluate_models(names: tuple[str, ...], params: EvaluateParams, device: torch.device) -> list[ModelResult]:
    prepared = load_prepared(paths.PREPARED)
    test = load_split(paths.SPLIT, len(prepared.labels))["test"]
    image_size = prepared.pixels.shape[1]
    results = []
    for name in names:
        model = load_model(paths.model_path(name), image_size=image_size, device=device)
        classes = np.array(model.classes)
        idx, labels = select_digits(prepared.labels, test, model.classes)
        if len(idx) == 0:
            raise PipelineError(f"{paths.model_path(name)}: the test part holds none of its digits {model.classes}")
        ev = evaluate(model, Split.from_arrays(prepared.pixels[idx], labels, device))
        scores = classification_scores(labels, ev.predictions, model.classes)
        correct = ev.predictions == labels
        low, high = bootstrap_accuracy(correct, params.bootstrap, params.seed)
        scores.update(
            {
                "accuracy_ci95": [low, high],
                "loss": ev.loss,
                "images": int(len(idx)),
                "correct": int(correct.sum()),
                "wrong": int((~correct).sum()),
                "architecture": describe(model.arch),
                "ensemble": len(model.members),
            }
        )
        if len(classes) == 2:
            scores["roc_auc"] = roc_auc(labels == 1, ev.probabilities[:, 1])
        results.append(
            ModelResult(
                name=name,
                model=model,
                files=prepared.files[idx],
                pixels=prepared.pixels[idx],
                actual=prepared.labels[idx],
                predicted=classes[ev.predictions],
                probability=ev.probabilities[np.arange(len(idx)), ev.predictions],
                scores=scores,
            )
        )
    return results


def predictions_csv(result: ModelResult) -> str:
    """One row per test image: the data of DVC's confusion plot, and what McNemar's test pairs up."""
    rows = (
        {"file": file, "actual": int(actual), "predicted": int(predicted), "probability": f"{probability:.6f}"}
        for file, actual, predicted, probability in zip(
            result.files, result.actual, result.predicted, result.probability, strict=True
        )
    )
    return csv_text(rows, PREDICTION_COLUMNS)


def write_predictions(result: ModelResult) -> None:
    write_text_atomic(paths.predictions_path(result.name), predictions_csv(result))


def read_predictions(text: str) -> dict[str, tuple[int, int]]:
    """file -> (actual, predicted), from the text of a predictions CSV (any git revision)."""
    rows = csv.DictReader(io.StringIO(text))
    return {row["file"]: (int(row["actual"]), int(row["predicted"])) for row in rows}


def confusion(result: ModelResult) -> np.ndarray:
    classes = result.model.classes
    return confusion_matrix(
        [classes.index(int(a)) for a in result.actual], [classes.index(int(p)) for p in result.predicted], len(classes)
    )
