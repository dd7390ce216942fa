"""sweep_exp2 (issue 4): the grid, the winner, and results that do not depend on `jobs`."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import itertools
import math
import re
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
from helpers import stage_env

from signdigits.core.errors import PipelineError
from signdigits.core.params import Runtime, SweepParams, TrainParams
from signdigits.devtools import run, venv_env
from signdigits.training.sweep import RESULT_COLUMNS, Grid, load_sweep_data, pick_winner, results_csv, run_sweep

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the winner ---------------------------------------------------------------------------------


def row(run, val_accuracy, val_loss):
    return {"run": run, "val_accuracy": val_accuracy, "val_loss": val_loss, "lr": 0.01, "batch_size": 32}


def test_winner_has_the_highest_val_accuracy():
    rows = [row(0, 0.80, 0.1), row(1, 0.91, 0.9), row(2, 0.90, 0.05), row(3, 0.50, 0.01)]
    assert pick_winner(rows)["run"] == 1


def test_accuracy_tie_goes_to_the_lower_val_loss():
    rows = [row(0, 0.80, 0.1), row(1, 0.91, 0.40), row(2, 0.91, 0.35), row(3, 0.91, 0.50)]
    assert pick_winner(rows)["run"] == 2


def test_second_tie_goes_to_the_earlier_run():
    rows = [row(0, 0.80, 0.1), row(1, 0.91, 0.35), row(2, 0.91, 0.35), row(3, 0.91, 0.35)]
    assert pick_winner(rows)["run"] == 1
    assert pick_winner(list(reversed(rows)))["run"] == 1  # by run number, not by position in the list
    assert pick_winner([rows[3], rows[2]])["run"] == 2


def test_winner_is_the_row_itself():
    rows = [row(0, 0.5, 0.7), row(1, 0.6, 0.7)]
    assert pick_winner(rows) is rows[1]


# --- the grid -----------------------------------------------------------------------------------


def test_default_grid_order_and_count():
    sweep = SweepParams(model=TrainParams(hidden=(256, 128, 64), dropout=0.4, momentum=0.9))
    grid = Grid(sweep)
    assert len(grid) == 16
    expected = list(itertools.product((0.001, 0.01), (32, 64), (10, 15), ("adam", "sgd")))
    assert [(c.lr, c.batch_size, c.epochs, c.optimizer) for c in grid] == expected
    for cfg in grid:  # everything outside the grid comes from the model section
        assert dataclasses.replace(cfg, lr=0.5, batch_size=1, epochs=1, optimizer="adamw") == dataclasses.replace(
            sweep.model, lr=0.5, batch_size=1, epochs=1, optimizer="adamw"
        )
    assert len(set(grid)) == 16


def test_grid_of_uneven_lists():
    sweep = SweepParams(lr=(0.1, 0.2, 0.3), batch_size=(8,), epochs=(1, 2), optimizer=("sgd",))
    grid = Grid(sweep)
    assert [(c.lr, c.epochs) for c in grid] == [(0.1, 1), (0.1, 2), (0.2, 1), (0.2, 2), (0.3, 1), (0.3, 2)]
    assert {(c.batch_size, c.optimizer) for c in grid} == {(8, "sgd")}


def test_grid_builds_each_configuration_on_access_in_the_old_order():
    sweep = SweepParams(lr=(0.1, 0.2), batch_size=(32, 64, 16, 32), epochs=(10, 20, 5), optimizer=("adam", "sgd"))
    grid = Grid(sweep)
    listed = [
        dataclasses.replace(sweep.model, lr=lr, batch_size=bs, epochs=ep, optimizer=opt)
        for lr, bs, ep, opt in itertools.product(sweep.lr, sweep.batch_size, sweep.epochs, sweep.optimizer)
    ]
    assert len(grid) == len(listed) == 48
    assert list(grid) == listed and grid[-1] == listed[-1] and grid[5] == listed[5]
    with pytest.raises(IndexError):
        grid[48]
    # the costliest first, ties (20/64 = 10/32, and repeated batch sizes) in grid order, as a stable sort gives
    assert list(grid.longest_first()) == sorted(range(48), key=lambda i: -listed[i].epochs / listed[i].batch_size)
    assert math.isclose(grid.total_cost(), sum(Grid.cost(cfg) for cfg in listed))


def test_results_csv_columns_and_rounding():
    rows = [
        {"run": 0, "lr": 0.01, "batch_size": 8, "epochs": 2, "optimizer": "adam", "val_accuracy": 0.123456789,
         "val_loss": 1.0, "train_accuracy": 0.5, "epochs_run": 2},
    ]  # fmt: skip
    parsed = list(csv.DictReader(io.StringIO(results_csv(rows))))
    assert tuple(parsed[0]) == RESULT_COLUMNS
    assert parsed[0]["val_accuracy"] == "0.123457" and parsed[0]["optimizer"] == "adam"


# --- run_sweep: jobs change the wall time only ---------------------------------------------------


@pytest.mark.integration
def test_run_sweep_with_two_jobs_equals_one_job(tiny_layout):
    model = TrainParams(hidden=(16,), dropout=0.2, momentum=0.9, seed=0)
    # batch 8 runs cost more, so jobs 2 submits them first: rows must still come back in grid order
    sweep = SweepParams(lr=(0.01,), batch_size=(16, 8), epochs=(2,), optimizer=("adam", "sgd"), jobs=1, model=model)
    data = load_sweep_data()
    serial = run_sweep(sweep, Runtime(device="cpu", threads=1), data)
    parallel = run_sweep(dataclasses.replace(sweep, jobs=2), Runtime(device="cpu", threads=1), data)
    assert parallel == serial
    assert [r["run"] for r in serial] == [0, 1, 2, 3]
    assert [(r["batch_size"], r["optimizer"]) for r in serial] == [(16, "adam"), (16, "sgd"), (8, "adam"), (8, "sgd")]
    for r in serial:
        assert tuple(r) == RESULT_COLUMNS
        assert r["epochs_run"] == 2 and r["lr"] == 0.01
        assert 0 <= r["val_accuracy"] <= 1 and 0 <= r["train_accuracy"] <= 1 and r["val_loss"] > 0
    assert len({r["val_loss"] for r in serial}) == 4  # four different runs, not one repeated
    assert pick_winner(parallel) == pick_winner(serial)
    assert results_csv(parallel) == results_csv(serial)


def test_a_failing_run_stops_the_sweep_with_its_config(tiny_layout):
    model = TrainParams(hidden=(16,), momentum=0.9, seed=0)
    sweep = SweepParams(lr=(0.01, 10.0), batch_size=(8,), epochs=(3,), optimizer=("sgd",), jobs=1, model=model)
    with pytest.raises(PipelineError, match=r"^sweep run 1 \(lr 10 batch 8 epochs 3 sgd\) failed: .*diverged"):
        run_sweep(sweep, Runtime(device="cpu", threads=1), load_sweep_data())


def test_the_log_gives_the_runs_and_after_the_first_an_estimate_of_the_total(tiny_layout, caplog):
    model = TrainParams(hidden=(16,), seed=0)
    sweep = SweepParams(lr=(0.01, 0.02), batch_size=(16,), epochs=(1, 2), optimizer=("adam",), jobs=1, model=model)
    with caplog.at_level("INFO", logger="signdigits.training.sweep"):
        rows = run_sweep(sweep, Runtime(device="cpu", threads=1), load_sweep_data())
    assert [r["run"] for r in rows] == [0, 1, 2, 3]
    messages = [r.getMessage() for r in caplog.records if r.name == "signdigits.training.sweep"]
    assert messages[0] == "sweep: 4 runs in this process, 1 thread(s)"
    assert messages[1].startswith("sweep 1/4: run 1 lr 0.01 batch 16 epochs 2 adam")  # the longest first
    assert re.fullmatch(r"sweep: 4 runs; about \d+s in all, judged from the first run", messages[2])
    assert len([m for m in messages if "judged from the first run" in m]) == 1


# --- process trees: no process outlives the one that started it (Linux: /proc, prctl) -----------

LONG_SWEEP = {"exp2.lr": [0.01, 0.001], "exp2.epochs": [10_000], "exp2.batch_size": [1], "exp2.jobs": 2}
SWEEP_STAGE = """stages:
  sweep_exp2:
    cmd: python stages/sweep_exp2.py
    deps: [data/split/split.npz]
    params: [exp2]
    outs: [metrics/sweep.json: {cache: false}, plots/sweep/results.csv: {cache: false}]
"""


@pytest.fixture(scope="module")
def sweep_repo(tiny_repo_factory):
    """A tiny repository, prepared and split, that DVC runs: dvc.yaml holds the sweep stage alone."""
    if not sys.platform.startswith("linux"):
        pytest.skip("process trees are watched on Linux only (docs/troubleshooting.md)")
    repo = tiny_repo_factory("process_tree")
    repo.run("prepare", check=True)
    repo.run("split", check=True)
    (repo.path / "dvc.yaml").write_text(SWEEP_STAGE)
    run(["dvc", "init", "--no-scm", "-q"], cwd=repo.path)
    repo.set_params(LONG_SWEEP)
    return repo


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_all(processes: list[psutil.Process]) -> None:
    """What the test started and a failure left running (psutil checks each pid was not reused)."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def running_workers(stage: psutil.Process, n: int) -> list[psutil.Process] | None:
    """The stage's n worker processes once each has loaded torch (so its start-up hook has run), else None."""
    try:
        workers = [p for p in stage.children() if "spawn_main" in " ".join(p.cmdline())]
        return workers if len(workers) == n and all(p.memory_info().rss > 100e6 for p in workers) else None
    except psutil.NoSuchProcess:
        return None


def stage_under(root: psutil.Process) -> psutil.Process | None:
    try:
        return next((p for p in root.children(recursive=True) if "stages/sweep_exp2.py" in p.cmdline()), None)
    except psutil.NoSuchProcess:
        return None


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("shell", ["/bin/bash", "dash"])
def test_ending_dvc_ends_the_stage_and_its_workers_with_nothing_written(sweep_repo, tmp_path, shell, signum):
    """bash execs the stage (dvc is its parent), dash does not (dvc is its grandparent): both are watched.

    dvc's SIGTERM alone once left the stage running, to overwrite a later run's results when it finished.
    """
    shell_path = shutil.which(shell)
    if shell_path is None:
        pytest.skip(f"{shell} is not installed")
    log = tmp_path / "dvc.log"
    env = {**venv_env(), **stage_env(), "SHELL": shell_path, "PATH": venv_env()["PATH"]}
    with open(log, "w") as out:
        dvc = subprocess.Popen(["dvc", "repro", "--force"], cwd=sweep_repo.path, env=env, stdout=out, stderr=out)
    tree, started = psutil.Process(dvc.pid), []
    try:
        stage = wait_until(lambda: stage_under(tree), 60, "the stage started")
        started.append(stage)
        workers = wait_until(lambda: running_workers(stage, 2), 120, "two pool workers running")
        started += workers
        named = {process: " ".join(process.cmdline()) for process in started}
        dvc.send_signal(signum)  # to dvc alone, not its process group
        dvc.wait(timeout=30)
        for process, command in named.items():
            wait_until(lambda p=process: not alive(p), 10, f"{process.pid} ({command}) ended")
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            started += tree.children(recursive=True)
        kill_all([tree, *started])
    text = log.read_text()
    assert f"interrupted: dvc (pid {dvc.pid}) has ended, so this stage stopped without writing its outputs" in text
    assert not (sweep_repo.path / "metrics/sweep.json").exists()
    assert not (sweep_repo.path / "plots/sweep/results.csv").exists()
    assert sweep_repo.temporary_files() == []


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("backend", ["processes", "dask"])
def test_ending_the_stage_ends_its_workers(sweep_repo, backend, signum):
    """SIGKILL: no handler of the stage runs, the kernel ends the workers; SIGTERM: the stage ends them, exit 130."""
    if backend == "dask":
        pytest.importorskip("distributed")
    repo = sweep_repo.copy_to(sweep_repo.path.parent / f"kill_{backend}_{signum.name}")
    repo.set_params({"exp2.backend": backend})
    stage = repo.popen("sweep_exp2", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        workers = wait_until(lambda: running_workers(psutil.Process(stage.pid), 2), 120, "two workers running")
        stage.send_signal(signum)
        assert stage.wait(timeout=15) == (130 if signum == signal.SIGTERM else -signal.SIGKILL)
        for process in workers:
            wait_until(lambda p=process: not alive(p), 10, f"worker {process.pid} ended")
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            workers = workers or psutil.Process(stage.pid).children(recursive=True)
        stage.kill()
        stage.wait()
        kill_all(workers)
