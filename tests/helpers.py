"""What the tests share: synthetic raw photos, a tiny copy of the repository that runs stages as DVC would,
and a model file that would run code if it were unpickled. Running git, DVC and python as a person would
is in signdigits.devtools, which benchmarks and studies use too.

- `write_raw_tree(root, ...)` writes data/raw-style folders of small JPEGs with IMG_<n> names
  numbered like the real photos (one signer = one run of consecutive numbers, digits 0..9 in order).
- `TinyRepo` is a temporary copy of the repository layout (stages/, params.yaml, dvc.yaml, .dvcignore) with a
  synthetic data/raw and params shrunk to train in a second; `TinyRepo.run("prepare")` runs
  `python stages/prepare.py` there as a subprocess, as DVC would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from signdigits.devtools import PIPELINE_STAGES, git_clone, run, stages_run, venv_env

ROOT = Path(__file__).resolve().parents[1]
REAL_RAW = ROOT / "data" / "raw"
DVC_STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]  # the pipeline as committed
DVC_PLOTS = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]  # its charts: {id: definition} or a path

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (the GPU path: docs/reproducibility.md#what-holds-where)"
)

# Settings that make every stage of the tiny repository finish in about a second of compute.
TINY_PARAMS = {
    "runtime.device": "cpu",
    "runtime.threads": 1,
    "prepare.image_size": 16,
    "hidden": [32],
    "epochs": 2,
    "batch_size": 16,
    "ensemble": 1,
    "train_binary.epochs": 2,
    "train_binary.hidden": [16],
    "train_binary.batch_size": 8,
    "train_base.epochs": 2,
    "train_base.batch_size": 16,
    "train_exp1.epochs": 2,
    "train_exp1.hidden": [32, 16],
    "train_exp1.batch_size": 16,
    "exp2.lr": [0.01],
    "exp2.batch_size": [16],
    "exp2.epochs": [1],
    "exp2.optimizer": ["adam"],
    "exp2.hidden": [16],
    "exp2.jobs": 1,
    "train_cnn.channels": [4, 8],
    "train_cnn.epochs": 2,
    "train_cnn.batch_size": 16,
    "evaluate.bootstrap": 10,
    "evaluate.max_misclassified": 4,
}


def digit_image(digit: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A grayscale picture that differs by digit (a bar at a digit-dependent place) plus noise."""
    pixels = rng.integers(0, 60, size=(size, size)).astype(np.uint8)
    column = (digit * size) // 10
    pixels[:, column : column + max(1, size // 10)] = 255
    pixels[(digit * size) // 20, :] = 200
    return pixels


def write_raw_tree(
    root: Path, per_digit: int = 20, size: int = 20, seed: int = 0, first_number: int = 1000
) -> list[Path]:
    """root/<digit>/IMG_<n>.JPG, `per_digit` signers who each sign 0..9 once with consecutive numbers.

    Signer s gets numbers first_number + 10*s + digit, like the real photos, so signer recovery
    finds exactly `per_digit` signers. Returns the written paths.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = []
    for signer in range(per_digit):
        for digit in range(10):
            folder = root / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"IMG_{first_number + 10 * signer + digit}.JPG"
            Image.fromarray(digit_image(digit, size, rng), mode="L").convert("RGB").save(path, format="JPEG")
            written.append(path)
    return written


def _set_dotted(mapping: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        mapping = mapping.setdefault(key, {})
    mapping[last] = value


class TinyRepo:
    """A temporary copy of the repository layout in which stages run as subprocesses."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, path: Path, per_digit: int = 20, tiny: bool = True) -> TinyRepo:
        path.mkdir(parents=True, exist_ok=True)
        shutil.copytree(ROOT / "stages", path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("params.yaml", "dvc.yaml", ".dvcignore"):
            shutil.copy2(ROOT / name, path / name)
        repo = cls(path)
        if per_digit:
            write_raw_tree(path / "data" / "raw", per_digit=per_digit)
        if tiny:
            repo.set_params(TINY_PARAMS)
        return repo

    def copy_to(self, path: Path) -> TinyRepo:
        shutil.copytree(self.path, path, ignore=shutil.ignore_patterns("__pycache__"))
        return TinyRepo(path)

    @property
    def params_file(self) -> Path:
        return self.path / "params.yaml"

    def read_params(self) -> dict:
        return yaml.safe_load(self.params_file.read_text())

    def set_params(self, changes: dict | None = None, **kwargs) -> None:
        """Set keys by dotted name, e.g. {"train_base.lr": 0.1, "epochs": 3}, keeping the rest."""
        raw = self.read_params()
        for dotted, value in {**(changes or {}), **kwargs}.items():
            _set_dotted(raw, dotted, value)
        self.params_file.write_text(yaml.safe_dump(raw, sort_keys=False))

    def run(self, stage: str, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        """`python stages/<stage>.py` in the copy; the package comes from this interpreter's environment."""
        result = subprocess.run(
            [sys.executable, f"stages/{stage}.py", *args],
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=stage_env(),
        )
        if check and result.returncode != 0:
            raise AssertionError(f"stage {stage} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def popen(self, stage: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, f"stages/{stage}.py"], cwd=self.path, env=stage_env(), **kwargs)

    def snapshot(self, exclude: tuple[str, ...] = ("params.yaml", "data/raw", "stages", "dvc.yaml")) -> dict[str, str]:
        """sha256 of every file (relative posix path -> digest), leaving out inputs and caches."""
        digests = {}
        for file in sorted(self.path.rglob("*")):
            rel = file.relative_to(self.path).as_posix()
            if not file.is_file() or "__pycache__" in rel or any(rel == e or rel.startswith(e + "/") for e in exclude):
                continue
            digests[rel] = hashlib.sha256(file.read_bytes()).hexdigest()
        return digests

    def temporary_files(self) -> list[str]:
        """Leftovers of write_bytes_atomic: .<name>.<pid>-<random>.tmp anywhere in the copy."""
        return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob(".*.tmp"))


def stage_env() -> dict[str, str]:
    """The environment of stage subprocesses: few threads, since the machine is shared."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


@dataclass
class TinyLayout:
    pixels: np.ndarray
    labels: np.ndarray
    files: np.ndarray
    test: np.ndarray


class RunsOnUnpickle:
    """Unpickling this runs open(marker, "w"): a model file holding it would create the marker on load."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --- git and DVC in subprocesses ------------------------------------------------------------------


def git_commit(cwd: Path, message: str) -> None:
    run(["git", "add", "-A"], cwd=cwd)
    run(["git", "commit", "--quiet", "-m", message], cwd=cwd)


def make_tiny_pipeline_repo(path: Path, tiny_source: Path, env: dict[str, str] | None = None) -> Path:
    """A git clone of this repository's HEAD with tiny params and synthetic photos, committed, then reproduced.

    `tiny_source` holds the tiny params.yaml and data/raw (a TinyRepo); every stage then takes about a
    second of compute, so a test of DVC's workflow does not pay for the real pipeline again.
    """
    git_clone(ROOT, path)
    run(["git", "rm", "-r", "--quiet", "data/raw"], cwd=path)
    shutil.copytree(tiny_source / "data" / "raw", path / "data" / "raw")
    shutil.copy2(tiny_source / "params.yaml", path / "params.yaml")
    git_commit(path, "Tiny params and synthetic photos")
    run(["dvc", "repro"], cwd=path, env=env, timeout=600)
    git_commit(path, "Tiny results")
    return path


class FreshReproduction:
    """A fresh clone of the committed HEAD whose whole pipeline runs from scratch (no DVC cache), in the background.

    Started when the session starts, it runs beside the tests that come before the ones reading it, on the core
    they leave idle; `clone()` waits for it. Its own process group, so that `stop()` ends DVC, the stage and any
    process the stage started, at once.
    """

    def __init__(self, target: Path):
        self.path = git_clone(ROOT, target)
        self.stdout, self.stderr = target.with_name("repro.out"), target.with_name("repro.err")  # beside, not in it
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.process = subprocess.Popen(
                ["dvc", "repro", "--force"], cwd=self.path, env=venv_env(), stdout=out, stderr=err, process_group=0
            )

    def clone(self) -> Path:
        """The reproduced clone, once `dvc repro --force` ran every stage."""
        code = self.process.wait()
        out, err = self.stdout.read_text(), self.stderr.read_text()
        assert code == 0, f"dvc repro --force exited {code}\n{out[-3000:]}\n{err[-3000:]}"
        assert stages_run(out) == PIPELINE_STAGES
        return self.path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def copy_repository(source: Path, target: Path) -> Path:
    """A copy of a repository with its git history, DVC cache and outputs: cheaper than reproducing it again."""
    shutil.copytree(source, target, symlinks=True)
    return target


def experiments_of_head(cwd: Path) -> list[dict]:
    """The experiments `dvc exp show --json` lists under the baseline commit (not the workspace row)."""
    rows = json.loads(run(["dvc", "exp", "show", "--json"], cwd=cwd).stdout)
    baseline = next(row for row in rows if row["rev"] != "workspace")
    return [exp["revs"][0]["data"] for exp in baseline["experiments"] or []]


def train_tiny_final_model():
    """train_best's training and familiarity check on tiny_layout's images (the cwd), as the stage does it."""
    from signdigits.core import paths
    from signdigits.core.params import Runtime, TrainParams
    from signdigits.training.model_file import load_model
    from signdigits.training.stage import train_stage

    cfg = TrainParams(hidden=(8,), dropout=0.0, lr=0.01, batch_size=10, epochs=1, normalize_images=True)
    train_stage("train_best", cfg, Runtime(device="cpu", threads=1), familiarity_components=5)
    return load_model(paths.model_path("train_best"))


def assert_fails_cleanly(repo, stage: str, *expected: str, timeout: float = 120) -> str:
    """Run the stage; exit 2, the expected text in its error line, outputs untouched, no temp files."""
    before = repo.snapshot()
    result = repo.run(stage, timeout=timeout)
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    message = result.stderr[result.stderr.index("error: ") :]
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "Traceback" not in result.stderr
    assert repo.snapshot() == before, "an earlier output changed"
    assert repo.temporary_files() == []
    return message


def load_script(path: Path):
    """A CI script without the .py suffix (.ci/changes, .ci/review), imported as a module to test its functions."""
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_loader

    loader = SourceFileLoader(path.name.replace("-", "_"), str(path))
    module = module_from_spec(spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def fit_check(model, train_x, train_y, val_x, normalize_images: bool, components: int):
    """A model's familiarity check fitted as training/stage.py fits it, from given training and validation pixels."""
    from signdigits.training.familiarity import fit_familiarity, fit_model_check

    pixel_check = fit_familiarity(train_x, val_x, normalize_images, components)
    train_features, _ = model.signals(train_x)
    val_features, val_top = model.signals(val_x)
    return fit_model_check(pixel_check, train_features, np.asarray(train_y), val_x, val_features, val_top)
