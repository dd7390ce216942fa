"""How fast signdigits is on this machine, and where the time goes. From the repository root:

    python benchmarks/bench.py [--rev REV] [--repeat 5] [--parts engine,busy,fixed,e2e,aside,sweep,native] [--out FILE]
    python benchmarks/bench.py --parts stages --against OLD [--rev NEW] [--repeat 4]
    python benchmarks/bench.py --quick      # a smoke run in seconds: the engine idle and beside a busy process

1. the engine: seconds per epoch of `signdigits.training.engine.train` on the exp1 network at batch
   32, 64 and 256 (synthetic data of the real shape), and its matmul GFLOP/s as a share of one large
   matmul's; and on train_cnn's network, its convolutions in ATen (what portable runs) and in oneDNN;
2. the fixed costs every stage process pays, each in fresh interpreters (medians of --repeat,
   interleaved): `import torch`, importing torch._dynamo, constructing and stepping torch.optim.AdamW
   against training.optim's, torch.use_deterministic_algorithms against the engine's switch, importing
   sklearn.metrics (which reporting/metrics.py does without), and the interpreter's exit with and
   without gc.freeze();
   With `busy`, train_best's and train_cnn's epochs idle, idle on one thread, and beside one busy neighbour
   process (`yes > /dev/null`, started and ended by the benchmark), interleaved: the ratio, the floor
   (the epoch's arithmetic at the measured matmul peak), and the other cores' speed-up idle (one thread's
   time over idle's), below which the ratio cannot go where the neighbour leaves one core;
3. end to end in a git clone of --rev with no DVC cache: cold `dvc repro --force`, no-op `dvc repro`,
   `dvc exp run -S lr=<another>`, each stage's start-up / work / writing from its own timing line, and
   DVC's own time (what is left of `dvc exp run` after its stage processes); each run again beside one
   busy neighbour process (the ratio per stage), and each training stage's floor; with `aside`, evaluate
   alone with its figures drawn in a second process (as shipped) and in its own (medians of --repeat);
4. in the same clone: the exp2 sweep on local processes against a local Dask cluster (the same rows);
5. the cold run again with `runtime.cpu_kernels: native`: what `portable` costs;
6. with `stages`, train_best, train_cnn and evaluate as DVC runs them (`python stages/<stage>.py`) in a
   clone of --against and a clone of --rev, interleaved over --repeat rounds: each one's work (its timing
   line), the medians and their ratio. On a shared machine whose speed drifts by a fifth within minutes,
   interleaving puts the drift on both sides; the clones read their data from this repository's DVC cache.

Timings are wall clock: other work on the machine slows them (the load average is printed).
benchmarks/prepare_photos.py measures prepare at phone-photo size.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from signdigits.core.kernels import PORTABLE_ENV, WAIT_ENV, pin_cpu_kernels
from signdigits.core.params import Composite, Runtime, TrainParams, load_params
from signdigits.devtools import git_clone, run, stages_run, venv_env

REPO = Path(__file__).resolve().parents[1]

pin_cpu_kernels(load_params(REPO / "params.yaml").runtime.cpu_kernels)  # before torch loads, as every stage does

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from signdigits.training import products  # noqa: E402
from signdigits.training.engine import Part, setup_runtime, train  # noqa: E402
from signdigits.training.sweep import Grid  # noqa: E402

_PER_DIGIT = json.loads((REPO / "metrics" / "split.json").read_text())["images_per_digit"]
N_TRAIN, N_VAL = (sum(_PER_DIGIT[part].values()) for part in ("train", "val"))  # the committed split's sizes
IMAGE_SIZE, N_CLASSES = 28, 10
EXP1 = TrainParams(hidden=(256, 128, 64), dropout=0.4, optimizer="adam", lr=0.001, seed=0)
# The goals of issue 33, in seconds on this project's 2-core machine; beside one busy neighbour process,
# every training stage at most BUSY_TARGET times its idle time
TARGETS = {"cold_repro_s": 50, "noop_repro_s": 0.7, "exp_run_s": 15, "train_best": 8, "train_cnn": 15}
BUSY_TARGET = 1.5
QUICK_IMAGES = (256, 64)  # --quick: training and val images of the synthetic data
_TIMING = re.compile(r"^timing (\w+): start-up ([\d.?]+)s?, work ([\d.]+)s, writing ([\d.]+)s$", re.M)


# --- 1. the engine --------------------------------------------------------------------------------


def engine_epochs(
    batch: int, epochs: int, threads: int | str, cfg: TrainParams = EXP1, images=(N_TRAIN, N_VAL)
) -> float:
    """Median seconds per epoch of train() after the first (warm-up), from the gaps between its epoch log lines.

    With cfg.channels, a CNN, trained on the plain photos (no composite), as the recorded numbers were;
    `threads`: a count, or auto (the engine takes the cores idle at its start);
    `images`: how many training and val images (the committed split's by default).
    """
    setup_runtime(Runtime(device="cpu", threads=threads))
    rng = np.random.default_rng(0)
    data = [
        Part.from_arrays(rng.integers(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8),
                          rng.integers(0, N_CLASSES, n), torch.device("cpu"))
        for n in images
    ]  # fmt: skip
    stamps = []
    handler = logging.Handler()
    handler.emit = lambda record: " epoch " in record.getMessage() and stamps.append(time.perf_counter())
    logger = logging.getLogger("signdigits.training.engine")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        train(
            dataclasses.replace(cfg, batch_size=batch, epochs=epochs, composite=Composite()),
            *data, list(range(N_CLASSES)), "bench",
        )  # fmt: skip
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return statistics.median(np.diff(stamps))  # epochs 2, 3, ...: each ends with its log line


def matmul_share(seconds_per_epoch: float, n: int = 2048) -> float:
    """The epoch's matmul FLOP/s (forward, both backward products but the pixels' gradient, the val pass)
    as a share of an n x n float32 matmul's."""
    widths = [IMAGE_SIZE**2, *EXP1.hidden, N_CLASSES]
    macs = sum(i * o for i, o in zip(widths[:-1], widths[1:], strict=False))
    flops = N_TRAIN * (6 * macs - 2 * widths[0] * widths[1]) + N_VAL * 2 * macs
    return flops / seconds_per_epoch / matmul_peak(n)


def matmul_peak(n: int = 2048) -> float:
    """FLOP/s of an n x n float32 product on the networks' path (training/products.py: OpenBLAS, one thread;
    median of 5 after a warm-up): the floor's yardstick."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = []
    for _ in range(6):
        started = time.perf_counter()
        products.matmul(a, b)
        times.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(times[1:])


def training_flops(cfg: TrainParams, n_train: int, n_val: int, classes: int = N_CLASSES) -> float:
    """The arithmetic of a training: its products and convolutions (2 FLOPs a multiply-add), forward and
    backward (twice the forward) on the training images and forward on the val images, every epoch."""
    side, before, macs = IMAGE_SIZE, 1, 0
    for after in cfg.channels:  # 3x3, padding 1, then a 2x2 pool
        macs += 9 * before * after * side * side
        side, before = side // 2, after
    widths = [before * side * side if cfg.channels else IMAGE_SIZE**2, *cfg.hidden, classes]
    macs += sum(a * b for a, b in itertools.pairwise(widths))
    return 2 * macs * (3 * n_train + n_val) * cfg.epochs * cfg.ensemble


def stage_flops(params_file: Path) -> dict[str, float]:
    """Each training stage's arithmetic, from a params.yaml and the committed split's sizes."""
    p = load_params(params_file)
    digits = [str(d) for d in p.train_binary.digits]
    binary = [sum(_PER_DIGIT[part][d] for d in digits) for part in ("train", "val")]
    return {
        "train_binary": training_flops(p.train_binary.model, *binary, classes=len(digits)),
        "train_base": training_flops(p.train_base, N_TRAIN, N_VAL),
        "train_exp1": training_flops(p.train_exp1, N_TRAIN, N_VAL),
        "sweep_exp2": sum(training_flops(cfg, N_TRAIN, N_VAL) for cfg in Grid(p.exp2)),
        "train_best": training_flops(p.final, N_TRAIN, N_VAL),
        "train_cnn": training_flops(p.train_cnn.model, N_TRAIN, N_VAL),
    }


_BUSY = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass"  # ends with the benchmark


@contextlib.contextmanager
def busy_neighbour(busy: bool = True):
    """One other process busy on a core for the length of the block (like `yes > /dev/null`), ended after it."""
    if not busy:
        yield
        return
    neighbour = subprocess.Popen([sys.executable, "-c", _BUSY])
    try:
        yield
    finally:
        neighbour.kill()
        neighbour.wait()


def epochs_beside_a_neighbour(epochs: int, rounds: int, threads: int | str, images=(N_TRAIN, N_VAL)) -> dict:
    """train_best's and train_cnn's seconds per epoch (synthetic data of the real shape, `images` training
    and val images), idle, idle on one thread, and beside one busy process, interleaved over `rounds`;
    medians, the busy/idle ratio, the epoch's floor, and what the other cores give idle (one thread's time
    over idle's): beside a neighbour that takes one of two cores a stage has one core's worth, so its ratio
    can be no lower than that speed-up."""
    p = load_params(REPO / "params.yaml")
    peak = matmul_peak()
    out = {"matmul_peak_gflops": peak / 1e9, "images": list(images)}
    conditions = {"idle": (False, threads), "one_thread": (False, 1), "busy": (True, threads)}
    for name, cfg in (("train_best", p.final), ("train_cnn", p.train_cnn.model)):
        seconds = {condition: [] for condition in conditions}
        for _, (condition, (busy, count)) in itertools.product(range(rounds), conditions.items()):
            with busy_neighbour(busy):
                seconds[condition].append(engine_epochs(cfg.batch_size, epochs, count, cfg, images=images))
        idle, one, loaded = (statistics.median(seconds[condition]) for condition in conditions)
        floor = training_flops(dataclasses.replace(cfg, epochs=1), *images) / peak
        out[name] = {"idle_s": idle, "one_thread_s": one, "busy_s": loaded, "ratio": loaded / idle,
                     "other_cores_speedup": one / idle, "floor_s": floor}  # fmt: skip
    return out


# --- 2. fixed costs of a stage process ------------------------------------------------------------

_CHILDREN = {  # name -> code printing seconds; "exit" ones print time.time() just before the interpreter exits
    "import torch": "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)",
    "import torch._dynamo": "import torch, time; t = time.perf_counter(); import torch._dynamo; "
    "print(time.perf_counter() - t)",
    "torch.optim.AdamW, first step": "import torch, time; n = torch.nn.Linear(784, 10); t = time.perf_counter(); "
    "o = torch.optim.AdamW(n.parameters(), fused=True); n(torch.ones(1, 784)).sum().backward(); o.step(); "
    "o.zero_grad(); print(time.perf_counter() - t)",
    "training.optim AdamW, first step": "import torch, time; from signdigits.training import optim; "
    "n = torch.nn.Linear(784, 10); t = time.perf_counter(); "
    "o = optim.make('adamw', n.parameters(), 1e-3, 0.01, 0, {'fused': True}); "
    "n(torch.ones(1, 784)).sum().backward(); o.step(); o.zero_grad(); print(time.perf_counter() - t)",
    "torch.use_deterministic_algorithms(True)": "import torch, time; t = time.perf_counter(); "
    "torch.use_deterministic_algorithms(True); print(time.perf_counter() - t)",
    "engine._use_deterministic_algorithms()": "import time; from signdigits.training import engine; "
    "t = time.perf_counter(); engine._use_deterministic_algorithms(); print(time.perf_counter() - t)",
    "import sklearn.metrics (numpy loaded)": "import numpy, time; t = time.perf_counter(); import sklearn.metrics; "
    "print(time.perf_counter() - t)",
    "exit of a training process": "import time, torch; from signdigits.training import engine; print(time.time())",
    "exit of a training process, gc.freeze()": "import gc, time, torch; from signdigits.training import engine; "
    "gc.freeze(); print(time.time())",
}


def fixed_costs(repeat: int) -> dict:
    """Median seconds of each child's measurement over `repeat` interleaved rounds."""
    seconds = {name: [] for name in _CHILDREN}
    for _ in range(repeat):
        for name, code in _CHILDREN.items():
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            seconds[name].append(time.time() - float(out) if name.startswith("exit") else float(out))
    return {name: statistics.median(values) for name, values in seconds.items()}


_EVALUATE_FIGURES_HERE = """import runpy, sys
from signdigits.core.kernels import pin_cpu_kernels
from signdigits.core.params import load_params
pin_cpu_kernels(load_params().runtime.cpu_kernels)  # before figures imports numpy, as run_stage would
from signdigits.reporting import figures
figures.usable_cores = lambda: 1  # drawn_aside then draws every figure in this process
sys.argv = ["stages/evaluate.py"]
runpy.run_path("stages/evaluate.py", run_name="__main__")"""


def figures_aside(clone: Path, env: dict, repeat: int) -> dict:
    """Median seconds of `python stages/evaluate.py` with its figures drawn in a second process (as shipped)
    and in its own process, interleaved."""
    seconds = {"figures in a second process": [], "figures in the stage's process": []}
    for _ in range(repeat):
        for name, args in zip(seconds, (["stages/evaluate.py"], ["-c", _EVALUATE_FIGURES_HERE]), strict=True):
            started = time.perf_counter()
            run([sys.executable, *args], cwd=clone, env=env)
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


# --- 3-5. end to end in a clone -------------------------------------------------------------------


def timed(args: list[str], cwd: Path, env: dict) -> dict:
    started = time.perf_counter()
    done = run(args, cwd=cwd, env=env)
    log = done.stdout + done.stderr
    stages = {name: {"startup_s": float(up) if up != "?" else None, "work_s": float(work), "write_s": float(write)}
              for name, up, work, write in _TIMING.findall(log)}  # fmt: skip
    return {"seconds": time.perf_counter() - started, "ran": stages_run(done.stdout), "stages": stages}


def set_cpu_kernels(clone: Path, mode: str) -> None:
    """Edit the clone's params.yaml (not committed): the next `dvc repro` runs with these kernels."""
    raw = yaml.safe_load((clone / "params.yaml").read_text())
    raw["runtime"]["cpu_kernels"] = mode
    (clone / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


_SWEEP = """import json, sys, time
from signdigits.core.kernels import pin_cpu_kernels
from signdigits.core.params import load_params
params = load_params()
pin_cpu_kernels(params.runtime.cpu_kernels)
import dataclasses
from signdigits.training.sweep import load_sweep_data, run_sweep
sweep = dataclasses.replace(params.exp2, backend=sys.argv[1])
t = time.perf_counter()
rows = run_sweep(sweep, params.runtime, load_sweep_data())
print(json.dumps({"seconds": time.perf_counter() - t, "rows": rows}))"""


def processes_vs_dask(clone: Path, env: dict) -> dict:
    """The exp2 sweep on exp2.jobs local processes, then on a local Dask cluster of as many workers."""
    env = {k: v for k, v in env.items() if k != "DASK_SCHEDULER_ADDRESS"}
    out = {b: json.loads(run([sys.executable, "-c", _SWEEP, b], cwd=clone, env=env).stdout.splitlines()[-1])
           for b in ("processes", "dask")}  # fmt: skip
    runs = len(out["processes"]["rows"])
    return {
        "runs": runs,
        "processes_s": out["processes"]["seconds"],
        "dask_s": out["dask"]["seconds"],
        "dask_per_run_s": (out["dask"]["seconds"] - out["processes"]["seconds"]) / runs,
        "rows_equal": out["processes"]["rows"] == out["dask"]["rows"],
    }


def clone_env(clone: Path) -> dict[str, str]:
    """The venv's environment on the clone's code, no kernel pins inherited: each stage pins what its params ask."""
    env = {**venv_env(), "PYTHONPATH": str(clone / "src")}
    for name in (*PORTABLE_ENV, *WAIT_ENV, "OMP_WAIT_POLICY"):
        env.pop(name, None)
    return env


def clone_at(target: Path, rev: str) -> Path:
    """A git clone of this repository at `rev` (committed code only)."""
    clone = git_clone(REPO, target)
    run(["git", "checkout", "--quiet", rev], cwd=clone)
    return clone


def short_rev(clone: Path) -> str:
    return run(["git", "rev-parse", "--short", "HEAD"], cwd=clone).stdout.strip()


def end_to_end(scratch: Path, rev: str, parts: set[str], repeat: int, peak: float) -> dict:
    """Cold, no-op and experiment runs in a clone of `rev`, idle and beside a busy process, each training
    stage's floor at `peak` FLOP/s; the sweep backends; the cold run with native kernels."""
    clone = clone_at(scratch / "clone", rev)
    env = clone_env(clone)
    lr = load_params(clone / "params.yaml").final.lr
    results = {"rev": short_rev(clone)}
    results["floor_s"] = {name: flops / peak for name, flops in stage_flops(clone / "params.yaml").items()}
    for busy, suffix in ((False, ""), (True, "_busy")):  # each run idle, then beside one busy process
        with busy_neighbour(busy):
            results["cold_repro" + suffix] = timed(["dvc", "repro", "--force"], clone, env)
    noop = {False: [], True: []}
    for _, busy in itertools.product(range(repeat), (False, True)):
        with busy_neighbour(busy):
            noop[busy].append(timed(["dvc", "repro"], clone, env))
    for busy, suffix in ((False, ""), (True, "_busy")):
        results["noop_repro" + suffix] = sorted(noop[busy], key=lambda t: t["seconds"])[len(noop[busy]) // 2]
    for busy, suffix, factor in ((False, "", 2), (True, "_busy", 3)):  # another lr each: no run-cache hit
        with busy_neighbour(busy):
            results["exp_run" + suffix] = timed(["dvc", "exp", "run", "-S", f"lr={lr * factor:g}"], clone, env)
        stage_seconds = sum(
            (s["startup_s"] or 0) + s["work_s"] + s["write_s"] for s in results["exp_run" + suffix]["stages"].values()
        )
        results["exp_run" + suffix]["dvc_and_exits_s"] = results["exp_run" + suffix]["seconds"] - stage_seconds
    run(["git", "reset", "--quiet", "--hard"], cwd=clone)
    if "aside" in parts:
        results["evaluate_figures"] = figures_aside(clone, env, repeat)
    if "sweep" in parts:
        results["sweep_backends"] = processes_vs_dask(clone, env)
    if "native" in parts:
        set_cpu_kernels(clone, "native")
        results["cold_repro_native"] = timed(["dvc", "repro", "--force"], clone, env)
        run(["git", "reset", "--quiet", "--hard"], cwd=clone)
    return results


# --- 6. stages against another commit, interleaved ------------------------------------------------

COMPARED_STAGES = ("train_best", "train_cnn", "evaluate")


def stages_against(scratch: Path, against: str, rev: str, rounds: int) -> dict:
    """Median work of each of COMPARED_STAGES in a clone of `against` and one of `rev`, run in turn, `rounds` times."""
    cache = run(["dvc", "cache", "dir"], cwd=REPO).stdout.strip()
    clones = {}
    for side, commit in (("against", against), ("rev", rev)):
        clone = clone_at(scratch / side, commit)
        run(["dvc", "cache", "dir", "--local", cache], cwd=clone)
        checkout = run(["dvc", "checkout", "--quiet"], cwd=clone, check=False)
        if checkout.returncode != 0:
            sys.exit(f"bench.py: this repository's DVC cache lacks {commit}'s outputs; `dvc repro` them first")
        clones[side] = clone
    work = {side: {stage: [] for stage in COMPARED_STAGES} for side in clones}
    for _, stage, (side, clone) in itertools.product(range(rounds), COMPARED_STAGES, clones.items()):
        done = run([sys.executable, f"stages/{stage}.py"], cwd=clone, env=clone_env(clone))
        work[side][stage].append(float(_TIMING.search(done.stdout + done.stderr)[3]))
    commits = {side: short_rev(clone) for side, clone in clones.items()}
    medians = {stage: {side: statistics.median(work[side][stage]) for side in clones} for stage in COMPARED_STAGES}
    return {"commits": commits, "rounds": rounds, "work_s": work, "median_s": medians}


# --- report ---------------------------------------------------------------------------------------


def report(r: dict) -> None:
    print(f"\n{r['machine']['cpu']}, {r['machine']['threads']} threads, torch {torch.__version__}, "
          f"load average {r['machine']['load_start']} -> {r['machine']['load_end']}")  # fmt: skip
    print(f"this process's OpenMP wait: {r['machine']['openmp_wait']} (the e2e stages pin their own)")
    if "engine" in r:
        print(f"\n1. engine, exp1 network ({N_TRAIN} train + {N_VAL} val images), median epoch after the first")
    for batch, row in r.get("engine", {}).items():
        print(f"   batch {batch:>3}: {row['seconds_per_epoch']:.3f} s/epoch, matmul share {row['matmul_share']:.0%}")
    if "cnn" in r:
        print(f"   train_cnn's network, batch {r['cnn']['batch']}: {r['cnn']['seconds_per_epoch']:.3f} s/epoch")
    if "busy" in r:
        b = r["busy"]
        print(f"\n   {b['images'][0]} + {b['images'][1]} images, beside one busy process (matmul peak "
              f"{b['matmul_peak_gflops']:.0f} GFLOP/s), s/epoch:"
              f"   idle   busy  ratio (target <= {BUSY_TARGET})  floor | 1 thread  other cores' speed-up")  # fmt: skip
        for name in ("train_best", "train_cnn"):
            t = b[name]
            print(f"   {name:<50} {t['idle_s']:6.3f} {t['busy_s']:6.3f} {t['ratio']:6.2f}{'':19}{t['floor_s']:6.3f} | "
                  f"{t['one_thread_s']:8.3f}  {t['other_cores_speedup']:6.2f}")  # fmt: skip
    if "fixed_costs" in r:
        print(f"\n2. fixed costs per process, median of {r['repeat']}")
    for name, seconds in r.get("fixed_costs", {}).items():
        print(f"   {name:<42} {seconds:6.2f} s")
    against = r.get("stages")
    if against:
        c = against["commits"]
        print(f"\n6. stages' work, {c['against']} against {c['rev']}, interleaved, median of {against['rounds']}:"
              f"   {c['against']:>8} {c['rev']:>8}  ratio")  # fmt: skip
        for stage, m in against["median_s"].items():
            print(f"   {stage:<66} {m['against']:8.2f} {m['rev']:8.2f} {m['rev'] / m['against']:6.2f}")
    e2e = r.get("e2e")
    if not e2e:
        return
    print(
        f"\n3. end to end, clone of {e2e['rev']}"
        + " " * 18
        + f"seconds: idle  busy  ratio  target (busy <= {BUSY_TARGET}x)"
    )
    for key in ("cold_repro", "noop_repro", "exp_run", "cold_repro_native"):
        if key in e2e:
            idle, busy = e2e[key]["seconds"], e2e.get(key + "_busy", {}).get("seconds", float("nan"))
            goal = f"<= {TARGETS[key + '_s']}" if key + "_s" in TARGETS else ""
            print(
                f"   {key:<20} ran {len(e2e[key]['ran']):>2} stages {idle:9.1f} {busy:5.1f} {busy / idle:6.2f}  {goal}"
            )
    print(f"   dvc exp run: DVC's own time and process exits {e2e['exp_run']['dvc_and_exits_s']:.1f} s")
    print("   per stage, cold          start-up   work  write | busy work  ratio | floor | native work  target")
    for name, t in e2e["cold_repro"]["stages"].items():
        native = e2e.get("cold_repro_native", {}).get("stages", {}).get(name, {}).get("work_s", float("nan"))
        busy = e2e.get("cold_repro_busy", {}).get("stages", {}).get(name, {}).get("work_s", float("nan"))
        floor = e2e.get("floor_s", {}).get(name, float("nan"))
        goal = f"<= {TARGETS[name]}" if name in TARGETS else ""
        print(f"   {name:<24} {t['startup_s'] or 0:8.2f} {t['work_s']:6.2f} {t['write_s']:6.2f} | {busy:9.2f} "
              f"{busy / t['work_s']:6.2f} | {floor:5.2f} | {native:11.2f}  {goal}")  # fmt: skip
    for name, seconds in e2e.get("evaluate_figures", {}).items():
        print(f"   python stages/evaluate.py, {name:<31} {seconds:6.2f} s (median of {r['repeat']})")
    s = e2e.get("sweep_backends")
    if s:
        print(f"\n4. sweep, {s['runs']} runs: processes {s['processes_s']:.1f} s, Dask {s['dask_s']:.1f} s "
          f"({s['dask_per_run_s']:+.2f} s a run), rows equal: {s['rows_equal']}")  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to run end to end (uncommitted edits are not)")
    parser.add_argument("--against", help="with --parts stages: the commit whose stages --rev's are compared with")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the fixed-cost measurements")
    parser.add_argument("--epochs", type=int, default=8, help="engine epochs per batch size")
    parser.add_argument("--parts", default="engine,busy,fixed,e2e,aside,sweep,native", help="what to measure (1-6)")
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds: --parts busy, 2 epochs, 1 round")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.parts, args.epochs, args.repeat = "busy", 2, 1
    parts = set(args.parts.split(","))
    if "stages" in parts and not args.against:
        parser.error("--parts stages needs --against REV")
    threads = load_params(REPO / "params.yaml").runtime.threads
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    results = {"machine": {"cpu": cpu, "threads": threads, "load_start": os.getloadavg()}, "repeat": args.repeat}
    wait = {name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", *WAIT_ENV)}
    results["machine"]["openmp_wait"] = " ".join(f"{k}={v}" for k, v in wait.items() if v is not None)
    if "engine" in parts:
        results["engine"] = {}
        for batch in (32, 64, 256):
            seconds = engine_epochs(batch, args.epochs, threads)
            results["engine"][batch] = {"seconds_per_epoch": seconds, "matmul_share": matmul_share(seconds)}
        cnn = load_params(REPO / "params.yaml").train_cnn
        results["cnn"] = {
            "batch": cnn.model.batch_size,
            "seconds_per_epoch": engine_epochs(cnn.model.batch_size, args.epochs, threads, cnn.model),
        }
    if "busy" in parts:
        images = QUICK_IMAGES if args.quick else (N_TRAIN, N_VAL)
        results["busy"] = epochs_beside_a_neighbour(args.epochs, max(1, args.repeat // 2), threads, images)
    if "fixed" in parts:
        results["fixed_costs"] = fixed_costs(args.repeat)
    if "stages" in parts:
        with tempfile.TemporaryDirectory(prefix="signdigits-bench-") as tmp:
            results["stages"] = stages_against(Path(tmp), args.against, args.rev, args.repeat)
    if "e2e" in parts:
        with tempfile.TemporaryDirectory(prefix="signdigits-bench-") as tmp:
            results["e2e"] = end_to_end(Path(tmp), args.rev, parts, args.repeat, matmul_peak())
    results["machine"]["load_end"] = os.getloadavg()
    report(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
