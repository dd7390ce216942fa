"""benchmarks/bench.py --quick: the smoke run of the busy-neighbour measurement finishes and reports each target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_quick_bench_measures_each_training_idle_and_beside_a_busy_process(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--quick", "--out", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    busy = json.loads(out.read_text())["busy"]
    assert busy["matmul_peak_gflops"] > 0
    for name in ("train_best", "train_cnn"):
        row = busy[name]
        assert row["idle_s"] > 0 and row["busy_s"] > 0
        assert row["ratio"] == pytest.approx(row["busy_s"] / row["idle_s"])
        assert row["one_thread_s"] > 0
        assert row["other_cores_speedup"] == pytest.approx(row["one_thread_s"] / row["idle_s"])
        assert 0 < row["floor_s"] < row["idle_s"]  # nothing runs faster than its arithmetic at the peak
        assert name in done.stdout
    assert not [
        line
        for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
        if "os.getppid() == parent" in line
    ]  # the busy neighbour ended with the benchmark


@pytest.mark.integration
def test_stages_against_another_commit_run_in_turn_in_two_clones(tiny_pipeline, tmp_path):
    """--parts stages: train_best, train_cnn and evaluate of two commits, each from its timing line (here HEAD
    against HEAD on the tiny reproduced repository, whose DVC cache holds the outputs the clones check out)."""
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--parts", "stages", "--against", "HEAD", "--repeat", "1",
         "--out", str(out)],
        cwd=tiny_pipeline, env={**os.environ, "PYTHONPATH": str(tiny_pipeline / "src")}, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    compared = json.loads(out.read_text())["stages"]
    assert compared["commits"]["against"] == compared["commits"]["rev"]
    for stage in ("train_best", "train_cnn", "evaluate"):
        assert all(len(compared["work_s"][side][stage]) == 1 for side in ("against", "rev"))
        assert min(compared["median_s"][stage].values()) > 0
        assert stage in done.stdout
