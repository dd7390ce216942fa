"""The pull-request workflow: the reproduce job's check sees what `dvc repro` changed, and the workflow is safe
for pull requests from forks and strangers (least permissions, no expression expanded inside a script).

Its schema is checked by hand with `check-jsonschema --builtin-schema vendor.github-workflows` (docs/review.md);
these tests check what a schema cannot.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, git_commit, git_identity, run

WORKFLOW = ROOT / ".github/workflows/pull-request.yml"
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


def test_no_expression_is_expanded_inside_a_script():
    """`${{ }}` inside run: pastes text (a branch name, a title) into the shell; env: passes it as data."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    steps += yaml.safe_load(SETUP_ACTION.read_text())["runs"]["steps"]
    assert len(scripts(steps)) > 5
    for script in scripts(steps):
        assert "${{" not in script, script


def test_each_job_has_the_least_permission_and_only_the_comment_job_writes():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]
    for name, job in jobs.items():
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
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert ".ci/check-reproduced" in scripts(jobs["reproduce"]["steps"])
    review = {step.get("id"): step for step in jobs["review"]["steps"]}
    assert "set +e" in review["repro"]["run"] and "REPRO_CODE" in review["review"]["env"]
    assert 'cat review.md >> "$GITHUB_STEP_SUMMARY"' in review["review"]["run"]
