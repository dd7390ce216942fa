"""The one error boundary of every stage and command: logging, signals, user errors without a traceback.

Exit codes: 0 done, 2 a PipelineError (one line on stderr, nothing half-written), 130 interrupted
or terminated, or the `dvc` that ran the stage has ended; commands may return their own (predict and
review document theirs). A stage writes its outputs all together at its end (files.outputs).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from signdigits.core.errors import PipelineError
from signdigits.core.reexec import run_workspace_code

GRACE_S = 3  # after its dvc ended, the stage unwinds (temporary files removed) or is ended this much later
_dvc_ended: int | None = None  # the pid of the dvc that ran this stage, once it has ended
_reported = threading.Event()  # the interruption was reported


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so half-written temporary files are removed


def _interrupted_note() -> str:
    if _dvc_ended is not None:
        return f"dvc (pid {_dvc_ended}) has ended, so this stage stopped without writing its outputs"
    if os.environ.get("DVC_STAGE"):
        return "dvc repro removed this stage's outputs before running it; `dvc repro` makes them again"
    return "earlier outputs are left as they were"


def _stop_without_dvc(pid: int) -> None:
    """From the watcher thread: nothing is written any more; the main thread unwinds, or the process ends."""
    global _dvc_ended
    from signdigits.core import files

    files.abandon()
    _dvc_ended = pid
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    if not _reported.is_set():  # the main thread did not get to say it (a long call of a library)
        print(f"interrupted: {_interrupted_note()}", file=sys.stderr)
    os._exit(130)


def run_command(body: Callable[[], int | None]) -> int:
    """Run body() and return its exit code, or 2 on a PipelineError, 130 when interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return body() or 0
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {_interrupted_note()}", file=sys.stderr)
        _reported.set()
        return 130


def run_stage(main: Callable[..., object]) -> None:
    """Exit with run_command's code for main(params), params.yaml validated and the CPU kernels pinned first.

    Each job has its own module; this only puts them in order: the workspace's own code (reexec), the
    `dvc` that ran the stage watched (lifeline), what dvc.lock will record read at the start and compared
    before any output is renamed into place (workspace.StageInputs, files.outputs), and the time logged.
    Stage scripts import torch and numpy only inside main, so the kernel pin is in place before they load.
    """
    run_workspace_code(Path(sys.argv[0]))

    def body():
        from signdigits.core import lifeline, workspace
        from signdigits.core.kernels import pin_cpu_kernels
        from signdigits.core.params import load_params, stage_requirements

        if os.environ.get("DVC_STAGE") or os.environ.get("DVC_ROOT"):
            lifeline.watch_dvc(_stop_without_dvc)
        started = time.perf_counter()
        stage = Path(sys.argv[0]).stem
        inputs = workspace.StageInputs.read(stage)  # its params' values and deps' hashes: what dvc.lock records
        params = load_params(require=stage_requirements(stage), data=inputs.params_bytes)  # the bytes compared
        pin_cpu_kernels(params.runtime.cpu_kernels)
        from signdigits.core import files  # numpy, after the pin

        with files.outputs(before_renaming=lambda: inputs.require_unchanged(stage)):
            code = main(params)
        work = time.perf_counter() - started
        logging.getLogger(__name__).info(
            "timing %s: start-up %s, work %.2fs, writing %.2fs",
            Path(sys.argv[0]).stem, _since_process_start(started), work - files.seconds_writing, files.seconds_writing,
        )  # fmt: skip
        return code

    code = run_command(body)
    gc.freeze()  # the exit's collections then skip torch's module graph (benchmarks/README.md); outputs are written
    sys.exit(code)


def _since_process_start(now: float) -> str:
    """Seconds from this process's start to `now` (perf_counter), from /proc on Linux; "?" elsewhere."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0]) - (time.perf_counter() - now)
    except (OSError, ValueError, IndexError):
        return "?"
    return f"{uptime - start_ticks / os.sysconf('SC_CLK_TCK'):.2f}s"
