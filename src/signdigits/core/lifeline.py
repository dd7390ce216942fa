"""No process outlives the one that started it: pool workers die with their stage, a stage with its `dvc`.

- `die_with_parent(parent)`, run first in every worker process (the initializer of a process pool,
  `dask_setup` for a local Dask cluster's workers): the kernel kills the worker when its parent
  ends, SIGKILL included (Linux prctl PR_SET_PDEATHSIG); a polling thread does it elsewhere.
- `process_pool(workers)`: a process pool whose workers do that, killed at once on a failure.
- `end_children()`: kill this process's worker processes now, where waiting for them would hang.
- `watch_dvc(then)`: in a stage that `dvc repro` runs, call then(pid) once that dvc process has ended.
  It needs /proc (Linux); elsewhere the stage is not watched (docs/troubleshooting.md says what holds).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PARENT_ENV = "SIGNDIGITS_PARENT_PID"  # tells a Dask worker process which process it must not outlive
POLL_S = 0.5
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """End this process as soon as `parent` is no longer its parent (it died, SIGKILL included)."""
    kernel_watches = sys.platform.startswith("linux") and (
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    )
    if os.getppid() != parent:  # it died before the kernel was told to watch it
        os._exit(1)
    if not kernel_watches:  # no prctl: a thread looks
        _when(lambda: os.getppid() != parent, lambda: os._exit(1))


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """`workers` spawned processes that die with this one; a failure or an interruption kills them at once.

    spawn, not fork: a forked child of a process that already started torch's thread pool can hang, and a
    spawned one inherits the environment (the CPU-kernel pin) and nothing else.
    """
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,  # even a SIGKILL of this process ends its workers
        initargs=(os.getpid(),),
    )
    try:
        yield pool
    except BaseException:
        end_children()  # do not wait for the work already started
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def dask_setup(worker) -> None:
    """Dask's preload hook (the `preload` of a LocalCluster): the worker dies with the stage that started it."""
    die_with_parent(int(os.environ[PARENT_ENV]))


def end_children(timeout: float = 5) -> None:
    """Kill the worker processes this process started (multiprocessing's: process pools, Dask nannies)."""
    children = multiprocessing.active_children()
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout)


def dvc_ancestor(pid: int | None = None) -> int | None:
    """The nearest ancestor whose command is dvc (bash execs a stage's command, dash does not); None without /proc."""
    pid = os.getppid() if pid is None else pid
    while pid > 1:
        try:
            argv = [os.path.basename(a) for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")]
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, UnicodeDecodeError):
            return None
        if "dvc" in argv[:2] or argv[1:3] == ["-m", "dvc"]:
            return pid
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent's pid
    return None


def watch_dvc(then: Callable[[int], None]) -> int | None:
    """Call then(pid) in a daemon thread when the dvc that runs this stage ends; its pid, or None if none is found."""
    pid = dvc_ancestor()
    if pid is None:
        return None
    try:
        handle = os.pidfd_open(pid)  # readable once the process has ended; immune to a reused pid
    except (AttributeError, OSError):  # an older kernel: poll its /proc entry
        _when(lambda: _ended(pid), lambda: then(pid))
    else:
        threading.Thread(target=lambda: (select.select([handle], [], []), then(pid)), daemon=True).start()
    return pid


def _ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def _when(condition: Callable[[], bool], then: Callable[[], object]) -> None:
    def poll():
        while not condition():
            time.sleep(POLL_S)
        then()

    threading.Thread(target=poll, daemon=True).start()
