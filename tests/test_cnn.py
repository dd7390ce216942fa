"""train_cnn's network (issue 26): the engine trains it like the MLPs and its file records its kind (that its
bytes do not depend on the thread count: test_products.py).

Tiny 2-epoch CNNs on synthetic images: the full stage's repeatability is what these pin down.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from signdigits.core import paths
from signdigits.core.files import read_json
from signdigits.core.params import Augment, Composite, Runtime, TrainParams
from signdigits.training.engine import Part, evaluate, train
from signdigits.training.model import describe
from signdigits.training.model_file import load_model, model_bytes
from signdigits.training.stage import load_stage_data, train_stage

CPU = torch.device("cpu")
CHANNELS = (4, 8)
CNN = TrainParams(
    hidden=(),
    optimizer="adamw",
    lr=0.01,
    weight_decay=0.05,
    batch_size=16,
    epochs=2,
    scheduler="onecycle",
    label_smoothing=0.1,
    normalize_images=True,
    augment=Augment(shift=0.06, rotate=8, scale=0.06),
    channels=CHANNELS,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int, size: int, seed: int) -> Part:
    """A bright square at a digit-dependent place on noise: something a convolution can find anywhere."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    pixels = rng.integers(0, 80, size=(n, size, size)).astype(np.uint8)
    for i, digit in enumerate(labels):
        row, col = divmod(int(digit), 4)
        pixels[i, 3 * row + 1 : 3 * row + 4, 3 * col + 1 : 3 * col + 4] = 255
    return Part.from_arrays(pixels, labels, CPU)


def test_the_engine_trains_a_cnn_that_learns():
    train_part, val = images(200, 16, seed=0), images(60, 16, seed=1)
    result = train(dataclasses.replace(CNN, epochs=8), train_part, val, list(range(10)), "cnn")
    model = result.model
    assert model.arch.kind == "cnn" and model.arch.channels == CHANNELS
    assert describe(model.arch) == "16x16-c4-c8-128-10"  # 8 channels of 4x4 after two poolings
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    assert evaluate(model, val).accuracy >= 0.9
    assert not model.training  # batch norm uses its running statistics from here on


def test_a_cnn_file_records_its_kind_and_round_trips_bitwise(tmp_path):
    result = train(CNN, images(64, 16, 0), images(20, 16, 1), list(range(10)), "cnn")
    path = tmp_path / "cnn.pt"
    path.write_bytes(model_bytes(result.model))
    loaded = load_model(path, kind="cnn", hidden=())
    assert loaded.arch == result.model.arch
    x = images(20, 16, 2).x
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))
    assert model_bytes(loaded) == path.read_bytes()
    payload = torch.load(path, weights_only=True)
    assert payload["arch"]["kind"] == "cnn" and payload["arch"]["channels"] == list(CHANNELS)
    with pytest.raises(Exception, match="model has kind cnn, expected mlp"):
        load_model(path, kind="mlp")


def test_the_stage_writes_a_cnn_with_its_own_familiarity_check(tiny_layout):
    cfg = dataclasses.replace(CNN, augment=Augment(), channels=(4,), composite=Composite(0.3, 0.5, 1.5))
    metrics = train_stage("train_cnn", cfg, Runtime(device="cpu", threads=1), familiarity_components=5)
    model = load_model(paths.model_path("train_cnn"))
    assert model.arch.kind == "cnn" and model.familiarity is not None
    assert model.familiarity.pixels.normalize_images is True  # the CNN's own setting
    assert model.familiarity.feature_whitening.shape == (64, 64)  # its own features: 4 channels x 4x4 pooled
    assert metrics["config"]["channels"] == [4] and metrics["config"]["network"] == "8x8-c4-64-10"
    assert metrics["config"]["composite"] == {"share": 0.3, "zoom_share": 0.5, "zoom_out": 1.5}  # what it trained with
    assert read_json(paths.metrics_path("train_cnn"))["config"] == metrics["config"]
    data = load_stage_data(CPU)
    for part in ("train", "val"):  # the one pass per part that also fits the check gives evaluate's numbers
        ev = evaluate(model, getattr(data, part))
        assert metrics[part]["loss"] == ev.loss
        assert metrics[part]["accuracy"] == float(np.mean(ev.predictions == getattr(data, part).y.numpy()))
