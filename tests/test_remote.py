"""Sharing through an S3 remote (docs/remote.md, "Push and pull"), against a real S3 endpoint.

moto's standalone server runs on loopback with signature checks on; the credentials of its one
IAM user reach the dvc subprocesses through AWS_* variables only (or `.dvc/config.local`), never a
tracked file. The pipeline tests use a tiny copy of this repository (tiny params, synthetic
photos, reproduced once per session: conftest's `tiny_pipeline`), not the real pipeline.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, copy_repository, git_commit
from helpers_remote import (
    BUCKET,
    S3Server,
    add_remote,
    base_env,
    free_port,
    run,
    tracked_state,
)

from signdigits.core import paths
from signdigits.devtools import git_clone, git_identity, stages_run

pytestmark = pytest.mark.integration  # an S3 server and DVC in subprocesses

FAILS_WITHIN_S = 30  # a wrong credential or a dead endpoint must not hang CI
UP_TO_DATE = "Data and pipelines are up to date."
NEW_LR = 0.01  # the tiny params keep lr 0.003


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server.start(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


def assert_no_secret(repo: Path, server: S3Server) -> None:
    """Neither the access key nor the secret is in a tracked file; .dvc/config holds no credential option."""
    for secret in (server.access_key_id, server.secret_access_key):
        found = run(["git", "grep", "-I", "-l", "-F", "-e", secret], cwd=repo, check=False)
        assert found.returncode == 1, f"a credential is in tracked files: {found.stdout}"
    config = (repo / ".dvc" / "config").read_text()
    assert server.secret_access_key not in config
    assert not re.search(r"access_key_id|secret_access_key|session_token", config), config


def fresh_clone(source: Path, tmp_path: Path, name: str) -> Path:
    return git_clone(source, tmp_path / name)


# --- Failures and credentials: a plain `dvc add`ed file, no pipeline ----------------------------------------------


@pytest.fixture(scope="module")
def small_repo(s3, tmp_path_factory) -> Path:
    """git + DVC with one `dvc add`ed file and a committed S3 remote, pushed."""
    path = tmp_path_factory.mktemp("small") / "repo"
    path.mkdir()
    run(["git", "init", "--quiet"], cwd=path)
    git_identity(path)
    run(["dvc", "init", "--quiet"], cwd=path)
    (path / "data.txt").write_text("shared through the remote\n")
    run(["dvc", "add", "--quiet", "data.txt"], cwd=path)
    git_commit(path, "Data")
    add_remote(path, s3, "small")
    assert "1 file pushed" in run(["dvc", "push"], cwd=path, env=s3.env()).stdout
    return path


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = run(args, cwd=cwd, env=env, check=False, timeout=120)
    return done, time.monotonic() - start


def test_wrong_credentials_fail_within_seconds_and_leave_the_workspace_as_it_was(small_repo, s3, tmp_path):
    """A typo in a CI secret must fail the job quickly with the reason, not hang or half-write the workspace."""
    wrong = s3.env(access_key_id="AKIAWRONGWRONGWRONG0", secret_access_key="wrong")
    clone = fresh_clone(small_repo, tmp_path, "clone")
    # moto, like AWS S3: 403 Forbidden where DVC asks for one object (HeadObject), the unknown key named where it lists.
    refused = re.compile(r"Forbidden|The AWS Access Key Id you provided does not exist in our records")
    for repo, command in ((clone, "pull"), (small_repo, "push")):
        before = tracked_state(repo)
        done, seconds = timed(["dvc", command], repo, wrong)
        print(f"dvc {command} with a wrong key: {seconds:.1f} s")
        assert done.returncode != 0, done.stdout
        assert seconds < FAILS_WITHIN_S, f"dvc {command} took {seconds:.1f} s"
        assert refused.search(done.stderr), done.stderr
        assert tracked_state(repo) == before, f"dvc {command} changed the workspace"
    assert not (clone / "data.txt").exists()


def test_an_unreachable_endpoint_fails_within_seconds_and_leaves_the_workspace_as_it_was(small_repo, s3, tmp_path):
    """A closed port (a stopped MinIO, a wrong endpointurl) is reported by URL within seconds (DVC's defaults)."""
    dead = f"http://127.0.0.1:{free_port()}"
    empty = fresh_clone(small_repo, tmp_path, "empty")
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", dead], cwd=empty)
    # small_repo has the data to push: a second, local-only remote there, removed afterwards.
    run(["dvc", "remote", "add", "--local", "dead", f"s3://{BUCKET}/small"], cwd=small_repo)
    run(["dvc", "remote", "modify", "--local", "dead", "endpointurl", dead], cwd=small_repo)
    try:
        for repo, command in ((empty, ["pull"]), (small_repo, ["push", "-r", "dead"])):
            before = tracked_state(repo)
            done, seconds = timed(["dvc", *command], repo, s3.env())
            print(f"dvc {command[0]} to a closed port: {seconds:.1f} s")
            assert done.returncode != 0, done.stdout
            assert seconds < FAILS_WITHIN_S, f"dvc {command[0]} took {seconds:.1f} s"
            assert f'Could not connect to the endpoint URL: "{dead}/' in done.stderr, done.stderr
            assert tracked_state(repo) == before, f"dvc {command[0]} changed the workspace"
    finally:
        run(["dvc", "remote", "remove", "--local", "dead"], cwd=small_repo)
    assert not (empty / "data.txt").exists()


def test_credentials_in_config_local_work_and_stay_out_of_git(small_repo, s3, tmp_path):
    """README: `dvc remote modify --local` keeps a person's credentials out of every commit."""
    clone = fresh_clone(small_repo, tmp_path, "clone")
    run(["dvc", "remote", "modify", "--local", "storage", "access_key_id", s3.access_key_id], cwd=clone)
    run(["dvc", "remote", "modify", "--local", "storage", "secret_access_key", s3.secret_access_key], cwd=clone)
    run(["dvc", "pull"], cwd=clone, env=base_env())  # no AWS_* variables at all
    assert (clone / "data.txt").read_text() == "shared through the remote\n"
    assert s3.secret_access_key in (clone / ".dvc" / "config.local").read_text()
    assert run(["git", "status", "--porcelain"], cwd=clone).stdout == ""
    assert_no_secret(clone, s3)
    assert_no_secret(small_repo, s3)


# --- The pipeline: push, pull, pull one stage, the run-cache ------------------------------------------------------


@pytest.fixture(scope="module")
def origin(s3, tiny_pipeline, tmp_path_factory) -> Path:
    """What one person shares: the tiny pipeline reproduced (a copy of the session's), its S3 remote committed,
    `dvc push`ed."""
    path = copy_repository(tiny_pipeline, tmp_path_factory.mktemp("origin") / "signdigits")
    add_remote(path, s3, "pipeline")
    run(["dvc", "push"], cwd=path, env=s3.env())
    return path


def cached_outputs(repo: Path) -> list[str]:
    """The `outs` of dvc.yaml: what DVC caches and pushes (metrics and plots are in git)."""
    import yaml

    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    outs = [out if isinstance(out, dict) else {out: {}} for stage in stages.values() for out in stage.get("outs", [])]
    return sorted(path for out in outs for path, options in out.items() if options.get("cache", True))


@pytest.mark.slow
def test_a_fresh_clone_pulls_everything_and_has_nothing_to_rerun(origin, s3, tmp_path):
    arrays_and_models = 2 + len(paths.TRAINED_MODELS)  # images.npz, split.npz and a file per model
    assert len(s3.keys("pipeline/files/md5/")) == len(cached_outputs(origin)) == arrays_and_models
    clone = fresh_clone(origin, tmp_path, "clone")
    run(["dvc", "pull"], cwd=clone, env=s3.env())
    assert UP_TO_DATE in run(["dvc", "status"], cwd=clone, env=s3.env()).stdout
    assert stages_run(run(["dvc", "repro"], cwd=clone, env=s3.env()).stdout) == []
    assert run(["git", "status", "--porcelain"], cwd=clone).stdout == ""
    for path in cached_outputs(origin):
        assert (clone / path).read_bytes() == (origin / path).read_bytes(), path
    assert_no_secret(clone, s3)
    assert_no_secret(origin, s3)


@pytest.mark.slow
def test_pulling_train_best_alone_fetches_only_the_final_model_and_predict_works(origin, s3, tmp_path):
    """What a user of the model needs: one file, not the arrays or the other models."""
    clone = fresh_clone(origin, tmp_path, "clone")
    run(["dvc", "pull", "train_best"], cwd=clone, env=s3.env())
    cache = [p for p in (clone / ".dvc" / "cache" / "files").rglob("*") if p.is_file()]
    model = clone / "models" / "train_best.pt"
    assert [p.read_bytes() for p in cache] == [model.read_bytes()]
    assert model.read_bytes() == (origin / "models" / "train_best.pt").read_bytes()
    assert sorted(p.name for p in (clone / "models").iterdir()) == ["train_best.pt"]
    assert not (clone / "data" / "prepared").exists() and not (clone / "data" / "split").exists()

    row = (origin / "plots/evaluate/predictions_train_best.csv").read_text().splitlines()[1]
    file, _, digit, probability = row.split(",")
    done = run([sys.executable, "-m", "signdigits.predict", f"data/raw/{file}"], cwd=clone, check=False)
    assert done.returncode in (0, 3), done.stderr  # 3: answered, but the photo is unfamiliar
    path, answered, answered_p, _verdict = done.stdout.strip().split("\t")
    assert (path, answered) == (f"data/raw/{file}", digit)
    assert float(answered_p) == pytest.approx(float(probability), abs=2e-4)


def set_lr(repo: Path, lr: float) -> None:
    params, replaced = re.subn(r"^lr: .*$", f"lr: {lr}", (repo / "params.yaml").read_text(), flags=re.M)
    assert replaced == 1
    (repo / "params.yaml").write_text(params)


@pytest.mark.slow
def test_a_pushed_run_cache_restores_train_best_elsewhere_once_its_uncached_outputs_are_pushed(origin, s3, tmp_path):
    """`dvc exp run` on one machine, the same params on another: restored from the run-cache, not retrained.

    DVC 3's `dvc push --run-cache` leaves out the objects of `cache: false` outputs, and every stage
    here has some (metrics, plot data), so the run-cache alone restores nothing elsewhere; CI also
    runs .ci/push-run-outputs. If the first half starts failing, DVC pushes them itself and the
    script can go.
    """
    first = fresh_clone(origin, tmp_path, "first")
    run(["dvc", "pull"], cwd=first, env=s3.env())
    done = run(["dvc", "exp", "run", "-S", f"lr={NEW_LR}"], cwd=first, env=s3.env())
    assert stages_run(done.stdout) == ["train_best", "evaluate"]
    run(["dvc", "push", "--run-cache"], cwd=first, env=s3.env())
    assert_no_secret(first, s3)

    # The run-cache entries alone: train_best is retrained, for want of its uncached record and curves.
    second = fresh_clone(origin, tmp_path, "second")
    set_lr(second, NEW_LR)
    done = run(["dvc", "repro", "--pull", "train_best"], cwd=second, env=s3.env())
    assert stages_run(done.stdout) == ["train_best"]
    assert "do not exist neither locally nor on remote" in done.stdout + done.stderr

    # With the outputs every run-cache entry names: train_best restored, byte for byte. evaluate has no
    # run-cache (its report.md is an uncached out, neither metric nor plot), so it reruns, to the same bytes.
    run([sys.executable, str(ROOT / ".ci" / "push-run-outputs")], cwd=first, env=s3.env())
    third = fresh_clone(origin, tmp_path, "third")
    run(["dvc", "pull", "--run-cache"], cwd=third, env=s3.env())
    set_lr(third, NEW_LR)
    done = run(["dvc", "repro", "--pull"], cwd=third, env=s3.env())
    assert stages_run(done.stdout) == ["evaluate"]
    assert "Stage 'train_best' is cached - skipping run, checking out outputs" in done.stdout
    for path in ("models/train_best.pt", "metrics/train_best.json", "metrics/evaluate.json", "dvc.lock"):
        assert (third / path).read_bytes() == (first / path).read_bytes(), path
    assert UP_TO_DATE in run(["dvc", "status"], cwd=third, env=s3.env()).stdout
    assert_no_secret(third, s3)
