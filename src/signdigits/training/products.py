"""The networks' matrix products on the CPU: numpy's OpenBLAS on one thread, not torch's MKL.

Why (benchmarks/README.md, issue 33): `portable` needs MKL's `COMPATIBLE` branch for the same bits on
Intel and AMD, and there float32 products of a training's sizes run at 20-50 GFLOP/s on this project's
2-core machine; OpenBLAS's Haswell kernels, which `portable` pins for numpy (core/kernels.py), run them
at about 70 on ONE thread. On one thread a product has one summation order, so the networks' bits no
longer depend on how many threads torch uses: the thread count can follow the machine (engine.setup_runtime).
The familiarity check's float64 products take the same path (familiarity.py).

A large product is two products of half its rows each, cut at a multiple of ROW_BLOCK rows: with two or
more threads (use_threads) the halves run at once, each on one BLAS thread. Always cut the same way, the bits
do not depend on the thread count; and under `portable` they are the bits of the uncut product, since OpenBLAS's
Haswell kernels compute a block of 24 rows at a time (`tests/test_products.py`; a cut at 16 rows gives other bits).

Dense, Conv3x3 and BatchNorm are nn.Linear, nn.Conv2d and nn.BatchNorm2d with their parameters and
state_dict keys; only how they compute on the CPU differs. On a GPU they are the plain torch layers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROW_BLOCK = 24  # rows OpenBLAS's Haswell float32 and float64 kernels compute at a time (a multiple of each)
HALVED_FROM = 4_000_000  # multiply-adds from which a product is cut in two: below, the hand-off costs more
_second_half: ThreadPoolExecutor | None = None  # a thread for the second halves, with two or more threads


def use_threads(threads: int) -> None:
    """The products' threads for the rest of this process: numpy's BLAS (OpenBLAS) on one thread, one summation
    order per product; with two threads or more, a second thread that computes large products' second halves."""
    from threadpoolctl import threadpool_limits

    global _second_half
    threadpool_limits(limits=1, user_api="blas")
    if _second_half is not None:
        _second_half.shutdown()
    _second_half = ThreadPoolExecutor(max_workers=1, thread_name_prefix="product") if threads > 1 else None


def _numpy_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b (2-D, on the CPU) through numpy's BLAS, a large product as two halves of its rows.

    Overflow gives inf and nan silently, as in torch: the engine stops a diverged training with its own message.
    """
    x, y = a.detach().numpy(), b.detach().numpy()
    out = np.empty((x.shape[0], y.shape[1]), np.result_type(x, y))
    rows = x.shape[0]
    cut = round(rows / 2 / ROW_BLOCK) * ROW_BLOCK if rows * x.shape[1] * y.shape[1] >= HALVED_FROM else 0
    if not 0 < cut < rows:
        _into(x, y, out)
    elif _second_half is None:
        _into(x[:cut], y, out[:cut])
        _into(x[cut:], y, out[cut:])
    else:
        later = _second_half.submit(_into, x[cut:], y, out[cut:])
        _into(x[:cut], y, out[:cut])
        later.result()
    return torch.from_numpy(out)


def _into(x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    with np.errstate(over="ignore", invalid="ignore"):  # per thread
        np.matmul(x, y, out=out)


class _Product(torch.autograd.Function):
    """a @ b with its gradients, every product through numpy's BLAS."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return _numpy_product(a, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        grad_a = _numpy_product(grad, b.T) if ctx.needs_input_grad[0] else None
        grad_b = _numpy_product(a.T, grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for 2-D CPU tensors, with its gradients, through numpy's BLAS (the layers below keep torch's own
    products on a GPU)."""
    return _Product.apply(a, b)


class Dense(nn.Linear):
    """nn.Linear whose product is `matmul`'s, its weight laid out column by column in memory.

    The weight's gradient is the product x.T @ grad, transposed: in that layout autograd keeps it as it is,
    where a row-major weight made it copy the gradient into its own layout after every step (as long as the
    first layer's product itself). The values, the products' bits and the state_dict are the same; a model
    file stores them row by row (model_file.model_bytes).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.weight = nn.Parameter(self.weight.detach().T.contiguous().T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        return matmul(x, self.weight.T) + self.bias


class Conv3x3(nn.Conv2d):
    """A 3x3 convolution, stride 1, padding 1, no bias (batch norm follows it), as one `matmul`: every pixel's
    3x3 patch as a row, times the kernels (`_PatchProduct`). Its output has the usual shape in channels-last
    memory (the product's rows are pixels), which batch norm, ReLU and max pooling keep; the next block reads it
    as it is."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        n, _, height, width = x.shape
        kernels = self.weight.permute(0, 2, 3, 1).reshape(self.out_channels, -1)  # per kernel: row, column, channel
        out = _PatchProduct.apply(x, kernels)  # (n * pixels, out_channels)
        return out.view(n, height, width, self.out_channels).permute(0, 3, 1, 2)


def _patches(x: torch.Tensor) -> torch.Tensor:
    """(n, channels, height, width) -> (n * height * width, 9 * channels): each pixel's zero-padded 3x3 patch,
    by kernel row, column, then channel."""
    n, _, height, width = x.shape
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (n, height + 2, width + 2, channels)
    shifted = [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)]
    return torch.cat(shifted, dim=3).view(n * height * width, -1)


class _PatchProduct(torch.autograd.Function):
    """_patches(x) @ kernels.T with its gradients, every product through numpy's BLAS.

    The input's gradient adds each patch position's share back into one padded buffer, in the order autograd
    added the nine shifted slices' gradients when the patches were built from differentiable slices (last
    position first), so the bits are the same; that built and summed nine zero-filled copies of the buffer.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        patches = _patches(x.detach())
        ctx.save_for_backward(patches, kernels)
        ctx.input_shape = x.shape
        return _numpy_product(patches, kernels.T)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        patches, kernels = ctx.saved_tensors
        grad_x = grad_kernels = None
        if ctx.needs_input_grad[0]:
            n, channels, height, width = ctx.input_shape
            per_position = _numpy_product(grad, kernels).view(n, height, width, 9, channels)
            padded = per_position.new_zeros(n, height + 2, width + 2, channels)
            for position in reversed(range(9)):
                i, j = divmod(position, 3)
                padded[:, i : i + height, j : j + width] += per_position[:, :, :, position]
            grad_x = padded[:, 1 : height + 1, 1 : width + 1].permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_kernels = _numpy_product(patches.T, grad).T
        return grad_x, grad_kernels


class BatchNorm(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics are per-channel reductions: ATen gives each channel's sum to
    one thread, so they do not depend on the thread count (torch's own batch-norm kernel splits them by image)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu":
            return super().forward(x)
        mean = x.mean(dim=(0, 2, 3))
        centred = x - mean.view(1, -1, 1, 1)
        variance = centred.square().mean(dim=(0, 2, 3))
        with torch.no_grad():  # the running statistics, as nn.BatchNorm2d keeps them (unbiased variance)
            per_channel = x.numel() // x.shape[1]
            unbiased = variance * (per_channel / (per_channel - 1))
            self.running_mean.mul_(1 - self.momentum).add_(mean, alpha=self.momentum)
            self.running_var.mul_(1 - self.momentum).add_(unbiased, alpha=self.momentum)
            self.num_batches_tracked.add_(1)
        scale = self.weight / (variance + self.eps).sqrt()
        return centred * scale.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
