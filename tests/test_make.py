"""The Makefile's venv (issue 35): an existing .venv that cannot run, or that another PYTHON asks to replace,
stops make with what is wrong and what to run, before anything runs with it.

Each test runs make in a temporary copy of the Makefile and what its install rule reads, with a fake .venv
already "installed" (.venv/.installed newer than the requirements), so nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

pytestmark = pytest.mark.integration

BASE_PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))  # the interpreter, not a venv's


def make_copy(folder: Path, interpreter: str | Path) -> Path:
    """The Makefile, pyproject.toml and requirements/ in folder, with .venv/bin/python a link to `interpreter`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("Makefile", "pyproject.toml", "requirements"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, folder / name)
    (folder / ".venv/bin").mkdir(parents=True)
    (folder / ".venv/bin/python").symlink_to(interpreter)
    (folder / ".venv/.installed").touch()
    (folder / "bin").mkdir()
    (folder / "bin/python3").symlink_to(BASE_PYTHON)  # make's default PYTHON
    return folder


def make(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """make in a shell without a venv: PATH holds python3 and the system's folders, no dvc; PYTHON only if given.

    Not a sub-make of the `make test` that may run this test: without MAKEFLAGS and MAKELEVEL it prints no
    "Entering directory" lines, as when a person types it."""
    outer_make = ("PYTHON", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {name: value for name, value in os.environ.items() if name not in outer_make}
    env["PATH"] = f"{cwd / 'bin'}:/usr/bin:/bin"
    return subprocess.run(["make", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_a_venv_whose_interpreter_is_gone_says_so_and_what_to_run(tmp_path):
    """Was: `/bin/sh: 1: dvc: not found`, exit 127, from the recipe."""
    repo = make_copy(tmp_path, "/nonexistent/python3.11")
    done = make(repo, "pipeline")
    assert done.returncode == 2, done
    assert done.stderr.startswith(
        "error: .venv cannot run: its interpreter /nonexistent/python3.11 is gone (removed or upgraded since it was "
        "made).\n       Run make clean-venv, then make pipeline (it installs again, some minutes).\n"
    ), done.stderr
    assert "not found" not in done.stderr and done.stdout == ""


def fake_interpreter(path: Path, answer: str) -> Path:
    """This Python, except that asked which interpreter it is (the Makefile's WHICH_PYTHON), it answers `answer`."""
    script = path
    script.write_text(
        f'#!/bin/sh\ncase "$2" in *_base_executable*) echo "{answer}";; *) exec {sys.executable} "$@";; esac\n'
    )
    script.chmod(0o755)
    return script


def test_python_naming_another_interpreter_than_the_venv_s_is_not_ignored(tmp_path):
    """Was: `make pipeline PYTHON=python3.12` ran the existing .venv's Python without a word."""
    other = fake_interpreter(tmp_path / "other-python", "/opt/python3.99/bin/python3.99 3.99.0")
    repo = make_copy(tmp_path / "repo", BASE_PYTHON)
    done = make(repo, "setup", f"PYTHON={other}")
    assert done.returncode == 2, done
    assert f"but PYTHON={other} is Python 3.99.0 (/opt/python3.99/bin/python3.99)" in done.stderr
    assert f"Run make clean-venv, then make setup PYTHON={other}" in done.stderr
    assert make(repo, "setup").returncode == 0  # without PYTHON, the existing .venv is used
    venv_s = subprocess.run([repo / ".venv/bin/python", "-c", _which()], capture_output=True, text=True, check=True)
    same = fake_interpreter(tmp_path / "same-python", venv_s.stdout.strip())
    assert make(repo, "setup", f"PYTHON={same}").returncode == 0  # PYTHON naming the venv's own interpreter


def _which() -> str:
    """The Makefile's WHICH_PYTHON, read from it."""
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("WHICH_PYTHON"))
    return line.split(":=", 1)[1].strip()
