"""A stage's results are what its workspace says (issue 28): it runs that workspace's code, and it refuses
params.yaml or a dependency that changed under it, so dvc.lock never states what was not used.
"""

from __future__ import annotations

import time

import pytest
from helpers import TinyRepo, make_tiny_pipeline_repo, run, stages_run

pytestmark = pytest.mark.slow

MARKER = "written by the queued experiment's own code"
# Appended to reporting/report.py: only evaluate depends on reporting/, so the queued experiment runs in seconds.
REPORT_CHANGE = f"""

_build_report = build_report


def build_report(*args, **kwargs):
    return _build_report(*args, **kwargs) + "\\n{MARKER}\\n"
"""


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory) -> TinyRepo:
    """A git clone of this repository with tiny params and photos, reproduced and committed."""
    tiny = TinyRepo.create(tmp_path_factory.mktemp("tiny") / "repo")
    return make_tiny_pipeline_repo(tmp_path_factory.mktemp("workspace") / "repo", tiny.path)


def test_a_queued_experiment_runs_its_own_code_not_the_workspace_s(pipeline_repo):
    repo = pipeline_repo
    report = repo / "src/signdigits/reporting/report.py"
    report.write_text(report.read_text() + REPORT_CHANGE)
    run(["dvc", "exp", "run", "--queue", "--name", "own-code"], cwd=repo)
    run(["git", "checkout", "--", "src"], cwd=repo)  # the workspace's code is the committed one again
    done = run(["dvc", "exp", "run", "--run-all"], cwd=repo, timeout=600)
    assert stages_run(done.stdout) in ([], ["evaluate"]), done.stdout  # (--run-all may not echo the stages)
    assert MARKER not in (repo / "metrics/report.md").read_text()
    run(["dvc", "exp", "apply", "own-code"], cwd=repo)
    assert MARKER in (repo / "metrics/report.md").read_text()
    assert MARKER in (repo / "src/signdigits/reporting/report.py").read_text()  # the experiment's commit holds it
