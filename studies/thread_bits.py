"""Can the thread count be chosen at run time? Which of the training's kernels give other bits on 1 and 2 threads.

    PYTHONPATH=src python studies/thread_bits.py

Under `portable` (core/kernels.py), each kernel a training step runs is computed on 1 thread, then on
2, in the same process, on fixed random inputs of the shapes train_best and train_cnn use; a line per
kernel says `same` or `DIFF`. A run-time thread count needs every kernel the training runs to say `same`.
Measured on the Intel Xeon (2 cores, torch 2.13.0, MKL 2024.2, issue 33): MKL's float32 products of
308 and 1,444 rows (the val pass, a whole part) gave other bits, those of 20-200 rows the same here; a
full sum of 1,444 x 784 numbers differed; the affine grid, grid_sample, row and column statistics,
cross-entropy, ATen's convolutions, batch norm and pooling did not. MKL_CBWR=COMPATIBLE,STRICT (MKL's
mode for thread-count-independent products) changed nothing. On the real photos, one training step of
train_best's network gave the same weights on 1 and 2 threads for a batch of 64 and other logits,
gradients and weights for the epoch's last batch of 36; two epochs of train_best gave other weights.
So the bits depend on the thread count through MKL's products, whose split between threads MKL chooses
by shape, and `runtime.threads` stays a fixed setting (docs/reproducibility.md).
"""

from __future__ import annotations

import os
import sys

from signdigits.core.kernels import pin_cpu_kernels

pin_cpu_kernels("portable")
if len(sys.argv) > 1:  # e.g. COMPATIBLE,STRICT
    os.environ["MKL_CBWR"] = sys.argv[1]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.backends.mkldnn.enabled = False  # as pin_convolutions sets under portable
rng = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, generator=rng)


def conv_with_gradients(images, weight, upstream):
    images, weight = images.clone().requires_grad_(), weight.clone().requires_grad_()
    out = F.conv2d(images, weight, padding=1)
    out.backward(upstream)
    return torch.cat([out.flatten(), images.grad.flatten(), weight.grad.flatten()])


def batch_norm_with_gradients(x, upstream):
    x, scale, shift = x.clone().requires_grad_(), torch.ones(x.shape[1]).requires_grad_(), torch.zeros(x.shape[1])
    shift.requires_grad_()
    out = F.batch_norm(x, torch.zeros(x.shape[1]), torch.ones(x.shape[1]), scale, shift, training=True)
    out.backward(upstream)
    return torch.cat([out.flatten(), x.grad.flatten(), scale.grad, shift.grad])


pixels, weight, upstream = randn(1444, 784), randn(256, 784), randn(64, 256)
theta, maps = randn(64, 2, 3) * 0.3, randn(64, 16, 28, 28)
KERNELS = {
    "matmul, 64 rows (a batch)": lambda: pixels[:64] @ weight.t(),
    "matmul, 36 rows (the last batch)": lambda: pixels[:36] @ weight.t(),
    "matmul, 308 rows (the val pass)": lambda: pixels[:308] @ weight.t(),
    "matmul, 1444 rows": lambda: pixels @ weight.t(),
    "matmul, weight gradient (64 summed)": lambda: upstream.t() @ pixels[:64],
    "matmul, input gradient": lambda: upstream @ weight,
    "sum over the batch (bias gradient)": lambda: upstream.sum(0),
    "full sum, 1444 x 784": lambda: pixels.sum(),
    "per-image std": lambda: pixels.std(dim=1),
    "per-pixel mean and std": lambda: torch.cat([pixels.mean(0), pixels.std(0)]),
    "affine_grid": lambda: F.affine_grid(theta, [64, 1, 28, 28], align_corners=False),
    "grid_sample": lambda: F.grid_sample(
        pixels[:64].view(64, 1, 28, 28),
        F.affine_grid(theta, [64, 1, 28, 28], align_corners=False),
        padding_mode="border",
        align_corners=False,
    ),
    "cross_entropy, label smoothing": lambda: F.cross_entropy(
        upstream[:, :10], torch.arange(64) % 10, label_smoothing=0.1
    ),
    "conv 1->16 and its gradients (ATen)": lambda: conv_with_gradients(
        pixels[:64].view(64, 1, 28, 28), randn(16, 1, 3, 3), maps
    ),
    "conv 16->16 and its gradients (ATen)": lambda: conv_with_gradients(maps, randn(16, 16, 3, 3), maps),
    "batch norm and its gradients": lambda: batch_norm_with_gradients(maps, maps),
    "max_pool2d": lambda: F.max_pool2d(maps, 2),
}

if __name__ == "__main__":
    print(f"torch {torch.__version__}, MKL_CBWR={os.environ['MKL_CBWR']}, 1 thread against 2:")
    for name, kernel in KERNELS.items():
        state = rng.get_state()
        torch.set_num_threads(1)
        one = kernel()
        rng.set_state(state)
        torch.set_num_threads(2)
        two = kernel()
        print(f"  {'same' if torch.equal(one, two) else 'DIFF'}  {name}")
