"""sweep_exp2: train every grid configuration, in `jobs` processes at once, and pick the winner.

Each run uses `threads_per_job` threads whatever `jobs` is, so the results do not depend on how
many run side by side: jobs only changes the wall time.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

from signdigits.core.params import Runtime, SweepParams, TrainParams

log = logging.getLogger(__name__)

RESULT_COLUMNS = (
    "run",
    "label",
    "lr",
    "batch_size",
    "epochs",
    "optimizer",
    "val_accuracy",
    "val_loss",
    "train_accuracy",
    "epochs_run",
)

_worker_data = None  # (device, StageData) of this process, set once per worker


def _init_worker(runtime: Runtime, threads: int) -> None:
    global _worker_data
    logging.basicConfig(level=logging.WARNING)
    from signdigits.training.engine import setup_runtime
    from signdigits.training.stage import load_stage_data

    device = setup_runtime(runtime, threads=threads)
    _worker_data = load_stage_data(device)


def _train_one(run: int, cfg: TrainParams) -> dict:
    from signdigits.training.engine import evaluate, train

    data = _worker_data
    started = time.perf_counter()
    result = train(cfg, data.train, data.val, data.classes, name=f"sweep run {run}")
    val, tr = evaluate(result.model, data.val), evaluate(result.model, data.train)
    log.warning(
        "sweep run %d: lr %g batch %d epochs %d %s -> val acc %.4f loss %.4f (%.1fs)",
        run, cfg.lr, cfg.batch_size, cfg.epochs, cfg.optimizer, val.accuracy, val.loss, time.perf_counter() - started,
    )  # fmt: skip
    return {
        "run": run,
        "label": f"{cfg.optimizer} lr={cfg.lr:g} bs={cfg.batch_size} ep={cfg.epochs}",
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "optimizer": cfg.optimizer,
        "val_accuracy": val.accuracy,
        "val_loss": val.loss,
        "train_accuracy": tr.accuracy,
        "epochs_run": result.epochs_run,
    }


def run_sweep(sweep: SweepParams, runtime: Runtime) -> list[dict]:
    """One result row per grid configuration, in grid order."""
    configs = sweep.grid()
    if sweep.jobs == 1:
        _init_worker(runtime, sweep.threads_per_job)
        return [_train_one(i, cfg) for i, cfg in enumerate(configs)]
    # spawn, not fork: a forked child of a process that already started torch's thread pool can hang
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(sweep.jobs, len(configs)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(runtime, sweep.threads_per_job),
    ) as pool:
        # the longest runs first, so no worker is left with one long run at the end
        by_cost = sorted(range(len(configs)), key=lambda i: -configs[i].epochs / configs[i].batch_size)
        futures = {i: pool.submit(_train_one, i, configs[i]) for i in by_cost}
        return [futures[i].result() for i in range(len(configs))]


def pick_winner(rows: list[dict]) -> dict:
    """Highest val accuracy; ties to the lower val loss, then to the earlier run in grid order."""
    return min(rows, key=lambda r: (-r["val_accuracy"], r["val_loss"], r["run"]))


def results_csv(rows: list[dict]) -> str:
    from signdigits.core.files import csv_text

    return csv_text(rows, RESULT_COLUMNS)
