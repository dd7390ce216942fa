"""The review command: old -> new final accuracy, McNemar's test, what changed per digit, confusion and curve,
the plots page, the exit code that gates a PR, and its refusals (stale results, malformed files, a bad --base).

Fast tests use a git + DVC repository holding only result files; the others a tiny copy of this
repository whose pipeline `dvc repro` really ran (helpers.TinyRepo's settings and photos).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import ROOT, TinyRepo, git_commit

from signdigits.core import paths
from signdigits.core.errors import PipelineError
from signdigits.devtools import git_clone, git_identity, run
from signdigits.review import confusion_change

FILES = [f"{d}/IMG_{i}.JPG" for i, d in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 10)]
SCORE_COLUMNS = ("model", "part", "images", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high")
CURVE = [0.5, 0.8, 0.8, 0.7]  # val accuracy per epoch: best epoch 2 (first of the tie), final 0.7


def write_predictions(repo: Path, model: str, wrong: set[int], files: list[str] = FILES) -> float:
    """predictions_<model>.csv and the model's test row of scores.csv, for a model that errs on the `wrong` images."""
    actual = np.array([int(file.split("/")[0]) for file in files])
    predicted = np.where(np.isin(np.arange(len(files)), list(wrong)), (actual + 1) % 10, actual)
    rows = ["file,actual,predicted,probability"]
    rows += [f"{file},{a},{p},0.900000" for file, a, p in zip(files, actual, predicted, strict=True)]
    (repo / "plots/evaluate").mkdir(parents=True, exist_ok=True)
    (repo / f"plots/evaluate/predictions_{model}.csv").write_text("\n".join(rows) + "\n")
    accuracy = 1 - len(wrong) / len(files)
    scores = repo / "plots/evaluate/scores.csv"
    lines = scores.read_text().splitlines() if scores.exists() else [",".join(SCORE_COLUMNS)]
    lines = [line for line in lines if not line.startswith(f"{model},")]
    lines.append(
        f"{model},test,{len(files)},{accuracy:.6g},{max(0, accuracy - 0.05):.6g},{min(1, accuracy + 0.05):.6g}"
    )
    scores.write_text("\n".join(lines) + "\n")
    return accuracy


def write_results(repo: Path, wrong: set[int], val_accuracy: list[float] = CURVE, files: list[str] = FILES) -> float:
    """The result files as evaluate writes them: a base model wrong on half the images, and a final model wrong on
    the `wrong` ones."""
    write_predictions(repo, "train_base", set(range(0, len(files), 2)), files)
    accuracy = write_predictions(repo, "train_best", wrong, files)
    actual = np.array([int(file.split("/")[0]) for file in files])
    predicted = np.where(np.isin(np.arange(len(files)), list(wrong)), (actual + 1) % 10, actual)
    per_class = ["model,digit,precision,recall,f1,support"]
    for digit in range(10):
        hits = int(((actual == digit) & (predicted == digit)).sum())
        precision, recall = hits / max(1, (predicted == digit).sum()), hits / (actual == digit).sum()
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        per_class.append(f"train_best,{digit},{precision:.6g},{recall:.6g},{f1:.6g},{(actual == digit).sum()}")
    (repo / "plots/evaluate/per_class.csv").write_text("\n".join(per_class) + "\n")
    history = ["epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr"]
    history += [f"{e},1.0,0.9,{1 - acc:.6g},{acc},0.001" for e, acc in enumerate(val_accuracy, start=1)]
    (repo / "plots/train_best").mkdir(parents=True, exist_ok=True)
    (repo / "plots/train_best/history.csv").write_text("\n".join(history) + "\n")
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/evaluate.json").write_text(json.dumps({"final": {"test_accuracy": accuracy}}))
    write_record(repo, "train_best", val_accuracy[-1], best_epoch=len(val_accuracy))
    write_record(repo, "train_base", 0.5, best_epoch=10)
    return accuracy


def write_record(repo: Path, model: str, val_accuracy: float, best_epoch: int = 4, epochs_run: int | None = None):
    """metrics/<model>.json as a training stage writes it: the kept model's val accuracy and epoch."""
    record = {"best_epoch": best_epoch, "epochs_run": epochs_run or best_epoch, "val": {"accuracy": val_accuracy}}
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / paths.metrics_path(model)).write_text(json.dumps(record))


def write_familiarity(repo: Path, model: str, flagged: dict[str, float]) -> None:
    """The model's familiarity_shifts CSV (an extra column, as evaluate may add: the review reads by name)."""
    rows = ["shift,images,flagged,roc_auc,accuracy,extra"]
    rows += [f"{shift},100,{share},0.9,0.5,1" for shift, share in flagged.items()]
    (repo / paths.familiarity_shifts_path(model)).write_text("\n".join(rows) + "\n")


CHECK = {"clean": 0.03, "blurred": 0.99, "underexposed": 0.945, "rotated_90": 0.987}  # flagged shares


def set_review_params(repo: Path, **review) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["review"].update(review)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git + DVC repository whose HEAD holds a final model that errs on 5 of 100 test images."""
    run(["git", "init", "--quiet"], cwd=tmp_path)
    git_identity(tmp_path)
    run(["dvc", "init", "--quiet"], cwd=tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    write_results(tmp_path, wrong={0, 1, 2, 3, 4})
    git_commit(tmp_path, "base")
    return tmp_path


def review(repo: Path, *args: str, base: str = "HEAD"):
    return run([sys.executable, "-m", "signdigits.review", f"--base={base}", "--out", "review.md", *args], repo, False)


def headline_row(out: str, model: str) -> list[str]:
    (line,) = [line for line in out.splitlines() if line.startswith(f"| {model}")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_significant_drop_beyond_max_drop_fails_and_names_the_change(repo):
    write_results(repo, wrong=set(range(20)))  # 95% -> 80%, 15 more mistakes, none fixed
    done = review(repo)
    assert done.returncode == 1, done.stderr
    # exact two-sided McNemar test with 0 vs 15 discordant images: p = 2 / 2**15 = 6.1e-05
    assert "**FAILS**: train_best dropped 15.00 pt (more than review.max_drop = 1 pt, p < 0.05)." in done.stdout
    assert headline_row(done.stdout, "train_best") == [
        "train_best (final)", "100", "95.00% (90.0-100.0%)", "80.00% (75.0-85.0%)", "**-15.00 pt**", "6.1e-05",
        "**FAILS**",
    ]  # fmt: skip
    assert "15 test photos right only before, 0 right only after, p = 6.104e-05" in done.stdout
    assert (repo / "review.md").read_text().strip() == done.stdout.strip()


def test_a_drop_beyond_max_drop_within_noise_needs_more_evidence_exit_3(repo):
    """Issue 36 (epochs: 50, -2.26 pt, p = 0.065 passed): a drop beyond max_drop that McNemar's test cannot tell
    from noise is neither a pass nor a fail; exit 3 and the command that settles it."""
    write_results(repo, wrong={0, 1, 2, 3, 4, 10, 11})  # 95% -> 93%: 2 pt > max_drop, but p = 0.5
    done = review(repo)
    assert done.returncode == 3, done.stderr
    assert "Passes" not in done.stdout and "FAILS" not in done.stdout
    assert done.stdout.count("**Needs more evidence**: train_best dropped 2.00 pt, p = 0.5") == 1
    assert "python -m signdigits.review --base HEAD --evidence" in done.stdout
    assert headline_row(done.stdout, "train_best")[4:] == ["-2.00 pt", "0.5", "**needs more evidence**"]


def test_a_significant_drop_within_max_drop_passes(repo):
    set_review_params(repo, max_drop=0.2)
    git_commit(repo, "a looser gate at the base")
    write_results(repo, wrong=set(range(20)))
    done = review(repo)
    assert done.returncode == 0, done.stderr
    assert headline_row(done.stdout, "train_best")[4:] == ["**-15.00 pt**", "6.1e-05", "worse, within max_drop"]


def test_a_final_model_below_the_base_model_fails_whatever_the_test_says(repo):
    set_review_params(repo, max_drop=1.0)  # no drop can fail by itself
    git_commit(repo, "no drop limit")
    write_results(repo, wrong=set(range(60)))  # 40%, below train_base's 50% at the base
    done = review(repo)
    assert done.returncode == 1
    assert "**FAILS**: train_best fell below train_base at the base (50.00%)." in done.stdout


def test_the_gate_is_the_bases_and_a_loosening_is_flagged(repo):
    """A pull request cannot set its own gate: epochs=2 with review.max_drop: 1.0 still fails."""
    set_review_params(repo, max_drop=1.0, alpha=0.0001)
    write_results(repo, wrong=set(range(20)))
    done = review(repo)
    assert done.returncode == 1, done.stdout
    assert "dropped 15.00 pt (more than review.max_drop = 1 pt, p < 0.05)" in done.stdout
    assert "**This change loosens the gate** (review.max_drop 1 pt -> 100 pt, review.alpha 0.05 -> 0.0001)" in (
        done.stdout
    )
    assert "| params.yaml | `review.max_drop` | 0.01 | 1 |" in done.stdout


def test_a_study_model_change_shows_in_the_headline(repo):
    write_predictions(repo, "train_base", set(range(0, 100, 4)))  # 50% -> 75%: 25 photos fixed, none lost
    done = review(repo)
    assert done.returncode == 0, done.stderr
    assert headline_row(done.stdout, "train_base")[2:] == [
        "50.00% (45.0-55.0%)", "75.00% (70.0-80.0%)", "**+25.00 pt**", "6e-08", "better",
    ]  # fmt: skip


def test_a_model_the_base_lacks_is_listed_as_new(repo):
    write_predictions(repo, "train_cnn", {0})  # a model added by the change: no code names it
    done = review(repo)
    assert done.returncode == 0, done.stderr
    assert headline_row(done.stdout, "train_cnn") == [
        "train_cnn",
        "100",
        "-",
        "99.00% (94.0-100.0%)",
        "-",
        "-",
        "new model",
    ]


def test_the_digits_and_confusions_that_changed_are_listed(repo):
    write_results(repo, wrong=set(range(20)))  # every digit now errs on 2 of its 10 images (was 1 for digits 0-4)
    out = review(repo).stdout
    digits = out.split("Digits whose test recall or F1 changed")[1].split("Confusions")[0]
    assert "| 0 | 0.900 -> 0.800 | 0.947 -> 0.800 |" in digits  # 1 -> 2 mistakes, and now 9s are taken for 0s
    assert "| 7 | 1.000 -> 0.800 |" in digits
    assert len(re.findall(r"^\| \d ", digits, flags=re.M)) == 10
    confusions = out.split("Confusions that grew or shrank most")[1].split("###")[0]
    grew = re.findall(r"^\| (\d) \| (\d) \| (\d+) \| (\d+) \| \+(\d+) \|$", confusions, flags=re.M)
    assert grew == [("5", "6", "0", "2", "2"), ("6", "7", "0", "2", "2"), ("7", "8", "0", "2", "2"),
                    ("8", "9", "0", "2", "2"), ("9", "0", "0", "2", "2")]  # fmt: skip


def test_the_kept_models_val_accuracy_is_reported_not_the_best_epochs(repo):
    """Issue 36: "Best val accuracy" reported the best epoch (98.70%), not the kept model (98.05%)."""
    write_results(repo, wrong={0, 1, 2, 3, 4}, val_accuracy=[0.6, 0.9, 0.9, 0.9, 0.85])
    write_record(repo, "train_best", 0.85, best_epoch=5)  # the last epoch's weights are kept, not epoch 2's
    out = review(repo).stdout
    assert "Validation accuracy of the kept train_best: 70.00% (epoch 4 of 4) -> 85.00% (epoch 5 of 5)." in out
    assert "90.00%" not in out  # the best epoch's val accuracy is not the model's
    curve = review(repo, "--full").stdout.split("| Learning curve (validation)")[1]
    assert "| Final val accuracy | 0.7000 | 0.8500 |" in curve
    assert "| Best val accuracy | 0.8000 | 0.9000 |" in curve
    assert "| Epoch of the best val accuracy | 2 | 2 |" in curve
    assert "| Final val loss | 0.3000 | 0.1500 |" in curve
    assert "| Best val loss | 0.2000 | 0.1000 |" in curve


def test_a_change_within_noise_is_one_line_and_full_prints_everything(repo):
    write_results(repo, wrong={0, 1, 2, 3, 5})  # one image swapped: same accuracy
    done = review(repo)
    assert done.returncode == 0, done.stderr
    assert headline_row(done.stdout, "train_best")[4:] == ["+0.00 pt", "1", "noise"]
    assert "1 test photos right only before, 1 right only after, p = 1." in done.stdout
    assert "Within noise: per-digit and confusion changes left out (the largest change of one confusion: 1 photo)" in (
        done.stdout
    )
    assert "| 4 |" not in done.stdout and "### Metrics changed" not in done.stdout
    full = review(repo, "--full").stdout
    assert "| 4 | 0.900 -> 1.000 |" in full and "| 5 | 1.000 -> 0.900 |" in full
    assert "### Metrics changed" in full and "Within noise" not in full


def test_a_split_change_fails_unless_accepted_and_is_judged_on_the_shared_photos(repo):
    """Issue 36 item 4: a deliberate split change (split.seed) had no way through CI, and with the old flag the
    verdict used the shared photos while the Change column used all of them. Now it fails with the reason unless
    a maintainer accepts it (`--accept split-change`), and Change, p and verdict are all on the shared photos."""
    files = FILES[:90] + [f"{d}/OTHER_{d}.JPG" for d in range(10)]
    # 20 mistakes among the 90 shared photos (was 5), none among the 10 new ones: 80% on all 100, 77.8% on the 90
    write_results(repo, wrong=set(range(20)), files=files)
    done = review(repo)
    assert done.returncode == 1, done.stderr
    assert "split the split changed: 90 of 110 test photos shared (train_best)" in done.stdout
    assert "with the pull-request label: `review: accept split-change` (split)." in done.stdout
    assert "**Test parts differ: 90 of 110 photos shared**" in done.stdout
    row = headline_row(done.stdout, "train_best")
    assert row[4] == "**-16.67 pt on the 90 shared**"  # 85 of the 90 right before, 70 after
    assert row[6] == "**FAILS**"  # a real drop on the shared photos is not what the label accepts
    accepted = review(repo, "--accept", "split-change")
    assert accepted.returncode == 1  # train_best still fails on the shared photos
    assert "**Accepted on purpose by a maintainer**: split the split changed" in accepted.stdout
    write_results(repo, wrong={0, 1, 2, 3, 4}, files=files)  # the same mistakes on the shared photos
    assert review(repo).returncode == 1
    passed = review(repo, "--accept", "split-change")
    assert passed.returncode == 0, passed.stdout
    assert headline_row(passed.stdout, "train_best")[4:] == ["+0.00 pt on the 90 shared", "1", "no change"]
    assert "artifact" not in passed.stdout and "review-plots" not in passed.stdout  # nothing linked


def test_a_models_own_test_photos_changing_is_not_a_split_change(repo):
    """Issue 35 item 3: train_binary.digits changes that model's test photos, not the split: no refusal, no "split"
    finding; its row is judged on the photos both revisions scored."""
    split = json.dumps({"images_per_digit": {"test": {str(d): 10 for d in range(10)}}})
    (repo / "metrics/split.json").write_text(split)
    write_predictions(repo, "train_binary", set(), FILES[:20])
    git_commit(repo, "a model with its own test photos")
    write_predictions(repo, "train_binary", set(), FILES[:10] + FILES[20:30])  # 10 of them, and 10 others
    done = review(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "split" not in done.stdout.split("### Params changed")[0].lower()
    assert headline_row(done.stdout, "train_binary")[4] == "+0.00 pt on the 10 shared"
    (repo / "metrics/split.json").write_text(split.replace("10", "11", 1))  # the split itself moved
    assert "the split changed" in review(repo).stdout


def test_params_changes_are_listed(repo):
    text = (repo / "params.yaml").read_text()
    old = yaml.safe_load(text)["weight_decay"]
    new_text, replaced = re.subn(r"^weight_decay: \S+", f"weight_decay: {old * 2}", text, flags=re.M)
    assert replaced == 1
    (repo / "params.yaml").write_text(new_text)
    assert f"| params.yaml | `weight_decay` | {old:g} | {old * 2:g} |" in review(repo).stdout


def test_an_unknown_base_is_a_clear_error(repo):
    done = review(repo, base="no-such-branch")
    assert done.returncode == 2
    assert done.stderr.startswith("error: `git show no-such-branch:params.yaml` failed")


def test_a_base_that_looks_like_an_option_is_refused(repo):
    done = review(repo, base="--output=/tmp/x")
    assert (done.returncode, done.stderr) == (
        2,
        "error: --base '--output=/tmp/x': a git revision cannot start with '-'\n",
    )


@pytest.mark.parametrize(
    ("file", "text", "reason"),
    [
        ("plots/evaluate/scores.csv", "model,part\n", "malformed (no column images, accuracy"),
        ("plots/evaluate/predictions_train_base.csv", "file,actual,predicted\nx,1,one\n", "malformed (Unable to"),
        ("params.yaml", "review: {max_drop: lots}\n", "review.max_drop"),
        (
            "plots/evaluate/per_class.csv",
            "model,digit,precision\ntrain_best,0,1.0\n",
            "malformed (no column recall, f1)",
        ),
        ("plots/train_best/history.csv", "epoch,val_loss,val_accuracy\n1,0.5,abc\n", "malformed (Unable to parse"),
    ],
)
def test_a_malformed_file_at_the_base_exits_2_naming_it(repo, file, text, reason):
    (repo / file).write_text(text)
    git_commit(repo, "broken")
    write_results(repo, wrong={0, 1, 2, 3, 4})  # the workspace is fine
    done = review(repo)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: HEAD:{file}: ") and reason in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and not done.stdout


def test_a_familiarity_check_that_flags_a_shifted_set_less_fails_unless_accepted(repo):
    """Issue 36 item 1: familiarity.percentile 97.5 -> 99.9 took the blurred photos flagged from 99.0% to 9.4% and
    the review said Passes. The check's shares are shown, and a drop beyond the base's review.max_flag_drop fails."""
    write_familiarity(repo, "train_best", CHECK)
    set_review_params(repo, max_flag_drop=0.05)
    git_commit(repo, "a checked final model")
    write_familiarity(repo, "train_best", {**CHECK, "clean": 0.003, "blurred": 0.094, "rotated_90": 0.95})
    set_review_params(repo, max_flag_drop=1.0)  # the head's own setting does not apply
    done = review(repo)
    assert done.returncode == 1, done.stderr
    assert (
        "**FAILS**: train_best familiarity check flags less (more than review.max_flag_drop = 5 pt): blurred "
        "99.0% -> 9.4%. A maintainer can accept on purpose, with the pull-request label: `review: accept familiarity` "
        "(train_best)."
    ) in done.stdout  # rotated_90, -3.7 pt, is within the threshold
    assert "| blurred | **99.0% -> 9.4%** |" in done.stdout
    assert "| clean test photos | 3.0% -> 0.3% |" in done.stdout
    assert "**This change loosens the gate** (review.max_flag_drop 5 pt -> 100 pt)" in done.stdout
    accepted = review(repo, "--accept", "familiarity")
    assert accepted.returncode == 0, accepted.stdout
    assert "**Accepted on purpose by a maintainer**: train_best familiarity check flags less" in accepted.stdout


@pytest.mark.parametrize("gone", ["check", "shift"])
def test_a_familiarity_check_or_shift_that_disappears_fails(repo, gone):
    """Neighbours of issue 36 item 1: a model that keeps its place but loses its check, or a shifted set no longer
    measured, lowers what the check is known to catch."""
    write_familiarity(repo, "train_best", CHECK)
    git_commit(repo, "a checked final model")
    if gone == "check":
        (repo / paths.familiarity_shifts_path("train_best")).unlink()
    else:
        write_familiarity(repo, "train_best", {k: v for k, v in CHECK.items() if k != "blurred"})
    done = review(repo)
    assert done.returncode == 1, done.stdout + done.stderr
    expected = "lost its familiarity check" if gone == "check" else "familiarity check flags less (more than "
    assert (
        f"**FAILS**: train_best {expected}" in done.stdout
        and "label: `review: accept familiarity` (train_best)" in done.stdout
    )
    assert gone == "check" or "5 pt): blurred no longer measured." in done.stdout


def checked_models(repo: Path, cnn_val: float, cnn_wrong: set[int]) -> None:
    """train_best (val 0.7, 5 test mistakes) and train_cnn (val `cnn_val`), both with a familiarity check."""
    write_familiarity(repo, "train_best", CHECK)
    write_familiarity(repo, "train_cnn", CHECK)
    write_predictions(repo, "train_cnn", cnn_wrong)
    write_record(repo, "train_cnn", cnn_val)


def test_predicts_model_is_shown_and_a_switch_to_a_worse_one_fails_unless_accepted(repo):
    """Issue 36 item 2: a smaller train_cnn fell below train_best on validation, so predict silently answered with
    train_best from then on. The review names predict's model at both revisions (predict's own rule) and judges
    the switch: base's model at the base against the head's model at the head, on the same photos."""
    checked_models(repo, cnn_val=0.99, cnn_wrong=set())
    git_commit(repo, "train_cnn answers")
    checked_models(repo, cnn_val=0.5, cnn_wrong=set(range(30)))  # its own row fails too
    write_results(repo, wrong=set(range(20)), val_accuracy=[0.5, 0.6, 0.6, 0.65])  # train_best: 95% -> 80%
    done = review(repo)
    assert done.returncode == 1, done.stderr
    assert (
        "**predict's default model**: train_cnn (validation accuracy 99.00%) -> train_best (validation accuracy "
        "65.00%); its test accuracy 100.00% -> 80.00% (-20.00 pt, McNemar p = 1.9e-06): **FAILS**"
    ) in done.stdout
    assert "predict now answers with train_best: dropped 20.00 pt" in done.stdout
    assert "### Model (train_cnn): FAILS" in done.stdout  # every failing model gets its section
    assert "Validation accuracy of the kept train_cnn: 99.00% (epoch 4 of 4) -> 50.00%" in done.stdout
    assert "predict-model" not in review(repo, "--accept", "predict-model").stdout.split("**Accepted")[0]


def test_predicts_model_ties_go_to_the_final_model_as_in_predict(repo):
    checked_models(repo, cnn_val=0.7, cnn_wrong=set())  # the same val accuracy as train_best
    git_commit(repo, "a tie")
    out = review(repo).stdout
    assert "**predict's default model**: train_best (validation accuracy 70.00%) -> train_best" in out


def test_every_failing_model_gets_its_section(repo):
    """Issue 36 item 2: per-digit and confusion detail came only for train_best, even when another model failed."""
    write_predictions(repo, "train_base", set(range(0, 100, 2)) | set(range(1, 40, 2)))  # 50% -> 30%
    done = review(repo)
    assert done.returncode == 1
    section = done.stdout.split("### Model (train_base): FAILS")[1].split("### Params changed")[0]
    assert "Confusions that grew or shrank most" in section and "20 test photos right only before" in section


@pytest.mark.parametrize("how", ["removed", "renamed"])
def test_removing_or_renaming_the_final_model_fails_unless_accepted(repo, how):
    """Issue 35 item 2: with no train_best score at the head the verdict was `removed` and the headline said the
    final model stays above train_base, exit 0."""
    scores = repo / paths.SCORES
    lines = scores.read_text().splitlines()
    renamed = [line.replace("train_best,", "train_final,") for line in lines] if how == "renamed" else lines
    scores.write_text("\n".join(line for line in renamed if not line.startswith("train_best,")) + "\n")
    if how == "renamed":
        shutil.copy(repo / paths.predictions_path("train_best"), repo / paths.predictions_path("train_final"))
    done = review(repo)
    assert done.returncode == 1, done.stderr
    assert "**FAILS**: train_best removed (the base scored it, the head does not)" in done.stdout
    assert "label: `review: accept removed-model` (train_best)" in done.stdout and "stays above" not in done.stdout
    assert headline_row(done.stdout, "train_best")[6] == "**removed**"
    accepted = review(repo, "--accept", "removed-model")
    assert accepted.returncode == 0, accepted.stdout
    assert "stays above" not in accepted.stdout and "(`--accept removed-model`)" in accepted.stdout


def test_a_study_model_removed_fails_too(repo):
    scores = repo / paths.SCORES
    scores.write_text("".join(line + "\n" for line in scores.read_text().splitlines() if "train_base" not in line))
    done = review(repo)
    assert done.returncode == 1 and "train_base removed" in done.stdout


def lock_recording(repo: Path, *files: str) -> None:
    """A dvc.lock whose evaluate stage records these files' current md5, as `dvc repro` writes it."""
    import hashlib

    outs = [{"path": f, "hash": "md5", "md5": hashlib.md5((repo / f).read_bytes()).hexdigest()} for f in files]
    (repo / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"evaluate": {"outs": outs}}}))


@pytest.mark.parametrize("where", ["head", "base"])
def test_results_that_are_not_what_dvc_lock_records_are_refused(repo, where):
    """Issue 35 item 1: hand-edited predictions (or a merge taking one side of plots/) were judged as results."""
    predictions = "plots/evaluate/predictions_train_best.csv"
    lock_recording(repo, predictions, "plots/evaluate/scores.csv")
    git_commit(repo, "with a lock")
    edited = (repo / predictions).read_text().replace("\n0/IMG_0.JPG,0,1,", "\n0/IMG_0.JPG,0,0,")
    (repo / predictions).write_text(edited)  # a mistake turned right by hand
    if where == "base":
        git_commit(repo, "hand-edited at the base")
    done = review(repo)
    label = "HEAD:" if where == "base" else ""
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.startswith(f"error: {label}{predictions}: not the output dvc.lock records"), done.stderr
    assert done.stderr.count("\n") == 1


def test_it_runs_from_a_subfolder_with_out_relative_to_it(repo):
    """Issue 35 item 6: run from a subfolder it told to `dvc repro` params.yaml."""
    done = run([sys.executable, "-m", "signdigits.review", "--base=HEAD", "--out", "here.md"], repo / "plots", False)
    assert done.returncode == 0, done.stderr
    assert (repo / "plots/here.md").read_text().strip() == done.stdout.strip()


def test_outside_a_repository_it_says_so_in_one_line(tmp_path):
    done = run([sys.executable, "-m", "signdigits.review", "--base=HEAD"], tmp_path, False)
    assert done.returncode == 2
    assert done.stderr == f"error: {tmp_path.resolve()}: not inside a DVC repository (no .dvc/ here or above); " \
        "run the review in one\n"  # fmt: skip


def test_without_the_venv_on_path_it_finds_dvc_beside_python(repo):
    """Issue 35 item 5: run with the venv's python but not activated, it crashed on FileNotFoundError 'dvc'."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"
    done = subprocess.run([sys.executable, "-m", "signdigits.review", "--base=HEAD"], cwd=repo, env=env, text=True,
                          capture_output=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_no_dvc_anywhere_is_one_line_exit_2(repo, tmp_path, monkeypatch, capsys):
    from signdigits.review import main

    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert main(["--base", "HEAD"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: `dvc` not found (not on PATH, nor beside ") and err.count("\n") == 1
    assert "source .venv/bin/activate" in err


def test_a_crash_of_the_review_is_exit_2_never_the_gates_1(tmp_path, monkeypatch, capsys):
    """Issue 35 item 5: a crash exited 1, which CI reads as "the gate failed"."""
    from signdigits.review import cli

    def crash(*args, **kwargs):
        raise ValueError("a bug")

    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "build_review", crash)
    assert cli.main(["--base", "HEAD"]) == 2
    err = capsys.readouterr().err
    assert "ValueError: a bug" in err and err.endswith(
        "error: the review crashed (the traceback above); this is a bug of the review\n"
    )


def test_the_comment_draws_each_models_accuracy_base_first_on_a_zoomed_axis(repo):
    """Issue 36 item 7: no chart was visible in the comment; the panels put the pull request before the base; a
    0.1-1.0 axis hid a 1.6 pt gap. Text bars (GitHub draws them, no image host), before above after."""
    write_results(repo, wrong={0, 1, 2, 3, 4, 10, 11})
    chart = review(repo).stdout.split("```text\n")[1].split("```")[0].splitlines()
    assert chart[0].startswith("Test accuracy, axis 49% to 96%;")  # 1 pt under the lowest, the highest
    assert chart[1].startswith("train_best  before  95.00% ") and chart[2].startswith("            after   93.00% ")
    assert chart[1].count("█") - chart[2].count("█") >= 1  # 2 pt of a 47 pt axis on 40 characters
    assert chart[3].startswith("train_base  before  50.00% ")


def test_every_confusion_chart_puts_actual_on_rows_as_the_pngs_do():
    """Issue 36 item 7: the confusion charts had actual on x, the confusion-change PNG on rows."""
    charts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    confusions = [next(iter(c.values())) for c in charts if isinstance(c, dict) and "confusion" in next(iter(c))]
    assert confusions and all(c["x"] == "predicted" and list(c["y"].values()) == ["actual"] for c in confusions)


def test_the_final_models_charts_come_first():
    from signdigits.review.plots import final_first

    ids = ["confusion_train_base", "plots/train_best/history.csv", "test_accuracy", "confusion_train_best"]
    assert sorted(((i, None) for i in ids), key=final_first)[:2] == [
        ("confusion_train_best", None), ("plots/train_best/history.csv", None)
    ]  # fmt: skip


def test_the_pngs_draw_the_base_before_the_head():
    from signdigits.review.plots import base_first

    spec = {"data": {"values": [{"rev": "workspace", "v": 1}, {"rev": "main", "v": 2}, {"rev": "workspace", "v": 3}]}}
    assert [r["v"] for r in base_first(spec, "main")["data"]["values"]] == [2, 1, 3]


def test_the_evidence_sets_each_models_seed_keeping_the_file():
    from signdigits.review.evidence import seed_key, with_seed

    text = "seed: 0  # the final model\nlr: 0.1\ntrain_cnn:   # the CNN\n  lr: 0.2\n  seed: 0\nsplit:\n  seed: 0\n"
    assert with_seed(text, seed_key("train_best"), 3) == text.replace("seed: 0  #", "seed: 3  #")
    assert with_seed(text, seed_key("train_cnn"), 4) == text.replace("  lr: 0.2\n  seed: 0", "  lr: 0.2\n  seed: 4")
    with pytest.raises(PipelineError, match="no `train_exp1.seed`"):
        with_seed(text, seed_key("train_exp1"), 1)


def test_the_evidence_compares_seed_means_with_an_exact_permutation_test():
    from signdigits.review.evidence import permutation_p

    assert permutation_p([0.97, 0.96, 0.97, 0.97, 0.98], [0.94, 0.95, 0.94, 0.95, 0.93]) == pytest.approx(1 / 252)
    assert permutation_p([0.97] * 5, [0.97] * 5) == 1.0
    assert 0.2 < permutation_p([0.97, 0.95, 0.96, 0.97, 0.95], [0.96, 0.97, 0.95, 0.96, 0.95]) < 0.8


# --- a tiny copy of this repository, its pipeline run by `dvc repro` -------------------------------------


@pytest.fixture
def work(tiny_pipeline, tmp_path) -> TinyRepo:
    """A copy of the session's tiny reproduced repository (git, DVC cache and all) to change."""
    return TinyRepo(tiny_pipeline).copy_to(tmp_path / "work")


@pytest.mark.integration
def test_a_real_change_shows_its_tables_and_writes_the_plots_page(work, tmp_path):
    work.set_params({"lr": 0.02, "epochs": 3})
    run(["dvc", "repro"], cwd=work.path, timeout=600)
    done = review(work.path, "--plots", str(tmp_path / "page"), "--full")
    assert done.returncode in (0, 1), done.stderr
    for heading in ("Digits whose test recall or F1 changed", "Confusions that grew or shrank most", "Learning curve"):
        assert heading in done.stdout
    assert "| Epochs run | 2 | 3 |" in done.stdout
    assert "| params.yaml | `epochs` | 2 | 3 |" in done.stdout
    page = (tmp_path / "page" / "index.html").read_text()
    assert "vegaEmbed" in page and "plots_train_best_history_csv" in page  # DVC names a chart of a file so
    pngs = sorted(p.name for p in (tmp_path / "page").glob("*.png"))
    assert "plots_train_best_history.csv.png" in pngs
    assert "plots_train_base_history.csv.png" not in pngs  # its data did not change
    predictions = "plots/evaluate/predictions_train_best.csv"
    old = pd.read_csv(io.StringIO(run(["git", "show", f"HEAD:{predictions}"], cwd=work.path).stdout))
    answers_changed = confusion_change(old, pd.read_csv(work.path / predictions)) is not None
    assert ("confusion_change_train_best.png" in pngs) == answers_changed
    assert all((tmp_path / "page" / name).read_bytes().startswith(b"\x89PNG") for name in pngs)
    changed = done.stdout.split("Charts whose data changed (the `dvc plots diff` page beside them): ")[1]
    assert sorted(changed.split(".\n")[0].split(", ")) == pngs


def test_the_confusion_change_is_new_minus_old():
    old = pd.DataFrame({"actual": [0, 0, 1, 1], "predicted": [0, 1, 1, 1]})
    new = pd.DataFrame({"actual": [0, 0, 1, 1], "predicted": [0, 0, 1, 0]})
    change, classes = confusion_change(old, new)
    assert classes == [0, 1]
    assert change.tolist() == [[1, -1], [1, -1]]
    assert confusion_change(old, old) is None


@pytest.mark.integration
@pytest.mark.parametrize("change", ["params", "code", "output"])
def test_stale_results_are_refused(work, change):
    """Issue 35 item 1: outputs edited by hand (`dvc status`: modified) are refused like changed inputs."""
    predictions = "plots/evaluate/predictions_train_best.csv"
    if change == "params":
        work.set_params({"epochs": 3})
    elif change == "code":
        with open(work.path / "stages/train_best.py", "a") as script:
            script.write("# changed\n")
    else:
        with open(work.path / predictions, "a") as table:
            table.write("0/EXTRA.JPG,0,0,0.9\n")
    done = review(work.path)
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.startswith("error: the results are not what dvc.lock records") and "run `dvc repro`" in (
        done.stderr
    )
    expected = {"params": "train_best: params.yaml: epochs", "code": "train_best: stages/train_best.py"}.get(
        change, f"evaluate: output {predictions} modified"
    )
    assert expected in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.integration
def test_a_fresh_clone_without_models_is_not_stale(tiny_pipeline, tmp_path):
    clone = git_clone(tiny_pipeline, tmp_path / "clone")  # no DVC cache: every model and array is missing
    assert not (clone / "models" / "train_best.pt").exists()
    done = review(clone)
    assert done.returncode == 0, done.stderr
    assert "**Passes**" in done.stdout and "(the largest change of one confusion: 0 photos)" in done.stdout


def test_params_yaml_in_another_encoding_exits_2_naming_the_byte(repo):
    params = repo / "params.yaml"
    params.write_bytes(params.read_bytes() + "# caf\x96\n".encode("latin-1"))
    done = review(repo)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: params.yaml: not UTF-8 text: byte 0x96 at position "), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("option", ["--out", "--plots"])
def test_an_unwritable_out_or_plots_exits_2_in_one_line(repo, option):
    (repo / "taken").write_text("a file where a folder is asked for")
    target = "taken/review.md" if option == "--out" else "taken"
    done = run([sys.executable, "-m", "signdigits.review", "--base=HEAD", option, target], repo, False)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {Path('taken')}: cannot write: a part of this path is a file, not a folder; "
                      "remove or rename that file"], done.stderr  # fmt: skip
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_the_evidence_trains_seeds_0_to_4_at_both_revisions_and_exits_0_or_1(work):
    """The settlement of "needs more evidence", end to end on the tiny pipeline: each revision's own pipeline in a
    worktree, five seeds each, the means compared; the worktrees are gone afterwards."""
    work.set_params({"epochs": 3})
    run(["dvc", "repro"], cwd=work.path, timeout=600)
    git_commit(work.path, "three epochs")
    done = run(
        [sys.executable, "-m", "signdigits.review", "--base=HEAD~1", "--evidence"], work.path, False, timeout=3000
    )
    assert done.returncode in (0, 1), done.stderr
    assert done.stdout.startswith("## signdigits evidence against `HEAD~1`: seeds 0-4 at both revisions")
    assert re.search(r"^\| train_best \| `HEAD` \| (\d+\.\d%( |\b)){5}", done.stdout, flags=re.M), done.stdout
    assert [line for line in done.stderr.splitlines() if " seed " in line][-1].startswith("HEAD: seed 4 in ")
    assert run(["git", "worktree", "list"], cwd=work.path).stdout.count("\n") == 1
