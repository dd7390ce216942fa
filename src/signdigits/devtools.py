"""What tests, benchmarks and studies share: git, DVC and python run as a person runs them from the venv.

Installed with the package (the editable install of `make setup`), so `python benchmarks/bench.py`,
`python studies/seeds.py` and the tests import it without touching sys.path; no stage imports it
(tests/test_layers.py) and dvc.yaml lists no dependency on it, so changing it reruns nothing. It
imports neither torch nor numpy: a benchmark pins the CPU kernels after importing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

# The stages in the order dvc.yaml writes them, which is the order `dvc repro` runs them in (its DAG allows no other).
PIPELINE_STAGES = list(yaml.safe_load((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())["stages"])


class CommandFailed(RuntimeError):
    """A command run with check=True exited non-zero; the message holds its output's tail."""


def venv_env() -> dict[str, str]:
    """This environment with the venv's python and dvc first on PATH, as `make` runs them."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1"}


def run(
    args: list[str],
    cwd: Path,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a command (git, dvc, python) as a person would from the venv; raise with its output if asked."""
    done = subprocess.run(
        args, cwd=cwd, env=env or venv_env(), capture_output=True, text=True, timeout=timeout, input=input
    )
    if check and done.returncode != 0:
        raise CommandFailed(f"{' '.join(args)} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def git_identity(repo: Path) -> None:
    """A committer for git and for `dvc exp run`, whatever the machine's global git config."""
    run(["git", "config", "user.email", "tests@signdigits.invalid"], cwd=repo)
    run(["git", "config", "user.name", "signdigits tests"], cwd=repo)


def git_clone(source: Path, target: Path) -> Path:
    run(["git", "clone", "--quiet", str(source), str(target)], cwd=source.parent)
    git_identity(target)
    return target


def stages_run(output: str) -> list[str]:
    """The stages DVC ran (not skipped, not restored), in order."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]
