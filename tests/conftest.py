"""Shared fixtures: synthetic raw image trees, a tiny copy of the repository to run stages in, real data.

- `write_raw_tree(root, ...)` writes data/raw-style folders of small JPEGs with IMG_<n> names
  numbered like the real photos (one signer = one run of consecutive numbers, digits 0..9 in order).
- `tiny_repo` is a temporary copy of the repository layout (stages/, params.yaml, dvc.yaml) with a
  synthetic data/raw and params edited to train in a second; `TinyRepo.run("prepare")` runs
  `python stages/prepare.py` there as a subprocess, as DVC would.
- `real_prepared` is data/raw prepared once per session (about 3 s), for tests of the real data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from signdigits.core.kernels import pin_cpu_kernels

pin_cpu_kernels("portable")  # before torch loads: the tests compute with the kernels the stages use

import numpy as np
import pytest
import torch
import yaml

from signdigits.core import paths
from signdigits.core.files import write_arrays

ROOT = Path(__file__).resolve().parents[1]
REAL_RAW = ROOT / "data" / "raw"

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
        for name in ("params.yaml", "dvc.yaml"):
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
        """Leftovers of write_bytes_atomic: .<name>.<random>.tmp anywhere in the copy."""
        return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob(".*.tmp"))


def stage_env() -> dict[str, str]:
    """The environment of stage subprocesses: few threads, since the machine is shared."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


@pytest.fixture
def tiny_repo(tmp_path) -> TinyRepo:
    """A fresh tiny repository: stages/, params.yaml (tiny settings), dvc.yaml, 20 signers of synthetic photos."""
    return TinyRepo.create(tmp_path / "repo")


@pytest.fixture(scope="session")
def tiny_repo_factory(tmp_path_factory):
    """TinyRepo.create in a new temporary folder: for module- or session-scoped repositories."""

    def create(name: str = "repo", **kwargs) -> TinyRepo:
        return TinyRepo.create(tmp_path_factory.mktemp(name) / "repo", **kwargs)

    return create


@pytest.fixture(scope="session")
def raw_tree_writer():
    """The `write_raw_tree(root, per_digit=20, size=20, seed=0, first_number=1000)` function."""
    return write_raw_tree


@pytest.fixture(scope="session")
def real_prepared(tmp_path_factory):
    """The real data/raw prepared once per session with the default prepare params: (Prepared, metrics)."""
    from signdigits.core.data import load_prepared, prepare
    from signdigits.core.params import PrepareParams

    if not (REAL_RAW / "0").is_dir():
        pytest.skip("data/raw is not checked out (dvc pull)")
    out = tmp_path_factory.mktemp("real") / "images.npz"
    metrics = prepare(REAL_RAW, out, PrepareParams())
    return load_prepared(out), metrics


@pytest.fixture
def one_thread():
    """Small tensors run fastest, and identically, on one thread; the setting is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class TinyLayout:
    pixels: np.ndarray
    labels: np.ndarray
    files: np.ndarray
    test: np.ndarray


@pytest.fixture
def tiny_layout(tmp_path, monkeypatch) -> TinyLayout:
    """data/prepared and data/split in tmp_path (made the cwd): 120 noisy 8x8 images of 10 digits.

    Images 0..59 train, 60..89 val, 90..119 test: every part holds every digit.
    """
    n, size = 120, 8
    rng = np.random.default_rng(0)
    prototypes = rng.integers(0, 256, size=(10, size, size))
    labels = np.arange(n, dtype=np.int64) % 10
    pixels = np.clip(prototypes[labels] + rng.normal(0, 110, size=(n, size, size)), 0, 255).astype(np.uint8)
    files = np.array([f"{d}/IMG_{i:04d}.JPG" for i, d in enumerate(labels)])
    signers = np.arange(n, dtype=np.int32) // 10
    write_arrays(tmp_path / paths.PREPARED, pixels=pixels, labels=labels, signers=signers, files=files)
    idx = np.arange(n)
    write_arrays(tmp_path / paths.SPLIT, train=idx[:60], val=idx[60:90], test=idx[90:])
    monkeypatch.chdir(tmp_path)
    return TinyLayout(pixels, labels, files, idx[90:])
