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
from helpers import ROOT, RunsOnUnpickle, stage_env, train_tiny_final_model

from signdigits import predict
from signdigits.core import paths
from signdigits.core.files import FORMAT_VERSION
from signdigits.devtools import run
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
    train_scores = model.familiarity_scores(to_inputs(tiny_layout.pixels[:60]))
    familiar = tiny_layout.pixels[int(np.argmin(train_scores))]
    odd = (255 - tiny_layout.pixels[:60].mean(axis=0)).astype(np.uint8)  # the training photos' negative
    assert model.familiarity_scores(to_inputs(odd[None]))[0] > model.familiarity.threshold(90.0)
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


def add_stage_model(repo: Path, stage: str, val_accuracy: float) -> Path:
    """Another stage's model in the repository: a copy of its final model, with its own validation accuracy."""
    import shutil

    from signdigits.core.files import read_json, write_json

    shutil.copy2(repo / paths.model_path("train_best"), repo / paths.model_path(stage))
    metrics = read_json(repo / paths.metrics_path("train_best"))
    write_json(repo / paths.metrics_path(stage), {**metrics, "val": {**metrics["val"], "accuracy": val_accuracy}})
    return (repo / paths.model_path(stage)).resolve()


def test_predict_answers_with_the_checked_model_most_accurate_on_validation(photo_repo, capsys, monkeypatch):
    monkeypatch.chdir(photo_repo)
    best_val = json.loads((photo_repo / paths.metrics_path("train_best")).read_text())["val"]["accuracy"]
    add_stage_model(photo_repo, "train_cnn", best_val)  # a tie: the final model answers
    code, out, err = run_predict(capsys, "photos/a_familiar.png", "--json")
    document = json.loads(out)
    assert (document["stage"], document["val_accuracy"]) == ("train_best", best_val)
    cnn = add_stage_model(photo_repo, "train_cnn", best_val + 0.01)
    code, out, err = run_predict(capsys, "photos/a_familiar.png")
    assert code == predict.EXIT_OK
    assert f"model: train_cnn ({cnn}), validation accuracy" in err
    add_stage_model(photo_repo, "train_exp1", 1.0)  # a model without a familiarity check is never chosen
    exp1_file = photo_repo / paths.model_path("train_exp1")
    from signdigits.training.model_file import load_model, save_model

    unchecked = load_model(exp1_file)
    unchecked.familiarity = None
    save_model(unchecked, exp1_file)
    code, out, _ = run_predict(capsys, "photos/a_familiar.png", "--json")
    assert json.loads(out)["stage"] == "train_cnn"
    code, out, _ = run_predict(capsys, "photos/a_familiar.png", "--json", "--model", "train_best")  # a stage name
    assert json.loads(out)["model"] == str((photo_repo / paths.model_path("train_best")).resolve())
    code, _, err = run_predict(capsys, "photos/a_familiar.png", "--model", "train_exp1")
    assert code == predict.EXIT_ERROR  # the file is there: not "no model found ... dvc pull", but what it lacks
    assert (
        err == f"error: {exp1_file}: this model has no familiarity check; use train_best or train_cnn (--model STAGE)\n"
    )
    monkeypatch.setattr(predict, "repository_roots", lambda: [photo_repo])  # not this checkout's models too
    code, _, err = run_predict(capsys, "photos/a_familiar.png", "--model", "train_binary")  # no such file
    assert code == predict.EXIT_ERROR and "no model found" in err and "`dvc pull train_binary`" in err


def test_a_symlinked_dvc_cache_keeps_the_repository_s_params_and_model_path(photo_repo, capsys, monkeypatch):
    """`cache.type symlink` with the cache elsewhere (here inside another repository, with other params):
    the percentile is the model's repository's (90), and the model is named by its path there."""
    other = photo_repo.parent / "shared"
    cache_object = other / ".dvc/cache/files/md5/3f/a1b2c3d4"
    cache_object.parent.mkdir(parents=True)
    (other / "dvc.yaml").write_text("stages: {}\n")
    (other / "params.yaml").write_text("familiarity: {percentile: 70}\n")
    model = photo_repo / paths.model_path("train_best")
    model.rename(cache_object)
    model.symlink_to(cache_object)
    monkeypatch.chdir(photo_repo)
    for model_argument in ([], ["--model", "train_best"], ["--model", "models/train_best.pt"]):
        code, out, _ = run_predict(capsys, "photos/a_familiar.png", "--json", *model_argument)
        document = json.loads(out)
        assert (document["model"], document["percentile"]) == (str(model), 90.0), model_argument
    monkeypatch.chdir(photo_repo.parent)  # a link outside any repository to the repository's link: followed once
    (photo_repo.parent / "mine.pt").symlink_to(model)
    code, out, _ = run_predict(capsys, photo_repo / "photos/a_familiar.png", "--json", "--model", "mine.pt")
    assert (json.loads(out)["model"], json.loads(out)["percentile"]) == (str(photo_repo.parent / "mine.pt"), 90.0)


def test_predict_without_a_model_names_the_paths_tried(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setattr(predict, "repository_roots", lambda: [tmp_path])
    code, _, err = run_predict(capsys, "photo.jpg")
    assert code == predict.EXIT_ERROR
    assert f"tried {tmp_path / 'models' / 'train_best.pt'}" in err and "dvc repro" in err


@pytest.mark.integration
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
    from helpers import fit_check

    from signdigits.training.model import Arch, Classifier, Network
    from signdigits.training.model_file import save_model

    torch.manual_seed(0)
    arch = Arch(image_size=16, hidden=(8,), n_classes=10, dropout=0.0)
    model = Classifier(arch, list(range(10)), [Network(arch, torch.zeros(256), torch.ones(256))])
    train_x, val_x = torch.rand(40, 256), torch.rand(20, 256)
    model.familiarity = fit_check(model, train_x, np.arange(40) % 10, val_x, normalize_images=False, components=4)
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
        assert main([str(argument), "--model", str(model_file)]) == 2  # nothing else to answer
        err = capsys.readouterr().err
        assert f"error: {fifo}: not a regular file" in err


@pytest.mark.integration
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
    files = [
        f"data/raw/{r.split(',')[0]}"
        for r in (clone / "plots/evaluate/predictions_train_best.csv").read_text().splitlines()[1:]
    ]
    done = run([sys.executable, "-m", "signdigits.predict", *files, "--json"], cwd=clone, check=False)
    assert done.returncode in (0, 3), done.stderr  # 3: some test photos are flagged unfamiliar, as evaluate says
    document = json.loads(done.stdout)
    stages = {name: json.loads((clone / paths.metrics_path(name)).read_text())["val"]["accuracy"]
              for name in ("train_best", "train_cnn")}  # fmt: skip
    assert document["stage"] == max(stages, key=lambda name: (stages[name], name == "train_best"))
    rows = (clone / paths.predictions_path(document["stage"])).read_text().splitlines()[1:]
    expected = {f"data/raw/{file}": (digit, float(p)) for file, _, digit, p in (r.split(",") for r in rows)}
    answered = {a["file"]: (str(a["digit"]), a["probability"]) for a in document["images"]}
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


# --- streaming, multi-frame files, control characters, JSON errors, exit codes, closed pipes ----------------


def test_photos_are_answered_batch_by_batch(photo_repo, monkeypatch):
    """Each batch is decoded, scored and handed out before the next is read: memory stays flat in the photos."""
    from signdigits.core import data

    photos = sorted((photo_repo / "photos").glob("*.png")) * 3
    decoded, real_decode = [], data.decode_image
    monkeypatch.setattr(data, "decode_image", lambda path, size: decoded.append(path) or real_decode(path, size))
    monkeypatch.setattr(predict, "BATCH", 2)
    _, results = predict.predict_batches(photo_repo / "models/train_best.pt", photos, 90.0)
    seen = []
    for result in results:
        seen.append(result)
        assert len(decoded) <= 2 * (-(-len(seen) // 2)), "a later batch was read before this one was handed out"
    monkeypatch.setattr(predict, "BATCH", 256)
    _, at_once = predict.predict_batches(photo_repo / "models/train_best.pt", photos, 90.0)
    assert [(r.file, r.digit, r.familiar) for r in seen] == [(r.file, r.digit, r.familiar) for r in at_once]


def test_multi_frame_files_are_named_as_such(photo_repo, capsys):
    from PIL import Image

    frames = [Image.new("L", (20, 20), shade) for shade in (0, 128, 255)]
    frames[0].save(photo_repo / "animated.gif", save_all=True, append_images=frames[1:])
    frames[0].save(photo_repo / "pages.tif", save_all=True, append_images=frames[1:])
    code, out, err = run_predict(capsys, photo_repo / "animated.gif", photo_repo / "pages.tif",
                                 photo_repo / "photos" / "a_familiar.png")  # fmt: skip
    assert code == predict.EXIT_UNREADABLE
    assert f"error: {photo_repo / 'animated.gif'}: holds 3 frames (an animated or multi-page GIF), not one photo" in err
    assert f"error: {photo_repo / 'pages.tif'}: holds 3 frames (an animated or multi-page TIFF), not one photo" in err
    assert len(out.splitlines()) == 1


def test_control_characters_in_file_names_are_escaped(photo_repo, capsys):
    odd = photo_repo / "photos" / "tab\there\nnewline.png"
    os.link(photo_repo / "photos" / "a_familiar.png", odd)
    code, out, _ = run_predict(capsys, odd)
    assert code == predict.EXIT_OK
    (line,) = out.splitlines()
    assert line.split("\t")[0] == str(photo_repo / "photos" / "tab\\there\\nnewline.png")
    assert len(line.split("\t")) == 4


def test_every_input_missing_exits_2_as_the_readme_says(photo_repo, capsys):
    code, _, err = run_predict(capsys, photo_repo / "missing.jpg", photo_repo / "gone.png")
    assert code == predict.EXIT_ERROR
    assert f"error: {photo_repo / 'missing.jpg'}: no such file" in err
    code, out, _ = run_predict(capsys, photo_repo / "missing.jpg", "--json")
    assert code == json.loads(out)["exit_code"] == predict.EXIT_ERROR


def test_a_symlink_loop_or_a_link_to_nothing_is_named_as_such(photo_repo, capsys):
    """Not "no such file": the path is there, as a link that leads nowhere (a loop, or a cache object not pulled)."""
    loop, dangling = photo_repo / "loop.jpg", photo_repo / "dangling.jpg"
    loop.symlink_to(loop)
    dangling.symlink_to(photo_repo / "gone.jpg")
    code, _, err = run_predict(capsys, loop, dangling, photo_repo / "photos/a_familiar.png")
    assert code == predict.EXIT_UNREADABLE
    assert f"error: {loop}: a symlink loop (following its links leads back to one of them)\n" in err
    assert f"error: {dangling}: a symlink to {photo_repo / 'gone.jpg'}, which does not exist\n" in err
    code, _, err = run_predict(capsys, photo_repo / "photos", "--model", loop)
    assert code == predict.EXIT_ERROR and err.startswith(f"error: {loop}: a symlink loop")


def test_json_failures_are_a_json_error_object(photo_repo, capsys, tmp_path):
    code, out, err = run_predict(capsys, photo_repo / "photos", "--json", "--model", tmp_path / "none.pt")
    assert code == predict.EXIT_ERROR
    assert json.loads(out) == {"error": f"{tmp_path / 'none.pt'}: file not found; run the stage that produces it "
                               "(`dvc repro`)", "exit_code": 2}  # fmt: skip
    assert err.startswith("error: ")
    with pytest.raises(SystemExit) as exited:
        predict.main([str(photo_repo / "photos"), "--json", "--percentile", "3"])
    assert exited.value.code == predict.EXIT_ERROR
    assert json.loads(capsys.readouterr().out) == {"error": "argument --percentile: 3: must lie between 50 and 100",
                                                   "exit_code": 2}  # fmt: skip


def test_a_closed_pipe_ends_predict_quietly(photo_repo):
    """`predict photos/ | head -3`: the reader is gone before predict writes its first line."""
    stage = subprocess.Popen(
        [sys.executable, "-m", "signdigits.predict", str(photo_repo / "photos"), "--model",
         str(photo_repo / "models" / "train_best.pt")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=stage_env(), text=True,
    )  # fmt: skip
    stage.stdout.close()
    err = stage.stderr.read()
    assert stage.wait(timeout=120) == predict.EXIT_CLOSED_PIPE == 141
    assert err == "", err
