"""The one error boundary of every stage and command: logging, signals, user errors without a traceback.

Exit codes: 0 done, 2 a PipelineError (one line on stderr, nothing half-written), 130 interrupted
or terminated; commands may return their own (predict and review document theirs).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from signdigits.core.errors import PipelineError


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so half-written temporary files are removed


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
        print("interrupted: earlier outputs are left as they were", file=sys.stderr)
        return 130


def run_stage(main: Callable[..., object]) -> None:
    """Exit with run_command's code for main(params), params.yaml validated and the CPU kernels pinned first.

    Stage scripts import torch only inside main, so the kernel pin is in place before torch loads.
    """

    def body():
        from signdigits.core import files
        from signdigits.core.kernels import pin_cpu_kernels
        from signdigits.core.params import load_params

        started = time.perf_counter()
        params = load_params()
        pin_cpu_kernels(params.runtime.cpu_kernels)
        code = main(params)
        work = time.perf_counter() - started
        logging.getLogger(__name__).info(
            "timing %s: start-up %s, work %.2fs, writing %.2fs",
            Path(sys.argv[0]).stem, _since_process_start(started), work - files.seconds_writing, files.seconds_writing,
        )  # fmt: skip
        return code

    code = run_command(body)
    gc.freeze()  # the exit's collections then skip torch's module graph (over 0.5 s a process); outputs are written
    sys.exit(code)


def _since_process_start(now: float) -> str:
    """Seconds from this process's start to `now` (perf_counter), from /proc on Linux; "?" elsewhere."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0]) - (time.perf_counter() - now)
    except (OSError, ValueError, IndexError):
        return "?"
    return f"{uptime - start_ticks / os.sysconf('SC_CLK_TCK'):.2f}s"
