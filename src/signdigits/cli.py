"""The entry wrapper of every stage and command: logging, and user errors without a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from signdigits.files import PipelineError


def run_stage(main: Callable[[], object]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        code = main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: outputs are left as they were", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
