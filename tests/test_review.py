"""The review command: old -> new final accuracy, McNemar's test, and the exit code that gates a PR."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FILES = [f"{d}/IMG_{i}.JPG" for i, d in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 10)]


def write_results(repo: Path, wrong: set[int]) -> float:
    """evaluate.json and the per-image predictions of a final model that errs on the `wrong` images."""
    rows = ["file,actual,predicted,probability"]
    for i, file in enumerate(FILES):
        actual = int(file.split("/")[0])
        predicted = (actual + 1) % 10 if i in wrong else actual
        rows.append(f"{file},{actual},{predicted},0.900000")
    (repo / "plots/evaluate").mkdir(parents=True, exist_ok=True)
    (repo / "plots/evaluate/predictions_train_best.csv").write_text("\n".join(rows) + "\n")
    accuracy = 1 - len(wrong) / len(FILES)
    evaluation = {"final": {"test_accuracy": accuracy}}
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/evaluate.json").write_text(json.dumps(evaluation))
    return accuracy


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git + DVC repository whose HEAD holds a final model that errs on 5 of 100 test images."""
    for args in (
        ["git", "init", "--quiet"],
        ["git", "config", "user.email", "tests@signdigits.invalid"],
        ["git", "config", "user.name", "signdigits tests"],
        ["dvc", "init", "--quiet"],
    ):
        assert run(args, tmp_path).returncode == 0
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    write_results(tmp_path, wrong={0, 1, 2, 3, 4})
    run(["git", "add", "-A"], tmp_path)
    assert run(["git", "commit", "--quiet", "-m", "base"], tmp_path).returncode == 0
    return tmp_path


def review(repo: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "signdigits.review", "--base", "HEAD", "--out", "review.md"], repo)


def test_a_drop_beyond_max_drop_fails_and_names_the_change(repo):
    write_results(repo, wrong=set(range(20)))  # 95% -> 80%, 15 more mistakes, none fixed
    done = review(repo)
    assert done.returncode == 1
    assert "test accuracy: 95.00% -> 80.00% (-15.00%)" in done.stdout
    assert "FAILS: the drop exceeds review.max_drop = 0.01" in done.stdout
    # exact two-sided McNemar test with 0 vs 15 discordant images: p = 2 / 2**15
    assert "15 right only before, 0 right only after, p = 6.104e-05" in done.stdout
    assert (repo / "review.md").read_text().strip() == done.stdout.strip()


def test_a_drop_within_max_drop_passes_and_is_called_noise(repo):
    write_results(repo, wrong={0, 1, 2, 3, 5})  # one image swapped: same accuracy
    done = review(repo)
    assert done.returncode == 0, done.stderr
    assert "95.00% -> 95.00% (+0.00%)**; passes" in done.stdout
    assert "1 right only before, 1 right only after, p = 1 (not distinguishable from noise" in done.stdout


def test_params_changes_are_listed(repo):
    text = (repo / "params.yaml").read_text()
    old = yaml.safe_load(text)["weight_decay"]
    new_text, replaced = re.subn(r"^weight_decay: \S+", f"weight_decay: {old * 2}", text, flags=re.M)
    assert replaced == 1
    (repo / "params.yaml").write_text(new_text)
    assert f"| params.yaml | `weight_decay` | {old:g} | {old * 2:g} |" in review(repo).stdout


def test_an_unknown_base_is_a_clear_error(repo):
    done = run([sys.executable, "-m", "signdigits.review", "--base", "no-such-branch"], repo)
    assert done.returncode == 2
    assert done.stderr.startswith("error: `git show no-such-branch:metrics/evaluate.json` failed")
