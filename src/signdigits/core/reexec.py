"""A stage runs the code of the workspace its script lies in: re-executed with that src/ first on PYTHONPATH.

Its own module because it runs before anything else of a stage (core.cli.run_stage), and replaces the process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

WORKSPACE_SRC_ENV = "SIGNDIGITS_WORKSPACE_SRC"  # set on the re-execution: the src/ it must import from


def run_workspace_code(script: Path) -> None:
    """Re-execute this process with the src/ beside the script's folder first on PYTHONPATH, if it imported another.

    The editable install points at the checkout that ran `make setup`; a queued or temporary experiment
    (`dvc exp run --queue/--temp`) runs in a copy of the workspace whose src/ may differ. Child processes
    (the sweep's pool, a local Dask cluster) inherit PYTHONPATH; a remote Dask worker is checked by the sweep.
    Nothing is re-executed where the script has no src/ beside it (a copy of stages/ alone): the install counts.
    """
    import signdigits

    src = script.resolve().parent.parent / "src"
    if not (src / "signdigits" / "__init__.py").is_file():
        return
    imported = Path(signdigits.__file__).resolve().parent
    if imported == (src / "signdigits").resolve():
        return
    if os.environ.get(WORKSPACE_SRC_ENV) == str(src):
        print(
            f"error: {script}: imports signdigits from {imported}, not from {src} beside it, even with that "
            "first on PYTHONPATH (python -I or -E?); run it as `python stages/<stage>.py`",
            file=sys.stderr,
        )
        sys.exit(2)
    env = {**os.environ, WORKSPACE_SRC_ENV: str(src)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(src), os.environ.get("PYTHONPATH"))))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
