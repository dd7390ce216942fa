"""evaluate's numbers equal scikit-learn's (its metrics are numpy, see reporting/metrics.py); bootstrap; McNemar."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as sk

from signdigits.core import paths
from signdigits.core.errors import PipelineError
from signdigits.core.files import rounded
from signdigits.core.params import EvaluateParams, TrainParams
from signdigits.reporting.evaluation import (
    FINAL_PER_DIGIT,
    TEST_ACCURACY,
    TEST_ACCURACY_COLUMNS,
    bootstrap_accuracy,
    classification_scores,
    evaluate_models,
    write_tables,
)
from signdigits.reporting.metrics import per_class_scores, roc_auc
from signdigits.review.judge import mcnemar, paired_test
from signdigits.training.engine import Part, train
from signdigits.training.model_file import save_model

binomtest = pytest.importorskip("scipy.stats").binomtest


pytestmark = pytest.mark.usefixtures("one_thread")


# --- classification scores against scikit-learn ------------------------------------------------


def random_predictions(seed: int, n: int, k: int, never_predicted: int | None = None, never_actual: int | None = None):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, size=n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, k, size=n))  # better than chance
    if never_predicted is not None:
        y_pred[y_pred == never_predicted] = (never_predicted + 1) % k
    if never_actual is not None:
        y_true[y_true == never_actual] = (never_actual + 1) % k
    return y_true, y_pred


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k, never_predicted, never_actual", [(10, None, None), (5, 3, None), (4, 0, 2), (2, 1, None)])
def test_scores_equal_scikit_learn(seed, k, never_predicted, never_actual):
    y_true, y_pred = random_predictions(seed, 60, k, never_predicted, never_actual)
    labels = list(range(k))
    scores = classification_scores(y_true, y_pred, k)
    assert scores["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred), abs=1e-12)
    p, r, f, _ = sk.precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    assert (scores["precision_macro"], scores["recall_macro"], scores["f1_macro"]) == pytest.approx(
        (p, r, f), abs=1e-12
    )
    per_class = per_class_scores(y_true, y_pred, k)
    p, r, f, support = sk.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    for name, expected in (("precision", p), ("recall", r), ("f1", f), ("support", support)):
        np.testing.assert_allclose(per_class[name], expected, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("seed, decimals", [(0, 3), (1, 1), (2, 6), (3, 0)])
def test_roc_auc_equals_scikit_learn(seed, decimals):
    rng = np.random.default_rng(seed)
    y = rng.random(80) < 0.4
    scores = np.round(rng.random(80) + 0.3 * y, decimals)  # ties when rounded hard
    assert roc_auc(y, scores) == pytest.approx(sk.roc_auc_score(y, scores), abs=1e-12)


def test_roc_auc_edge_cases():
    y = np.array([0, 1, 0, 1, 1])
    assert roc_auc(y, np.full(5, 0.3)) == 0.5  # all tied
    assert roc_auc(y, y * 0.9) == 1.0
    assert roc_auc(y, 1 - y) == 0.0
    assert math.isnan(roc_auc(np.ones(4), np.arange(4.0)))  # one class only: undefined


# --- bootstrap ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n, rate", [(40, 0.9), (400, 0.8), (200, 0.5)])
def test_bootstrap_interval_contains_the_accuracy_and_is_seeded(n, rate):
    correct = np.random.default_rng(0).random(n) < rate
    accuracy = correct.mean()
    low, high = bootstrap_accuracy(correct, 1000, seed=3)
    assert low <= accuracy <= high
    assert 0 <= low < high <= 1
    assert (low, high) == bootstrap_accuracy(correct, 1000, seed=3)
    assert len({bootstrap_accuracy(correct, 1000, seed=s) for s in range(5)}) > 1  # the seed matters
    # about +-1.96 standard errors of a proportion
    half_width = 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.25)


def test_bootstrap_of_all_correct_or_all_wrong():
    assert bootstrap_accuracy(np.ones(30, bool), 100, seed=0) == (1.0, 1.0)
    assert bootstrap_accuracy(np.zeros(30, bool), 100, seed=0) == (0.0, 0.0)


# --- McNemar ------------------------------------------------------------------------------------


def paired(both: int, only_old: int, only_new: int, neither: int, seed: int = 0):
    outcomes = [(1, 1)] * both + [(1, 0)] * only_old + [(0, 1)] * only_new + [(0, 0)] * neither
    outcomes = np.array(outcomes, dtype=bool).reshape(-1, 2)
    outcomes = outcomes[np.random.default_rng(seed).permutation(len(outcomes))]
    return outcomes[:, 0], outcomes[:, 1]


def test_mcnemar_known_small_case():
    old, new = paired(both=20, only_old=1, only_new=8, neither=5)
    result = mcnemar(old, new)
    assert result["only_old_correct"] == 1 and result["only_new_correct"] == 8
    # exact two-sided: 2 * P(X <= 1), X ~ Binomial(9, 1/2) = 2 * (1 + 9) / 512
    assert result["p_value"] == pytest.approx(2 * (1 + 9) / 2**9, rel=1e-12)
    assert result["p_value"] == pytest.approx(binomtest(1, 9, 0.5).pvalue, rel=1e-12)


@pytest.mark.parametrize("b, c", [(0, 1), (0, 6), (3, 3), (2, 5), (7, 4), (10, 25), (0, 30), (40, 41), (90, 130)])
def test_mcnemar_equals_scipy_exact_binomial(b, c):
    old, new = paired(both=15, only_old=b, only_new=c, neither=4, seed=b + c)
    result = mcnemar(old, new)
    assert (result["only_old_correct"], result["only_new_correct"]) == (b, c)
    assert result["p_value"] == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9, abs=1e-300)
    swapped = mcnemar(new, old)
    assert (swapped["only_old_correct"], swapped["only_new_correct"]) == (c, b)
    assert swapped["p_value"] == result["p_value"]


def test_mcnemar_agreeing_models():
    old, new = paired(both=30, only_old=0, only_new=0, neither=7)
    assert mcnemar(old, new) == {"only_old_correct": 0, "only_new_correct": 0, "p_value": 1.0}
    assert mcnemar(np.array([], bool), np.array([], bool))["p_value"] == 1.0


def test_rounded_rounds_every_float_in_nested_data():
    data = {"a": 0.1234567891, "b": [1.00000049, 2, "x", (3.3333333333,)], "c": {"d": True, "e": None}}
    assert rounded(data) == {"a": 0.123457, "b": [1.0, 2, "x", [3.333333]], "c": {"d": True, "e": None}}


# --- evaluate: a tiny fake pipeline layout ------------------------------------------------------


def quick_model(pixels, labels, digits, epochs=3, seed=0):
    keep = np.isin(labels[:60], digits)
    to_index = {d: i for i, d in enumerate(digits)}
    y = np.array([to_index[d] for d in labels[:60][keep]])
    data = Part.from_arrays(pixels[:60][keep], y, torch.device("cpu"))
    cfg = TrainParams(hidden=(16,), dropout=0.0, optimizer="adam", lr=0.01, batch_size=8, epochs=epochs, seed=seed)
    return train(cfg, data, data, list(digits)).model


def test_evaluate_numbers_equal_scikit_learn(tiny_layout):
    pixels, labels, files, test = tiny_layout.pixels, tiny_layout.labels, tiny_layout.files, tiny_layout.test
    models = {
        "full": quick_model(pixels, labels, list(range(10))),
        "pair": quick_model(pixels, labels, [3, 7], epochs=2),
    }
    for name, model in models.items():
        save_model(model, paths.model_path(name))
    results = evaluate_models(("full", "pair"), EvaluateParams(bootstrap=300, seed=0), torch.device("cpu"))
    assert [r.name for r in results] == ["full", "pair"]
    for result in results:
        model = models[result.name]
        classes = np.array(model.classes)
        idx = test[np.isin(labels[test], classes)]  # only the model's digits
        with torch.no_grad():
            x = torch.from_numpy(pixels[idx].reshape(len(idx), -1)).float() / 255.0
            probs = model(x).softmax(dim=1).numpy()
        actual, predicted = labels[idx], classes[probs.argmax(axis=1)]
        if result.name == "full":
            assert 0 < sk.accuracy_score(actual, predicted) < 1  # a test that has both right and wrong answers
        assert np.array_equal(result.actual, actual)
        assert np.array_equal(result.predicted, predicted)
        assert np.array_equal(result.files, files[idx])
        assert np.array_equal(result.pixels, pixels[idx])
        np.testing.assert_allclose(result.probability, probs.max(axis=1), rtol=1e-5)
        scores = result.scores["test"]
        assert scores["accuracy"] == pytest.approx(sk.accuracy_score(actual, predicted), abs=1e-12)
        for average in ("macro", None):
            p, r, f, support = sk.precision_recall_fscore_support(
                actual, predicted, labels=classes, average=average, zero_division=0
            )
            if average:
                assert (scores["precision_macro"], scores["recall_macro"], scores["f1_macro"]) == pytest.approx(
                    (p, r, f)
                )
            else:
                per_class = result.per_class
                assert [row["digit"] for row in per_class] == list(classes)
                assert [row["precision"] for row in per_class] == pytest.approx(p)
                assert [row["recall"] for row in per_class] == pytest.approx(r)
                assert [row["f1"] for row in per_class] == pytest.approx(f)
                assert [row["support"] for row in per_class] == list(support)
        assert scores["loss"] == pytest.approx(sk.log_loss(actual, probs, labels=classes), rel=1e-4)
        assert scores["images"] == len(idx)
        assert scores["correct"] == int((actual == predicted).sum())
        low, high = scores["accuracy_ci95_low"], scores["accuracy_ci95_high"]
        assert low <= scores["accuracy"] <= high
        assert scores["ensemble"] == 1
        assert np.array_equal(result.confusion, sk.confusion_matrix(actual, predicted, labels=classes))
        assert set(result.scores) == {"train", "val", "test"}
    full, pair = results
    assert full.scores["test"]["network"] == "64-16-10" and pair.scores["test"]["network"] == "64-16-2"
    assert full.scores["test"]["roc_auc"] == ""
    idx = test[np.isin(labels[test], [3, 7])]
    with torch.no_grad():
        x = torch.from_numpy(pixels[idx].reshape(len(idx), -1)).float() / 255.0
        p7 = models["pair"](x).softmax(dim=1)[:, 1].numpy()
    assert pair.scores["test"]["roc_auc"] == pytest.approx(sk.roc_auc_score(labels[idx] == 7, p7), abs=1e-12)


def test_tables_round_trip_and_pair_up_in_review(tiny_layout):
    pixels, labels, test = tiny_layout.pixels, tiny_layout.labels, tiny_layout.test
    name = paths.FINAL_MODEL
    save_model(quick_model(pixels, labels, [2, 5, 8]), paths.model_path(name))
    (result,) = evaluate_models((name,), EvaluateParams(bootstrap=50), torch.device("cpu"))
    write_tables([result])
    predictions = pd.read_csv(paths.predictions_path(name))
    assert list(predictions.columns) == ["file", "actual", "predicted", "probability"]
    assert len(predictions) == len(result.files) == int(np.isin(labels[test], [2, 5, 8]).sum())
    assert list(predictions.file) == list(result.files)
    assert list(predictions.predicted) == list(result.predicted)
    np.testing.assert_allclose(predictions.probability, result.probability, atol=5e-7)
    scores = pd.read_csv(paths.SCORES)
    assert list(scores.part) == ["train", "val", "test"]
    assert scores.set_index("part").loc["test", "correct"] == result.scores["test"]["correct"]
    per_class = pd.read_csv(paths.PER_CLASS)
    assert list(per_class.digit) == [2, 5, 8]
    # the charts' files: one row per bar, the same numbers as the tables
    per_digit = pd.read_csv(FINAL_PER_DIGIT)
    pd.testing.assert_frame_equal(per_digit, per_class.drop(columns="model"))
    (tested,) = pd.read_csv(TEST_ACCURACY).to_dict("records")
    test_row = scores[scores.part == "test"].iloc[0]
    assert tested.pop("classes") == 3  # how many digits the model tells apart: the chart sets 2-digit models apart
    assert tested == {column: test_row[column] for column in TEST_ACCURACY_COLUMNS if column != "classes"}
    paired = paired_test(predictions, predictions)
    assert paired["paired_images"] == len(result.files) and paired["p_value"] == 1.0


def test_evaluate_refuses_a_model_of_another_image_size(tiny_layout):
    rng = np.random.default_rng(0)
    pixels12, labels12 = rng.integers(0, 256, size=(20, 12, 12)).astype(np.uint8), np.arange(20) % 10
    data = Part.from_arrays(pixels12, labels12, torch.device("cpu"))
    cfg = TrainParams(hidden=(8,), dropout=0.0, batch_size=10, epochs=1)
    save_model(train(cfg, data, data, list(range(10))).model, paths.model_path("big"))
    with pytest.raises(PipelineError, match="image_size 12, expected 8"):
        evaluate_models(("big",), EvaluateParams(), torch.device("cpu"))


# --- figures --------------------------------------------------------------------------------------


@pytest.mark.integration
def test_figures_drawn_aside_are_the_bytes_drawn_in_this_process(tmp_path, monkeypatch):
    """evaluate draws its PNGs in a second process where a second core is free: the files must not differ."""
    from signdigits.reporting import figures

    monkeypatch.chdir(tmp_path)
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_accuracy": 1 - 0.5 / e,
            "val_accuracy": 0.9 - 0.5 / e,
        }
        for e in range(1, 6)
    ]
    written = {}
    for cores in (1, 2):  # drawn here, then in a worker process
        monkeypatch.setattr(figures, "usable_cores", lambda cores=cores: cores)
        with figures.drawn_aside() as draw:
            draw(figures.learning_curves, "tiny", history)
            draw(figures.confusion_heatmap, "tiny", np.array([[3, 1], [0, 4]]), [0, 1])
        written[cores] = {path.name: path.read_bytes() for path in (tmp_path / paths.FIGURES).iterdir()}
    assert sorted(written[1]) == ["confusion_tiny.png", "curves_tiny.png"]
    assert written[1] == written[2]
    assert all(png.startswith(b"\x89PNG") for png in written[1].values())
