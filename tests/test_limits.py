"""Limits that protect the machine (issue 19): memory, CPU cores, and checks that run before training."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import assert_fails_cleanly

from signdigits.core.errors import PipelineError
from signdigits.core.limits import (
    available_memory,
    cores_left,
    idle_cores,
    require_memory,
    training_bytes,
    usable_cores,
)
from signdigits.core.params import Runtime, SweepParams, TrainParams
from signdigits.training.model import Arch, Network
from signdigits.training.sweep import Grid, _within_this_machine, load_sweep_data

HUGE = [1_000_000, 1_000_000]  # about 4 TB of weights, gradients and optimizer state: more than any machine


# --- the memory available -----------------------------------------------------------------------


def fake_system(tmp_path: Path, cgroup_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A /proc with 10 GB MemAvailable and the given cgroup line, and a /sys/fs/cgroup tree of `files`."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal:       20000000 kB\nMemAvailable:   10000000 kB\n")
    (proc / "self" / "cgroup").write_text(cgroup_line + "\n")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return proc, root


def test_memavailable_without_a_cgroup_limit(tmp_path):
    proc, root = fake_system(tmp_path, "0::/", {"memory.max": "max\n"})
    assert available_memory(proc, root) == (10_240_000_000, "MemAvailable")


def test_a_lower_cgroup_v2_limit_binds_counting_inactive_files_as_free(tmp_path):
    files = {
        "job/memory.max": "max\n",
        "job/memory.current": "1000\n",
        "job/memory.stat": "anon 600\ninactive_file 100\n",
        "memory.max": "3000000000\n",  # the parent's limit binds
        "memory.current": "1000000000\n",
        "memory.stat": "anon 1\ninactive_file 500000000\n",
    }
    proc, root = fake_system(tmp_path, "0::/job", files)
    free, source = available_memory(proc, root)
    assert free == 3_000_000_000 - (1_000_000_000 - 500_000_000)
    assert source == f"the memory limit of cgroup {root}"


def test_a_cgroup_namespace_reads_the_root(tmp_path):
    files = {"memory.max": "2000000000\n", "memory.current": "0\n", "memory.stat": "inactive_file 0\n"}
    proc, root = fake_system(tmp_path, "0::/not/visible/here", files)
    assert available_memory(proc, root)[0] == 2_000_000_000


def test_cgroup_v1_hierarchical_limit(tmp_path):
    stat = "hierarchical_memory_limit 4000000000\ntotal_inactive_file 1000\n"
    files = {"memory/job/memory.stat": stat, "memory/job/memory.usage_in_bytes": "1001000\n"}
    proc, root = fake_system(tmp_path, "4:memory:/job", files)
    assert available_memory(proc, root)[0] == 4_000_000_000 - 1_000_000
    unlimited = {"memory/memory.stat": "hierarchical_memory_limit 9223372036854771712\ntotal_inactive_file 0\n"}
    proc, root = fake_system(tmp_path / "unlimited", "4:memory:/", {**unlimited, "memory/memory.usage_in_bytes": "5"})
    assert available_memory(proc, root)[1] == "MemAvailable"


def test_unknown_where_nothing_can_be_read(tmp_path):
    assert available_memory(tmp_path / "no-proc", tmp_path / "no-cgroup") is None


def test_this_machine_has_memory_available():
    found = available_memory()
    if found is None:
        pytest.skip("this machine shows no memory figure (no /proc/meminfo, no cgroup limit)")
    free, source = found
    assert free > 0 and source


# --- the estimate -------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer, momentum", [("adam", 0.9), ("adamw", 0.9), ("sgd", 0.9), ("sgd", 0.0)])
def test_estimate_covers_what_torch_allocates(optimizer, momentum):
    """Weights, gradients and optimizer state after a real step, in bytes, are within the estimate."""
    cfg = TrainParams(hidden=(300, 100), optimizer=optimizer, momentum=momentum, batch_size=16)
    held = bytes_held_after_a_step(cfg, Arch.of(cfg, 28, 10))
    estimate = training_bytes(cfg, 784, 10, images=16)
    assert held <= estimate < 2 * held


def bytes_held_after_a_step(cfg: TrainParams, arch: Arch) -> int:
    """Weights, gradients and optimizer state of a network after one real step on a batch, in bytes."""
    from signdigits.training.engine import make_optimizer

    net = Network(arch, torch.zeros(784), torch.ones(784))
    optimizer = make_optimizer(cfg, net.parameters(), torch.device("cpu"))
    net(torch.rand(cfg.batch_size, 784)).sum().backward()
    optimizer.step()
    tensors = [*net.parameters(), *(p.grad for p in net.parameters())]
    tensors += [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t) and t.dim()]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_cnn_estimate_covers_its_weights_and_a_batchs_activations():
    """A CNN's estimate learns its kind: conv weights, optimizer state, and the activations torch keeps for backward."""
    cfg = TrainParams(hidden=(), optimizer="adamw", batch_size=64, channels=(16, 32, 64))
    arch = Arch.of(cfg, 28, 10)  # the network the estimate reads too
    held = bytes_held_after_a_step(cfg, arch)
    activations = 4 * 64 * sum(c * s * s for c, s in zip(arch.channels, (28, 14, 7), strict=True))  # conv outputs
    estimate = training_bytes(cfg, 784, 10, 64)
    narrower = dataclasses.replace(cfg, channels=(8, 16, 32))
    assert held + activations <= estimate
    assert (
        estimate
        > training_bytes(narrower, 784, 10, 64)
        > training_bytes(dataclasses.replace(cfg, channels=()), 784, 10, 64)
    )


def test_estimate_grows_with_what_is_kept():
    cfg = TrainParams(hidden=(256, 128), optimizer="sgd", momentum=0.0)
    sizes = [
        training_bytes(cfg, 784, 10, 1000),
        training_bytes(dataclasses.replace(cfg, momentum=0.9), 784, 10, 1000),
        training_bytes(dataclasses.replace(cfg, optimizer="adam"), 784, 10, 1000),
        training_bytes(dataclasses.replace(cfg, optimizer="adam", ensemble=5), 784, 10, 1000),
    ]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_require_memory_names_the_estimate_and_what_is_available():
    require_memory("hidden", [128], 1000, "training it")
    with pytest.raises(PipelineError) as info:
        require_memory("hidden", HUGE, 10**15, "training it")
    message = str(info.value)
    assert message.startswith("params.yaml: hidden = [1000000, 1000000] is not allowed: training it needs about ")
    assert "1000000.0 GB of memory, but" in message and "is available (" in message


# --- the sweep ----------------------------------------------------------------------------------


def test_sweep_jobs_above_the_cores_run_at_most_that_many_with_one_warning(tiny_layout, caplog):
    cores = usable_cores()
    if cores >= 64:
        pytest.skip("exp2.jobs allows at most 64, not above this machine's cores")
    sweep = SweepParams(lr=(0.01,), batch_size=(8,), epochs=(1,), optimizer=("adam",), jobs=cores + 1)
    with caplog.at_level("WARNING"):
        capped = _within_this_machine(sweep, Grid(sweep), load_sweep_data())
    assert capped.jobs == cores and capped == dataclasses.replace(sweep, jobs=cores)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"sweep: exp2.jobs = {cores + 1} is more than the {cores} CPU cores this process may use; "
        f"running {cores} at a time"
    ]
    assert _within_this_machine(capped, Grid(capped), load_sweep_data()) == capped


def test_sweep_that_cannot_fit_in_memory_is_refused(tiny_layout):
    sweep = SweepParams(lr=(0.01,), batch_size=(8,), epochs=(1,), optimizer=("adam",), jobs=1)
    sweep = dataclasses.replace(sweep, model=TrainParams(hidden=tuple(HUGE)))
    with pytest.raises(PipelineError, match=r"^params.yaml: exp2.hidden = \[1000000, 1000000\] is not allowed: "):
        _within_this_machine(sweep, Grid(sweep), load_sweep_data())


GRID_MEMORY = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from signdigits.core.params import SweepParams
    from signdigits.core.params import Runtime
    from signdigits.training import sweep as sweep_module

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    class FirstRun(Exception):
        pass

    def first_run(run, cfg, data, runtime, threads):
        raise FirstRun(peak_mb())

    data = sweep_module.SweepData(np.zeros((20, 28, 28), np.uint8), np.arange(20) % 10,
                                  np.zeros((10, 28, 28), np.uint8), np.arange(10) % 10)
    runs = int(sys.argv[1])
    sweep = SweepParams(lr=tuple(0.001 * (1 + i) for i in range(runs // 10_000)), batch_size=tuple(range(1, 101)),
                        epochs=tuple(range(1, 101)), optimizer=("adam",), jobs=1)
    assert len(sweep_module.Grid(sweep)) == runs
    before = peak_mb()
    sweep_module.train_config = first_run
    try:
        sweep_module.run_sweep(sweep, Runtime(device="cpu", threads=1), data)
    except sweep_module.PipelineError as e:
        print(before, e.__cause__.args[0])
    """
)


@pytest.mark.integration
def test_a_grid_of_ten_million_runs_takes_no_memory_before_its_first_run():
    """Peak RSS of a fresh interpreter before run_sweep and at its first run: a per-run list would add 80+ MB."""
    done = subprocess.run(
        [sys.executable, "-c", GRID_MEMORY, "10000000"], capture_output=True, text=True, timeout=120, check=True
    )
    before, at_first_run = map(float, done.stdout.split())
    assert at_first_run - before < 20, f"{before:.0f} MB before, {at_first_run:.0f} MB at the first run"


# --- through the stages: refused before training, nothing written ---------------------------------


def test_a_network_too_large_for_memory_stops_before_training(repo):
    repo.set_params({"train_base.hidden": HUGE})
    message = assert_fails_cleanly(repo, "train_base", "params.yaml: train_base.hidden = [1000000, 1000000] is not")
    assert "training it needs about" in message and "is available" in message
    assert "epoch" not in message


# --- the thread count chosen at start (runtime.threads: auto) -----------------------------------


@pytest.mark.parametrize(
    "before, after, cpus, usable, expected",
    [
        ("cpu 0 0 0 0 0 0 0", "cpu 100 0 0 100 0 0 0", 2, 2, 1),  # one of two cpus busy
        ("cpu 0 0 0 0 0 0 0", "cpu 0 0 0 200 0 0 0", 2, 2, 2),  # both idle
        ("cpu 0 0 0 0 0 0 0", "cpu 150 20 30 0 0 0 0", 2, 2, 1),  # all busy: still one thread
        ("cpu 0 0 0 0 0 0 0", "cpu 0 0 0 390 10 0 0", 4, 2, 2),  # idle, iowait idle; at most the usable cores
        ("cpu 5 0 0 5 0 0 0", "cpu 5 0 0 5 0 0 0", 2, 2, 2),  # no ticks in between: idle
    ],
)
def test_cores_left_by_other_processes(before, after, cpus, usable, expected):
    assert cores_left(before, after, cpus, usable) == expected


def test_idle_cores_reads_the_counters_or_takes_every_usable_core(tmp_path):
    assert 1 <= idle_cores(0.05) <= usable_cores()
    assert idle_cores(0.0, tmp_path / "no-such-stat") == usable_cores()


def test_runtime_threads_auto_sets_the_idle_cores(monkeypatch, caplog):
    import signdigits.training.engine as engine

    threads = torch.get_num_threads()
    monkeypatch.setattr(engine, "idle_cores", lambda: 1)
    try:
        with caplog.at_level("INFO", logger="signdigits.training.engine"):
            engine.setup_runtime(Runtime(device="cpu", threads="auto"))
        assert torch.get_num_threads() == 1
        assert "threads: 1 (runtime.threads = auto" in caplog.text
    finally:
        torch.set_num_threads(threads)
