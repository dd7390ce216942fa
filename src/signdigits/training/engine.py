"""The one training engine every training stage, the sweep and the final model use.

Read it top to bottom: `train` -> `_train_member` (the epoch loop) -> `_epoch_order` (which images
form each batch) -> `evaluate`. The data sits on the device as one tensor; a batch is a slice of
a permutation drawn from a seeded CPU generator, so batch order is the same on every device.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS determinism: before CUDA starts

import numpy as np
import torch
import torch.nn.functional as F

from signdigits.core.errors import PipelineError
from signdigits.core.kernels import check_cpu_kernels, describe_cpu_kernels, pin_convolutions
from signdigits.core.limits import idle_cores, usable_cores
from signdigits.core.params import AUTO, Runtime, TrainParams
from signdigits.training import optim
from signdigits.training.composite import composite, hand_masks
from signdigits.training.inputs import normalize_each_image, to_inputs
from signdigits.training.model import Arch, Classifier, Network
from signdigits.training.products import use_threads

log = logging.getLogger(__name__)


def setup_runtime(runtime: Runtime, threads: int | None = None) -> torch.device:
    """The CPU kernels runtime.cpu_kernels pinned, deterministic kernels, the threads (at most the cores), device."""
    check_cpu_kernels(runtime.cpu_kernels)
    pin_convolutions(runtime.cpu_kernels)
    log.info(describe_cpu_kernels(runtime.cpu_kernels))
    _use_deterministic_algorithms()
    threads = threads or runtime.threads
    if threads == AUTO:  # the bits do not depend on the thread count (training/products.py)
        threads = idle_cores()
        log.info("threads: %d (runtime.threads = auto: the cores idle now)", threads)
    elif threads > usable_cores():
        log.warning("runtime.threads = %d is more than the %d CPU cores this process may use: using %d "
                    "(the results are the same on any count)", threads, usable_cores(), usable_cores())  # fmt: skip
        threads = usable_cores()
    torch.set_num_threads(threads)
    use_threads(threads)
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if runtime.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": has_mps}
    if not available[runtime.device]:
        raise PipelineError(
            f"params.yaml: runtime.device = {runtime.device!r}, but this machine has no such device "
            f"(torch {torch.__version__}); use auto or cpu"
        )
    return torch.device(runtime.device)


def _use_deterministic_algorithms() -> None:
    """torch.use_deterministic_algorithms(True), minus its import of the compiler stack.

    The public function also sets torch._inductor's config, whose import costs about 0.9 s at every
    stage start (measured by benchmarks/bench.py; benchmarks/README.md, "On this machine"); nothing
    here compiles, and the kernel-level switch is the same call.
    """
    set_kernels = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_kernels is None or "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(True)
    else:
        set_kernels(True)


@dataclass
class Part:
    """One part of the split (train, val or test): pixels in [0, 1], flattened, and labels 0..k-1, on the device."""

    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def from_arrays(cls, pixels: np.ndarray, labels: np.ndarray, device: torch.device) -> Part:
        x = to_inputs(pixels).to(device)
        return cls(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device))

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TrainResult:
    model: Classifier
    history: list[dict] = field(default_factory=list)  # per epoch, of the first ensemble member
    epochs_run: int = 0
    best_epoch: int = 0


def train(
    cfg: TrainParams,
    train_data: Part,
    val_data: Part,
    classes: list[int],
    name: str = "model",
) -> TrainResult:
    """Train cfg.ensemble networks with seeds seed, seed+1, ...; return them as one Classifier.

    With cfg.channels, each network is a CNN with those conv blocks before its dense layers (model.Arch.of);
    the loop, schedules, augmentation and history are the same for both kinds. With cfg.composite
    enabled, training photos are also laid on random backgrounds (training/composite.py).
    """
    image_size = math.isqrt(train_data.x.shape[1])
    arch = Arch.of(cfg, image_size, len(classes))
    inputs = normalize_each_image(train_data.x) if cfg.normalize_images else train_data.x
    mean = inputs.mean(dim=0)  # per-pixel statistics of the training part only
    std = inputs.std(dim=0).clamp_min(1e-3)  # constant pixels would divide by zero
    masks = hand_masks(train_data.x, image_size) if cfg.composite.enabled else None  # where each hand is
    members, results = [], []
    for k in range(cfg.ensemble):
        tag = name if cfg.ensemble == 1 else f"{name}[{k + 1}/{cfg.ensemble}]"
        member, result = _train_member(cfg, cfg.seed + k, arch, mean, std, train_data, val_data, tag, masks)
        members.append(member)
        results.append(result)
    first = results[0]  # its history and epochs stand for the ensemble
    first.model = Classifier(arch, classes, members).eval()
    return first


def _train_member(cfg, seed, arch, mean, std, train_data, val_data, tag, masks=None) -> tuple[Network, TrainResult]:
    torch.manual_seed(seed)  # weights and dropout
    order_rng = torch.Generator().manual_seed(seed)  # batch order and augmentation, on the CPU
    device = train_data.x.device
    net = Network(arch, mean, std).to(device)
    optimizer = make_optimizer(cfg, net.parameters(), device)
    scheduler = make_scheduler(cfg, optimizer, -(-_epoch_length(train_data.y, cfg.balanced) // cfg.batch_size))
    per_batch = cfg.scheduler == "onecycle"  # onecycle steps after every batch, the others after every epoch
    result = TrainResult(model=None)
    best_loss, best_state, stale = math.inf, None, 0
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        net.train()
        order = _epoch_order(train_data.y, cfg.balanced, order_rng).to(device)
        inputs, labels = (
            _epoch_inputs(net, train_data.x[order], arch.image_size, cfg, order_rng, masks, order),
            train_data.y[order],
        )
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for start in range(0, len(order), cfg.batch_size):
            x, y = inputs[start : start + cfg.batch_size], labels[start : start + cfg.batch_size]
            logits = net.head(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_batch:
                scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(dim=1) == y).sum()
        train_loss = loss_sum.item() / len(order)
        if not math.isfinite(train_loss):
            raise PipelineError(
                f"{tag}: training diverged in epoch {epoch} (loss {train_loss}); "
                f"lower the learning rate (lr = {cfg.lr:g}, weight_decay = {cfg.weight_decay:g}). No model was written."
            )
        if scheduler is not None and not per_batch:
            scheduler.step()
        val = evaluate(net, val_data)
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_accuracy": correct.item() / len(order),
                "val_loss": val.loss,
                "val_accuracy": val.accuracy,
                "lr": lr,
            }
        )
        result.epochs_run = epoch
        h = result.history[-1]
        log.info(
            "%s epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.3g  (%.2fs)",
            tag, epoch, cfg.epochs, h["train_loss"], h["train_accuracy"], val.loss, val.accuracy, lr,
            time.perf_counter() - started,
        )  # fmt: skip
        if cfg.patience:
            if val.loss < best_loss:
                best_loss, best_state, stale, result.best_epoch = val.loss, copy.deepcopy(net.state_dict()), 0, epoch
            else:
                stale += 1
                if stale >= cfg.patience:
                    log.info("%s early stop after epoch %d; best epoch %d", tag, epoch, result.best_epoch)
                    break
        else:
            result.best_epoch = epoch
    if best_state is not None:
        net.load_state_dict(best_state)
    return net.eval(), result


def _epoch_order(labels: torch.Tensor, balanced: bool, rng: torch.Generator) -> torch.Tensor:
    """The order of training images for one epoch, drawn on the CPU.

    Balanced: every class is shuffled and cycled up to the size of the largest, then the classes
    are interleaved, so any batch whose size is a multiple of the number of classes holds them
    in equal numbers (for two classes: any even batch size).
    """
    labels = labels.cpu()
    if not balanced:
        return torch.randperm(len(labels), generator=rng)
    per_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
    longest = max(len(idx) for idx in per_class)
    columns = []
    for idx in per_class:
        draws = [idx[torch.randperm(len(idx), generator=rng)] for _ in range(-(-longest // len(idx)))]
        columns.append(torch.cat(draws)[:longest])
    return torch.stack(columns, dim=1).flatten()


def _epoch_length(labels: torch.Tensor, balanced: bool) -> int:
    """How many images `_epoch_order` returns: all of them, or every class cycled up to the largest."""
    if not balanced:
        return len(labels)
    counts = torch.unique(labels.cpu(), return_counts=True)[1]
    return int(counts.max()) * len(counts)


@torch.no_grad()
def _epoch_inputs(
    net: Network,
    pixels: torch.Tensor,
    image_size: int,
    cfg: TrainParams,
    rng: torch.Generator,
    masks: torch.Tensor | None = None,
    order: torch.Tensor | None = None,
) -> torch.Tensor:
    """The epoch's images, in its order, laid on backgrounds (cfg.composite, given the training photos' hand
    `masks`), augmented (cfg.augment) and standardised in one go: what net.head reads.

    Every image gets its own draws, and each step works image by image, so the augmentation's numbers are
    those of doing it batch by batch, in a few dozen kernel calls an epoch instead of a few dozen a batch.
    With backgrounds, the epoch's composite draws come before its augmentation draws.
    """
    if masks is not None:
        pixels = composite(pixels, masks[order], image_size, cfg.composite, rng)
    if cfg.augment.enabled:
        pixels = augment(pixels, image_size, cfg.augment, rng)
    return net.standardize(pixels)


def augment(x: torch.Tensor, image_size: int, cfg, rng: torch.Generator) -> torch.Tensor:
    """Random rotation, scale and shift of a batch of flattened images, on their device.

    The sampling grid is affine_grid's (align_corners=False: pixel centres in [-1, 1]) written out as
    products and sums: its batched 3x2 matrix product cost more than the sampling itself. A pixel's x and
    y are sums of a term of its column and a term of its row, so each image's products are taken once per
    column or row, and the two sums per pixel are written straight into the grid.
    """
    n = len(x)
    draws = torch.rand(n, 4, generator=rng).to(x.device) * 2 - 1  # uniform in [-1, 1]
    angle = draws[:, 0:1] * math.radians(cfg.rotate)
    scale = 1 + draws[:, 1:2] * cfg.scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift_x, shift_y = draws[:, 2:3] * 2 * cfg.shift, draws[:, 3:4] * 2 * cfg.shift
    centres = (torch.arange(image_size, device=x.device, dtype=x.dtype) * 2 + 1) / image_size - 1
    cos_by_column, sin_by_column = (cos * centres).unsqueeze(1), (sin * centres).unsqueeze(1)  # (n, 1, size)
    cos_by_row, sin_by_row = cos_by_column.transpose(1, 2), sin_by_column.transpose(1, 2)  # (n, size, 1)
    grid = torch.empty(n, image_size, image_size, 2, device=x.device, dtype=x.dtype)
    torch.sub(cos_by_column, sin_by_row, out=grid[..., 0]).add_(shift_x.unsqueeze(2))  # x = cos col - sin row + shift
    torch.add(sin_by_column, cos_by_row, out=grid[..., 1]).add_(shift_y.unsqueeze(2))  # y = sin col + cos row + shift
    images = x.view(n, 1, image_size, image_size)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False).view(n, -1)


def make_optimizer(cfg: TrainParams, parameters, device: torch.device) -> torch.optim.Optimizer:
    """Fused kernels where this torch has them for the device (one kernel per step), else foreach.

    Built by training.optim: torch.optim's arithmetic without its import of the compiler stack.
    """
    fast = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    return optim.make(cfg.optimizer, parameters, cfg.lr, cfg.weight_decay, cfg.momentum, fast)


def make_scheduler(cfg: TrainParams, optimizer, batches_per_epoch: int):
    """onecycle (for short runs): lr/25 warming up to lr over the first 30% of the batches, then annealed to ~0;
    with adam/adamw it also cycles beta1 between 0.95 and 0.85 (OneCycleLR's defaults)."""
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=batches_per_epoch
        )
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return None


def accuracy(predictions: np.ndarray, labels: np.ndarray, dtype=np.float64) -> float:
    """The share of right answers: the one place it is computed.

    float64, except the float32 that the learning curves' val_accuracy and the sweep's rows were first
    written with (Evaluation.accuracy): each output keeps the precision, and so the bytes, it has.
    """
    return float(np.mean(np.asarray(predictions) == np.asarray(labels), dtype=dtype))


@dataclass
class Evaluation:
    loss: float
    accuracy: float  # float32, see accuracy()
    predictions: np.ndarray
    probabilities: np.ndarray


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: Part) -> Evaluation:
    was_training = model.training
    model.eval()
    logits = model(data.x)
    model.train(was_training)
    return evaluation(logits, data.y)


@torch.inference_mode()
def evaluation(logits: torch.Tensor, labels: torch.Tensor) -> Evaluation:
    """What evaluate reports of a part, from the model's logits of it (Classifier.read gives them too)."""
    predictions = logits.argmax(dim=1).cpu().numpy()
    return Evaluation(
        loss=F.cross_entropy(logits, labels).item(),
        accuracy=accuracy(predictions, labels.cpu().numpy(), np.float32),
        predictions=predictions,
        probabilities=logits.softmax(dim=1).cpu().numpy(),
    )
