"""exp2.backend dask (issue 12): the processes backend's rows on a local and a real cluster, and its faults.

The real cluster is a `dask scheduler` and `dask worker` processes on loopback, started here with
this environment's executables, as a user would start them (docs/cluster.md, "Running the sweep on a cluster").
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import ROOT

import signdigits
from signdigits.core.kernels import PORTABLE_ENV, cpu_has_avx2

distributed = pytest.importorskip("distributed")

DASK = Path(sys.executable).with_name("dask")
RESULTS = ("plots/sweep/results.csv", "metrics/sweep.json")
# 8 runs of about a second each: long enough that a worker killed after the first finished run dies mid-sweep
GRID = {
    "exp2.lr": [0.01, 0.001],
    "exp2.batch_size": [16, 32],
    "exp2.epochs": [30],
    "exp2.optimizer": ["adam", "sgd"],
    "exp2.jobs": 2,
}


def results(repo) -> dict[str, bytes]:
    return {name: (repo.path / name).read_bytes() for name in RESULTS}


def remove_results(repo) -> None:
    for name in RESULTS:
        (repo.path / name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def swept(tiny_repo_factory):
    """A tiny repository, prepared and split, and the rows of the processes backend: what dask must give."""
    repo = tiny_repo_factory("dask")
    repo.run("prepare", check=True)
    repo.run("split", check=True)
    repo.set_params(GRID)
    repo.run("sweep_exp2", check=True)
    expected = results(repo)
    repo.set_params({"exp2.backend": "dask"})
    remove_results(repo)
    return repo, expected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def documented_worker_command(address: str) -> list[str]:
    """The worker command of docs/cluster.md's first code block, for this scheduler and this interpreter."""
    text = (ROOT / "docs/cluster.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("python -m signdigits.worker "))
    return [sys.executable, *shlex.split(line.replace("tcp://HOST:8786", address))[1:]]


def start_worker(address: str, env: dict[str, str], *args: str, documented: bool = False) -> subprocess.Popen:
    """One worker process (no nanny, so killing it kills the worker), running one task at a time: started as
    docs/cluster.md says, or by hand as `dask worker` (the mistakes the stage must refuse)."""
    by_hand = [str(DASK), "worker", address, "--nthreads", "1"]
    command = [*(documented_worker_command(address) if documented else by_hand), "--no-nanny", "--no-dashboard", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_workers(address: str, n: int) -> None:
    with distributed.Client(address, timeout=30) as client:
        client.wait_for_workers(n, timeout=60)


def stop(processes: list[subprocess.Popen]) -> None:
    """Killed, not terminated: nothing of theirs needs saving, and a graceful close takes seconds."""
    for process in processes:
        process.kill()
        process.wait()


@contextlib.contextmanager
def dask_cluster(
    workers: int, env: dict[str, str] | None = None, worker_args: tuple[str, ...] = (), documented: bool = False
):
    """A scheduler on a free loopback port and `workers` workers; yields (address, the processes list)."""
    env = env or dict(os.environ)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    processes = [subprocess.Popen(scheduler, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        processes += [start_worker(address, env, *worker_args, documented=documented) for _ in range(workers)]
        wait_for_workers(address, workers)
        yield address, processes
    finally:
        stop(processes)


@pytest.fixture(scope="module")
def cluster():
    """Two workers started as docs/cluster.md says, from an environment without the kernel pin's variables
    (conftest sets them for this process): the command must set every one of them itself."""
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    with dask_cluster(2, env=env, documented=True) as running:
        yield running


def test_local_cluster_gives_the_rows_of_local_processes(swept, monkeypatch):
    repo, expected = swept
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    done = repo.run("sweep_exp2", check=True)
    assert "on a local Dask cluster" in done.stderr
    assert "sweep 8/8: run " in done.stderr  # one progress line per finished run
    assert results(repo) == expected


def test_real_cluster_gives_the_same_rows(swept, cluster, monkeypatch):
    repo, expected = swept
    address, _ = cluster
    remove_results(repo)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    done = repo.run("sweep_exp2", check=True)
    assert address in done.stderr and "2 worker(s) connected" in done.stderr
    assert results(repo) == expected


def test_a_worker_killed_mid_sweep_has_its_runs_redone(swept, cluster, monkeypatch):
    repo, expected = swept
    address, processes = cluster
    remove_results(repo)
    victim = processes.pop()  # both workers are busy after the first run finishes: 8 runs on 2
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    stage = repo.popen("sweep_exp2", stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    log, killed_mid_sweep = [], False
    try:
        for line in stage.stderr:
            log.append(line)
            if line.startswith("sweep 1/8"):
                victim.kill()
                killed_mid_sweep = True
                break
        log += stage.stderr.readlines()
        assert stage.wait(timeout=120) == 0, "".join(log)
    finally:
        stop([victim])
        processes.append(start_worker(address, dict(os.environ), documented=True))  # the cluster's users get two again
    assert killed_mid_sweep, "".join(log)
    assert results(repo) == expected


@contextlib.contextmanager
def listener(kind: str):
    """A scheduler address that fails in one way: the address, with what listens there while the block runs."""
    if kind == "malformed":
        yield "tcp://127.0.0.1:not-a-port"
        return
    if kind == "closed":
        yield f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
        return
    if kind == "http":  # another service: it answers, but in HTTP
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"tcp://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
        return
    with socket.socket() as silent:  # accepts connections and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        accepted: list[socket.socket] = []
        silent.settimeout(0.2)

        def accept():
            with contextlib.suppress(OSError):
                while True:
                    with contextlib.suppress(TimeoutError):
                        accepted.append(silent.accept()[0])

        threading.Thread(target=accept, daemon=True).start()
        try:
            yield f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        finally:
            for connection in accepted:
                connection.close()


@pytest.mark.parametrize("kind", ["closed", "http", "silent", "malformed"])
def test_a_scheduler_address_that_fails_ends_the_stage_within_10_s(swept, monkeypatch, kind):
    repo, _ = swept
    remove_results(repo)
    with listener(kind) as address:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
        started = time.perf_counter()
        done = repo.run("sweep_exp2", timeout=60)
        seconds = time.perf_counter() - started
    assert done.returncode == 2, done.stderr
    assert seconds < 10, f"{seconds:.1f}s"
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and address in last and "cannot be reached" in last, last
    assert "DASK_SCHEDULER_ADDRESS" in last and "Traceback" not in done.stderr
    assert not any((repo.path / name).exists() for name in RESULTS)


PRELOAD = "import torch\n\ntorch.ones(64, 64) @ torch.ones(64, 64)  # torch starts with this process's kernels\n"


@pytest.mark.skipif(not cpu_has_avx2(), reason="portable kernels are only checked on a CPU with AVX2")
def test_a_worker_with_other_cpu_kernels_fails_with_how_to_start_workers(swept, monkeypatch, tmp_path):
    repo, _ = swept
    remove_results(repo)
    preload = tmp_path / "torch_first.py"
    preload.write_text(PRELOAD)
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV} | {"ATEN_CPU_CAPABILITY": "default"}
    with dask_cluster(1, env=env, worker_args=("--preload", str(preload))) as (address, _):
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
        done = repo.run("sweep_exp2")
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "this process runs torch with DEFAULT kernels" in last
    assert "Start workers as: python -m signdigits.worker <scheduler address>" in last
    assert not any((repo.path / name).exists() for name in RESULTS)


def test_a_worker_running_other_code_is_refused(swept, monkeypatch, tmp_path):
    """Dask sends a run by name: a worker started from another checkout would train with its own code."""
    repo, _ = swept
    remove_results(repo)
    other = tmp_path / "src"
    package = Path(signdigits.__file__).parent
    shutil.copytree(package, other / "signdigits", ignore=shutil.ignore_patterns("__pycache__"))
    engine = other / "signdigits/training/engine.py"
    engine.write_text(engine.read_text() + "\n# another checkout's change\n")
    env = {**os.environ, "PYTHONPATH": str(other)}
    with dask_cluster(1, env=env) as (address, _):
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
        done = repo.run("sweep_exp2")
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "Dask worker tcp://127.0.0.1" in last and f"runs other signdigits code ({other / 'signdigits'}" in last, last
    assert "Traceback" not in done.stderr
    assert not any((repo.path / name).exists() for name in RESULTS)


def test_a_scheduler_lost_mid_sweep_ends_the_stage_in_one_line(swept, monkeypatch):
    repo, _ = swept
    remove_results(repo)
    with dask_cluster(1) as (address, processes):
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
        stage = repo.popen("sweep_exp2", stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        log = []
        for line in stage.stderr:
            log.append(line)
            if line.startswith("sweep 1/8"):
                processes[0].kill()  # the scheduler
                break
        log += stage.stderr.readlines()
        code = stage.wait(timeout=120)
    assert code == 2, "".join(log)
    assert "Traceback" not in "".join(log), "".join(log)
    errors = [line for line in log if line.startswith("error: ")]
    assert len(errors) == 1 and errors == log[-1:], "".join(log)
    assert f"the Dask scheduler {address} was lost mid-sweep" in errors[0], errors[0]
    assert not any((repo.path / name).exists() for name in RESULTS)
