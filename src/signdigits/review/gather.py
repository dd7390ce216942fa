"""Gather: the result files of the base revision (git) and of the workspace, each checked against the dvc.lock
of its revision, and the refusals that come before any judging (not a repository, no `dvc`, stale results).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from signdigits.core import paths
from signdigits.core.errors import PipelineError
from signdigits.core.params import ReviewParams, parse_yaml, review_params

TEST_COLUMNS = ("model", "part", "images", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high")  # scores.csv
SHIFT_COLUMNS = ("shift", "images", "flagged")  # familiarity_shifts*.csv, read by name: evaluate may add columns
MISSING = ("deleted", "not in cache")  # how `dvc status` names an output that is simply not here
SETUP_HINT = "activate the project's environment (`source .venv/bin/activate`; `make setup` makes it)"


def tool(name: str) -> str:
    """The `dvc` or `git` to run: on PATH, else beside this Python (a venv's python run without activating it)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise PipelineError(f"`{name}` not found (not on PATH, nor beside {sys.executable}); {SETUP_HINT}")
    return found


def run_bytes(args: list[str]) -> bytes:
    done = subprocess.run([tool(args[0]), *args[1:]], capture_output=True)
    if done.returncode != 0:
        error = (done.stderr.strip() or done.stdout.strip()).decode(errors="replace")
        raise PipelineError(f"`{' '.join(args)}` failed: {error.splitlines()[0] if error else 'no message'}")
    return done.stdout


def run_text(args: list[str]) -> str:
    return run_bytes(args).decode()


def repository_root(start: Path | None = None) -> Path:
    """The DVC repository around `start` (the current folder): the first folder upwards with .dvc/, as DVC finds it."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise PipelineError(f"{start}: not inside a DVC repository (no .dvc/ here or above); run the review in one")


def dvc_diff(kind: str, base: str) -> dict:
    """{file: {key: {old, new, diff}}} from `dvc params|metrics diff --json`."""
    return json.loads(run_text(["dvc", kind, "diff", base, "--json"]) or "{}")


def _is_git_tracked(path: str) -> bool:
    return bool(run_text(["git", "ls-files", "--", path]).strip())


def stale_stages() -> list[str]:
    """Stages whose params, command, dependencies or outputs differ from what dvc.lock records.

    An output edited by hand (or a merge that took one side of plots/) is stale: the review judges only results
    dvc.lock records. Outputs merely missing (every fresh clone: not pulled, not in the cache) do not count,
    nor does a DVC-tracked dependency that reads as changed only because such an output is missing in it.
    """
    status = json.loads(run_text(["dvc", "status", "--json"]) or "{}")
    missing = {
        out
        for changes in status.values()
        for change in changes
        if isinstance(change, dict)
        for out, what in change.get("changed outs", {}).items()
        if what in MISSING
    }

    def changed(dep: str, what) -> bool:
        if isinstance(what, dict) or _is_git_tracked(dep):  # params, or code and files in git
            return True
        return what not in MISSING and not any(out == dep or out.startswith(dep.rstrip("/") + "/") for out in missing)

    stale = []
    for stage, changes in status.items():
        reasons = []
        for change in changes:
            if change == "changed command" or (isinstance(change, dict) and "changed command" in change):
                reasons.append("its command")
            if not isinstance(change, dict):
                continue
            reasons += [
                f"{dep}: {', '.join(what)}" if isinstance(what, dict) else dep  # params: the keys that changed
                for dep, what in sorted(change.get("changed deps", {}).items())
                if changed(dep, what)
            ]
            reasons += [
                f"output {out} {what}"
                for out, what in sorted(change.get("changed outs", {}).items())
                if what not in MISSING
            ]
        if reasons:
            stale.append(f"{stage}: {', '.join(reasons)}")
    return stale


class Revision:
    """The result files of a git revision (`base`) or of the workspace (None), parsed with the file named on error.

    Every file dvc.lock records as an output is checked against the md5 the lock of the same revision gives it.
    """

    def __init__(self, base: str | None):
        self.base = base
        self._lock: dict[str, str] | None = None

    @property
    def name(self) -> str:
        return self.base or "the workspace"

    def label(self, path: Path) -> str:
        return f"{self.base}:{path.as_posix()}" if self.base else path.as_posix()

    def exists(self, path: Path) -> bool:
        if self.base is None:
            return path.is_file()
        spec = f"{self.base}:{path.as_posix()}"
        return subprocess.run([tool("git"), "cat-file", "-e", spec], capture_output=True).returncode == 0

    def raw(self, path: Path) -> bytes:
        if self.base is None:
            if not path.is_file():
                raise PipelineError(f"{path}: file not found; run the stage that produces it (`dvc repro`)")
            return path.read_bytes()
        return run_bytes(["git", "show", f"{self.base}:{path.as_posix()}"])

    def lock_md5s(self) -> dict[str, str]:
        """{output path: md5} of every file output in this revision's dvc.lock (none when it has no lock); only
        DVC 3's plain md5 of the bytes (`hash: md5`), not DVC 2's of text with its line ends normalised."""
        if self._lock is None:
            self._lock = {}
            if self.exists(Path("dvc.lock")):
                lock = yaml.safe_load(self.raw(Path("dvc.lock"))) or {}
                for stage in (lock.get("stages") or {}).values():
                    for out in stage.get("outs", []):
                        if out.get("hash") == "md5" and out.get("md5") and not out["md5"].endswith(".dir"):
                            self._lock[out["path"]] = out["md5"]
        return self._lock

    def data(self, path: Path) -> bytes:
        """The file's bytes, refused when they are not what this revision's dvc.lock records."""
        import hashlib

        data = self.raw(path)
        recorded = self.lock_md5s().get(path.as_posix())
        if recorded and hashlib.md5(data).hexdigest() != recorded:
            raise PipelineError(
                f"{self.label(path)}: not the output dvc.lock records (edited by hand, or a merge took one side?); "
                "the review judges only reproduced results: run `dvc repro` and commit what it writes"
            )
        return data

    def text(self, path: Path) -> str:
        return self.data(path).decode()

    def parse(self, path: Path, parser: Callable[[str], object]):
        text = self.text(path)
        try:
            return parser(text)
        except Exception as e:  # any parse or layout error of a result file is the file's fault
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise PipelineError(f"{self.label(path)}: malformed ({reason})") from None

    def table(self, path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
        def parse(text: str) -> pd.DataFrame:
            frame = pd.read_csv(io.StringIO(text))
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise ValueError(f"no column {', '.join(missing)}")
            numeric = [c for c in columns if c not in ("file", "model", "part", "label", "shift")]
            frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="raise")
            for share in ("accuracy", "flagged"):
                if share in columns and not frame[share].between(0, 1).all():
                    raise ValueError(f"a value of {share} is not a number in [0, 1]")
            return frame

        return self.parse(path, parse)

    def thresholds(self) -> ReviewParams:
        """The gate's settings: the review section of this revision's params.yaml (defaults for keys not written)."""
        label = self.label(paths.PARAMS)
        try:
            return review_params(parse_yaml(self.data(paths.PARAMS), label))
        except PipelineError as e:  # name the revision the setting came from
            raise PipelineError(str(e).replace("params.yaml: ", f"{label}: ", 1)) from None

    def test_scores(self) -> pd.DataFrame:
        """Every model evaluate scored, one row each (test part), in scores.csv's order: the headline's rows."""
        frame = self.table(paths.SCORES, TEST_COLUMNS)
        return frame[frame.part == "test"].set_index("model")[list(TEST_COLUMNS[2:])]

    def predictions(self, model: str) -> pd.DataFrame:
        return self.table(paths.predictions_path(model), ("file", "actual", "predicted"))

    def per_digit(self, model: str) -> pd.DataFrame:
        frame = self.table(paths.PER_CLASS, ("model", "digit", "recall", "f1"))
        return frame[frame.model == model].set_index("digit")[["recall", "f1"]]

    def history(self, model: str) -> pd.DataFrame | None:
        path = paths.history_path(model)
        return self.table(path, ("epoch", "val_loss", "val_accuracy")) if self.exists(path) else None

    def record(self, model: str) -> dict | None:
        """metrics/<model>.json: the kept model's val accuracy (`val.accuracy`), `best_epoch`, `epochs_run`."""
        path = paths.metrics_path(model)
        if not self.exists(path):
            return None

        def parse(text: str) -> dict:
            record = json.loads(text)
            val = float(record["val"]["accuracy"])
            if not 0 <= val <= 1:
                raise ValueError("val.accuracy is not a number in [0, 1]")
            return {"val_accuracy": val, "best_epoch": record.get("best_epoch"), "epochs_run": record.get("epochs_run")}

        return self.parse(path, parse)

    def familiarity(self, model: str) -> pd.DataFrame | None:
        """The model's familiarity check on the clean test photos and each shifted set (None: it has no check)."""
        path = paths.familiarity_shifts_path(model)
        if not self.exists(path):
            return None
        return self.table(path, SHIFT_COLUMNS).set_index("shift")

    def split_record(self) -> bytes | None:
        """metrics/split.json: what the split stage made (photos per digit and part); None where it is absent."""
        path = paths.METRICS / "split.json"
        return self.data(path) if self.exists(path) else None


def chdir_to_root() -> Path:
    """Run from the repository's root (dvc and the result paths are relative to it), which it returns."""
    root = repository_root()
    os.chdir(root)
    return root
