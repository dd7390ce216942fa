"""The entry wrapper of every stage: params, CPU kernels, logging, signals, user errors without a traceback."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable

from signdigits.core.errors import PipelineError


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so half-written temporary files are removed


def run_stage(main: Callable[..., object]) -> None:
    """Validate params.yaml, pin the CPU kernels it asks for, then run main(params).

    Exit 2 with one line on a PipelineError, 130 when interrupted or terminated. Stage scripts
    import torch only inside main, so the kernel pin is in place before torch loads.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from signdigits.core.kernels import pin_cpu_kernels
        from signdigits.core.params import load_params

        params = load_params()
        pin_cpu_kernels(params.runtime.cpu_kernels)
        code = main(params)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: earlier outputs are left as they were", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
