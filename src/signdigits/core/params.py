"""params.yaml as frozen, typed config objects, validated once at stage start.

Every stage calls `load_params()` first, so a typo, a wrong type or an out-of-range value anywhere
in params.yaml (or set with `dvc exp run -S`) fails before any data is read, with a message that
names the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from signdigits.core import paths
from signdigits.core.errors import PipelineError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
CPU_KERNELS = ("portable", "native")
SPLIT_STRATEGIES = ("signer", "random")
BAD_IMAGE_POLICIES = ("fail", "skip")
SWEEP_BACKENDS = ("processes", "dask")


def _opt(default=dataclasses.MISSING, *, ge=None, gt=None, le=None, lt=None, choices=None, min_len=None):
    """A dataclass field with its allowed range, read by `_check`."""
    kwargs = {"default": default} if not isinstance(default, (list, dict)) else {}
    rules = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "min_len": min_len}
    return field(**kwargs, metadata={k: v for k, v in rules.items() if v is not None})


@dataclass(frozen=True)
class Runtime:
    device: str = _opt("auto", choices=DEVICES)
    threads: int = _opt(2, ge=1, le=256)
    cpu_kernels: str = _opt("portable", choices=CPU_KERNELS)


@dataclass(frozen=True)
class PrepareParams:
    image_size: int = _opt(28, ge=8, le=256)
    on_bad_image: str = _opt("fail", choices=BAD_IMAGE_POLICIES)


@dataclass(frozen=True)
class SplitParams:
    strategy: str = _opt("signer", choices=SPLIT_STRATEGIES)
    train: float = _opt(0.70, gt=0.0, lt=1.0)
    val: float = _opt(0.15, gt=0.0, lt=1.0)
    test: float = _opt(0.15, gt=0.0, lt=1.0)
    seed: int = _opt(0, ge=0)

    def __post_init__(self):
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise PipelineError(
                f"params.yaml: split.train + split.val + split.test = {total:g}: the fractions must sum to 1"
            )


@dataclass(frozen=True)
class Augment:
    """Random affine jitter of training batches: shift and scale as fractions, rotation in degrees."""

    shift: float = _opt(0.0, ge=0.0, le=0.5)
    rotate: float = _opt(0.0, ge=0.0, le=180.0)
    scale: float = _opt(0.0, ge=0.0, lt=1.0)

    @property
    def enabled(self) -> bool:
        return self.shift > 0 or self.rotate > 0 or self.scale > 0


@dataclass(frozen=True)
class TrainParams:
    """Everything that defines one training run of a fully-connected network."""

    hidden: tuple[int, ...] = _opt((128,), ge=1)
    dropout: float = _opt(0.0, ge=0.0, lt=1.0)
    optimizer: str = _opt("adam", choices=OPTIMIZERS)
    lr: float = _opt(0.001, gt=0.0, le=10.0)
    momentum: float = _opt(0.9, ge=0.0, lt=1.0)
    weight_decay: float = _opt(0.0, ge=0.0)
    batch_size: int = _opt(32, ge=1)
    epochs: int = _opt(10, ge=1, le=10_000)
    scheduler: str = _opt("none", choices=SCHEDULERS)
    step_size: int = _opt(10, ge=1)
    gamma: float = _opt(0.1, gt=0.0, le=1.0)
    patience: int = _opt(0, ge=0)
    label_smoothing: float = _opt(0.0, ge=0.0, lt=1.0)
    normalize_images: bool = False
    augment: Augment = field(default_factory=Augment)
    ensemble: int = _opt(1, ge=1, le=64)
    balanced: bool = False
    seed: int = _opt(0, ge=0)


@dataclass(frozen=True)
class BinaryParams:
    digits: tuple[int, ...] = _opt((0, 1), ge=0, le=9)
    model: TrainParams = field(default_factory=TrainParams)

    def __post_init__(self):
        if len(self.digits) != 2 or self.digits[0] == self.digits[1]:
            raise PipelineError(
                f"params.yaml: train_binary.digits = {list(self.digits)} is not allowed: "
                "name two different digits from 0-9"
            )


@dataclass(frozen=True)
class SweepParams:
    """The grid of sweep_exp2; settings outside the grid come from `model`."""

    lr: tuple[float, ...] = _opt((0.001, 0.01), gt=0.0, le=10.0, min_len=1)
    batch_size: tuple[int, ...] = _opt((32, 64), ge=1, min_len=1)
    epochs: tuple[int, ...] = _opt((10, 15), ge=1, le=10_000, min_len=1)
    optimizer: tuple[str, ...] = _opt(("adam", "sgd"), choices=OPTIMIZERS, min_len=1)
    jobs: int = _opt(2, ge=1, le=64)
    threads_per_job: int = _opt(1, ge=1, le=256)
    backend: str = _opt("processes", choices=SWEEP_BACKENDS)
    model: TrainParams = field(default_factory=TrainParams)

    def grid(self) -> list[TrainParams]:
        """Every combination, in the fixed order lr, batch_size, epochs, optimizer (ties go to the first)."""
        return [
            dataclasses.replace(self.model, lr=lr, batch_size=bs, epochs=ep, optimizer=opt)
            for lr in self.lr
            for bs in self.batch_size
            for ep in self.epochs
            for opt in self.optimizer
        ]


@dataclass(frozen=True)
class EvaluateParams:
    bootstrap: int = _opt(1000, ge=10, le=100_000)
    seed: int = _opt(0, ge=0)
    max_misclassified: int = _opt(40, ge=1, le=400)


@dataclass(frozen=True)
class FamiliarityParams:
    """The final model's check of photos unlike the training ones (training/familiarity.py).

    train_best reads `components`; evaluate and predict read `percentile`, applied to the stored
    validation scores, so changing it never retrains the network.
    """

    components: int = _opt(60, ge=1, le=4096)
    percentile: float = _opt(97.5, gt=50.0, lt=100.0)


@dataclass(frozen=True)
class ReviewParams:
    max_drop: float = _opt(0.01, ge=0.0, le=1.0)


@dataclass(frozen=True)
class Params:
    runtime: Runtime
    prepare: PrepareParams
    split: SplitParams
    train_binary: BinaryParams
    train_base: TrainParams
    train_exp1: TrainParams
    exp2: SweepParams
    final: TrainParams  # the top-level keys: what `dvc exp run -S lr=...` changes
    evaluate: EvaluateParams
    familiarity: FamiliarityParams
    review: ReviewParams


# Sections whose keys are TrainParams fields mixed with their own (grid lists, digits).
_MODEL_SECTIONS = {"train_binary": BinaryParams, "exp2": SweepParams}


def load_params(path: str | Path = paths.PARAMS) -> Params:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found; run the stage from the repository root")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise PipelineError(f"{path}: not valid YAML ({e})") from None
    return parse_params(raw)


def parse_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise PipelineError("params.yaml: the top level must be a mapping of keys to values")
    sections = {f.name for f in dataclasses.fields(Params)} - {"final"}
    top_level = {k: v for k, v in raw.items() if k not in sections}
    values = {name: _parse_section(name, raw.get(name, {})) for name in sections}
    values["final"] = _build(TrainParams, top_level, prefix="", sections=sections)
    return Params(**values)


def _parse_section(name: str, value: Any):
    hints = typing.get_type_hints(Params)
    if not isinstance(value, dict):
        raise PipelineError(f"params.yaml: {name} must be a mapping, got {value!r}")
    if name in _MODEL_SECTIONS:
        cls = _MODEL_SECTIONS[name]
        own = {f.name for f in dataclasses.fields(cls)} - {"model"}
        model_keys = {k: v for k, v in value.items() if k not in own}
        model = _build(TrainParams, model_keys, prefix=f"{name}.", sections=frozenset(own))
        return _build(cls, {k: v for k, v in value.items() if k in own}, prefix=f"{name}.", model=model)
    return _build(hints[name], value, prefix=f"{name}.")


def _build(cls, mapping: dict, prefix: str, sections: frozenset = frozenset(), **extra):
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in extra}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(set(fields) | set(sections)))
        raise PipelineError(f"params.yaml: unknown key {prefix}{unknown[0]}; allowed here: {allowed}")
    hints = typing.get_type_hints(cls)
    values = dict(extra)
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise PipelineError(f"params.yaml: {key} must be a mapping, got {value!r}")
            values[name] = _build(tp, value, prefix=f"{key}.")
            continue
        values[name] = _coerce(key, value, tp)
        _check(key, values[name], fields[name].metadata)
    return cls(**values)


def _coerce(key: str, value: Any, tp) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(f"{key}[{i}]", item, item_type) for i, item in enumerate(items))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = _to_float(value)
        if number is not None:
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]
    raise PipelineError(f"params.yaml: {key} = {value!r} is not allowed: must be {kind}")


def _to_float(value: Any) -> float | None:
    """Numbers either way: PyYAML reads a hand-typed `1e-4` as the string '1e-4', DVC as a float."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _check(key: str, value: Any, rules: dict) -> None:
    items = value if isinstance(value, tuple) else (value,)
    if "min_len" in rules and len(items) < rules["min_len"]:
        raise PipelineError(f"params.yaml: {key} = [] is not allowed: list at least {rules['min_len']} value")
    for item in items:
        problem = None
        if "choices" in rules and item not in rules["choices"]:
            problem = f"choose one of {', '.join(rules['choices'])}"
        elif "ge" in rules and item < rules["ge"]:
            problem = f"must be >= {rules['ge']}"
        elif "gt" in rules and item <= rules["gt"]:
            problem = f"must be > {rules['gt']}"
        elif "le" in rules and item > rules["le"]:
            problem = f"must be <= {rules['le']}"
        elif "lt" in rules and item >= rules["lt"]:
            problem = f"must be < {rules['lt']}"
        if problem:
            shown = list(value) if isinstance(value, tuple) else value
            raise PipelineError(f"params.yaml: {key} = {shown!r} is not allowed: {problem}")


def require_batch_fits(key: str, batch_size: int, n_train: int) -> None:
    """Checked once the data is loaded, before training: a batch larger than the data is a typo."""
    if batch_size > n_train:
        raise PipelineError(
            f"params.yaml: {key} = {batch_size} is not allowed: larger than the {n_train} training images"
        )
