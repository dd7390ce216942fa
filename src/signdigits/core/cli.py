"""The one error boundary of every stage and command: logging, signals, user errors without a traceback.

Exit codes: 0 done, 2 a PipelineError (one line on stderr, nothing half-written), 130 interrupted
or terminated; commands may return their own (predict and review document theirs).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable

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
        from signdigits.core.kernels import pin_cpu_kernels
        from signdigits.core.params import load_params

        params = load_params()
        pin_cpu_kernels(params.runtime.cpu_kernels)
        return main(params)

    sys.exit(run_command(body))
