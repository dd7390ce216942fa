"""What this machine allows: the CPU cores this process may use, and the memory a training may take.

Checked before training, so a network or a number of parallel runs that cannot fit ends in one line
naming the estimate, rather than in swapping, the OOM killer or a traceback from inside torch.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path

from signdigits.core.errors import PipelineError
from signdigits.core.params import TrainParams, shown

BYTES_PER_NUMBER = 4  # float32 weights, gradients, optimizer state and activations
OPTIMIZER_STATES = {"adam": 2, "adamw": 2}  # numbers per weight; sgd: 1 with momentum, else 0
_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a number near 2**63


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity masks
        return os.cpu_count() or 1


def idle_cores(window: float = 0.2, stat: Path = Path("/proc/stat")) -> int:
    """The usable cores that other processes leave idle, from the kernel's CPU counters over `window`
    seconds (Linux's /proc/stat); at least 1. Where there are no such counters, every usable core."""
    try:
        before = stat.read_text().split("\n", 1)[0]
        time.sleep(window)
        after = stat.read_text().split("\n", 1)[0]
        return cores_left(before, after, os.cpu_count() or 1, usable_cores())
    except (OSError, ValueError, IndexError):
        return usable_cores()


def cores_left(before: str, after: str, cpus: int, usable: int) -> int:
    """From two readings of /proc/stat's `cpu` line (ticks: user nice system idle iowait ...): the cpus
    not busy in between, rounded, within 1..usable."""
    ticks = [int(b) - int(a) for a, b in zip(before.split()[1:], after.split()[1:], strict=True)]
    busy_share = (sum(ticks) - ticks[3] - ticks[4]) / max(sum(ticks), 1)  # idle and iowait are not busy
    return max(1, min(usable, round(cpus * (1 - busy_share))))


def training_bytes(cfg: TrainParams, inputs: int, classes: int, images: int) -> int:
    """A rough upper estimate of what training cfg keeps in memory, from the network cfg describes.

    Weights of every ensemble member (trained one after another), the gradients and optimizer state
    of the one in training, a copy of the best epoch's weights with early stopping, the activations
    of a training batch (outputs, dropout masks, gradients) or of a whole evaluated part, and the
    images themselves as float32 inputs. A CNN's (cfg.channels, square images): each conv block adds
    its 3x3 weights and batch norm's, and per image its patches (products.Conv3x3's rows) and its outputs
    before and after batch norm, ReLU and pooling.
    """
    side, before, conv_weights, conv_numbers = math.isqrt(inputs), 1, 0, 0
    widths = [dense_inputs(side, cfg.channels), *cfg.hidden, classes]
    for after, pooled in zip(cfg.channels, conv_sides(side, len(cfg.channels)), strict=True):
        conv_weights += 9 * before * after + 2 * after
        conv_numbers += (9 * before + 3 * after) * side * side + after * pooled**2
        side, before = pooled, after
    weights = conv_weights + sum((a + 1) * b for a, b in itertools.pairwise(widths))
    states = OPTIMIZER_STATES.get(cfg.optimizer, 1 if cfg.momentum > 0 else 0)
    copies = cfg.ensemble + 1 + states + (1 if cfg.patience else 0)
    activations = max(3 * cfg.batch_size, images) * (sum(widths) + conv_numbers)
    return BYTES_PER_NUMBER * (weights * copies + activations + images * inputs)


def conv_sides(image_size: int, blocks: int) -> list[int]:
    """The side of each conv block's output for square images: every block (2x2 max pool) halves it, rounding down.

    The one place of this arithmetic: the network (model.Arch, through dense_inputs), the memory estimate and
    the check that the blocks leave at least a pixel (training.stage.require_conv_fits) all read it.
    """
    sides, side = [], image_size
    for _ in range(blocks):
        side //= 2
        sides.append(side)
    return sides


def dense_inputs(image_size: int, channels: tuple[int, ...]) -> int:
    """What a network's dense layers read: the pixels, or the last conv block's channels times its pooled
    side squared."""
    if not channels:
        return image_size * image_size
    return channels[-1] * conv_sides(image_size, len(channels))[-1] ** 2


def available_memory(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> tuple[int, str] | None:
    """Bytes this process may still take and where the figure comes from; None where not known (not Linux).

    MemAvailable of the machine, or what the process's memory cgroup (v2 or v1) leaves where that is lower.
    Reclaimable page cache (inactive files) counts as available in both.
    """
    found = []
    try:
        meminfo = dict(line.split(":", 1) for line in (proc / "meminfo").read_text().splitlines() if ":" in line)
        found.append((int(meminfo["MemAvailable"].split()[0]) * 1024, "MemAvailable"))
    except (OSError, KeyError, ValueError):
        pass
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            found += _cgroup_v2(cgroup_root, path)
        elif "memory" in controllers.split(","):
            found += _cgroup_v1(cgroup_root / "memory", path)
    return min(found) if found else None


def _cgroup_v2(root: Path, path: str) -> list[tuple[int, str]]:
    """memory.max minus the memory in use, for the process's cgroup and each above it (the lowest binds)."""
    folder = root / path.lstrip("/")
    if not folder.is_dir():  # a cgroup namespace: the root seen here is the process's own cgroup
        folder = root
    found = []
    for level in [folder, *folder.parents]:
        try:
            limit = (level / "memory.max").read_text().strip()
            if limit != "max":
                in_use = int((level / "memory.current").read_text()) - _stat(level, "inactive_file")
                found.append((int(limit) - in_use, f"the memory limit of cgroup {level}"))
        except (OSError, ValueError):
            pass
        if level == root:
            break
    return found


def _cgroup_v1(root: Path, path: str) -> list[tuple[int, str]]:
    """The hierarchical limit (the lowest of this cgroup and those above it) minus the memory in use."""
    folder = root / path.lstrip("/")
    for level in (folder, root):
        try:
            limit = _stat(level, "hierarchical_memory_limit")
            in_use = int((level / "memory.usage_in_bytes").read_text()) - _stat(level, "total_inactive_file")
        except (OSError, ValueError):
            continue
        return [(limit - in_use, f"the memory limit of cgroup {level}")] if 0 < limit < _UNLIMITED else []
    return []


def _stat(folder: Path, name: str) -> int:
    for line in (folder / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    raise ValueError(f"no {name} in {folder / 'memory.stat'}")


def require_memory(key: str, value, needed: int, what: str) -> None:
    """Refuse `key = value` when `needed` bytes (for `what`, e.g. "training it") exceed the memory available."""
    available = available_memory()
    if available is None or needed <= available[0]:
        return
    free, source = available
    raise PipelineError(
        f"params.yaml: {key} = {shown(value)} is not allowed: {what} needs about {_gb(needed)} of memory, "
        f"but {_gb(max(free, 0))} is available ({source}); use fewer or narrower layers"
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"
