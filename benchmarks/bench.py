"""Performance benchmark of the signdigits training engine, the sweep and the DVC pipeline.

Run from the repository root:

    python benchmarks/bench.py [--quick] [--no-e2e] [--out benchmarks/results.json]

It measures, on this machine and in one run:

1. seconds per epoch of `signdigits.engine.train` on the exp1 network (784-256-128-64-10, dropout
   0.4, adam) at batch 32, 64 and 256, against a reference loop written the common way
   (Dataset + shuffling DataLoader + default Adam), same data, threads, steps and math;
2. the engine's achieved GFLOP/s in training, as a fraction of one large float32 matmul's;
3. the wall time of the exp2 sweep with jobs 1 and jobs 2, and that both give the same rows;
   3b. the same sweep on `jobs` local processes and on a local Dask cluster of as many workers,
   side by side: the same rows, and Dask's overhead per run;
4. end to end, in a temporary copy of the repository: a cold `dvc repro`, a no-op `dvc repro`
   and `dvc exp run -S lr=0.003`.

Each figure is printed beside its target (PASS/MISS) and everything goes to the JSON file.
Timings are wall-clock: other processes on the machine make them noisy (the load average is
recorded at the start and the end).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from signdigits.core.kernels import PORTABLE_ENV, pin_cpu_kernels
from signdigits.core.params import Runtime, TrainParams, load_params

REPO = Path(__file__).resolve().parents[1]
pin_cpu_kernels(load_params(REPO / "params.yaml").runtime.cpu_kernels)  # before torch loads, as every stage does

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from signdigits.training.engine import Split, setup_runtime, train  # noqa: E402
from signdigits.training.model import MLP, Arch  # noqa: E402

# The real shape of the data: 2063 photos, 70/15/15 split, 28x28 grayscale, 10 digits.
N_TRAIN, N_VAL, IMAGE_SIZE, N_CLASSES = 1444, 309, 28, 10
EXP1 = TrainParams(hidden=(256, 128, 64), dropout=0.4, optimizer="adam", lr=0.001, seed=0)
BATCH_SIZES = (32, 64, 256)

TARGETS = {  # name -> (description, test on the measured value)
    "speedup_b32": (">= 2x reference", lambda v: v >= 2.0),
    "matmul_fraction_b256": (">= 50% of matmul", lambda v: v >= 0.50),
    "matmul_fraction_b32": (">= 25% of matmul", lambda v: v >= 0.25),
    "sweep_speedup": (">= 1.6x", lambda v: v >= 1.6),
    "cold_repro_s": ("< 25 s", lambda v: v < 25),
    "noop_repro_s": ("< 0.8 s", lambda v: v < 0.8),
    "exp_run_s": ("< 10 s", lambda v: v < 10),
    "seeds_mean_test_accuracy": (">= 96.0%", lambda v: v >= 0.96),
    "seeds_min_test_accuracy": (">= 95.0%", lambda v: v >= 0.95),
}


# --- data -----------------------------------------------------------------------------------------


def synthetic_data(device: torch.device, seed: int = 0) -> tuple[Split, Split]:
    """Random images of the real shape and size: speed does not depend on what the pixels show."""
    rng = np.random.default_rng(seed)

    def part(n: int) -> Split:
        pixels = rng.integers(0, 256, size=(n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        return Split.from_arrays(pixels, rng.integers(0, N_CLASSES, size=n), device)

    return part(N_TRAIN), part(N_VAL)


# --- 1. engine against the reference loop ---------------------------------------------------------


class _EpochClock(logging.Handler):
    """Notes the time of every log record: the engine logs once at the end of each epoch.

    The gap between two consecutive records is one whole epoch (training, val evaluation, the
    log call), and the first epoch, which pays for warm-up, has no record before it, so it drops
    out. This times the real `train` without copying its loop.
    """

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.stamps: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "epoch" in record.getMessage():
            self.stamps.append(time.perf_counter())


def engine_epoch_times(cfg: TrainParams, train_data: Split, val_data: Split) -> list[float]:
    """Seconds of each epoch after the first, of one call to signdigits.engine.train."""
    logger = logging.getLogger("signdigits.training.engine")
    clock = _EpochClock()
    saved = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # keep the per-epoch lines off the benchmark's output
    logger.addHandler(clock)
    try:
        train(cfg, train_data, val_data, list(range(N_CLASSES)), name="bench")
    finally:
        logger.removeHandler(clock)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    return list(np.diff(clock.stamps))


class ImageDataset(torch.utils.data.Dataset):
    """The common way: one (image, label) pair per __getitem__, batched by the DataLoader."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def reference_epoch_times(cfg: TrainParams, train_data: Split, val_data: Split) -> list[float]:
    """The same network, loss, optimizer, steps and per-epoch val evaluation, as tutorials write it.

    Same math as the engine: the engine's MLP (per-pixel standardisation, Linear-ReLU-Dropout),
    cross-entropy, Adam with lr cfg.lr, ceil(n / batch) steps an epoch with a shorter last
    batch, then one forward pass over the val set. What differs is the common way of doing it:
    a Dataset + shuffling DataLoader (num_workers=0, default collate), default torch.optim.Adam
    (no fused/foreach flags), `.item()` after every step for the running loss and accuracy.
    Returns the seconds of each epoch after the first, like engine_epoch_times.
    """
    torch.manual_seed(cfg.seed)
    arch = Arch(IMAGE_SIZE, cfg.hidden, N_CLASSES, cfg.dropout)
    std = train_data.x.std(dim=0).clamp_min(1e-3)
    model = MLP(arch, train_data.x.mean(dim=0), std)
    loader = torch.utils.data.DataLoader(
        ImageDataset(train_data.x, train_data.y),
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    stamps = []
    for _ in range(cfg.epochs):
        model.train()
        running_loss, correct, seen = 0.0, 0, 0
        for images, labels in loader:
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * len(labels)
            correct += (logits.argmax(dim=1) == labels).sum().item()
            seen += len(labels)
        model.eval()
        with torch.no_grad():
            val_logits = model(val_data.x)
            val_loss = F.cross_entropy(val_logits, val_data.y).item()
            val_accuracy = (val_logits.argmax(dim=1) == val_data.y).float().mean().item()
        _ = (running_loss / seen, correct / seen, val_loss, val_accuracy)  # what an epoch reports
        stamps.append(time.perf_counter())
    return list(np.diff(stamps))


def compare_engine(threads: int, epochs: int, rounds: int) -> dict:
    """Median seconds per epoch of engine and reference at each batch size, and their ratio.

    Engine and reference alternate, `rounds` times each, so a burst of load from other
    processes hits both rather than one.
    """
    device = setup_runtime(Runtime(device="cpu", threads=threads))
    train_data, val_data = synthetic_data(device)
    results = {}
    for batch in BATCH_SIZES:
        cfg = dataclasses.replace(EXP1, batch_size=batch, epochs=epochs)
        engine, reference = [], []
        for _ in range(rounds):
            engine += engine_epoch_times(cfg, train_data, val_data)
            reference += reference_epoch_times(cfg, train_data, val_data)
        e, r = statistics.median(engine), statistics.median(reference)
        results[batch] = {
            "steps_per_epoch": -(-N_TRAIN // batch),
            "engine_s_per_epoch": e,
            "reference_s_per_epoch": r,
            "speedup": r / e,
            # the fastest epoch of each: less sensitive to load from other processes
            "engine_best_s": min(engine),
            "reference_best_s": min(reference),
            "speedup_best": min(reference) / min(engine),
            "epochs_timed": len(engine),
        }
    return results


# --- 2. achieved GFLOP/s against a large matmul ---------------------------------------------------


def layer_shapes(hidden: tuple[int, ...]) -> list[tuple[int, int]]:
    widths = [IMAGE_SIZE * IMAGE_SIZE, *hidden, N_CLASSES]
    return list(zip(widths[:-1], widths[1:], strict=True))


def flops_per_epoch(hidden: tuple[int, ...], n_train: int = N_TRAIN, n_val: int = N_VAL) -> float:
    """Matmul FLOPs of one engine epoch: training steps plus the val forward pass it includes.

    Per image: forward 2*sum(in*out); backward 2*sum(in*out) for the weight gradients, plus
    2*in*out for the input gradients of every layer except the first (the pixels need none).
    Bias, activation, dropout, loss and optimizer work are left out: they are small and not
    matmuls. Summed over the batches of an epoch, the batch size cancels: every image is used once.
    """
    shapes = layer_shapes(hidden)
    macs = sum(i * o for i, o in shapes)
    train_per_image = 2 * macs + 2 * macs + 2 * (macs - shapes[0][0] * shapes[0][1])
    return n_train * train_per_image + n_val * 2 * macs


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 7) -> float:
    """GFLOP/s of one n x n @ n x n float32 matmul on `threads` threads: the ceiling to compare with."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(times) / 1e9


def flops_efficiency(engine: dict, ceiling_gflops: float) -> dict:
    flops = flops_per_epoch(EXP1.hidden)
    return {
        batch: {
            "gflops": flops / row["engine_s_per_epoch"] / 1e9,
            "fraction_of_matmul": flops / row["engine_s_per_epoch"] / 1e9 / ceiling_gflops,
        }
        for batch, row in engine.items()
    }


# --- CUDA, where there is one ---------------------------------------------------------------------


def cuda_epochs(epochs: int) -> dict | None:
    """Engine seconds per epoch on the GPU (median, first epoch excluded), or None without one."""
    if not torch.cuda.is_available():
        return None
    device = setup_runtime(Runtime(device="cuda"))
    train_data, val_data = synthetic_data(device)
    results = {"device_name": torch.cuda.get_device_name(device)}
    for batch in BATCH_SIZES:
        cfg = dataclasses.replace(EXP1, batch_size=batch, epochs=epochs)
        results[batch] = {"engine_s_per_epoch": statistics.median(engine_epoch_times(cfg, train_data, val_data))}
    return results


# --- 3. sweep, jobs 1 against jobs 2 --------------------------------------------------------------

# Run in a fresh interpreter per measurement, so jobs 1 (which trains in its own process) and
# jobs 2 (which spawns workers) both start from the same state and leave this process alone.
_SWEEP_CHILD = """
import dataclasses, json, sys, time
from signdigits.core.kernels import pin_cpu_kernels
from signdigits.core.params import load_params
from signdigits.training.sweep import load_sweep_data, run_sweep
params = load_params(sys.argv[1])
pin_cpu_kernels(params.runtime.cpu_kernels)
sweep = dataclasses.replace(params.exp2, **json.loads(sys.argv[2]))
started = time.perf_counter()
rows = run_sweep(sweep, params.runtime, load_sweep_data())
print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows}))
"""


def sweep_data_dir(scratch: Path) -> tuple[Path, str]:
    """A folder holding data/prepared and data/split, as the sweep reads them (paths relative to cwd).

    The repository's own, if `dvc repro split` has made them. Otherwise they are made in a scratch
    folder by running stages/prepare.py and stages/split.py there (the same code `dvc repro
    split` runs), so the benchmark never writes into the repository or its dvc.lock.
    """
    if (REPO / "data/prepared/images.npz").is_file() and (REPO / "data/split/split.npz").is_file():
        return REPO, "repository data/prepared and data/split"
    return make_split_data(scratch / "sweep"), "made in a scratch folder by stages/prepare.py and stages/split.py"


def make_split_data(work: Path) -> Path:
    """Run the prepare and split stages in `work`, on the repository's raw images and params.yaml."""
    (work / "data").mkdir(parents=True)
    (work / "data/raw").symlink_to(REPO / "data/raw")
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    for stage in ("prepare", "split"):
        subprocess.run([sys.executable, str(REPO / f"stages/{stage}.py")], cwd=work, check=True, capture_output=True)
    return work


def run_sweep_child(cwd: Path, overrides: dict) -> dict:
    """run_sweep with the exp2 section of params.yaml, `overrides` replacing its keys, in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}  # dask: a local cluster
    out = subprocess.run(
        [sys.executable, "-c", _SWEEP_CHILD, str(REPO / "params.yaml"), json.dumps(overrides)],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_sweep(quick: bool, scratch: Path) -> dict:
    """Wall time of run_sweep with jobs 1 and 2 (exp2 from params.yaml), and whether rows agree."""
    cwd, source = sweep_data_dir(scratch)
    overrides = {"epochs": [2, 3]} if quick else {}
    one = run_sweep_child(cwd, {**overrides, "jobs": 1})
    two = run_sweep_child(cwd, {**overrides, "jobs": 2})
    return {
        "data": source,
        "grid_overrides": overrides,
        "runs": len(one["rows"]),
        "jobs1_s": one["seconds"],
        "jobs2_s": two["seconds"],
        "speedup": one["seconds"] / two["seconds"],
        "rows_equal": one["rows"] == two["rows"],
    }


def compare_sweep_backends(quick: bool, scratch: Path) -> dict:
    """The sweep on `exp2.jobs` local processes and on a local Dask cluster of as many workers, side by side.

    The rows must be equal; the difference in wall time, per run, is what Dask costs here: its
    cluster's start against the pool's, the data sent with every run, the scheduler's round trips.
    """
    cwd, source = sweep_data_dir(scratch)
    overrides = {"epochs": [2, 3]} if quick else {}
    processes = run_sweep_child(cwd, {**overrides, "backend": "processes"})
    dask = run_sweep_child(cwd, {**overrides, "backend": "dask"})
    runs = len(processes["rows"])
    return {
        "data": source,
        "grid_overrides": overrides,
        "runs": runs,
        "jobs": load_params(REPO / "params.yaml").exp2.jobs,
        "processes_s": processes["seconds"],
        "dask_s": dask["seconds"],
        "dask_overhead_per_run_s": (dask["seconds"] - processes["seconds"]) / runs,
        "rows_equal": processes["rows"] == dask["rows"],
    }


# --- 4. end to end, in a temporary copy -----------------------------------------------------------


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def make_clone(dest: Path, worktree: bool) -> str:
    """A git repository at dest with the project, and no DVC cache or outputs.

    A clone of HEAD when there is a commit (uncommitted edits are then not measured), else (or with
    worktree=True) a copy of the files git would track, committed once in the copy: `dvc exp run`
    needs a commit to start from. Raw images that DVC rather than git tracks are copied across.
    """
    has_head = _git("rev-parse", "--verify", "HEAD", cwd=REPO).returncode == 0
    if has_head and not worktree:
        _git("clone", "--quiet", str(REPO), str(dest), cwd=REPO).check_returncode()
        source = "git clone of HEAD " + _git("rev-parse", "--short", "HEAD", cwd=REPO).stdout.strip()
    else:
        files = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout.split("\0")
        for name in filter(None, files):
            if (REPO / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, dest / name)
        _git("init", "--quiet", cwd=dest).check_returncode()
        source = "copy of the working tree (tracked and untracked, not ignored), committed in the copy"
    _git("config", "user.name", "signdigits benchmark", cwd=dest)
    _git("config", "user.email", "bench@example.invalid", cwd=dest)
    if not has_head or worktree:
        _git("add", "-A", cwd=dest).check_returncode()
        _git("commit", "--quiet", "-m", "benchmark snapshot", cwd=dest).check_returncode()
    if not (dest / "data/raw").exists() and (REPO / "data/raw").is_dir():
        shutil.copytree(REPO / "data/raw", dest / "data/raw")
        source += "; data/raw copied in"
    return source


def timed_dvc(args: list[str], cwd: Path, env: dict) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    ran = [line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage '")]
    return {
        "command": "dvc " + " ".join(args),
        "seconds": seconds,
        "stages_run": ran,
        "stdout": done.stdout,
        "log": done.stdout + done.stderr,
    }


_TIMING = re.compile(r"^timing (\w+): start-up ([\d.?]+)s?, work ([\d.]+)s, writing ([\d.]+)s$", re.M)


def stage_timings(log: str) -> dict:
    """The timing line every stage logs (core/cli.py): start-up (interpreter, imports), work, writing outputs."""
    return {
        name: {"startup_s": None if startup == "?" else float(startup), "work_s": float(work), "write_s": float(write)}
        for name, startup, work, write in _TIMING.findall(log)
    }


def set_param(clone: Path, dotted: str, value) -> None:
    """Edit params.yaml of the copy (not committed): the next `dvc repro` sees the change."""
    import yaml

    path = clone / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    *parents, last = dotted.split(".")
    section = raw
    for key in parents:
        section = section[key]
    section[last] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def seeds_table(clone: Path, env: dict, seeds: range) -> dict:
    """The final model's test accuracy per seed: `dvc exp run --queue -S seed=...`, as the README says."""
    values = ",".join(map(str, seeds))
    queued = timed_dvc(["exp", "run", "--queue", "-S", f"seed={values}"], clone, env)["log"]
    names = set(re.findall(r"Queued experiment '([\w-]+)'", queued))  # not the lr experiment run before
    started = time.perf_counter()
    timed_dvc(["queue", "start", "-j", "1"], clone, env)
    while "Queued" in (status := timed_dvc(["queue", "status"], clone, env)["log"]) or "Running" in status:
        time.sleep(2)
    rows = json.loads(timed_dvc(["exp", "show", "--json"], clone, env)["stdout"])
    accuracy = {}
    for exp in next(r for r in rows if r["rev"] != "workspace").get("experiments") or []:
        if exp["revs"][0].get("name") not in names:
            continue
        data = exp["revs"][0]["data"]
        seed = data["params"]["params.yaml"]["data"]["seed"]
        metrics = data.get("metrics", {}).get("metrics/evaluate.json", {}).get("data")
        if metrics and seed in seeds:
            accuracy[seed] = metrics["final"]["test_accuracy"]
    values = [accuracy[s] for s in sorted(accuracy)]
    return {
        "command": f"dvc exp run --queue -S seed={','.join(map(str, seeds))} && dvc queue start",
        "test_accuracy": {str(s): accuracy[s] for s in sorted(accuracy)},
        "mean": statistics.mean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values) if values else None,
        "seconds": time.perf_counter() - started,
        "status": status,
    }


def end_to_end(scratch: Path, worktree: bool, seeds: range | None) -> dict:
    """In a fresh copy with no DVC cache: cold `dvc repro --force` (portable, then native), no-op `dvc repro`,
    `dvc exp run -S lr=<new>`, and the final model's test accuracy over seeds.

    Cold means every stage with an empty DVC cache: a plain `dvc repro` in a fresh clone skips the
    stages whose outputs all come from git (sweep_exp2, evaluate), which would flatter the figure.
    The experiment sets an lr other than the committed one, so that train_best and evaluate run.
    """
    if not (REPO / "dvc.yaml").is_file():
        return {"skipped": "no dvc.yaml in the repository yet"}
    clone = scratch / "clone"
    clone.mkdir()
    source = make_clone(clone, worktree)
    if not (clone / "dvc.yaml").is_file():
        return {"skipped": f"dvc.yaml is not committed ({source}); use --worktree"}
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(clone / "src")  # the copy's code, not the editable install's
    for name in PORTABLE_ENV:  # each stage pins what its params ask for; nothing inherited from here
        env.pop(name, None)
    new_lr = 0.003 if load_params(clone / "params.yaml").final.lr != 0.003 else 0.002
    results = {"source": source, "cold_repro": timed_dvc(["repro", "--force"], clone, env)}
    results["stages"] = stage_timings(results["cold_repro"]["log"])
    results["noop_repro"] = timed_dvc(["repro"], clone, env)
    results["exp_run"] = timed_dvc(["exp", "run", "-S", f"lr={new_lr}"], clone, env)
    _git("reset", "--quiet", "--hard", cwd=clone)  # not `checkout -- .`: DVC staged the experiment's files
    if seeds:
        results["seeds"] = seeds_table(clone, env, seeds)
    set_param(clone, "runtime.cpu_kernels", "native")
    results["cold_repro_native"] = timed_dvc(["repro", "--force"], clone, env)
    results["stages_native"] = stage_timings(results["cold_repro_native"]["log"])
    _git("reset", "--quiet", "--hard", cwd=clone)  # not `checkout -- .`: DVC staged the experiment's files
    for key in ("cold_repro", "noop_repro", "exp_run", "cold_repro_native"):
        del results[key]["log"], results[key]["stdout"]  # long; the timing lines are parsed above
    return results


# --- report ---------------------------------------------------------------------------------------


def verdict(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    rule, test = TARGETS[name]
    return f"{'PASS' if test(value) else 'MISS'} ({rule})"


def report(results: dict) -> None:
    """A readable table of every figure, with its target beside it."""
    m = results["machine"]
    load = f"load average {m['load_start']} -> {m['load_end']}"
    print(f"\n{m['cpu']}, {m['threads']} threads, torch {m['torch']}, {load}")
    if "engine" in results:
        report_engine(results)
    sweep = results.get("sweep")
    if sweep:
        print(f"\n3. sweep exp2, {sweep['runs']} runs, overrides {sweep['grid_overrides'] or 'none'} ({sweep['data']})")
        print(f"   jobs 1: {sweep['jobs1_s']:.1f}s  jobs 2: {sweep['jobs2_s']:.1f}s  speedup {sweep['speedup']:.2f}x")
        print(f"   result rows equal: {sweep['rows_equal']}")
    backends = results.get("sweep_backends")
    if backends:
        print(f"\n3b. sweep exp2, {backends['runs']} runs, {backends['jobs']} local processes vs a local Dask cluster"
              f" of {backends['jobs']} workers, overrides {backends['grid_overrides'] or 'none'}")  # fmt: skip
        print(f"   processes: {backends['processes_s']:.1f}s  dask: {backends['dask_s']:.1f}s"
              f"  Dask overhead per run {backends['dask_overhead_per_run_s']:+.2f}s")  # fmt: skip
        print(f"   result rows equal: {backends['rows_equal']}")
    e2e = results.get("e2e", {})
    print("\n4. end to end: " + (e2e.get("skipped") or e2e.get("source", "")))
    for key in ("cold_repro", "noop_repro", "exp_run", "cold_repro_native"):
        if key in e2e:
            ran = ", ".join(e2e[key]["stages_run"]) or "no stage"
            print(f"   {e2e[key]['command']:<28} {e2e[key]['seconds']:>7.1f}s  ran: {ran}")
    if "stages" in e2e:
        print("\n   per stage, cold (seconds)   start-up    work   write | native: work")
        for name, t in e2e["stages"].items():
            native = e2e.get("stages_native", {}).get(name, {}).get("work_s")
            startup = "?" if t["startup_s"] is None else f"{t['startup_s']:.2f}"
            print(f"   {name:<26} {startup:>9} {t['work_s']:>7.2f} {t['write_s']:>7.2f} | {native or 0:>7.2f}")
        portable, native = e2e["cold_repro"]["seconds"], e2e["cold_repro_native"]["seconds"]
        print(f"   portable costs {portable - native:+.1f}s on the cold run ({portable / native:.2f}x native)")
    seeds = e2e.get("seeds")
    if seeds and seeds["mean"] is not None:
        shown = ", ".join(f"seed {k}: {v:.2%}" for k, v in seeds["test_accuracy"].items())
        std = f" +- {seeds['std']:.2%}" if seeds["std"] is not None else ""
        print(f"\n5. final model test accuracy, {shown}; mean {seeds['mean']:.2%}{std}, min {seeds['min']:.2%}")
    print("\ntargets")
    for name, value in results["targets"].items():
        shown = "not measured" if value is None else f"{value:.3g}"
        print(f"   {name:<22} {shown:>12}  {verdict(name, value)}")


def report_engine(results: dict) -> None:
    print(f"\n1-2. exp1 network, seconds per epoch ({N_TRAIN} train + {N_VAL} val images, median, warm-up excluded)")
    header = ("batch", "steps", "engine", "reference", "speedup", "(best)", "GFLOP/s", "of matmul")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 6, 9, 10, 8, 7, 8, 10), strict=True)))
    for batch, row in results["engine"].items():
        f = results["flops"][batch]
        print(
            f"{batch:>6} {row['steps_per_epoch']:>6} {row['engine_s_per_epoch']:>9.4f}"
            f" {row['reference_s_per_epoch']:>10.4f} {row['speedup']:>7.2f}x {row['speedup_best']:>6.2f}x"
            f" {f['gflops']:>8.1f} {f['fraction_of_matmul']:>9.1%}"
        )
    print(f"matmul ceiling (2048^3 float32): {results['matmul_gflops']:.1f} GFLOP/s")
    if results.get("cuda"):
        cuda = results["cuda"]
        times = ", ".join(f"batch {b}: {cuda[b]['engine_s_per_epoch']:.4f}s" for b in BATCH_SIZES)
        print(f"cuda ({cuda['device_name']}) engine per epoch: {times}")
    else:
        print("cuda: not available on this machine")


def target_values(results: dict) -> dict:
    e2e = results.get("e2e", {})
    sweep = results.get("sweep") or {}

    def seconds(key):
        return e2e[key]["seconds"] if key in e2e else None

    engine, flops = results.get("engine", {}), results.get("flops", {})
    return {
        "speedup_b32": engine[32]["speedup"] if engine else None,
        "matmul_fraction_b256": flops[256]["fraction_of_matmul"] if flops else None,
        "matmul_fraction_b32": flops[32]["fraction_of_matmul"] if flops else None,
        "sweep_speedup": sweep.get("speedup"),
        "cold_repro_s": seconds("cold_repro"),
        "noop_repro_s": seconds("noop_repro"),
        "exp_run_s": seconds("exp_run"),
        "seeds_mean_test_accuracy": (e2e.get("seeds") or {}).get("mean"),
        "seeds_min_test_accuracy": (e2e.get("seeds") or {}).get("min"),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, sweep epochs [2, 3], no end-to-end part")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end dvc part")
    parser.add_argument("--no-engine", action="store_true", help="skip the engine and GFLOP/s parts (1, 2)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the sweep part")
    parser.add_argument("--worktree", action="store_true", help="end to end on a copy of the working tree, not HEAD")
    parser.add_argument("--no-seeds", action="store_true", help="skip the final model's seeds 0-4 table")
    parser.add_argument("--threads", type=int, help="CPU threads (default: runtime.threads of params.yaml)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results.json", help="JSON file to write")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    threads = args.threads or load_params(REPO / "params.yaml").runtime.threads
    epochs, rounds = (6, 2) if args.quick else (12, 3)
    results = {
        "quick": args.quick,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": threads,
            "torch": torch.__version__,
            "load_start": [round(x, 2) for x in os.getloadavg()],
        },
    }
    for line in open("/proc/cpuinfo") if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            results["machine"]["cpu"] = line.split(":", 1)[1].strip()
            break
    if not args.no_engine:
        print(f"1. engine vs reference, {rounds} x {epochs} epochs per batch size ...", flush=True)
        results["engine"] = compare_engine(threads, epochs, rounds)
        print("2. matmul ceiling ...", flush=True)
        results["matmul_gflops"] = matmul_gflops(threads)
        results["flops"] = flops_efficiency(results["engine"], results["matmul_gflops"])
        results["cuda"] = cuda_epochs(epochs)
    with tempfile.TemporaryDirectory(prefix="signdigits-bench-") as tmp:
        if not args.no_sweep:
            print("3. sweep, jobs 1 then jobs 2 ...", flush=True)
            results["sweep"] = compare_sweep(args.quick, Path(tmp))
            print("3b. sweep, local processes then a local Dask cluster ...", flush=True)
            results["sweep_backends"] = compare_sweep_backends(args.quick, Path(tmp))
        if args.quick or args.no_e2e:
            results["e2e"] = {"skipped": "--quick" if args.quick else "--no-e2e"}
        else:
            print(
                "4-5. end to end (cold dvc repro, no-op, exp run, seeds 0-4, cold again with native kernels) ...",
                flush=True,
            )
            results["e2e"] = end_to_end(Path(tmp), args.worktree, None if args.no_seeds else range(5))
    results["machine"]["load_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = target_values(results)
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    if results.get("sweep") and not results["sweep"]["rows_equal"]:
        sys.exit("sweep rows differ between jobs 1 and jobs 2")
    if results.get("sweep_backends") and not results["sweep_backends"]["rows_equal"]:
        sys.exit("sweep rows differ between local processes and a local Dask cluster")


if __name__ == "__main__":
    main()
