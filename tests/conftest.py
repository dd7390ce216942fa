"""Fixtures only; what they build lives in helpers.py."""

from __future__ import annotations

from pathlib import Path

from signdigits.core.kernels import pin_cpu_kernels

pin_cpu_kernels("portable")  # before torch loads: the tests compute with the kernels the stages use

import numpy as np
import pytest
import torch
from helpers import REAL_RAW, FreshReproduction, TinyLayout, TinyRepo, make_tiny_pipeline_repo, write_raw_tree

from signdigits.core import paths
from signdigits.core.files import write_arrays

# Fixtures that run stage scripts or DVC in subprocesses, or read the real photos: a test using one
# is marked `integration` here; other tests that start processes carry the mark themselves.
INTEGRATION_FIXTURES = {
    "tiny_repo",
    "tiny_repo_factory",
    "trained_tiny_repo",
    "repo",
    "reproduced_clone",
    "tiny_pipeline",
    "real_prepared",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture(scope="session", autouse=True)
def fresh_reproduction(request, tmp_path_factory):
    """The pipeline of `reproduced_clone`, started with the session when a selected test reads it (else None)."""
    if not any("reproduced_clone" in item.fixturenames for item in request.session.items):
        yield None
        return
    reproduction = FreshReproduction(tmp_path_factory.mktemp("fresh") / "signdigits")
    yield reproduction
    reproduction.stop()


@pytest.fixture(scope="session")
def reproduced_clone(fresh_reproduction):
    """A fresh clone of HEAD with the whole pipeline reproduced (about 3 minutes, from the session's start): read
    only; copy it to change it."""
    return fresh_reproduction.clone()


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_repo_factory, tmp_path_factory) -> Path:
    """A git clone of HEAD with tiny params and synthetic photos, reproduced by `dvc repro` and committed (about
    half a minute, once per session): read only; copy_repository it, or git clone it, to change it."""
    tiny = tiny_repo_factory("tiny-pipeline-source")
    return make_tiny_pipeline_repo(tmp_path_factory.mktemp("tiny-pipeline") / "signdigits", tiny.path)


@pytest.fixture(scope="session")
def trained_tiny_repo(tiny_repo_factory) -> TinyRepo:
    """A tiny repository where prepare, split and train_base ran once: read only; `repo` copies it."""
    repo = tiny_repo_factory("trained")
    for stage in ("prepare", "split", "train_base"):
        repo.run(stage, check=True)
    return repo


@pytest.fixture
def repo(trained_tiny_repo, tmp_path) -> TinyRepo:
    """A private copy of the trained tiny repository, free to break; its outputs are what a failure must keep."""
    return trained_tiny_repo.copy_to(tmp_path / "repo")


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
    """As the stages run (setup_runtime), on one thread: small tensors run fastest, and identically, there.

    The process's thread count and deterministic switch are restored afterwards, also for tests that
    call setup_runtime or run_sweep, which set them.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


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
