"""signdigits-worker (issue 34): the one way to start a Dask worker, with the whole kernel pin and these sources."""

from __future__ import annotations

import shlex

import pytest

from signdigits.core.errors import PipelineError
from signdigits.core.kernels import PORTABLE_ENV
from signdigits.worker import SRC, main, worker_environment


def test_portable_sets_every_variable_of_the_pin_and_these_sources_first():
    env = worker_environment("portable", {"PATH": "/bin", "PYTHONPATH": "/elsewhere", "MKL_CBWR": "AUTO"})
    assert {k: env[k] for k in PORTABLE_ENV} == PORTABLE_ENV  # the code's own list, every one of them
    assert env["PYTHONPATH"].split(":") == [str(SRC), "/elsewhere"] and env["PATH"] == "/bin"


def test_native_removes_the_pin_and_an_unknown_mode_is_refused():
    env = worker_environment("native", dict(PORTABLE_ENV))
    assert not set(PORTABLE_ENV) & set(env)
    with pytest.raises(PipelineError, match="--kernels 'fast' is not allowed"):
        worker_environment("fast", {})


def test_print_shows_the_command_a_job_script_runs(capsys, monkeypatch):
    for name in PORTABLE_ENV:
        monkeypatch.delenv(name, raising=False)
    assert main(["--print", "tcp://10.0.0.1:8786", "--no-nanny"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[0] == "env" and {f"{k}={v}" for k, v in PORTABLE_ENV.items()} <= set(words)
    assert words[-5:] == ["worker", "tcp://10.0.0.1:8786", "--nthreads", "1", "--no-nanny"]
    assert words[-6].endswith("dask")


def test_env_prints_export_lines_a_shell_takes(capsys):
    assert main(["--env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines)
    assert {k: exported[k] for k in PORTABLE_ENV} == PORTABLE_ENV and exported["PYTHONPATH"].startswith(str(SRC))
