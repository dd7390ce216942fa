"""metrics/report.md: built from what the stages wrote, never from a fixed list of models or classes."""

from __future__ import annotations

import copy

import pytest
import yaml
from helpers import ROOT

from signdigits.core import paths
from signdigits.core.files import read_csv, read_json
from signdigits.reporting.report import build_report, familiarity_section


def _value(text: str):
    """A CSV cell back to the int, float or string evaluate wrote."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _rows(path) -> list[dict]:
    return [{k: _value(v) for k, v in row.items()} for row in read_csv(ROOT / path)]


@pytest.fixture(scope="module")
def committed():
    """build_report's inputs as evaluate had them, read back from the committed metrics and plot data."""
    scores: dict[str, dict] = {}
    for row in _rows(paths.SCORES):
        scores.setdefault(row.pop("model"), {})[row.pop("part")] = row
    return {
        "image_size": read_json(ROOT / paths.metrics_path("prepare"))["image_size"],
        "split": read_json(ROOT / paths.metrics_path("split")),
        "training": {name: read_json(ROOT / paths.metrics_path(name)) for name in paths.TRAINED_MODELS},
        "sweep": read_json(ROOT / paths.metrics_path("sweep")),
        "scores": scores,
        "per_class": [row for row in _rows(paths.PER_CLASS) if row["model"] == paths.FINAL_MODEL],
    }


def test_the_committed_report_is_what_the_committed_outputs_make(committed):
    """The report's builders reproduce metrics/report.md from the committed JSON and CSV files."""
    percentile = yaml.safe_load((ROOT / paths.PARAMS).read_text())["familiarity"]["percentile"]
    shifts = {name: _rows(paths.familiarity_shifts_path(name)) for name in (paths.FINAL_MODEL, *paths.BEYOND_STUDY)}
    report = build_report(**committed) + "\n" + familiarity_section(percentile, shifts)
    assert report == (ROOT / paths.REPORT).read_text()


def test_the_layer_sizes_follow_the_classes_a_model_was_trained_on(committed):
    inputs = copy.deepcopy(committed)
    inputs["training"][paths.BASE_MODEL]["config"]["classes"] = [3, 5, 7]
    report = build_report(**inputs)
    assert "| Output layer neurons | 3 |" in report
    assert f"| Output | {committed['training'][paths.BASE_MODEL]['config']['hidden'][-1]} -> 3 |" in report


def test_every_model_evaluate_scored_is_in_the_report(committed):
    inputs = copy.deepcopy(committed)
    inputs["scores"]["train_other_pair"] = copy.deepcopy(inputs["scores"]["train_binary"])
    inputs["scores"]["train_other_pair"]["test"]["roc_auc"] = 0.5
    inputs["training"]["train_other_pair"] = copy.deepcopy(inputs["training"]["train_binary"])
    inputs["training"]["train_other_pair"]["config"]["classes"] = [6, 8]
    report = build_report(**inputs)
    assert "| train_other_pair | 784-128-2 |" in report
    assert "The binary model separates digits 6 and 8 (test ROC AUC 0.5000)." in report
    assert "The binary model separates digits 0 and 1" in report
    del inputs["scores"]["train_binary"]
    assert "| train_binary |" not in build_report(**inputs)
