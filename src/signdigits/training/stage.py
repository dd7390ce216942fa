"""What a training stage does around the engine: load the split, train, write model, metrics, history."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import torch

from signdigits.core import paths
from signdigits.core.data import load_train_val
from signdigits.core.errors import PipelineError
from signdigits.core.files import csv_text, write_json, write_text_atomic
from signdigits.core.limits import conv_sides, require_memory, training_bytes
from signdigits.core.params import CNN_ONLY, Composite, Runtime, TrainParams, shown
from signdigits.training.composite import composited_once
from signdigits.training.engine import Part, accuracy, evaluation, setup_runtime, train
from signdigits.training.familiarity import ModelCheck, fit_familiarity, fit_model_check, require_components_fit
from signdigits.training.model import Reading, describe
from signdigits.training.model_file import save_model

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


@dataclass
class StageData:
    """The training and validation parts on the device, labels mapped to 0..k-1 (test is evaluate's)."""

    train: Part
    val: Part
    classes: list[int]


def load_stage_data(device: torch.device, classes: tuple[int, ...] = tuple(range(10))) -> StageData:
    train_pixels, train_labels, val_pixels, val_labels = load_train_val(classes)
    train, val = (
        Part.from_arrays(train_pixels, train_labels, device),
        Part.from_arrays(val_pixels, val_labels, device),
    )
    return StageData(train, val, list(classes))


def require_batch_fits(key: str, batch_size: int, n_train: int) -> None:
    """Checked once the data is loaded, before training: a batch larger than the data is a typo."""
    if batch_size > n_train:
        raise PipelineError(
            f"params.yaml: {key} = {batch_size} is not allowed: larger than the {n_train} training images"
        )


def require_conv_fits(key: str, channels: tuple[int, ...], image_size: int) -> None:
    """Checked once the data is loaded, before training: each conv block halves the image, which must keep a pixel."""
    if channels and conv_sides(image_size, len(channels))[-1] < 1:
        most = image_size.bit_length() - 1
        raise PipelineError(
            f"params.yaml: {key} = {shown(channels)} is not allowed: {len(channels)} conv blocks halve the "
            f"{image_size}x{image_size} images (prepare.image_size) to nothing; list at most {most}, "
            "or raise prepare.image_size"
        )


def train_stage(
    name: str,
    cfg: TrainParams,
    runtime: Runtime,
    classes: tuple[int, ...] = tuple(range(10)),
    familiarity_components: int = 0,
) -> dict:
    """Train one stage's model and write models/<name>.pt, metrics/<name>.json, plots/<name>/history.csv.

    The JSON records the settings the model was trained with, so evaluate and the report read them
    from here and never from params.yaml. With familiarity_components, the model file also carries a
    familiarity check fitted on the same training images and the trained network. With cfg.channels, the
    network is a CNN; with cfg.composite, its training photos are also laid on random backgrounds
    (training/composite.py).
    """
    device = setup_runtime(runtime)
    data = load_stage_data(device, classes)
    key = params_prefix(name)
    require_batch_fits(f"{key}batch_size", cfg.batch_size, len(data.train))
    n_train, inputs = data.train.x.shape
    require_conv_fits(f"{key}channels", cfg.channels, math.isqrt(inputs))
    what = "training it" if cfg.ensemble == 1 else f"training it ({cfg.ensemble} networks)"
    needed = training_bytes(cfg, inputs, len(classes), n_train + len(data.val))
    size_key, size = (f"{key}channels", cfg.channels) if cfg.channels else (f"{key}hidden", cfg.hidden)
    require_memory(size_key, size, needed, what)
    if familiarity_components:
        require_components_fit(familiarity_components, n_train, inputs)
    started = time.perf_counter()
    result = train(cfg, data.train, data.val, data.classes, name)
    train_seconds = time.perf_counter() - started
    log.info("%s: trained in %.1fs on %s", name, train_seconds, device)
    train_read, val_read = (result.model.read(part.x) for part in (data.train, data.val))  # for both below
    if familiarity_components:
        result.model.familiarity = fit_check(
            data, train_read, val_read, cfg.normalize_images, familiarity_components, cfg.composite, cfg.seed
        )
    metrics = {
        "config": {
            **settings(cfg),
            "classes": data.classes,
            "network": describe(result.model.arch),
        },
        "train": _loss_and_accuracy(train_read, data.train),
        "val": _loss_and_accuracy(val_read, data.val),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "device": device.type,
        "threads": runtime.threads,
        "cpu_kernels": runtime.cpu_kernels,
        "torch_version": torch.__version__,
    }
    save_model(result.model, paths.model_path(name))
    write_json(paths.metrics_path(name), metrics)
    write_text_atomic(paths.history_path(name), csv_text(result.history, HISTORY_COLUMNS))
    return metrics


def fit_check(
    data: StageData,
    train_read: Reading,
    val_read: Reading,
    normalize_images: bool,
    components: int,
    backgrounds: Composite | None = None,
    seed: int = 0,
) -> ModelCheck:
    """The model's familiarity check: the pixel score and the network's signals (the model's reads of the two
    parts), fitted on the training part, standardised and thresholded on the validation part
    (training/familiarity.py).

    With backgrounds, the pixel score is fitted on the training photos as training laid them
    (composite.composited_once, seeded with `seed`): fitted on the plain photos' light wall, it calls
    unfamiliar every hand on another background, which the network was taught to read (issue 32).
    The network's signals stay fitted on the plain photos (on the composited ones they were no more
    often right on foreign_dev, studies/README.md); the threshold comes from the plain validation part.
    """
    pixel_photos = data.train.x
    if backgrounds is not None and backgrounds.enabled:
        pixel_photos = composited_once(data.train.x, math.isqrt(data.train.x.shape[1]), backgrounds, seed)
    pixel_check = fit_familiarity(pixel_photos, data.val.x, normalize_images, components)
    return fit_model_check(
        pixel_check, train_read.features, data.train.y.cpu().numpy(), data.val.x, val_read.features, val_read.top
    )


def params_prefix(name: str) -> str:
    """Where a stage's settings live in params.yaml: the final model's at the top level, others under their name."""
    return "" if name == paths.FINAL_MODEL else f"{name}."


def settings(cfg: TrainParams) -> dict:
    """The resolved training settings as plain JSON data; a CNN's with its channels and backgrounds (composite),
    a fully-connected network's without those keys, which only a CNN's section holds (params.CNN_ONLY)."""
    values = {**asdict(cfg), "hidden": list(cfg.hidden), "channels": list(cfg.channels)}
    if cfg.kind == "mlp":
        for key in CNN_ONLY:
            del values[key]
    return values


def _loss_and_accuracy(read: Reading, data: Part) -> dict:
    ev = evaluation(read.logits, data.y)
    return {"loss": ev.loss, "accuracy": accuracy(ev.predictions, data.y.cpu().numpy())}
