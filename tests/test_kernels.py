"""runtime.cpu_kernels: a real stage process computes with the kernels its setting asks for."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from signdigits.core.kernels import PORTABLE_CAPABILITY, PORTABLE_ENV, PORTABLE_OPENBLAS, WAIT_ENV, cpu_has_avx2


def unpinned_capability() -> str:
    """What torch picks on this CPU when nothing pins it."""
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("mode", ["portable", "native"])
def test_a_stage_process_runs_the_kernels_its_setting_asks_for(tiny_repo, mode):
    tiny_repo.set_params({"runtime.cpu_kernels": mode})
    tiny_repo.run("prepare", check=True)
    tiny_repo.run("split", check=True)
    done = tiny_repo.run("train_base", check=True)
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("cpu kernels:")]
    reported = re.search(r"\(torch (\w+), MKL_CBWR=(\w+), products in OpenBLAS (\w+)\)", line)
    best = unpinned_capability()
    print(f"this CPU's best kernels: {best}; {mode} stage reported: {line}")
    if mode == "native":
        assert reported[1] == best
        assert reported[2] == "default"
    elif cpu_has_avx2():  # pinned down to AVX2, also where the CPU has AVX-512
        assert reported[1] == PORTABLE_CAPABILITY
        assert reported[2] == PORTABLE_ENV["MKL_CBWR"]
        assert reported[3] == PORTABLE_OPENBLAS  # the networks' products (training/products.py)
    else:  # no AVX2 to pin to: torch takes what the CPU has
        assert reported[1] == best


@pytest.mark.integration
def test_torch_imported_before_the_pin_is_refused():
    """A process (a Dask worker, say) whose torch already runs other kernels must not compute silently."""
    code = (
        "import torch\n"
        "torch.ones(64).exp().sum()\n"  # torch has now chosen its kernels
        "from signdigits.core.kernels import pin_cpu_kernels\n"
        "from signdigits.core.errors import PipelineError\n"
        "try:\n    pin_cpu_kernels('portable')\nexcept PipelineError as e:\n    print(e)\n"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    if not cpu_has_avx2():
        pytest.skip("this CPU has no AVX2: portable cannot pin anything here")
    assert "runs torch with DEFAULT kernels" in out
    assert "before torch and numpy are imported" in out


@pytest.mark.integration
def test_numpy_imported_before_the_pin_is_refused():
    """numpy's OpenBLAS picks its kernels when numpy loads: other kernels give the familiarity fit other bits."""
    code = (
        "import numpy\n"
        "from signdigits.core.kernels import pin_cpu_kernels, openblas_architecture\n"
        "from signdigits.core.errors import PipelineError\n"
        "print(openblas_architecture())\n"
        "try:\n    pin_cpu_kernels('portable')\nexcept PipelineError as e:\n    print(e)\n"
    )
    env = {**os.environ, "OPENBLAS_CORETYPE": "Sandybridge"}  # AVX kernels: run on any CPU with AVX2
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    if not cpu_has_avx2():
        pytest.skip("this CPU has no AVX2: portable cannot pin anything here")
    if out.splitlines()[0] == "None":
        pytest.skip("this numpy uses another BLAS than OpenBLAS")
    assert "runs numpy with OpenBLAS Sandybridge kernels" in out
    assert "before torch and numpy are imported" in out


@pytest.mark.integration
def test_a_pinned_process_runs_numpys_openblas_on_the_portable_kernels():
    code = (
        "from signdigits.core.kernels import pin_cpu_kernels, openblas_architecture\n"
        "pin_cpu_kernels('portable')\n"
        "import numpy\n"
        "print(openblas_architecture())\n"
    )
    env = {**os.environ, "OPENBLAS_CORETYPE": "Sandybridge"}  # overridden by the pin
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    if not cpu_has_avx2():
        pytest.skip("this CPU has no AVX2: portable cannot pin anything here")
    assert out.strip() in (PORTABLE_OPENBLAS, "None")


def test_a_pinned_process_runs_numpys_own_loops_at_the_avx2_level():
    """numpy picks its loops (log among them) by instruction set: its AVX-512 ones gave the familiarity check's
    validation scores other bits than its AVX2 ones on this project's Intel machine."""
    code = (
        "from signdigits.core.kernels import pin_cpu_kernels, numpy_avx512_targets\n"
        "pin_cpu_kernels('portable')\n"
        "import numpy\n"
        "print(numpy_avx512_targets())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, capture_output=True, text=True)
    if not cpu_has_avx2():
        pytest.skip("this CPU has no AVX2: portable cannot pin anything here")
    assert out.returncode == 0, out.stderr  # no warning from numpy about the names it was given
    assert out.stdout.strip() == "[]"


def test_numpy_loaded_with_its_avx512_loops_is_refused():
    code = (
        "import json, numpy\n"
        "from signdigits.core.kernels import pin_cpu_kernels, numpy_avx512_targets\n"
        "from signdigits.core.errors import PipelineError\n"
        "print(json.dumps(numpy_avx512_targets()))\n"
        "try:\n    pin_cpu_kernels('portable')\nexcept PipelineError as e:\n    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"} | {"OPENBLAS_CORETYPE": "Haswell"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    targets = json.loads(out.splitlines()[0])
    if not targets:
        pytest.skip("this CPU runs no AVX-512 loops of numpy: nothing to refuse")
    assert f"runs numpy with its {' '.join(targets)} loops" in out


@pytest.mark.parametrize("mode", ["portable", "native"])
def test_idle_openmp_threads_spin_briefly_unless_the_environment_says(mode):
    """Every stage process (and the sweep's workers, which inherit it) gets WAIT_ENV; a user's own setting stays."""
    code = (
        "import json, os\n"
        "from signdigits.core.kernels import pin_cpu_kernels\n"
        f"pin_cpu_kernels({mode!r})\n"
        "print(json.dumps({k: os.environ.get(k) for k in ('GOMP_SPINCOUNT', 'KMP_BLOCKTIME')}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in WAIT_ENV and k != "OMP_WAIT_POLICY"}
    for given, expected in (
        ({}, WAIT_ENV),
        ({"GOMP_SPINCOUNT": "0"}, {**WAIT_ENV, "GOMP_SPINCOUNT": "0"}),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, dict.fromkeys(WAIT_ENV)),  # the user's policy alone decides
    ):
        done = subprocess.run([sys.executable, "-c", code], env=env | given, capture_output=True, text=True, check=True)
        assert json.loads(done.stdout) == expected
