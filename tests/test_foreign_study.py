"""studies/foreign.py in its smoke mode: a tiny folder of photos made from the test part, studied
through predict's own path (CI has no photos from elsewhere; the real run is studies/README.md's)."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
from helpers import ROOT, train_tiny_final_model


def load_study():
    spec = importlib.util.spec_from_file_location("foreign_study", ROOT / "studies" / "foreign.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wilson_interval():
    study = load_study()
    low, high = study.wilson(90, 100)
    assert low == pytest.approx(0.8256, abs=1e-3) and high == pytest.approx(0.9448, abs=1e-3)
    assert study.wilson(0, 0) == [None, None]


def test_the_smoke_study_answers_as_predict_does(tiny_layout, one_thread, tmp_path, capsys):
    from signdigits import predict

    train_tiny_final_model()
    study = load_study()
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{study.BEGIN}\nold table\n{study.END}\nafter\n")
    out = tmp_path / "out"
    assert (
        study.main(
            [
                str(tmp_path / "smoke"),
                "--smoke",
                "--out",
                str(out),
                "--readme",
                str(readme),
                "--models",
                "train_best",
                "train_cnn",
            ]
        )
        == 0
    )
    results = json.loads((out / "foreign.json").read_text())
    assert list(results["models"]) == ["train_best"]  # train_cnn is not trained here: left out
    best = results["models"]["train_best"]
    assert best["all"]["photos"] == 20 and best["test"]["photos"] == len(tiny_layout.test)
    assert set(best["sources"]) == {"smoke"}
    # the same photos through predict itself: the same familiar count
    capsys.readouterr()
    predict.main(
        [*(str(p) for p in sorted((tmp_path / "smoke").glob("*"))), "--model", "models/train_best.pt", "--json"]
    )
    answers = json.loads(capsys.readouterr().out)["images"]
    assert len(answers) == 20 and sum(a["familiar"] for a in answers) == best["all"]["familiar"]
    # risk-coverage: one row per photo, the last accepting them all at the share right
    rows = list(csv.DictReader((out / "foreign_risk_coverage.csv").open()))
    assert len(rows) == 20 and float(rows[-1]["coverage"]) == 1.0
    assert float(rows[-1]["right_among_accepted"]) == pytest.approx(best["all"]["right"])
    assert np.all(np.diff([float(r["score"]) for r in rows]) >= 0)
    assert (out / "foreign_risk_coverage.png").read_bytes()[:4] == b"\x89PNG"
    text = readme.read_text()
    assert "old table" not in text and "| train_best | test part |" in text and text.endswith(f"{study.END}\nafter\n")
    assert "smoke" in results["models"]["train_best"]["leave_one_source_out"]["held_out"]


def test_predicts_note_gives_the_figures_the_study_measured():
    """predict's note quotes studies/foreign.json (the committed run on foreign_dev): they move together."""
    from signdigits import predict

    measured = json.loads((ROOT / "studies" / "foreign.json").read_text())["models"]
    assert set(predict.MEASURED_ELSEWHERE) == set(measured)
    for stage, (right, familiar, right_among) in predict.MEASURED_ELSEWHERE.items():
        figures = measured[stage]["all"]
        assert (right, familiar) == (round(figures["right"], 3), round(figures["familiar_share"], 3)), stage
        assert right_among == round(figures["right_among_familiar"], 3), stage
    right, familiar, right_among = predict.MEASURED_ELSEWHERE["train_cnn"]
    text = predict.note(97.5, 1.0, "train_cnn")
    assert f"right on {right:.0%}" in text and f"right on {right_among:.0%} of those" in text
    assert "familiar is no promise of right" in text and "studies/README.md" not in predict.note(97.5, 1.0, None)
