"""The training engine (issue 3): learning, determinism, early stopping, schedules, batches, devices.

Everything trains small networks on tiny synthetic 8x8 images, so the module runs in seconds.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from signdigits.core.errors import PipelineError
from signdigits.core.limits import usable_cores
from signdigits.core.params import Augment, Runtime, TrainParams
from signdigits.training import optim
from signdigits.training.engine import (
    Part,
    _epoch_inputs,
    _epoch_order,
    augment,
    evaluate,
    make_scheduler,
    setup_runtime,
    train,
)
from signdigits.training.model import Arch, Classifier, Network
from signdigits.training.model_file import model_bytes
from signdigits.training.products import Dense

SIZE = 8
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def make_images(n: int, n_classes: int, seed: int, noise: float = 40.0, label_noise: float = 0.0):
    """uint8 images: one fixed random prototype per class (the same for every seed) plus noise.

    label_noise: the fraction of labels then replaced by random ones (1.0: nothing to learn).
    """
    prototypes = np.random.default_rng(1234).integers(0, 256, size=(n_classes, SIZE, SIZE))
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes)
    pixels = np.clip(prototypes[labels] + rng.normal(0, noise, size=(n, SIZE, SIZE)), 0, 255).astype(np.uint8)
    relabel = rng.random(n) < label_noise
    labels[relabel] = rng.integers(0, n_classes, size=int(relabel.sum()))
    return pixels, labels.astype(np.int64)


def make_part(n: int, n_classes: int = 4, seed: int = 0, **kwargs) -> Part:
    return Part.from_arrays(*make_images(n, n_classes, seed, **kwargs), CPU)


def config(**changes) -> TrainParams:
    base = TrainParams(hidden=(32,), dropout=0.0, optimizer="adam", lr=0.01, batch_size=8, epochs=5, seed=0)
    return dataclasses.replace(base, **changes)


# --- learning -----------------------------------------------------------------------------------


def test_overfits_a_tiny_batch_to_full_train_accuracy():
    data = make_part(20, n_classes=4, label_noise=1.0)  # nothing to generalise: it must memorise
    result = train(config(hidden=(64,), epochs=150, batch_size=20), data, data, list(range(4)))
    assert evaluate(result.model, data).accuracy == 1.0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 10
    assert [h["epoch"] for h in result.history] == list(range(1, 151))
    assert result.epochs_run == 150 and result.best_epoch == 150  # no early stopping: the last epoch


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_every_optimizer_trains(optimizer):
    data, val = make_part(48, seed=0), make_part(24, seed=1)
    cfg = config(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01, momentum=0.9, epochs=8)
    result = train(cfg, data, val, list(range(4)))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert evaluate(result.model, val).accuracy > 0.5  # 4 classes: chance is 0.25


def test_history_columns_and_model_shape():
    data, val = make_part(24, n_classes=3, seed=0), make_part(12, n_classes=3, seed=1)
    result = train(config(hidden=(16, 8), epochs=3), data, val, [2, 5, 7])
    assert isinstance(result.model, Classifier)
    assert result.model.classes == [2, 5, 7]
    assert result.model.arch.image_size == SIZE and result.model.arch.hidden == (16, 8)
    assert not result.model.training
    assert [set(h) for h in result.history] == [
        {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"}
    ] * 3
    final = evaluate(result.model, val)
    assert result.history[-1]["val_loss"] == final.loss  # history's last row is the returned model
    assert final.probabilities.shape == (12, 3)
    np.testing.assert_allclose(final.probabilities.sum(axis=1), 1.0, rtol=1e-5)


# --- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_history_another_seed_differs():
    data, val = make_part(32, seed=0), make_part(16, seed=1)
    cfg = config(dropout=0.3, augment=Augment(shift=0.1, rotate=10, scale=0.1), epochs=3)  # every random path
    first, second = train(cfg, data, val, list(range(4))), train(cfg, data, val, list(range(4)))
    assert model_bytes(first.model) == model_bytes(second.model)
    assert first.history == second.history
    other = train(dataclasses.replace(cfg, seed=1), data, val, list(range(4)))
    assert model_bytes(other.model) != model_bytes(first.model)
    assert other.history != first.history


# --- early stopping -----------------------------------------------------------------------------


def test_early_stopping_stops_and_restores_the_best_epoch():
    # Half the training labels are wrong: val loss first falls, then rises as the net memorises them.
    data, val = make_part(24, seed=0, noise=60, label_noise=0.5), make_part(40, seed=1, noise=60)
    cfg = config(hidden=(64,), lr=0.003, epochs=200, patience=3)
    result = train(cfg, data, val, list(range(4)))
    val_losses = [h["val_loss"] for h in result.history]
    assert result.epochs_run < cfg.epochs
    assert result.best_epoch > 1
    assert len(result.history) == result.epochs_run
    assert result.best_epoch == int(np.argmin(val_losses)) + 1
    assert result.epochs_run == result.best_epoch + cfg.patience  # stops after `patience` epochs without a new low
    assert val_losses[-1] > min(val_losses)  # so the last epoch's weights are not the best ones...
    assert evaluate(result.model, val).loss == min(val_losses)  # ...and were replaced by the best epoch's


def test_patience_that_never_runs_out_still_returns_the_best_epoch():
    data, val = make_part(24, seed=0, noise=60, label_noise=0.5), make_part(40, seed=1, noise=60)
    result = train(config(hidden=(64,), lr=0.01, epochs=20, patience=100), data, val, list(range(4)))
    val_losses = [h["val_loss"] for h in result.history]
    assert result.epochs_run == 20
    assert 1 < result.best_epoch < 20
    assert result.best_epoch == int(np.argmin(val_losses)) + 1
    assert evaluate(result.model, val).loss == min(val_losses)


# --- learning-rate schedules --------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["none", "step", "cosine"])
def test_schedule_moves_the_learning_rate(scheduler):
    data = make_part(16, seed=0)
    lr0, epochs, step_size, gamma = 0.01, 7, 2, 0.5
    cfg = config(lr=lr0, epochs=epochs, scheduler=scheduler, step_size=step_size, gamma=gamma, batch_size=16)
    lrs = [h["lr"] for h in train(cfg, data, data, list(range(4))).history]
    epochs_done = range(epochs)  # the lr column is the rate used during the epoch: e epochs done before it
    expected = {
        "none": [lr0 for _ in epochs_done],
        "step": [lr0 * gamma ** (e // step_size) for e in epochs_done],
        "cosine": [lr0 * (1 + math.cos(math.pi * e / epochs)) / 2 for e in epochs_done],
    }[scheduler]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)
    if scheduler == "step":
        assert lrs[:4] == [lr0, lr0, lr0 * gamma, lr0 * gamma]


def _one_cycle(step: int, total: int, peak: float) -> float:
    """OneCycleLR's documented defaults: cosine from peak/25 up to peak over 30% of the steps, then down to ~0."""
    start, low, top = peak / 25, peak / 25 / 1e4, 0.3 * total - 1

    def cos(a, b, pct):
        return b + (a - b) / 2 * (1 + math.cos(math.pi * pct))

    return cos(start, peak, step / top) if step <= top else cos(peak, low, (step - top) / (total - 1 - top))


@pytest.mark.parametrize("balanced", [False, True])
def test_onecycle_steps_every_batch(balanced):
    pixels = make_images(16, 4, seed=0)[0]
    labels = np.array([0] * 6 + [1] * 4 + [2] * 3 + [3] * 3)  # balanced epochs: every class cycled to 6, 24 in all
    data = Part.from_arrays(pixels, labels, CPU)
    lr0, epochs, batch_size = 0.01, 5, 4
    batches = (24 if balanced else 16) // batch_size
    cfg = config(lr=lr0, epochs=epochs, scheduler="onecycle", batch_size=batch_size, balanced=balanced)
    lrs = [h["lr"] for h in train(cfg, data, data, list(range(4))).history]  # stepping past the end would raise
    expected = [_one_cycle(e * batches, epochs * batches, lr0) for e in range(epochs)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[0] == pytest.approx(lr0 / 25) and max(lrs) < lr0


# --- batch order --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_batches_hold_equal_class_counts(seed):
    labels = torch.tensor([0] * 30 + [1] * 7)[torch.randperm(37, generator=torch.Generator().manual_seed(seed))]
    order = _epoch_order(labels, True, torch.Generator().manual_seed(seed))
    assert len(order) == 60  # both classes cycled up to the larger one
    assert set(order.tolist()) == set(range(37))  # every image is used
    picked = labels[order]
    for batch_size in (2, 4, 6, 8, 10, 16, 32):
        for start in range(0, len(order), batch_size):
            counts = torch.bincount(picked[start : start + batch_size], minlength=2)
            assert counts[0] == counts[1], (batch_size, start, counts.tolist())
    minority = torch.bincount(order[picked == 1], minlength=37)[labels == 1]
    assert minority.min() >= 30 // 7 and minority.max() <= -(-30 // 7)  # each minority image 4 or 5 times


def test_balanced_batches_of_three_classes():
    labels = torch.tensor([0] * 11 + [1] * 4 + [2] * 2)
    order = _epoch_order(labels, True, torch.Generator().manual_seed(0))
    picked = labels[order]
    assert len(order) == 33
    for batch_size in (3, 6, 9):
        for start in range(0, len(order), batch_size):
            assert torch.bincount(picked[start : start + batch_size], minlength=3).unique().numel() == 1


def test_unbalanced_order_is_a_seeded_permutation():
    labels = torch.tensor([0] * 30 + [1] * 7)
    order = _epoch_order(labels, False, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(37))
    assert order.tolist() != list(range(37))
    assert torch.equal(order, _epoch_order(labels, False, torch.Generator().manual_seed(0)))
    assert not torch.equal(order, _epoch_order(labels, False, torch.Generator().manual_seed(1)))


def test_balanced_training_counts_the_cycled_epoch():
    """A balanced epoch cycles each class up to the largest: 2 x 30 images, not the 37 there are, so 8 batches
    of 8. onecycle's per-batch schedule is sized by that count: a step beyond it raises, and the lr at the
    second epoch's start is the one 8 steps give."""
    pixels, _ = make_images(37, 2, seed=0)
    labels = np.array([0] * 30 + [1] * 7)
    data = Part.from_arrays(pixels, labels, CPU)
    cfg = config(balanced=True, batch_size=8, epochs=2, scheduler="onecycle")
    result = train(cfg, data, data, [0, 1])
    assert result.epochs_run == 2
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr, momentum=0.9)
    scheduler = make_scheduler(cfg, optimizer, 8)
    for _ in range(8):
        optimizer.step()
        scheduler.step()
    assert result.history[1]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
    assert result.history[1]["lr"] != pytest.approx(result.history[0]["lr"])


# --- divergence ---------------------------------------------------------------------------------


def test_non_finite_loss_fails_with_the_epoch_and_the_configured_lr():
    """The configured lr and weight_decay, not the scheduler's current lr (onecycle warms up from lr/25)."""
    data = make_part(32, seed=0)
    cfg = config(optimizer="sgd", lr=1e6, momentum=0.9, weight_decay=0.05, epochs=20, scheduler="onecycle")
    with pytest.raises(PipelineError, match=r"diverged in epoch \d+") as failure:
        train(cfg, data, data, list(range(4)), name="train_best")
    message = str(failure.value)
    assert "lower the learning rate" in message
    assert "train_best" in message and "lr = 1e+06, weight_decay = 0.05" in message
    assert "4e+04" not in message  # the warm-up lr, 1e6 / 25


def test_threads_above_the_cores_warn_and_use_the_cores(caplog):
    cores = usable_cores()
    if cores >= 256:
        pytest.skip("runtime.threads allows at most 256, not above this machine's cores")
    with caplog.at_level("WARNING"):
        setup_runtime(Runtime(device="cpu", threads=cores + 1))
    assert torch.get_num_threads() == cores  # the bits do not depend on the thread count (test_products.py)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"runtime.threads = {cores + 1} is more than the {cores} CPU cores" in warnings[0]
    assert f"using {cores}" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING"):
        setup_runtime(Runtime(device="cpu", threads=cores))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


# --- augmentation -------------------------------------------------------------------------------


def test_augment_keeps_shapes_changes_pixels_and_is_seeded():
    x = make_part(16, seed=0).x
    cfg = Augment(shift=0.1, rotate=15, scale=0.1)
    a = augment(x, SIZE, cfg, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not torch.equal(a, x)
    assert (a - x).abs().amax(dim=1).min() > 0  # every image moves
    assert a.min() >= x.min() - 1e-6 and a.max() <= x.max() + 1e-6  # interpolation, border padding
    assert torch.equal(a, augment(x, SIZE, cfg, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, augment(x, SIZE, cfg, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("normalize_images", [False, True])
def test_an_epoch_prepared_at_once_equals_batch_by_batch(normalize_images):
    """The loop augments and standardises a whole epoch in one go: the same draws and numbers as a batch at a time."""
    data = make_part(37, seed=0)
    train_cfg = config(normalize_images=normalize_images, augment=Augment(shift=0.1, rotate=15, scale=0.1))
    net = Network(Arch.of(train_cfg, SIZE, 4), data.x.mean(0), data.x.std(0).clamp_min(1e-3))
    cfg = train_cfg.augment
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(3))
    at_once = _epoch_inputs(net, data.x[order], SIZE, train_cfg, torch.Generator().manual_seed(0))
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        batches = [net.standardize(augment(data.x[order[i : i + 8]], SIZE, cfg, rng)) for i in range(0, 37, 8)]
    assert torch.equal(at_once, torch.cat(batches))
    assert torch.equal(
        net.head(at_once[:8]), net(augment(data.x[order[:8]], SIZE, cfg, torch.Generator().manual_seed(0)))
    )


@pytest.mark.parametrize("which", ["shift", "rotate", "scale"])
def test_each_augmentation_alone_changes_pixels(which):
    x = make_part(8, seed=0).x
    cfg = Augment(**{which: 0.2 if which != "rotate" else 20.0})
    assert cfg.enabled
    assert not torch.equal(augment(x, SIZE, cfg, torch.Generator().manual_seed(0)), x)


def test_augmented_training_differs_from_plain():
    data, val = make_part(32, seed=0), make_part(16, seed=1)
    plain = train(config(epochs=2), data, val, list(range(4)))
    jittered = train(config(epochs=2, augment=Augment(shift=0.1)), data, val, list(range(4)))
    assert model_bytes(plain.model) != model_bytes(jittered.model)


# --- devices ------------------------------------------------------------------------------------


# torch.optim's arithmetic through training.optim (no torch._dynamo import): bit for bit, every setting the engine uses
OPTIMIZER_SETTINGS = [
    ("adam", 0.0, 0.0, None),
    ("adam", 1e-4, 0.0, "onecycle"),
    ("adamw", 0.01, 0.0, "onecycle"),
    ("adamw", 1e-4, 0.0, "cosine"),
    ("sgd", 0.0, 0.0, "step"),
    ("sgd", 1e-4, 0.9, None),
    ("sgd", 5e-4, 0.9, "onecycle"),
]


def _train_steps(make, scheduler: str | None, steps: int = 300) -> list[torch.Tensor]:
    """`steps` steps of a small net on random data, as the engine steps (onecycle every batch, the others every 10)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(Dense(16, 32), torch.nn.ReLU(), Dense(32, 4))  # column-major weights: optim._row_major
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    optimizer = make(net.parameters())
    cfg = config(scheduler=scheduler or "none", epochs=steps // 10, step_size=5, gamma=0.5, lr=0.01)
    sched = make_scheduler(cfg, optimizer, 10) if scheduler else None
    for step in range(steps):
        batch = torch.arange(step % 8 * 8, step % 8 * 8 + 8)
        loss = torch.nn.functional.cross_entropy(net(x[batch]), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if sched is not None and (scheduler == "onecycle" or step % 10 == 9):
            sched.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("fast", [{"fused": True}, {"foreach": True}], ids=["fused", "foreach"])
@pytest.mark.parametrize("name, weight_decay, momentum, scheduler", OPTIMIZER_SETTINGS)
def test_optimizer_matches_torch_optim_bit_for_bit(name, weight_decay, momentum, scheduler, fast):
    """Fails the day a torch upgrade makes training.optim's arithmetic differ from torch.optim's."""
    if not optim.functional_api_available():
        pytest.skip("this torch lacks the functional optimizers: make() returns torch.optim's (see the next test)")
    lr = 0.01

    def ours(params):
        made = optim.make(name, params, lr, weight_decay, momentum, fast)
        assert type(made).__module__ == "signdigits.training.optim"
        return made

    def torch_optim(params):
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **fast)
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, weight_decay=weight_decay, **fast)

    expected, got = _train_steps(torch_optim, scheduler), _train_steps(ours, scheduler)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert not torch.equal(expected[0], _train_steps(torch_optim, scheduler, steps=10)[0])  # it did train


@pytest.mark.parametrize("name, expected", [("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD")])
def test_optimizer_falls_back_to_torch_optim_without_the_functional_api(monkeypatch, name, expected):
    monkeypatch.setattr(optim, "_adam", None)
    assert not optim.functional_api_available()
    made = optim.make(name, torch.nn.Linear(2, 2).parameters(), 0.01, 0.0, 0.9, {"foreach": True})
    assert type(made) is getattr(torch.optim, expected)


@pytest.mark.integration
def test_training_does_not_import_the_compiler_stack():
    """torch.optim's classes import torch._dynamo (about 1 s a process); the engine's optimizers must not."""
    code = (
        "import sys, torch\n"
        "from signdigits.training.engine import Part, train\n"
        "from signdigits.core.params import TrainParams\n"
        "x = Part(torch.rand(16, 64), torch.arange(16) % 2)\n"
        "for opt in ('adam', 'adamw', 'sgd'):\n"
        "    cfg = TrainParams(hidden=(8,), optimizer=opt, epochs=2, batch_size=8, scheduler='onecycle')\n"
        "    train(cfg, x, x, [0, 1])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'torch._inductor'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if optim.functional_api_available():
        assert done.stdout.strip() == "[]"


def _has_mps() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def test_cpu_runtime_pins_threads_and_deterministic_kernels():
    torch.use_deterministic_algorithms(False)
    assert setup_runtime(Runtime(device="cpu", threads=1)) == CPU
    assert torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize(
    "cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"), (True, False, "cuda")]
)
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert setup_runtime(Runtime(device="auto", threads=1)).type == expected


@pytest.mark.parametrize("device, available", [("cuda", torch.cuda.is_available), ("mps", _has_mps)])
def test_missing_device_is_a_clear_error(device, available):
    if available():
        pytest.skip(f"this machine has {device}")
    with pytest.raises(
        PipelineError, match=rf"runtime.device = '{device}', but this machine has no such device.*use auto or cpu"
    ):
        setup_runtime(Runtime(device=device, threads=1))


@pytest.mark.parametrize("device, available", [("cuda", torch.cuda.is_available), ("mps", _has_mps)])
def test_trains_on_accelerator_like_on_cpu(device, available):
    """The same training on the accelerator: deterministic there, and within float tolerance of the CPU's run."""
    if not available():
        pytest.skip(
            f"needs {device}: the GPU path is checked where a GPU is (docs/reproducibility.md#what-holds-where)"
        )
    pixels, labels = make_images(48, 4, seed=0)
    cfg = config(epochs=4, augment=Augment(shift=0.1), dropout=0.2)
    runs = {}
    for where in ("cpu", device):
        dev = setup_runtime(Runtime(device=where, threads=1))
        data = Part.from_arrays(pixels, labels, dev)
        runs[where] = train(cfg, data, data, list(range(4)))
    on_device = runs[device]
    assert next(on_device.model.parameters()).device.type == device
    data = Part.from_arrays(pixels, labels, torch.device(device))
    repeat = train(cfg, data, data, list(range(4)))
    assert model_bytes(on_device.model) == model_bytes(repeat.model)  # deterministic on the device too
    for cpu_row, device_row in zip(runs["cpu"].history, on_device.history, strict=True):
        assert device_row["train_loss"] == pytest.approx(cpu_row["train_loss"], rel=1e-3, abs=1e-4)
        assert device_row["val_accuracy"] == pytest.approx(cpu_row["val_accuracy"], abs=1 / 48 + 1e-9)


# --- ensembles ----------------------------------------------------------------------------------


def test_ensemble_averages_its_members_probabilities():
    data, val = make_part(32, seed=0), make_part(16, seed=1)
    cfg = config(ensemble=2, epochs=3, seed=5)
    result = train(cfg, data, val, list(range(4)))
    model = result.model
    assert isinstance(model, Classifier) and len(model.members) == 2
    with torch.no_grad():
        members = [m(val.x).softmax(dim=1) for m in model.members]
        combined = model(val.x).softmax(dim=1)
    assert not torch.equal(members[0], members[1])
    torch.testing.assert_close(combined, (members[0] + members[1]) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(evaluate(model, val).probabilities, combined.numpy(), rtol=1e-5, atol=1e-6)
    # member k is the network a single run with seed seed+k trains
    for k in range(2):
        single = train(dataclasses.replace(cfg, ensemble=1, seed=cfg.seed + k), data, val, list(range(4))).model
        for (name, a), (_, b) in zip(
            model.members[k].state_dict().items(), single.members[0].state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), (k, name)
    assert len(result.history) == cfg.epochs  # the first member's history
