"""A stage's results are what its workspace says (issue 28): it runs that workspace's code, and it refuses
params.yaml or a dependency that changed under it, so dvc.lock never states what was not used.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers import TinyRepo, copy_repository

from signdigits.devtools import run, stages_run, venv_env

pytestmark = pytest.mark.slow

MARKER = "written by the queued experiment's own code"
# Appended to reporting/report.py: only evaluate depends on reporting/, so the queued experiment runs in seconds.
REPORT_CHANGE = f"""

_build_report = build_report


def build_report(*args, **kwargs):
    return _build_report(*args, **kwargs) + "\\n{MARKER}\\n"
"""


@pytest.fixture(scope="module")
def pipeline_repo(tiny_pipeline, tmp_path_factory) -> Path:
    """A copy of the session's tiny reproduced repository (a git clone of this one, tiny params and photos)."""
    return copy_repository(tiny_pipeline, tmp_path_factory.mktemp("workspace") / "repo")


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


def test_temporaries_a_killed_stage_leaves_change_no_hash_dvc_takes_and_no_git_status(pipeline_repo, tmp_path):
    """models/ is a folder dep of evaluate, plots/ and metrics/ are in git: a killed write's leftovers move neither."""
    repo = copy_repository(pipeline_repo, tmp_path / "repo")

    def statuses() -> tuple[str, str]:
        dvc = run(["dvc", "status"], cwd=repo).stdout
        return dvc, run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo).stdout

    before = statuses()
    for name in ("models/.train_best.pt.999999-a1b2.tmp", "plots/train_base/.history.csv.999999-c3d4.tmp"):
        (repo / name).write_bytes(b"half written")
    assert statuses() == before


def test_params_edited_while_a_stage_runs_under_dvc_repro_are_refused(pipeline_repo, tmp_path):
    """Edited mid-training, lr would be in dvc.lock beside a model trained with the old lr: the stage writes nothing."""
    repo = copy_repository(pipeline_repo, tmp_path / "repo")
    params = repo / "params.yaml"
    text = params.read_text()
    long_training = re.sub(r"^epochs: \d+", "epochs: 400", text, flags=re.M)  # seconds: time to edit meanwhile
    params.write_text(long_training)
    lock_before = (repo / "dvc.lock").read_bytes()
    dvc = subprocess.Popen(
        ["dvc", "repro", "train_best"], cwd=repo, env=venv_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    log = []
    for line in dvc.stdout:
        log.append(line)
        if "epoch 2/400" in line:  # the stage has read params.yaml and is training
            params.write_text(re.sub(r"^lr: .*$", "lr: 0.0123", long_training, count=1, flags=re.M))
            break
    log += dvc.stdout.readlines()
    assert dvc.wait(timeout=300) != 0, "".join(log)
    errors = [line for line in log if line.startswith("error: ")]
    assert errors == [
        "error: params.yaml:lr changed while train_best ran, so its outputs were not written: dvc.lock would record "
        "inputs they were not made from. Run it again (`dvc repro`) once nothing edits them\n"
    ], "".join(log)
    assert "Traceback" not in "".join(log)
    assert not (repo / "models/train_best.pt").exists()  # dvc repro removed it before the run; none was written
    assert (repo / "dvc.lock").read_bytes() == lock_before
    assert "lr: 0.0123" in params.read_text()


def test_a_dependency_changed_while_a_stage_runs_is_refused(repo):
    """A direct run, outside DVC: the earlier outputs stay as they were."""
    repo.set_params({"train_base.epochs": 400})
    before = repo.snapshot()
    stage = repo.popen("train_base", stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    log = []
    for line in stage.stderr:
        log.append(line)
        if "epoch 2/400" in line:
            split = repo.path / "data/split/split.npz"
            split.write_bytes(split.read_bytes())  # the same bytes: not a change
            (repo.path / "data/prepared/images.npz").write_bytes(b"replaced")
            break
    log += stage.stderr.readlines()
    assert stage.wait(timeout=300) == 2, "".join(log)
    assert log[-1].startswith("error: data/prepared/images.npz changed while train_base ran"), "".join(log)
    assert {k: v for k, v in repo.snapshot().items() if k != "data/prepared/images.npz"} == {
        k: v for k, v in before.items() if k != "data/prepared/images.npz"
    }
    assert repo.temporary_files() == []


def _edit_while_training(repo: TinyRepo, edit) -> tuple[int, list[str]]:
    """Run train_base (400 tiny epochs: seconds), call edit(params text) -> new text once it trains; exit code, log."""
    repo.set_params({"train_base.epochs": 400})
    stage = repo.popen("train_base", stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    log = []
    for line in stage.stderr:
        log.append(line)
        if "epoch 2/400" in line:
            text = repo.params_file.read_text()
            assert edit(text) != text
            repo.params_file.write_text(edit(text))
            break
    log += stage.stderr.readlines()
    return stage.wait(timeout=300), log


def test_a_comment_or_another_stage_s_key_edited_while_a_stage_runs_is_no_change(repo):
    """dvc.lock records the stage's own keys' values, not params.yaml's bytes: the outputs are written."""
    before = repo.snapshot()

    def edit(text: str) -> str:
        text = text.replace("train_base:", "# a note added meanwhile\ntrain_base:  # the reference", 1)
        text = re.sub(r"^lr: .*$", "lr: 0.0123", text, count=1, flags=re.M)  # train_best's key
        assert text.count("  lr: 0.01\n") == 1 and "# a note" in text and "lr: 0.0123" in text
        return text.replace("  lr: 0.01\n", "  lr: 1e-2\n")  # train_base's lr, the same value written otherwise

    code, log = _edit_while_training(repo, edit)
    assert code == 0, "".join(log)
    (warning,) = [line for line in log if line.startswith("warning: params.yaml changed")]
    assert warning.startswith("warning: params.yaml changed while train_base ran, in what it does not read (lr); its ")
    assert "`dvc exp run -S` was refused meanwhile" in warning  # the likely cause: DVC writes -S values first
    after = repo.snapshot()
    assert after["models/train_base.pt"] != before["models/train_base.pt"]  # 400 epochs, not the fixture's
    assert repo.temporary_files() == []


def test_the_stage_s_own_key_edited_while_it_runs_is_refused_by_name(repo):
    before = repo.snapshot()
    code, log = _edit_while_training(repo, lambda text: text.replace("  lr: 0.01\n", "  lr: 0.02\n", 1))
    assert code == 2, "".join(log)
    assert log[-1].startswith("error: params.yaml:train_base.lr changed while train_base ran"), "".join(log)
    assert repo.snapshot() == before
