"""Atomic, deterministic file output and checked input.

Every output of the pipeline goes through `write_bytes_atomic`: the bytes land in a temporary
file beside the target, are flushed to disk, then renamed over it. A stage that fails or is
killed therefore leaves either the previous file or none, never half of one. Inside `outputs()`
(every stage runs in one) the renames wait for the end, so a stage's files change all together
or not at all; after `abandon()` nothing is renamed any more.

A temporary file is named `.<name>.<pid>-<random>.tmp`: a dot file, which .gitignore and .dvcignore
leave out (never committed, never in a hash DVC takes). Only SIGKILL (or a power cut) leaves one; the
next write of the same target removes those whose process has ended.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import hashlib
import io
import json
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from signdigits.core.errors import PipelineError

# Bumped whenever the layout of prepared data, split files or model files changes, so that
# stale files from an older pipeline fail with a clear message instead of a confusing one.
FORMAT_VERSION = 3  # 2: the final model file carries its familiarity check; 3: with photo statistics


TEMPORARY_SUFFIX = ".tmp"
seconds_writing = 0.0  # spent in write_bytes_atomic by this process: the stage timing line reports it
_pending: dict[Path, Path] | None = None  # target -> its written temporary file, inside outputs()
_rename_lock = threading.Lock()  # abandon() and the renames exclude each other
_abandoned = False


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write data beside path and rename it over path: now, or at the end of the enclosing outputs()."""
    global seconds_writing
    started = time.perf_counter()
    path = Path(path)
    make_folder(path.parent)
    remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=TEMPORARY_SUFFIX)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        if _pending is None:
            _rename({path: Path(tmp)})
        else:
            earlier = _pending.pop(path, None)
            if earlier is not None:  # written twice: the last one counts
                earlier.unlink()
            _pending[path] = Path(tmp)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise
    seconds_writing += time.perf_counter() - started
    return path


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of `path` that a killed process left (its pid no longer runs); return them."""
    removed = []
    for tmp in path.parent.glob(f"{glob.escape('.' + path.name)}.*-*{TEMPORARY_SUFFIX}"):
        pid = tmp.name[len(path.name) + 2 :].partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            with contextlib.suppress(OSError):  # removed meanwhile, or not ours to remove: it stays ignored
                tmp.unlink()
                removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def outputs(before_renaming: Callable[[], None] = lambda: None):
    """Hold back the renames of every write inside until the block ends; on any failure, rename none.

    before_renaming() runs just before the renames: if it raises, nothing is renamed either.
    """
    global _pending
    if _pending is not None:  # nested: the outer block commits
        yield
        return
    _pending = {}
    try:
        yield
        before_renaming()
        _rename(_pending)
    finally:
        for tmp in _pending.values():
            tmp.unlink(missing_ok=True)
        _pending = None


def abandon() -> None:
    """No output of this process is renamed into place after this returns (its owner is gone)."""
    global _abandoned
    with _rename_lock:
        _abandoned = True


def _rename(written: dict[Path, Path]) -> None:
    with _rename_lock:
        if _abandoned:
            raise KeyboardInterrupt  # unwinds like SIGTERM: temporary files removed, exit 130
        for target, tmp in list(written.items()):
            try:
                os.replace(tmp, target)
            except OSError as e:
                raise write_error(target, e) from None
            del written[target]


def make_folder(path: str | os.PathLike) -> Path:
    """mkdir -p, its failure as write_error's one line."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    return path


_WRITE_PROBLEMS = {
    errno.ENOSPC: "the disk is full ({strerror}); free space there and rerun",
    errno.EDQUOT: "the disk is full ({strerror}); free space there and rerun",
    errno.EROFS: "cannot write: the file system is read-only; write somewhere else, or mount it writable",
    errno.EACCES: "cannot write: permission denied; make the folder writable for you, or write somewhere else",
    errno.EPERM: "cannot write: permission denied; make the folder writable for you, or write somewhere else",
    errno.ENOTDIR: "cannot write: a part of this path is a file, not a folder; remove or rename that file",
    errno.EEXIST: "cannot write: a part of this path is a file, not a folder; remove or rename that file",
    errno.EISDIR: "cannot write: this path is a folder; remove it or write elsewhere",
}


def write_error(path: Path, error: OSError) -> PipelineError:
    """An OS error of a write as one line naming the file and what to do: a full disk, a read-only file system, ..."""
    problem = _WRITE_PROBLEMS.get(error.errno, "cannot write ({strerror})")
    return PipelineError(f"{path}: {problem.format(strerror=error.strerror or type(error).__name__)}")


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
    """Compressed .npz with a format version, the same bytes from any Python: what np.load reads.

    Not np.savez_compressed: it forces ZIP64 headers, which CPython's zipfile writes differently from
    one patch release to the next (3.11.2 and 3.11.7 gave other bytes for the same arrays). Here every
    header field is fixed: the 1980 timestamp, Unix as the creating system, plain (not ZIP64) sizes.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in {"format_version": np.array(FORMAT_VERSION), **arrays}.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.asanyarray(array), allow_pickle=False)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type, entry.create_system, entry.external_attr = zipfile.ZIP_DEFLATED, 3, 0o644 << 16
            archive.writestr(entry, npy.getvalue())
    return write_bytes_atomic(path, buffer.getvalue())


def digest_text(arrays: dict[str, Any]) -> str:
    """A line per array (numpy or CPU torch): name, shape, dtype, md5 of its raw bytes in C order.

    Kept in git for each output that lives in the DVC cache (metrics/digests/), so that when a machine
    makes other bytes, `git diff` names the array or tensor that differs, not only the file's hash.
    """
    lines = ["name\tshape\tdtype\tmd5"]
    for name, array in arrays.items():
        raw = np.ascontiguousarray(np.asarray(array))
        lines.append(f"{name}\t{tuple(raw.shape)}\t{array.dtype}\t{hashlib.md5(raw.tobytes()).hexdigest()}")
    return "\n".join(lines) + "\n"


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
        problem = why_missing(path)
        problem = "file not found" if problem == "no such file" else problem
        raise PipelineError(f"{path}: {problem}; run the stage that produces it (`dvc repro`)")
    return path


def why_missing(path: str | os.PathLike) -> str:
    """Why nothing is at path: a symlink loop, a symlink to nothing (a DVC cache object gone), or no such file."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop (following its links leads back to one of them)"
        if os.path.islink(path):
            return f"a symlink to {os.readlink(path)}, which does not exist"
    return "no such file"
