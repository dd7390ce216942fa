"""docs/add-a-model.md: a model added to the one list (paths.MODEL_LIST) is scored, reported and digested by
evaluate with no other change to the code, and the models already there keep their rows' bytes."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from signdigits.core import paths
from signdigits.core.errors import PipelineError
from signdigits.core.params import TrainParams, load_params

TOY = "train_toy"
BEFORE_EVALUATE = ("prepare", "split", "train_binary", "train_base", "train_exp1", "sweep_exp2", "train_best",
                   "train_cnn")  # fmt: skip


def scores(repo) -> dict[tuple[str, str], dict]:
    """plots/evaluate/scores.csv by (model, part), in its order."""
    with open(repo.path / paths.SCORES, newline="") as f:
        return {(row["model"], row["part"]): row for row in csv.DictReader(f)}


def test_a_toy_model_added_to_the_list_is_evaluated_with_no_other_code_change(tiny_repo, monkeypatch, one_thread):
    for stage in (*BEFORE_EVALUATE, "evaluate"):
        tiny_repo.run(stage, check=True)
    before = scores(tiny_repo)
    monkeypatch.chdir(tiny_repo.path)
    from signdigits.training.stage import train_stage

    # Its params section, any keys of a training run: not read until the list names it.
    tiny_repo.set_params({f"{TOY}.hidden": [8], f"{TOY}.epochs": 1, f"{TOY}.batch_size": 16})
    with pytest.raises(PipelineError, match=f"unknown key {TOY}"):
        load_params()
    # The list entry: last, beyond the study (paths.MODEL_LIST; the tuples the code reads come from it).
    models = {**paths.MODEL_LIST, TOY: "beyond the study"}
    monkeypatch.setattr(paths, "MODEL_LIST", models)
    monkeypatch.setattr(paths, "TRAINED_MODELS", tuple(models))
    monkeypatch.setattr(paths, "BEYOND_STUDY", (*paths.BEYOND_STUDY, TOY))
    params = load_params()
    assert params.section(TOY) == TrainParams(hidden=(8,), epochs=1, batch_size=16)
    # What its stage script does (stages/train_exp1.py with the name changed).
    train_stage(TOY, params.section(TOY), params.runtime)
    spec = importlib.util.spec_from_file_location("evaluate_stage", tiny_repo.path / "stages" / "evaluate.py")
    evaluate_stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate_stage)
    evaluate_stage.main(load_params())

    after = scores(tiny_repo)
    assert list(after) == [*before, (TOY, "train"), (TOY, "val"), (TOY, "test")]  # scored last
    assert {key: after[key] for key in before} == before  # the existing rows keep their numbers
    summary = json.loads((tiny_repo.path / paths.metrics_path("evaluate")).read_text())
    assert set(summary[TOY]) == {"test_accuracy"}  # beyond the study: its test accuracy alone
    assert summary[TOY]["test_accuracy"] == pytest.approx(float(after[TOY, "test"]["accuracy"]))
    assert "\nmembers[0].layers.0.weight\t(8, 256)\t" in (tiny_repo.path / paths.digest_path(TOY)).read_text()
    assert (tiny_repo.path / paths.predictions_path(TOY)).is_file()
    report = (tiny_repo.path / paths.REPORT).read_text()
    assert f"{TOY} (beyond the study)" in report
