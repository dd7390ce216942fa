"""sweep_exp2: train every grid configuration, in local processes or on a Dask cluster, and pick the winner.

Each run is a pure function of its configuration, the data and the seed (`train_config`), with
`threads_per_job` threads and the stage's CPU kernels wherever it runs, so the rows do not depend
on the backend, the number of workers or the order runs finish in: those change the wall time only.
Both backends share that function and the loop that collects the rows (`run_sweep`).

Over 400 lines on purpose: most of it is what a Dask cluster someone else started can get wrong (an
unreachable or lost scheduler, a worker with other code or kernels), each turned into one line; it
lives beside `run_sweep` because the local backend goes through the same loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import logging
import math
import os
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_local
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from signdigits.core import lifeline
from signdigits.core.data import DIGITS, load_train_val
from signdigits.core.errors import PipelineError
from signdigits.core.kernels import pin_cpu_kernels
from signdigits.core.limits import OPTIMIZER_STATES, require_memory, training_bytes, usable_cores
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

CONNECT_TIMEOUT_S = 5  # to a Dask scheduler; Dask's own default (30 s) is long to wait for a typo
ANSWER_TIMEOUT_S = 2  # once connected: a scheduler answers in milliseconds, another service never
DASK_WORKER_COMMAND = "python -m signdigits.worker <scheduler address>"  # signdigits/worker.py: the pin and the sources


@dataclass(frozen=True)
class SweepData:
    """The training and validation arrays (about 1.4 MB), sent with every run: workers need no shared files."""

    train_pixels: np.ndarray
    train_labels: np.ndarray
    val_pixels: np.ndarray
    val_labels: np.ndarray
    classes: tuple[int, ...] = DIGITS


def load_sweep_data() -> SweepData:
    """The same images and class indices as every training stage reads (`core.data.load_train_val`)."""
    return SweepData(*load_train_val(DIGITS))


def train_config(run: int, cfg: TrainParams, data: SweepData, runtime: Runtime, threads: int) -> dict:
    """One result row; the same function in this process, a pool process or on a Dask worker."""
    from signdigits.training.engine import Part, evaluate, setup_runtime, train

    device = setup_runtime(runtime, threads=threads)  # checks the CPU kernels of the process it runs in
    train_data = Part.from_arrays(data.train_pixels, data.train_labels, device)
    val_data = Part.from_arrays(data.val_pixels, data.val_labels, device)
    result = train(cfg, train_data, val_data, list(data.classes), name=f"sweep run {run}")
    val, tr = evaluate(result.model, val_data), evaluate(result.model, train_data)
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


@functools.cache
def code_digest() -> str:
    """sha256 of the names and bytes of the imported signdigits package's source files: which code runs here."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for file in sorted(package.rglob("*.py")):
        digest.update(f"{file.relative_to(package).as_posix()}\0{file.stat().st_size}\0".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _train_on_dask_worker(
    run: int, cfg: TrainParams, data: SweepData, runtime: Runtime, threads: int, stage_code: str
) -> dict:
    """train_config, after checking what a worker started by someone else may get wrong.

    The worker must run the stage's code (the same source files): Dask sends the task by name, and
    a worker started from another checkout would compute the runs with its own code. The kernels
    are pinned here, before this worker's first import of torch; a worker that already runs torch
    with other kernels fails rather than computing other numbers. One task at a time per worker
    process: concurrent runs would share torch's process-wide random generator.
    """
    from distributed import get_worker

    worker = get_worker()
    try:
        if code_digest() != stage_code:
            raise PipelineError(
                f"it runs other signdigits code ({Path(__file__).resolve().parents[1]}, sources {code_digest()[:12]}) "
                f"than the stage (sources {stage_code[:12]}); start it from the stage's checkout, with PYTHONPATH "
                "naming that checkout's src/"
            )
        if worker.state.nthreads != 1:
            raise PipelineError(f"it runs {worker.state.nthreads} tasks at once, which share torch's random generator")
        pin_cpu_kernels(runtime.cpu_kernels)
    except PipelineError as e:
        raise PipelineError(f"Dask worker {worker.address}: {e}. Start workers as: {DASK_WORKER_COMMAND}") from None
    return train_config(run, cfg, data, runtime, threads)


class Grid(Sequence):
    """The sweep's configurations, each built when it is asked for: a grid of millions costs no memory.

    Every combination, in the fixed order lr, batch_size, epochs, optimizer (ties go to the first).
    """

    def __init__(self, sweep: SweepParams):
        self.sweep = sweep
        self.axes = (sweep.lr, sweep.batch_size, sweep.epochs, sweep.optimizer)

    def __len__(self) -> int:
        return math.prod(len(axis) for axis in self.axes)

    def __getitem__(self, index: int) -> TrainParams:
        if not -len(self) <= index < len(self):
            raise IndexError(f"grid index {index} out of range for {len(self)} runs")
        index %= len(self)
        picks = []
        for axis in reversed(self.axes):  # the last list varies fastest
            index, i = divmod(index, len(axis))
            picks.append(axis[i])
        optimizer, epochs, batch_size, lr = picks
        return dataclasses.replace(self.sweep.model, lr=lr, batch_size=batch_size, epochs=epochs, optimizer=optimizer)

    @staticmethod
    def cost(cfg: TrainParams) -> float:
        """A run's relative time: its epochs times its batches per epoch."""
        return cfg.epochs / cfg.batch_size

    def _costs_of_pairs(self) -> list[tuple[tuple[int, int], float]]:
        """((batch size index, epochs index), cost) of every pair: the cost depends on nothing else."""
        batch_sizes, epochs = self.axes[1], self.axes[2]
        return [
            ((b, e), self.cost(dataclasses.replace(self.sweep.model, batch_size=batch_sizes[b], epochs=epochs[e])))
            for b, e in itertools.product(range(len(batch_sizes)), range(len(epochs)))
        ]

    def total_cost(self) -> float:
        return len(self.sweep.lr) * len(self.sweep.optimizer) * sum(cost for _, cost in self._costs_of_pairs())

    def longest_first(self) -> Iterator[int]:
        """Every index, by decreasing cost, ties in grid order: what sorting all of them would give, lazily.

        The cost depends only on batch size and epochs, so only their pairs are sorted.
        """
        n_lr, n_batch, n_epochs, n_opt = map(len, self.axes)
        pairs = sorted(self._costs_of_pairs(), key=lambda pair: -pair[1])  # stable: ties stay in grid order
        for _, tied in itertools.groupby(pairs, key=lambda pair: pair[1]):
            tied = [indices for indices, _ in tied]
            for i_lr in range(n_lr):
                for i_batch, i_epochs in tied:
                    first = ((i_lr * n_batch + i_batch) * n_epochs + i_epochs) * n_opt
                    yield from range(first, first + n_opt)


def describe_config(cfg: TrainParams) -> str:
    return f"lr {cfg.lr:g} batch {cfg.batch_size} epochs {cfg.epochs} {cfg.optimizer}"


def run_sweep(sweep: SweepParams, runtime: Runtime, data: SweepData) -> list[dict]:
    """One result row per grid configuration, in grid order, whichever backend computes them.

    A run that raises stops the sweep with its configuration named; runs not yet started are cancelled.
    """
    configs = Grid(sweep)  # built run by run: memory does not grow with the grid before the first run
    sweep = _within_this_machine(sweep, configs, data)
    # the longest runs first, so no worker is left with one long run at the end
    tasks = ((i, configs[i], data, runtime, sweep.threads_per_job) for i in configs.longest_first())
    backend = _on_dask if sweep.backend == "dask" else _in_processes
    rows: dict[int, dict] = {}
    started = time.perf_counter()
    with backend(sweep, len(configs)) as (submit, wait, window):
        for done, (run, future) in enumerate(_as_finished(tasks, submit, wait, window), start=1):
            try:
                rows[run] = future.result()
            except Exception as e:  # any failure of a run ends the sweep, reported with its config
                reason = str(e) if isinstance(e, PipelineError) else f"{type(e).__name__}: {e}"
                raise PipelineError(f"sweep run {run} ({describe_config(configs[run])}) failed: {reason}") from e
            elapsed = time.perf_counter() - started
            log.info(
                "sweep %d/%d: run %d %s -> val acc %.4f (%.1fs elapsed)",
                done, len(configs), run, describe_config(configs[run]), rows[run]["val_accuracy"], elapsed,
            )  # fmt: skip
            if done == 1 and len(configs) > 1:
                at_once = min(sweep.jobs, len(configs))
                estimate = elapsed * configs.total_cost() / configs.cost(configs[run]) / at_once
                log.info("sweep: %d runs; about %.0fs in all, judged from the first run", len(configs), estimate)
    return [rows[run] for run in range(len(configs))]


def _within_this_machine(sweep: SweepParams, configs, data: SweepData) -> SweepParams:
    """exp2.jobs capped at the cores this process may use (the rows do not depend on jobs), and the runs
    that train here at once checked against the memory available. A remote Dask cluster is left alone."""
    if sweep.backend == "dask":
        import dask

        if dask.config.get("scheduler-address", None) is not None:
            return sweep
    cores = usable_cores()
    if sweep.jobs > cores:
        log.warning("sweep: exp2.jobs = %d is more than the %d CPU cores this process may use; "
                    "running %d at a time", sweep.jobs, cores, cores)  # fmt: skip
        sweep = dataclasses.replace(sweep, jobs=cores)
    at_once = min(sweep.jobs, len(configs))
    largest = dataclasses.replace(
        sweep.model,
        batch_size=max(sweep.batch_size),
        optimizer=max(sweep.optimizer, key=lambda name: OPTIMIZER_STATES.get(name, 1)),
    )
    images, inputs = data.train_pixels.shape[0], math.prod(data.train_pixels.shape[1:])
    needed = at_once * training_bytes(largest, inputs, len(data.classes), images + len(data.val_labels))
    require_memory("exp2.hidden", sweep.model.hidden, needed, f"training {at_once} run(s) at once (exp2.jobs)")
    return sweep


def _as_finished(tasks: Iterator[tuple], submit, wait, window: Callable[[], int]) -> Iterator[tuple[int, Future]]:
    """(run, future) in the order runs finish, with at most window() submitted and unfinished at a time.

    The window keeps the data sent with each run, and the futures, from piling up: memory stays flat
    whatever the size of the grid, and a finished run's future is dropped once its row is read.
    """
    pending: dict = {}
    while True:
        for task in itertools.islice(tasks, max(window() - len(pending), 0)):
            pending[submit(*task)] = task[0]
        if not pending:
            return
        finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for future in finished:
            yield pending.pop(future), future


@contextlib.contextmanager
def _in_processes(sweep: SweepParams, runs: int):
    """`jobs` spawned processes, or this process for jobs 1 (no second import of torch)."""
    if sweep.jobs == 1:
        log.info("sweep: %d runs in this process, %d thread(s)", runs, sweep.threads_per_job)
        yield _run_here, wait_local, lambda: 1
        return
    jobs = min(sweep.jobs, runs)
    log.info("sweep: %d runs in %d processes of %d thread(s)", runs, jobs, sweep.threads_per_job)
    with lifeline.process_pool(jobs) as pool:
        yield lambda *task: pool.submit(train_config, *task), wait_local, lambda: 2 * jobs


def _run_here(*task) -> Future:
    """A finished future of train_config, computed in this process now."""
    future = Future()
    try:
        future.set_result(train_config(*task))
    except Exception as e:  # handed on to run_sweep, like a pool's future
        future.set_exception(e)
    return future


@contextlib.contextmanager
def _on_dask(sweep: SweepParams, runs: int):
    """The scheduler Dask's configuration names (DASK_SCHEDULER_ADDRESS), or else a local cluster of `jobs` workers.

    A worker that dies has its runs redone elsewhere by Dask: each task carries all it needs.
    """
    import dask
    from distributed import Client, LocalCluster
    from distributed import wait as wait_dask

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the stage logs its own progress
    address = dask.config.get("scheduler-address", None)
    with contextlib.ExitStack() as stack:
        if address is None:
            cluster = LocalCluster(
                n_workers=min(sweep.jobs, runs),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.CRITICAL,  # a failed run is reported by the stage, with its config
                preload=[lifeline.__name__],  # its dask_setup: the workers die with this process, SIGKILL included
                env={lifeline.PARENT_ENV: str(os.getpid())},
            )
            stack.enter_context(cluster)
            address, where = cluster.scheduler_address, "a local Dask cluster"
        else:
            where = "the Dask scheduler from DASK_SCHEDULER_ADDRESS or the Dask config"
            _require_scheduler(address, where)
        try:
            client = stack.enter_context(Client(address, timeout=CONNECT_TIMEOUT_S))
        except (OSError, ValueError) as e:
            raise _unreachable(where, address, str(e)) from None

        def window() -> int:  # follows workers that join or leave
            return 2 * max(sum(client.nthreads().values()), 1)

        workers = client.nthreads()
        log.info("sweep: %d runs on %s %s, %d worker(s) connected", runs, where, address, len(workers))
        if not workers:
            log.warning("sweep: no Dask worker has connected yet; the runs wait for one. Start them as: %s",
                        DASK_WORKER_COMMAND)  # fmt: skip
        try:
            code = code_digest()
            yield lambda *task: client.submit(_train_on_dask_worker, *task, code, pure=False), wait_dask, window
        except BaseException as e:
            lifeline.end_children()  # a local cluster's workers: closing it would wait for the runs in progress
            if _scheduler_lost(e, client):
                # closing the client cancels its attempts to reconnect, which Dask's loggers (each with a level
                # of its own) would report with tracebacks: the one line below says it all
                logging.disable(logging.CRITICAL)
                reason = textwrap.shorten(f"{type(e).__name__}: {e}", 200)  # Dask's own message runs over lines
                raise PipelineError(
                    f"the Dask scheduler {address} was lost mid-sweep ({reason}); no results were written. "
                    "Restart it (`dask scheduler`) and its workers and rerun, or unset DASK_SCHEDULER_ADDRESS to "
                    "run on a local cluster"
                ) from None
            raise


def _scheduler_lost(error: BaseException, client) -> bool:
    """Whether an exception of the sweep's loop means the connection to the scheduler broke (not a run that failed)."""
    import asyncio
    import concurrent.futures

    from distributed.comm import CommClosedError

    if isinstance(error, (PipelineError, KeyboardInterrupt)):
        return False
    cancelled = isinstance(error, (asyncio.CancelledError, concurrent.futures.CancelledError))
    return cancelled or isinstance(error, (CommClosedError, OSError)) or client.status != "running"


def _require_scheduler(address: str, where: str) -> None:
    """Ask the address who it is, within seconds: a Client waits forever on a listener that never answers."""
    import asyncio
    import socket

    from distributed.comm import connect, parse_address, parse_host_port

    async def identity() -> object:
        comm = await connect(address, timeout=CONNECT_TIMEOUT_S)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    answer_within = CONNECT_TIMEOUT_S
    try:
        scheme, location = parse_address(address)
        if scheme == "tcp":  # refused at once, where Dask would retry until its timeout
            socket.create_connection(parse_host_port(location), timeout=CONNECT_TIMEOUT_S).close()
            answer_within = ANSWER_TIMEOUT_S
        reply = asyncio.run(asyncio.wait_for(identity(), answer_within))
    except TimeoutError:  # before OSError, its base class
        raise _unreachable(where, address, f"no Dask answer within {answer_within} s") from None
    except (OSError, ValueError, TypeError) as e:
        raise _unreachable(where, address, str(e) or type(e).__name__) from None
    kind = reply.get("type") if isinstance(reply, dict) else None
    if kind != "Scheduler":
        raise _unreachable(where, address, f"it answers, but as {kind or 'something else'}, not a Dask scheduler")


def _unreachable(where: str, address: str, reason: str) -> PipelineError:
    return PipelineError(
        f"{where}, {address}, cannot be reached ({reason}); start it (`dask scheduler`) and its workers, "
        "or unset DASK_SCHEDULER_ADDRESS to run on a local cluster"
    )


def pick_winner(rows: list[dict]) -> dict:
    """Highest val accuracy; ties to the lower val loss, then to the earlier run in grid order."""
    return min(rows, key=lambda r: (-r["val_accuracy"], r["val_loss"], r["run"]))


def results_csv(rows: list[dict]) -> str:
    from signdigits.core.files import csv_text

    return csv_text(rows, RESULT_COLUMNS)
