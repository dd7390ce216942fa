"""Adam, AdamW and SGD through torch's public functional API, without importing the compiler stack.

torch.optim's classes import torch._dynamo (and torch._inductor) the first time a parameter group
is added, zero_grad or step runs: about 1 s of every training process, for code that never
compiles. These classes hold the same param groups and state and call the same functions
(torch.optim.adam.adam, torch.optim.sgd.sgd) with the same arguments, so the weights come out
bit for bit the same; tests/test_engine.py trains with both and compares, so a torch upgrade that
changes this fails a test. Where this torch lacks the functions or their arguments, make() returns
torch.optim's own class instead.
"""

from __future__ import annotations

import inspect

import torch

try:
    from torch.optim.adam import adam as _adam
    from torch.optim.sgd import sgd as _sgd
except ImportError:  # a torch without the functional API
    _adam = _sgd = None

_ADAM_ARGS = set("amsgrad beta1 beta2 lr weight_decay eps maximize foreach capturable differentiable fused "
                 "decoupled_weight_decay has_complex".split())  # fmt: skip
_SGD_ARGS = set("weight_decay momentum lr dampening nesterov maximize has_sparse_grad foreach fused".split())


def functional_api_available() -> bool:
    """Whether this torch has the functional optimizers with every argument these classes pass."""
    return (
        _adam is not None
        and _ADAM_ARGS <= set(inspect.signature(_adam).parameters)
        and _SGD_ARGS <= set(inspect.signature(_sgd).parameters)
    )


def make(name: str, parameters, lr: float, weight_decay: float, momentum: float, fast: dict) -> torch.optim.Optimizer:
    """The optimizer `name` (adam, adamw, sgd) with torch's default settings but these; `fast` is fused or foreach."""
    functional = functional_api_available()
    if name == "sgd":
        cls = FunctionalSGD if functional else torch.optim.SGD
        return cls(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, **fast)
    if not functional:
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(parameters, lr=lr, weight_decay=weight_decay, **fast)
    return FunctionalAdam(parameters, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=name == "adamw", **fast)


class _Functional(torch.optim.Optimizer):
    """An Optimizer (so the lr schedulers accept it) whose group handling does not pass through torch._dynamo."""

    def add_param_group(self, param_group: dict) -> None:
        self.param_groups.append({**self.defaults, **param_group, "params": list(param_group["params"])})

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.detach_().zero_()


class FunctionalAdam(_Functional):
    """torch.optim.Adam (AdamW with decoupled_weight_decay=True), dense float parameters, no amsgrad."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, decoupled_weight_decay=False,
                 foreach=None, fused=None):  # fmt: skip
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=False, maximize=False,
                        foreach=foreach, capturable=False, differentiable=False, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if not self.state[p]:  # as torch.optim.Adam: the step count float32 on the device when fused
                    fused = group["fused"] or group["capturable"]
                    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 and not group["fused"] else None
                    self.state[p] = {
                        "step": torch.zeros((), dtype=dtype or torch.float32, device=p.device if fused else "cpu"),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
            states = [self.state[p] for p in params]
            beta1, beta2 = group["betas"]
            flip = _column_major(params)
            views, grads = _row_major(flip, params), _row_major(flip, [p.grad for p in params])
            averages = _row_major(flip, [s["exp_avg"] for s in states])
            squares = _row_major(flip, [s["exp_avg_sq"] for s in states])
            _adam(
                views, grads, averages, squares, [], [s["step"] for s in states], amsgrad=False, has_complex=False,
                beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                maximize=False, foreach=group["foreach"], capturable=group["capturable"], differentiable=False,
                fused=group["fused"], decoupled_weight_decay=group["decoupled_weight_decay"],
            )  # fmt: skip


class FunctionalSGD(_Functional):
    """torch.optim.SGD for dense parameters (no nesterov, no dampening)."""

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0, *, foreach=None, fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=0, weight_decay=weight_decay, nesterov=False,
                        maximize=False, foreach=foreach, differentiable=False, fused=fused)  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            with_momentum = group["momentum"] != 0
            buffers = [self.state[p].get("momentum_buffer") for p in params] if with_momentum else []
            flip = _column_major(params)
            views, grads = _row_major(flip, params), _row_major(flip, [p.grad for p in params])
            buffers = _row_major(flip, buffers) if with_momentum else []
            _sgd(
                views, grads, buffers, weight_decay=group["weight_decay"],
                momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"], nesterov=False,
                maximize=False, has_sparse_grad=False, foreach=group["foreach"], fused=group["fused"],
            )  # fmt: skip
            buffers = _row_major(flip, buffers) if with_momentum else []  # back in each parameter's shape
            for p, buffer in zip(params, buffers, strict=False):  # none without momentum
                self.state[p]["momentum_buffer"] = buffer


def _column_major(params: list[torch.Tensor]) -> list[bool]:
    """Which parameters are matrices laid out column by column (products.Dense's weights)."""
    return [p.dim() == 2 and not p.is_contiguous() and p.T.is_contiguous() for p in params]


def _row_major(column_major: list[bool], tensors: list) -> list:
    """Per-parameter tensors with a column-major parameter's entry transposed, so every tensor the fused kernels see
    is laid out row by row (on a column-major one they ran at half the speed); the updates are elementwise, so the
    values are the same. None entries (a momentum buffer not made yet) stay None. Applied twice, it gives back the
    tensors as they were."""
    return [t.T if flip and t is not None else t for flip, t in zip(column_major, tensors, strict=True)]
