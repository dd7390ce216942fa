"""The entry wrapper of every stage and command: logging, signals, and user errors without a traceback."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable

from signdigits.files import PipelineError


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so half-written temporary files are removed


def run_stage(main: Callable[[], object]) -> None:
    """Run main(); exit 2 with one line on a PipelineError, 130 when interrupted or terminated."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: earlier outputs are left as they were", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
