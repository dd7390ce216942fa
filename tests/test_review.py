"""The review command: old -> new final accuracy, McNemar's test, what changed per digit, confusion and curve,
the plots page, the exit code that gates a PR, and its refusals (stale results, malformed files, a bad --base).

Fast tests use a git + DVC repository holding only result files; the others a tiny copy of this
repository whose pipeline `dvc repro` really ran (helpers.TinyRepo's settings and photos).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT, TinyRepo, git_clone, git_commit, git_identity, make_tiny_pipeline_repo, run

FILES = [f"{d}/IMG_{i}.JPG" for i, d in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 10)]
CURVE = [0.5, 0.8, 0.8, 0.7]  # val accuracy per epoch: best epoch 2 (first of the tie), final 0.7


def write_results(repo: Path, wrong: set[int], val_accuracy: list[float] = CURVE) -> float:
    """The final model's result files as evaluate writes them, for a model that errs on the `wrong` images."""
    actual = np.array([int(file.split("/")[0]) for file in FILES])
    predicted = np.where(np.isin(np.arange(len(FILES)), list(wrong)), (actual + 1) % 10, actual)
    rows = ["file,actual,predicted,probability"]
    rows += [f"{file},{a},{p},0.900000" for file, a, p in zip(FILES, actual, predicted, strict=True)]
    (repo / "plots/evaluate").mkdir(parents=True, exist_ok=True)
    (repo / "plots/evaluate/predictions_train_best.csv").write_text("\n".join(rows) + "\n")
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
    accuracy = 1 - len(wrong) / len(FILES)
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/evaluate.json").write_text(json.dumps({"final": {"test_accuracy": accuracy}}))
    return accuracy


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


def test_a_drop_beyond_max_drop_fails_and_names_the_change(repo):
    write_results(repo, wrong=set(range(20)))  # 95% -> 80%, 15 more mistakes, none fixed
    done = review(repo)
    assert done.returncode == 1, done.stderr
    assert "test accuracy: 95.00% -> 80.00% (-15.00%)" in done.stdout
    assert "FAILS: the drop exceeds review.max_drop = 0.01" in done.stdout
    # exact two-sided McNemar test with 0 vs 15 discordant images: p = 2 / 2**15
    assert "15 right only before, 0 right only after, p = 6.104e-05" in done.stdout
    assert (repo / "review.md").read_text().strip() == done.stdout.strip()


def test_the_digits_and_confusions_that_changed_are_listed(repo):
    write_results(repo, wrong=set(range(20)))  # every digit now errs on 2 of its 10 images (was 1 for digits 0-4)
    out = review(repo).stdout
    digits = out.split("### Digits whose test recall or F1 changed")[1].split("###")[0]
    assert "| 0 | 0.900 -> 0.800 | 0.947 -> 0.800 |" in digits  # 1 -> 2 mistakes, and now 9s are taken for 0s
    assert "| 7 | 1.000 -> 0.800 |" in digits
    assert len(re.findall(r"^\| \d ", digits, flags=re.M)) == 10
    confusions = out.split("### Confusions that grew or shrank most")[1].split("###")[0]
    grew = re.findall(r"^\| (\d) \| (\d) \| (\d+) \| (\d+) \| \+(\d+) \|$", confusions, flags=re.M)
    assert grew == [("5", "6", "0", "2", "2"), ("6", "7", "0", "2", "2"), ("7", "8", "0", "2", "2"),
                    ("8", "9", "0", "2", "2"), ("9", "0", "0", "2", "2")]  # fmt: skip


def test_the_curve_summary_takes_the_first_best_epoch(repo):
    write_results(repo, wrong={0, 1, 2, 3, 4}, val_accuracy=[0.6, 0.9, 0.9, 0.9, 0.85])
    curve = review(repo).stdout.split("### The final model's learning curve")[1]
    assert "| Final val accuracy | 0.7000 | 0.8500 |" in curve
    assert "| Best val accuracy | 0.8000 | 0.9000 |" in curve
    assert "| Best epoch | 2 | 2 |" in curve
    assert "| Final val loss | 0.3000 | 0.1500 |" in curve
    assert "| Best val loss | 0.2000 | 0.1000 |" in curve


def test_a_drop_within_max_drop_passes_and_is_called_noise(repo):
    write_results(repo, wrong={0, 1, 2, 3, 5})  # one image swapped: same accuracy
    done = review(repo)
    assert done.returncode == 0, done.stderr
    assert "95.00% -> 95.00% (+0.00%)**; passes" in done.stdout
    assert "1 right only before, 1 right only after, p = 1 (not distinguishable from noise" in done.stdout
    assert "| 4 | 0.900 -> 1.000 |" in done.stdout and "| 5 | 1.000 -> 0.900 |" in done.stdout


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
    assert done.stderr.startswith("error: `git show no-such-branch:metrics/evaluate.json` failed")


def test_a_base_that_looks_like_an_option_is_refused(repo):
    done = review(repo, base="--output=/tmp/x")
    assert (done.returncode, done.stderr) == (
        2,
        "error: --base '--output=/tmp/x': a git revision cannot start with '-'\n",
    )


@pytest.mark.parametrize(
    ("file", "text", "reason"),
    [
        ("metrics/evaluate.json", "{not json", "malformed (Expecting property name"),
        ("metrics/evaluate.json", '{"final": {"test_accuracy": "high"}}', "is not a number in [0, 1]"),
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


# --- a tiny copy of this repository, its pipeline run by `dvc repro` -------------------------------------


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """A clone of this repository's HEAD with tiny params and synthetic photos, reproduced and committed."""
    tiny = TinyRepo.create(tmp_path_factory.mktemp("tiny") / "source")
    return make_tiny_pipeline_repo(tmp_path_factory.mktemp("review") / "repo", tiny.path)


@pytest.fixture
def work(pipeline, tmp_path) -> TinyRepo:
    """A copy of the reproduced repository (git, DVC cache and all) to change."""
    return TinyRepo(pipeline).copy_to(tmp_path / "work")


def test_a_real_change_shows_its_tables_and_writes_the_plots_page(work, tmp_path):
    work.set_params({"lr": 0.02, "epochs": 3})
    run(["dvc", "repro"], cwd=work.path, timeout=600)
    done = review(work.path, "--plots", str(tmp_path / "page"))
    assert done.returncode in (0, 1), done.stderr
    for heading in ("Digits whose test recall or F1 changed", "Confusions that grew or shrank most", "learning curve"):
        assert heading in done.stdout
    assert "| Epochs run | 2 | 3 |" in done.stdout
    assert "| params.yaml | `epochs` | 2 | 3 |" in done.stdout
    page = (tmp_path / "page" / "index.html").read_text()
    assert "vegaEmbed" in page and "plots/train_best/history.csv" in page
    pngs = sorted(p.name for p in (tmp_path / "page").glob("*.png"))
    assert "plots_train_best_history.png" in pngs and "plots_evaluate_predictions_train_best.csv" not in pngs
    assert "plots_train_base_history.png" not in pngs  # its data did not change
    assert all((tmp_path / "page" / name).read_bytes().startswith(b"\x89PNG") for name in pngs)
    changed = done.stdout.split("charts whose data changed: ")[1].split(".\n")[0]
    assert sorted(changed.split(", ")) == pngs


@pytest.mark.parametrize("change", ["params", "code"])
def test_stale_results_are_refused(work, change):
    if change == "params":
        work.set_params({"epochs": 3})
    else:
        with open(work.path / "stages/train_best.py", "a") as script:
            script.write("# changed\n")
    done = review(work.path)
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.startswith("error: the results are stale") and "run `dvc repro`" in done.stderr
    expected = "params.yaml: epochs" if change == "params" else "stages/train_best.py"
    assert f"train_best: {expected}" in done.stderr and done.stderr.count("\n") == 1


def test_a_fresh_clone_without_models_is_not_stale(pipeline, tmp_path):
    clone = git_clone(pipeline, tmp_path / "clone")  # no DVC cache: every model and array is missing
    assert not (clone / "models" / "train_best.pt").exists()
    done = review(clone)
    assert done.returncode == 0, done.stderr
    assert "No digit's recall or F1 changed." in done.stdout


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
