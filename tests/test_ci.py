"""The pull-request and main workflows: the reproduce job's check sees what `dvc repro` changed and cannot be
fooled by a result edited with its lock entry, a docs-only change trains nothing while any other change
reproduces, main saves the DVC cache that pull requests only restore, the review's exit codes and labels,
and the workflow is safe for pull requests from forks and strangers (least permissions, no expression
expanded inside a script).

Its schema is checked by hand with `check-jsonschema --builtin-schema vendor.github-workflows` (docs/review.md);
these tests check what a schema cannot.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, git_commit, load_script

from signdigits.devtools import git_identity, run

pytestmark = pytest.mark.integration  # git and the CI scripts in subprocesses

WORKFLOW = ROOT / ".github/workflows/pull-request.yml"
MAIN_WORKFLOW = ROOT / ".github/workflows/main.yml"
SETUP_ACTION = ROOT / ".github/actions/setup/action.yml"


@pytest.fixture
def results_repo(tmp_path) -> Path:
    """A git repository with the check script and committed results, autostage on as in .dvc/config."""
    run(["git", "init", "--quiet"], cwd=tmp_path)
    git_identity(tmp_path)
    (tmp_path / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci/check-reproduced", tmp_path / ".ci/check-reproduced")
    (tmp_path / "dvc.lock").write_text("stages:\n  train_best:\n    outs:\n    - md5: 0123\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/evaluate.json").write_text('{"final": {"test_accuracy": 0.95}}\n')
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots/scores.csv").write_text("model,accuracy\ntrain_best,0.95\n")
    git_commit(tmp_path, "results")
    return tmp_path


def check(repo: Path):
    return run([str(repo / ".ci/check-reproduced")], cwd=repo, check=False)


def test_the_committed_results_pass(results_repo):
    done = check(results_repo)
    assert done.returncode == 0, done.stderr


def test_a_staged_lock_change_fails_listing_the_file(results_repo):
    """What `dvc repro` does with autostage = true: the changed lock is staged, so the index matches the work tree."""
    lock = results_repo / "dvc.lock"
    lock.write_text(lock.read_text().replace("0123", "4567"))  # a model that came out with other bytes
    run(["git", "add", "dvc.lock"], cwd=results_repo)
    assert run(["git", "diff", "--exit-code", "--", "dvc.lock"], cwd=results_repo, check=False).returncode == 0
    done = check(results_repo)
    assert done.returncode == 1
    assert "these files differ from HEAD:\n  dvc.lock\n" in done.stderr


def test_a_changed_metric_and_a_new_plot_file_fail(results_repo):
    (results_repo / "metrics/evaluate.json").write_text('{"final": {"test_accuracy": 0.94}}\n')
    (results_repo / "plots/new chart.csv").write_text("x\n1\n")
    done = check(results_repo)
    assert done.returncode == 1
    assert "  metrics/evaluate.json\n  plots/new chart.csv\n" in done.stderr


def scripts(steps: list[dict]) -> list[str]:
    return [step["run"] for step in steps if "run" in step]


def jobs_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["jobs"]


def test_no_expression_is_expanded_inside_a_script():
    """`${{ }}` inside run: pastes text (a branch name, a title) into the shell; env: passes it as data."""
    steps = [step for path in (WORKFLOW, MAIN_WORKFLOW) for job in jobs_of(path).values() for step in job["steps"]]
    steps += yaml.safe_load(SETUP_ACTION.read_text())["runs"]["steps"]
    assert len(scripts(steps)) > 5
    for script in scripts(steps):
        assert "${{" not in script, script


def test_each_job_has_the_least_permission_and_only_the_comment_job_writes():
    for path in (WORKFLOW, MAIN_WORKFLOW):
        workflow = yaml.safe_load(path.read_text())
        assert workflow["permissions"] == {}
        for name, job in workflow["jobs"].items():
            wanted = {"pull-requests": "write"} if name == "comment" else {"contents": "read"}
            assert job["permissions"] == wanted, name


def test_the_comment_job_runs_no_pull_request_code_and_edits_only_its_own_comment():
    comment = yaml.safe_load(WORKFLOW.read_text())["jobs"]["comment"]
    assert not any(
        "checkout" in step.get("uses", "") or step.get("uses", "").startswith("./") for step in comment["steps"]
    )
    assert "head.repo.full_name == github.repository" in comment["if"] and "dependabot" in comment["if"]
    (post,) = scripts(comment["steps"])
    assert '.user.login == \\"github-actions[bot]\\"' in post


def test_the_reproduce_job_uses_the_check_and_the_review_reports_a_failed_repro():
    jobs = jobs_of(WORKFLOW)
    assert "exec .ci/check-reproduced" in (ROOT / ".ci/reproduce").read_text()
    assert any(".ci/reproduce" in script for script in scripts(jobs["reproduce"]["steps"]))
    review = {step.get("id"): step for step in jobs["review"]["steps"]}
    assert "set +e" in review["repro"]["run"] and "REPRO_CODE" in review["review"]["env"]
    assert 'cat review.md >> "$GITHUB_STEP_SUMMARY"' in review["review"]["run"]


# --- what runs: docs only, or everything (.ci/changes) ------------------------------------------------

CHANGES = load_script(ROOT / ".ci/changes")
PIPELINE_PATHS = CHANGES.dvc_paths(yaml.safe_load((ROOT / "dvc.yaml").read_text()))


@pytest.mark.parametrize(
    "changed",
    [["README.md"], ["docs/review.md", "docs/figures/new.svg"], ["studies/README.md", "benchmarks/README.md"]],
)
def test_a_docs_only_change_runs_no_training(changed):
    assert not CHANGES.needs_pipeline(changed, PIPELINE_PATHS)


@pytest.mark.parametrize(
    "path",
    [
        "params.yaml",
        "dvc.yaml",
        "dvc.lock",
        "requirements/lock.txt",
        "pyproject.toml",
        "src/signdigits/training/engine.py",
        "src/signdigits/review.py",  # no stage reads it, but it is code: everything runs
        "stages/train_best.py",
        "data/raw/Dataset/0/IMG_1118.JPG",
        "metrics/report.md",  # Markdown, but evaluate writes it: an edited result must be reproduced
        "src/signdigits/core/NOTES.md",  # Markdown inside a folder a stage depends on: its hash changes
        ".github/workflows/pull-request.yml",
        ".ci/reproduce",
        "Makefile",
        "tests/test_ci.py",
    ],
)
def test_a_change_to_code_params_data_or_the_pipeline_runs_everything(path):
    assert CHANGES.needs_pipeline(["README.md", path], PIPELINE_PATHS)


def test_an_empty_list_of_changes_runs_everything_and_the_script_prints_the_output():
    assert CHANGES.needs_pipeline([], PIPELINE_PATHS)
    docs = run([sys.executable, str(ROOT / ".ci/changes")], cwd=ROOT, input="README.md\ndocs/review.md\n")
    assert docs.stdout == "pipeline=false\n"
    code = run([sys.executable, str(ROOT / ".ci/changes")], cwd=ROOT, input="README.md\nparams.yaml\n")
    assert code.stdout == "pipeline=true\n"


def test_the_workflow_trains_only_when_the_changes_job_says_so():
    jobs = jobs_of(WORKFLOW)
    assert ".ci/changes" in jobs["changes"]["steps"][-1]["run"]
    assert jobs["changes"]["outputs"]["pipeline"] == "${{ steps.changes.outputs.pipeline }}"
    runs_everything = "needs.changes.outputs.pipeline == 'true'"
    for name in ("reproduce", "review"):
        assert jobs[name]["needs"] == "changes" and jobs[name]["if"] == runs_everything, name
    steps = {step["name"]: step for step in jobs["checks"]["steps"] if "run" in step}
    (full,) = [step for step in steps.values() if step["run"] == "make test"]
    (docs,) = [step for step in steps.values() if "tests/test_docs.py" in step["run"]]
    assert full["if"] == runs_everything and docs["if"] == "needs.changes.outputs.pipeline != 'true'"
    # Label changes rerun every job: a skipped required check would count as passed over an earlier failure.
    on = yaml.safe_load(WORKFLOW.read_text())[True]  # PyYAML (YAML 1.1) reads the key `on` as True
    assert {"labeled", "unlabeled", "synchronize", "opened"} <= set(on["pull_request"]["types"])


# --- the DVC cache: main saves it, pull requests only restore it (.ci/reproduce) ------------------------


def cache_steps(jobs: dict) -> list[dict]:
    return [step for job in jobs.values() for step in job["steps"] if step.get("uses", "").startswith("actions/cache")]


def test_main_saves_the_dvc_cache_after_the_check_and_pull_requests_only_restore_it():
    main_workflow = yaml.safe_load(MAIN_WORKFLOW.read_text())
    assert main_workflow[True] == {"push": {"branches": ["main"]}}
    steps = main_workflow["jobs"]["reproduce"]["steps"]
    (save,) = [step for step in steps if step.get("uses", "").startswith("actions/cache/save")]
    assert save["with"] == {"path": ".dvc/cache", "key": "dvc-main-${{ github.sha }}"}
    (check,) = [step for step in steps if ".ci/reproduce" in step.get("run", "")]
    assert steps.index(check) < steps.index(save) and "always()" not in save.get("if", "")
    pr_cache = [step for step in cache_steps(jobs_of(WORKFLOW)) if step["with"]["path"] == ".dvc/cache"]
    assert {step["uses"] for step in pr_cache} == {"actions/cache/restore@v4"}  # a run-cache from main's CI only
    for step in pr_cache:
        assert save["with"]["key"].startswith(step["with"]["restore-keys"])
    assert not any("dvc pull" in script for script in scripts(jobs_of(WORKFLOW)["reproduce"]["steps"]))
    # Both start from the results of the main commit whose checked run saved the restored cache.
    for job_steps in (steps, jobs_of(WORKFLOW)["reproduce"]["steps"]):
        (reproduce,) = [script for script in scripts(job_steps) if ".ci/reproduce" in script]
        assert '.ci/reproduce "${RESTORED#dvc-main-}"; else .ci/reproduce; fi' in reproduce


COUNT_STAGE = """\
import json, pathlib, yaml
n = yaml.safe_load(open("params.yaml"))["n"]
pathlib.Path("out.txt").write_text("x" * n)
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("metrics/count.json").write_text(json.dumps({"n": n}))
"""


@pytest.fixture
def dvc_repo(tmp_path) -> Path:
    """A one-stage DVC pipeline with committed results (a cached output and a git-tracked metric), its cache kept."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "--quiet"], cwd=repo)
    git_identity(repo)
    run(["dvc", "init", "--quiet"], cwd=repo)
    run(["dvc", "config", "core.autostage", "true"], cwd=repo)
    (repo / ".ci").mkdir()
    for script in ("reproduce", "check-reproduced"):
        shutil.copy2(ROOT / ".ci" / script, repo / ".ci" / script)
    (repo / "count.py").write_text(COUNT_STAGE)
    (repo / "params.yaml").write_text("n: 3\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  count:\n    cmd: python count.py\n    deps: [count.py]\n    params: [n]\n"
        "    outs: [out.txt]\n    metrics: [metrics/count.json: {cache: false}]\n"
    )
    run(["dvc", "repro", "--quiet"], cwd=repo)
    git_commit(repo, "base results")
    run(["git", "branch", "base"], cwd=repo)
    shutil.copytree(repo / ".dvc/cache", tmp_path / "main-cache")  # what main's CI saved: the base's run only
    return repo


def restore_main_cache(repo: Path) -> None:
    """As the pull request's job starts: main's cache, not the one the author's runs filled."""
    shutil.rmtree(repo / ".dvc/cache")
    shutil.copytree(repo.parent / "main-cache", repo / ".dvc/cache")


def test_a_result_edited_with_its_lock_entry_fails_the_reproduce_check(dvc_repo):
    """With HEAD's lock in place `dvc repro` skips the stage (its entry matches the edited file) and the old
    check passes; from the base's results the stage's output comes out as the base's, and the check fails."""
    metric = dvc_repo / "metrics/count.json"
    metric.write_text('{"n": 99}')
    lock = yaml.safe_load((dvc_repo / "dvc.lock").read_text())
    (entry,) = [out for out in lock["stages"]["count"]["outs"] if out["path"] == "metrics/count.json"]
    entry.update(md5=hashlib.md5(metric.read_bytes()).hexdigest(), size=metric.stat().st_size)
    (dvc_repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    git_commit(dvc_repo, "an edited result")
    restore_main_cache(dvc_repo)
    run(["dvc", "repro", "--quiet"], cwd=dvc_repo)
    assert check(dvc_repo).returncode == 0  # what a plain `dvc repro` and the check let through
    done = run([str(dvc_repo / ".ci/reproduce"), "base"], cwd=dvc_repo, check=False)
    assert done.returncode == 1 and "  metrics/count.json\n" in done.stderr


def test_a_param_change_reruns_its_stage_and_passes_when_the_committed_results_are_reproduced(dvc_repo):
    (dvc_repo / "params.yaml").write_text("n: 4\n")
    run(["dvc", "repro", "--quiet"], cwd=dvc_repo)
    git_commit(dvc_repo, "n: 4 and its results")
    # With the author's run-cache the stage is restored, not run: the committed bits by construction.
    authors = run([str(dvc_repo / ".ci/reproduce"), "base"], cwd=dvc_repo)
    assert "Stage 'count' is cached - skipping run" in authors.stdout
    run(["git", "reset", "--quiet", "--hard"], cwd=dvc_repo)
    restore_main_cache(dvc_repo)
    done = run([str(dvc_repo / ".ci/reproduce"), "base"], cwd=dvc_repo, check=False)
    assert done.returncode == 0, done.stderr
    assert "Running stage 'count'" in done.stdout
    assert (dvc_repo / "out.txt").read_text() == "xxxx"


# --- the review: exit codes, "needs more evidence", labels (.ci/review) --------------------------------

REVIEW_CI = load_script(ROOT / ".ci/review")

FAKE_REVIEW = """\
import os, sys
with open("calls.txt", "a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
evidence = "--evidence" in sys.argv
code = int(os.environ["EVIDENCE_CODE" if evidence else "FIRST_CODE"])
if code != 2:
    open("review.md", "w").write("evidence\\n" if evidence else "first\\n")
else:
    print("error: base revision not found", file=sys.stderr)
sys.exit(code)
"""


def event(*labels: str) -> dict:
    return {"pull_request": {"labels": [{"name": name} for name in labels]}}


def test_only_the_known_accept_labels_become_flags():
    labels = event("review: accept split-change", "bug", "review: accept familiarity; rm -rf /", "$(id)")
    assert REVIEW_CI.accepted(labels) == ["split-change"]
    every = event(*REVIEW_CI.ACCEPT_LABELS)
    assert REVIEW_CI.accepted(every) == ["removed-model", "split-change", "familiarity", "predict-model"]
    assert REVIEW_CI.review_command("origin/main", ["split-change"])[-2:] == ["--accept", "split-change"]
    assert REVIEW_CI.accepted({}) == []


@pytest.mark.parametrize(
    ("first", "evidence", "final", "calls"),
    [(0, None, 0, 1), (1, None, 1, 1), (2, None, 2, 1), (3, 0, 0, 2), (3, 1, 1, 2), (3, 2, 2, 2)],
)
def test_the_job_follows_the_review_or_on_exit_3_the_settling_run(tmp_path, first, evidence, final, calls):
    fake = tmp_path / "fake" / "signdigits"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "review.py").write_text(FAKE_REVIEW)
    (tmp_path / "event.json").write_text(json.dumps(event("review: accept split-change", "documentation")))
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path / "fake"),
        "GITHUB_EVENT_PATH": str(tmp_path / "event.json"),
        "GITHUB_OUTPUT": str(tmp_path / "output.txt"),
        "REPRO_CODE": "0",
        "FIRST_CODE": str(first),
        "EVIDENCE_CODE": str(evidence),
    }
    done = run([sys.executable, str(ROOT / ".ci/review"), "origin/main"], cwd=tmp_path, env=env)
    outputs = (tmp_path / "output.txt").read_text().splitlines()
    assert outputs[0] == f"code={final}", done.stderr
    made = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(made) == calls
    assert all(call.endswith("--accept split-change") for call in made)
    assert ("--evidence" in made[-1]) == (first == 3)
    review = (tmp_path / "review.md").read_text()
    if final == 2:
        assert review.startswith("## signdigits review could not run") and outputs[1].startswith("reason=")
    else:
        assert review == ("evidence\n" if first == 3 else "first\n")


def test_a_failed_repro_is_reported_without_running_the_review():
    code, reason = REVIEW_CI.review("origin/main", event(), "1", "Running stage 'x'\nERROR: failed to reproduce 'x'\n")
    assert code == 2 and reason == "dvc repro failed (exit 1): ERROR: failed to reproduce 'x'"


def test_the_comment_links_the_plots_artifact_only_when_it_was_uploaded(tmp_path):
    jobs = jobs_of(WORKFLOW)
    (upload,) = [step for step in jobs["review"]["steps"] if step.get("id") == "upload-plots"]
    assert upload["with"]["name"] == "review-plots"
    assert jobs["review"]["outputs"]["plots-url"] == "${{ steps.upload-plots.outputs.artifact-url }}"
    (post,) = scripts(jobs["comment"]["steps"])
    compose = post[: post.index("# Only a comment")]  # the lines that write comment.md; the rest calls GitHub
    (tmp_path / "review.md").write_text("## signdigits review\n")
    for url in ("", "https://github.com/o/r/actions/runs/1/artifacts/2"):
        env = {**os.environ, "PLOTS_URL": url}
        subprocess.run(["bash", "-euc", compose], cwd=tmp_path, env=env, check=True)
        comment = (tmp_path / "comment.md").read_text()
        assert ("review-plots" in comment) == bool(url) and (url in comment)
