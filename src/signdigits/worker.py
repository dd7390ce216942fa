"""signdigits-worker: start a Dask worker for the sweep in the one way the sweep accepts.

The sweep refuses a worker whose torch or numpy runs other kernels than the stage's, or that imports other
signdigits sources (training/sweep.py). Both are settled by the environment a worker starts in, before it
imports anything: this command sets every variable of the CPU-kernel pin from the code's own list
(core/kernels.py), puts the src/ it runs from first on PYTHONPATH, and then becomes
`dask worker ADDRESS --nthreads 1` (one task at a time: runs share torch's random generator).

    python -m signdigits.worker tcp://HOST:8786 [dask worker options]   # or: signdigits-worker ...
    python -m signdigits.worker --print tcp://HOST:8786                 # the command line, for srun or a job script
    eval "$(python -m signdigits.worker --env)"                          # the variables, for dask-jobqueue's prologue

Exit code 2 (one line) when dask is not installed or the kernels mode is unknown.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from signdigits.core.cli import run_command
from signdigits.core.errors import PipelineError
from signdigits.core.kernels import MODES, PORTABLE_ENV

SRC = Path(__file__).resolve().parents[1]  # the folder `signdigits` is imported from: a checkout's src/


def worker_environment(kernels: str, base: dict[str, str]) -> dict[str, str]:
    """`base` with the kernel pin of `kernels` and this src/ first on PYTHONPATH."""
    if kernels not in MODES:
        raise PipelineError(f"--kernels {kernels!r} is not allowed: choose one of {', '.join(MODES)}")
    env = {k: v for k, v in base.items() if k not in PORTABLE_ENV}
    if kernels == "portable":
        env |= PORTABLE_ENV
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(SRC), base.get("PYTHONPATH"))))
    return env


def worker_command(address: str, options: list[str]) -> list[str]:
    """`dask worker` of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("dask")
    dask = str(beside) if beside.exists() else shutil.which("dask")
    if dask is None:
        raise PipelineError("dask is not installed here: pip install -e '.[dask]' (requirements/lock.txt has it)")
    return [dask, "worker", address, "--nthreads", "1", *options]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="signdigits-worker", description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", help="the scheduler, e.g. tcp://HOST:8786")
    parser.add_argument("--kernels", default="portable", help="runtime.cpu_kernels of the stage (default portable)")
    parser.add_argument("--print", action="store_true", help="print the command line instead of running it")
    parser.add_argument("--env", action="store_true", help="print the variables as export lines, for a job script")
    args, options = parser.parse_known_args(argv)
    if not (args.address or args.env):
        parser.error("the scheduler address is required, e.g. tcp://HOST:8786")

    def body() -> int:
        env = worker_environment(args.kernels, dict(os.environ))
        pinned = {k: env[k] for k in (*PORTABLE_ENV, "PYTHONPATH") if k in env}
        if args.env:
            print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in pinned.items()))
            return 0
        command = worker_command(args.address, options)
        if args.print:
            print(shlex.join(["env", *(f"{k}={v}" for k, v in pinned.items()), *command]))
            return 0
        sys.stdout.flush()
        os.execve(command[0], command, env)  # this process becomes the worker: nothing outlives it

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
