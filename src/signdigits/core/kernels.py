"""Which CPU kernels torch uses: pinned to one instruction set (`portable`) or this CPU's best (`native`).

PyTorch picks its vectorised kernels by the instruction set it finds at import, and MKL picks its
matrix-multiply code path by CPU model and vendor; AVX-512 kernels round differently from AVX2
ones. `portable` pins both, so every x86-64 CPU with AVX2 computes the same bits:

- ATen to AVX2 (`ATEN_CPU_CAPABILITY`), oneDNN to AVX2 (`ONEDNN_MAX_CPU_ISA`);
- MKL to its `COMPATIBLE` branch (`MKL_CBWR`), the one Intel documents as giving the same
  results on Intel and AMD processors. Its `AVX2` branch is faster but is documented for Intel
  processors only, and on AMD it gives other bits than MKL's default (measured; see README).

The variables take effect only if set before torch is imported, so this module never imports
torch itself until asked what torch uses, and refuses to pin after the fact.
"""

from __future__ import annotations

import os
import sys

from signdigits.core.errors import PipelineError

MODES = ("portable", "native")
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PORTABLE_CAPABILITY = "AVX2"  # what torch reports when the pin took effect on a CPU with AVX2


def pin_cpu_kernels(mode: str) -> None:
    """Set the environment for `mode` before torch is imported; child processes inherit it."""
    if mode not in MODES:
        raise PipelineError(f"runtime.cpu_kernels = {mode!r} is not allowed: choose one of {', '.join(MODES)}")
    if mode == "native":
        for name in PORTABLE_ENV:
            os.environ.pop(name, None)
    else:
        os.environ.update(PORTABLE_ENV)
    if "torch" in sys.modules:
        check_cpu_kernels(mode)


def cpu_has_avx2() -> bool:
    """From the kernel's CPU flags (Linux); elsewhere False, which is what portable needs to know."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def check_cpu_kernels(mode: str) -> None:
    """Fail when this process's torch runs other kernels than `mode` asks for (it was imported too early)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if mode != "portable" or not cpu_has_avx2():
        return
    pinned = all(os.environ.get(k) == v for k, v in PORTABLE_ENV.items())
    if capability != PORTABLE_CAPABILITY or not pinned:
        raise PipelineError(
            f"this process runs torch with {capability} kernels and MKL_CBWR={os.environ.get('MKL_CBWR')}, "
            f"but runtime.cpu_kernels is portable ({describe_env(PORTABLE_ENV)}): it must be set before torch "
            "is imported; start the process with those variables in its environment"
        )


def describe_env(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items())


def describe_cpu_kernels(mode: str) -> str:
    """One log line: the setting and what torch actually uses."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    return f"cpu kernels: {mode} (torch {capability}, MKL_CBWR={os.environ.get('MKL_CBWR', 'default')})"
