"""Which CPU kernels torch and numpy use: pinned to one instruction set (`portable`) or this CPU's best (`native`).

PyTorch and numpy pick their vectorised kernels by the instruction set they find at import, and MKL
and OpenBLAS pick theirs by CPU model and vendor; AVX-512 kernels round differently from AVX2 ones.
`portable` pins each, so every x86-64 CPU with AVX2 computes the same bits:

- ATen to AVX2 (`ATEN_CPU_CAPABILITY`), oneDNN to AVX2 (`ONEDNN_MAX_CPU_ISA`);
- MKL to its `COMPATIBLE` branch (`MKL_CBWR`), the one Intel documents as giving the same
  results on Intel and AMD processors, for whatever torch still sends it (the augmentation's sines
  and cosines); its `AVX2` branch is documented for Intel processors only.
- numpy's OpenBLAS to its Haswell kernels (`OPENBLAS_CORETYPE`) on one thread (`OPENBLAS_NUM_THREADS`),
  and numpy's own loops to their AVX2 level (`NPY_DISABLE_CPU_FEATURES` turns off the AVX-512 targets
  X86_V4, AVX512_ICL and AVX512_SPR): the networks' matrix products run there (training/products.py),
  and the familiarity check computes in numpy (training/familiarity.py), because torch sends float64
  products and square roots and logs to MKL, whose bits differed between Intel and AMD even under
  `COMPATIBLE` (docs/reproducibility.md). On one thread a product adds in one order, whatever the
  thread count torch uses.

The variables take effect only if set before torch and numpy are imported, so this module imports
neither until asked what they use, and refuses to pin after the fact.
"""

from __future__ import annotations

import os
import shlex
import sys

from signdigits.core.errors import PipelineError

MODES = ("portable", "native")
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",  # OpenBLAS splits a product's sums by its thread count
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy 2.4's targets above AVX2 (X86_V3)
}
# How long an OpenMP thread that has run out of work spins before it sleeps: not a kernel choice (the same
# threads do the same sums either way), so set in both modes unless the environment already says. libgomp
# (torch's OpenMP on Linux) spins 300,000 rounds by default, milliseconds: beside another busy process the
# two threads of a training take turns spinning while the other waits for the core. 1,000 rounds (libgomp's own
# choice when threads outnumber cores) cover the
# short gap between two kernels of a training step and then give the core up. KMP_BLOCKTIME (milliseconds) is the
# same setting for the LLVM and Intel OpenMP runtimes (torch on macOS). Not set where the environment names
# OMP_WAIT_POLICY or these variables. benchmarks/README.md measures it.
WAIT_ENV = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1"}
PORTABLE_CAPABILITY = "AVX2"  # what torch reports when the pin took effect on a CPU with AVX2
PORTABLE_OPENBLAS = "Haswell"  # what numpy's OpenBLAS reports then (threadpoolctl)


def pin_cpu_kernels(mode: str) -> None:
    """Set the environment for `mode` (and WAIT_ENV) before torch is imported; child processes inherit it."""
    if mode not in MODES:
        raise PipelineError(f"runtime.cpu_kernels = {mode!r} is not allowed: choose one of {', '.join(MODES)}")
    if "OMP_WAIT_POLICY" not in os.environ:  # a wait policy the user chose stays as it is
        for name, value in WAIT_ENV.items():
            os.environ.setdefault(name, value)
    if mode == "native":
        for name in PORTABLE_ENV:
            os.environ.pop(name, None)
    else:
        os.environ.update(PORTABLE_ENV)
    if "torch" in sys.modules or "numpy" in sys.modules:
        check_cpu_kernels(mode)


def cpu_has_avx2() -> bool:
    """From the kernel's CPU flags (Linux); elsewhere False, which is what portable needs to know."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def check_cpu_kernels(mode: str) -> None:
    """Fail when this process's torch or numpy runs other kernels than `mode` asks for (imported too early)."""
    if mode != "portable" or not cpu_has_avx2():
        return
    pinned = all(os.environ.get(k) == v for k, v in PORTABLE_ENV.items())
    if "torch" in sys.modules:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
        if capability != PORTABLE_CAPABILITY or not pinned:
            _refuse(f"torch with {capability} kernels and MKL_CBWR={os.environ.get('MKL_CBWR')}")
    if "numpy" in sys.modules:
        architecture = openblas_architecture()
        if architecture not in (None, PORTABLE_OPENBLAS):
            _refuse(f"numpy with OpenBLAS {architecture} kernels")
        beyond_avx2 = numpy_avx512_targets()
        if beyond_avx2:
            _refuse(f"numpy with its {' '.join(beyond_avx2)} loops")


def openblas_architecture() -> str | None:
    """The kernels numpy's OpenBLAS chose (Haswell, SkylakeX, Zen, ...); None where numpy uses another BLAS."""
    from threadpoolctl import threadpool_info

    return next((pool.get("architecture") for pool in threadpool_info() if pool["internal_api"] == "openblas"), None)


def numpy_avx512_targets() -> list[str]:
    """numpy's own SIMD targets above AVX2 that this process runs (none under the pin)."""
    import numpy as np

    internals = getattr(np, "_core", None) or np.core
    dispatch, active = internals._multiarray_umath.__cpu_dispatch__, internals._multiarray_umath.__cpu_features__
    return [name for name in dispatch if active.get(name) and ("AVX512" in name or name == "X86_V4")]


def _refuse(what: str) -> None:
    raise PipelineError(
        f"this process runs {what}, but runtime.cpu_kernels is portable ({describe_env(PORTABLE_ENV)}): "
        "it must be set before torch and numpy are imported; start the process with those variables in its environment"
    )


def pin_convolutions(mode: str) -> None:
    """Under `portable`, convolutions run in ATen (im2col, then the BLAS matrix multiply the dense layers use).

    oneDNN, torch's default for them on x86, chooses its kernels and blocking at run time from the CPU it
    finds (cache sizes, ISA) and may split reductions by thread, so its sums can differ between CPUs
    even with the ISA pinned. ATen's path adds in one fixed order with the pinned AVX2 and MKL kernels.
    """
    import torch

    torch.backends.mkldnn.enabled = mode != "portable"


def describe_env(env: dict[str, str]) -> str:
    """As a shell would take them before a command."""
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def describe_cpu_kernels(mode: str) -> str:
    """One log line: the setting and what torch actually uses."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    return (
        f"cpu kernels: {mode} (torch {capability}, MKL_CBWR={os.environ.get('MKL_CBWR', 'default')}, "
        f"products in OpenBLAS {openblas_architecture()})"
    )
