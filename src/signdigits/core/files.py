"""Atomic, deterministic file output and checked input.

Every output of the pipeline goes through `write_bytes_atomic`: the bytes land in a temporary
file beside the target, are flushed to disk, then renamed over it. A stage that fails or is
killed therefore leaves either the previous file or none, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from signdigits.core.errors import PipelineError

# Bumped whenever the layout of prepared data, split files or model files changes, so that
# stale files from an older pipeline fail with a clear message instead of a confusing one.
FORMAT_VERSION = 3  # 2: the final model file carries its familiarity check; 3: with photo statistics


seconds_writing = 0.0  # spent in write_bytes_atomic by this process: the stage timing line reports it


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    global seconds_writing
    started = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    seconds_writing += time.perf_counter() - started
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, sort_keys: bool = True) -> Path:
    """Floats rounded, keys sorted (unless their order is the point), a trailing newline: equal content, equal bytes."""
    return write_text_atomic(path, json.dumps(rounded(obj), indent=2, sort_keys=sort_keys) + "\n")


def rounded(obj, digits: int = 6):
    """Round every float in a nested structure, so metrics files read and diff well."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def read_json(path: str | os.PathLike) -> Any:
    path = require_file(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PipelineError(f"{path}: not valid JSON ({e})") from None


def csv_text(rows, columns: tuple[str, ...]) -> str:
    """Rows of dicts as CSV text with \n line ends, the columns in the given order, floats rounded."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rounded(dict(row)) for row in rows)
    return out.getvalue()


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows as dicts of strings, from a CSV that a stage wrote."""
    path = require_file(path)
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Compressed .npz with a format version. np.savez writes fixed zip timestamps: stable bytes."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, format_version=np.array(FORMAT_VERSION), **arrays)
    return write_bytes_atomic(path, buffer.getvalue())


def read_arrays(path: str | os.PathLike, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load an .npz written by `write_arrays`, refusing pickles and files of another format version."""
    path = require_file(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as e:  # zipfile, OSError and ValueError all mean the same: not our file
        raise PipelineError(f"{path}: cannot read arrays ({e}); rerun the stage that writes it") from None
    try:
        version = int(arrays.pop("format_version", -1))
    except (TypeError, ValueError):  # not a number: some other program's array of that name
        version = -1
    if version != FORMAT_VERSION:
        raise PipelineError(
            f"{path}: written by another version of the pipeline (format {version}, expected "
            f"{FORMAT_VERSION}); rerun it with `dvc repro --force <stage>`"
        )
    missing = [name for name in required if name not in arrays]
    if missing:
        raise PipelineError(f"{path}: missing arrays {missing}; rerun the stage that writes it")
    return arrays


def require_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found; run the stage that produces it (`dvc repro`)")
    return path
