"""predict, as a person uses it: photos in, one verdict per photo (digit, probability, familiar or not).

On a tiny repository with a model trained in a second (`photo_repo`), and end to end on the session's
reproduced clone of this repository (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT, RunsOnUnpickle, run, stage_env, train_tiny_final_model

from signdigits import predict
from signdigits.core import paths
from signdigits.core.files import FORMAT_VERSION
from signdigits.training.inputs import to_inputs


@pytest.fixture
def photo_repo(tiny_layout, one_thread, tmp_path):
    """tmp_path as a repository (dvc.yaml, params.yaml with percentile 90, a final model) and photos in it."""
    from PIL import Image

    model = train_tiny_final_model()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["familiarity"]["percentile"] = 90.0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    photos = tmp_path / "photos"
    photos.mkdir()
    train_scores = model.familiarity.scores(to_inputs(tiny_layout.pixels[:60]))
    familiar = tiny_layout.pixels[int(np.argmin(train_scores))]
    odd = (255 - tiny_layout.pixels[:60].mean(axis=0)).astype(np.uint8)  # the training photos' negative
    assert model.familiarity.scores(to_inputs(odd[None]))[0] > model.familiarity.threshold(90.0)
    Image.fromarray(familiar).save(photos / "a_familiar.png")
    Image.fromarray(odd).save(photos / "b_negative.png")
    (photos / "notes.txt").write_text("not an image, and not picked up from a folder")
    return tmp_path


def run_predict(capsys, *args) -> tuple[int, str, str]:
    code = predict.main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_says_which_photos_are_unfamiliar(photo_repo, capsys):
    photos = photo_repo / "photos"
    code, out, err = run_predict(capsys, photos / "a_familiar.png")
    assert code == predict.EXIT_OK
    assert out.split("\t")[3].startswith("familiar (score")
    assert "UNFAMILIAR means" in err and "plain light background" in err
    code, out, _ = run_predict(capsys, photos / "b_negative.png")
    assert code == predict.EXIT_UNFAMILIAR
    assert "UNFAMILIAR (score" in out and "do not trust this digit" in out


def test_predict_json_folders_and_missing_files(photo_repo, capsys):
    code, out, _ = run_predict(capsys, photo_repo / "photos", photo_repo / "missing.jpg", "--json")
    document = json.loads(out)
    assert code == document["exit_code"] == predict.EXIT_UNREADABLE
    assert [Path(i["file"]).name for i in document["images"]] == ["a_familiar.png", "b_negative.png"]
    assert [i["familiar"] for i in document["images"]] == [True, False]
    assert document["errors"] == [{"file": str(photo_repo / "missing.jpg"), "error": "no such file"}]
    assert document["percentile"] == 90.0  # from the params.yaml of the model's repository
    code, out, _ = run_predict(capsys, photo_repo / "photos", "--json", "--percentile", "99.9")
    assert json.loads(out)["percentile"] == 99.9


def test_predict_finds_the_repository_model_from_a_subfolder(photo_repo, capsys, monkeypatch):
    monkeypatch.chdir(photo_repo / "photos")
    code, out, _ = run_predict(capsys, "a_familiar.png", "--json")
    assert code == predict.EXIT_OK
    assert json.loads(out)["model"] == str((photo_repo / paths.model_path("train_best")).resolve())


def test_predict_without_a_model_names_the_paths_tried(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setattr(predict, "repository_roots", lambda: [tmp_path])
    code, _, err = run_predict(capsys, "photo.jpg")
    assert code == predict.EXIT_ERROR
    assert f"tried {tmp_path / 'models' / 'train_best.pt'}" in err and "dvc repro" in err


def test_predict_runs_from_any_folder_with_a_model(photo_repo, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    done = subprocess.run(
        [sys.executable, "-m", "signdigits.predict", str(photo_repo / "photos" / "a_familiar.png"), "--model",
         str(photo_repo / "models" / "train_best.pt")],
        cwd=elsewhere, capture_output=True, text=True, env=stage_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == predict.EXIT_OK, done.stderr
    assert "familiar (score" in done.stdout


# --- bad inputs: model files, FIFOs (model-file robustness itself: test_model.py) ----------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A real, small model file: 16x16 pixels, one hidden layer of 8, ten classes, a familiarity check."""
    import torch

    from signdigits.training.familiarity import fit_familiarity
    from signdigits.training.model import MLP, Arch, Classifier
    from signdigits.training.model_file import save_model

    torch.manual_seed(0)
    arch = Arch(image_size=16, hidden=(8,), n_classes=10, dropout=0.0)
    model = Classifier(arch, list(range(10)), [MLP(arch, torch.zeros(256), torch.ones(256))])
    model.familiarity = fit_familiarity(torch.rand(40, 256), torch.rand(20, 256), normalize_images=False, components=4)
    return save_model(model, tmp_path_factory.mktemp("model") / "model.pt")


def malicious_model(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"format_version": FORMAT_VERSION, "arch": RunsOnUnpickle(marker), "members": []}, path)
    return path


def test_predict_refuses_bad_model_files(model_file, tmp_path, capsys):
    from signdigits.predict import main

    image = tmp_path / "IMG_1.JPG"
    from PIL import Image

    Image.new("RGB", (20, 20), "white").save(image, format="JPEG")
    assert main([str(image), "--model", str(model_file)]) in (0, 3)  # the control: a good model answers (3: unfamiliar)
    capsys.readouterr()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(model_file.read_bytes()[:1000])
    cases = {tmp_path / "missing.pt": "file not found", truncated: "not a signdigits model file"}
    for path, expected in cases.items():
        assert main([str(image), "--model", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and str(path) in err


def test_predict_refuses_a_fifo_without_opening_it(model_file, tmp_path, capsys):
    from signdigits.predict import main

    folder = tmp_path / "photos"
    folder.mkdir()
    fifo = folder / "IMG_2.JPG"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    for argument in (fifo, folder):  # given itself, or found in a folder
        assert main([str(argument), "--model", str(model_file)]) == 1
        err = capsys.readouterr().err
        assert f"error: {fifo}: not a regular file" in err


def test_predict_cli_refuses_a_malicious_model(tmp_path):
    from PIL import Image

    image = tmp_path / "IMG_1.JPG"
    Image.new("RGB", (20, 20), "white").save(image, format="JPEG")
    marker = tmp_path / "marker"
    path = malicious_model(tmp_path / "evil.pt", marker)
    result = subprocess.run(
        [sys.executable, "-m", "signdigits.predict", str(image), "--model", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "refused" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


# --- end to end, on the reproduced clone --------------------------------------------------------


@pytest.mark.slow
def test_predict_agrees_with_evaluate_on_test_images(reproduced_clone):
    clone = reproduced_clone
    rows = (clone / "plots/evaluate/predictions_train_best.csv").read_text().splitlines()[1:]
    expected = {f"data/raw/{file}": (digit, float(p)) for file, _, digit, p in (r.split(",") for r in rows)}
    done = run([sys.executable, "-m", "signdigits.predict", *expected], cwd=clone, check=False)
    assert done.returncode in (0, 3), done.stderr  # 3: some test photos are flagged unfamiliar, as evaluate says
    lines = (line.split("\t") for line in done.stdout.splitlines())
    answered = {path: (digit, float(p)) for path, digit, p, _verdict in lines}
    assert answered.keys() == expected.keys()
    for path, (digit, probability) in answered.items():
        assert digit == expected[path][0], path
        assert probability == pytest.approx(expected[path][1], abs=2e-4), path


def dark_textured_copy(photo: Path, target: Path) -> Path:
    """The photo with its bright wall replaced by dark noise, at full resolution: not one of evaluate's shifts."""
    import numpy as np
    from PIL import Image

    gray = np.asarray(Image.open(photo).convert("L"), dtype=np.float64)
    threshold = gray.mean() + 0.5 * gray.std()  # the plain light wall is the brightest part of these photos
    texture = np.random.default_rng(0).uniform(0, 60, size=gray.shape)
    Image.fromarray(np.where(gray > threshold, texture, gray).astype(np.uint8)).save(target)
    return target


@pytest.mark.slow
def test_predict_from_another_folder_flags_a_photo_on_a_dark_background(reproduced_clone, tmp_path):
    clone = reproduced_clone
    """The familiarity check, as a person meets it: a test photo is familiar, the same hand on dark noise is not."""
    rows = (clone / "plots/evaluate/predictions_train_best.csv").read_text().splitlines()[1:]
    file, actual, predicted, _ = next(r.split(",") for r in rows if r.split(",")[1] == r.split(",")[2])
    photo = clone / "data/raw" / file
    dark = dark_textured_copy(photo, tmp_path / "dark.png")
    # from a folder inside the clone: predict walks up to its dvc.yaml and takes that repository's model
    done = run(
        [sys.executable, "-m", "signdigits.predict", str(photo), str(dark), "--json"],
        cwd=clone / "data/raw",
        check=False,
    )
    assert done.returncode == 3, done.stderr  # 3: every file answered, some unfamiliar
    answers = {Path(a["file"]).name: a for a in json.loads(done.stdout)["images"]}
    assert answers[photo.name]["familiar"] and str(answers[photo.name]["digit"]) == actual
    assert not answers["dark.png"]["familiar"]


def test_params_yaml_in_another_encoding_exits_2_naming_the_byte(photo_repo, capsys):
    params = photo_repo / "params.yaml"
    params.write_bytes(params.read_bytes() + "# caf\x96\n".encode("latin-1"))
    code, out, err = run_predict(capsys, photo_repo / "photos" / "a_familiar.png")
    assert code == predict.EXIT_ERROR
    assert err.startswith(f"error: {params}: not UTF-8 text: byte 0x96 at position "), err
