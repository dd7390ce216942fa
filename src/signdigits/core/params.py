"""params.yaml as frozen, typed config objects, validated once at stage start.

Every stage calls `load_params()` first, so a typo, a wrong type or an out-of-range value anywhere
in params.yaml (or set with `dvc exp run -S`) fails before any data is read, with a message that
names the key, the value and what is allowed. The file is read strictly (`read_yaml`): no duplicate
keys, no anchors or aliases, not empty; and every key a consumer reads must be written in it
(`require`): as in DVC, whose stages require every key dvc.yaml lists, nothing falls back to a
built-in default. Inside a section a stage reads whole (train_base, exp2, ...) the keys not written
take the defaults below, as the comments of params.yaml describe.

Over 400 lines on purpose: each section's schema (the dataclasses) sits beside the one strict reader
that validates it, so a new key, its range and its error message are added in one file.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from signdigits.core import paths
from signdigits.core.errors import PipelineError
from signdigits.core.kernels import MODES as CPU_KERNELS
from signdigits.core.workspace import stage_entry

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
SPLIT_STRATEGIES = ("signer", "random")
BAD_IMAGE_POLICIES = ("fail", "skip")
SWEEP_BACKENDS = ("processes", "dask")
SEED_LIMIT = 2**63  # torch and numpy take any seed in 0 <= seed < 2**63
MAX_WIDTH = 1_000_000  # a hidden layer's width; what fits in memory is checked before training (core.limits)
MAX_CHANNELS = 4096  # a conv block's channels; as for widths, memory is checked before training
AUTO = "auto"  # runtime.threads chosen when the stage starts
SHOWN_CHARS = 200  # the longest value or key a message prints
PERCENTILE_RANGE = (50.0, 100.0)  # familiarity.percentile lies strictly inside; so does predict's --percentile


def _opt(default=dataclasses.MISSING, *, ge=None, gt=None, le=None, lt=None, choices=None, min_len=None):
    """A dataclass field with its allowed range, read by `_check`."""
    kwargs = {"default": default} if not isinstance(default, (list, dict)) else {}
    rules = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "min_len": min_len}
    return field(**kwargs, metadata={k: v for k, v in rules.items() if v is not None})


@dataclass(frozen=True)
class Runtime:
    device: str = _opt("auto", choices=DEVICES)
    threads: int | str = _opt(AUTO, ge=1, le=256)  # a count, or auto: the idle cores at start (engine)
    cpu_kernels: str = _opt("portable", choices=CPU_KERNELS)


@dataclass(frozen=True)
class PrepareParams:
    image_size: int = _opt(28, ge=8, le=256)
    on_bad_image: str = _opt("fail", choices=BAD_IMAGE_POLICIES)
    jpeg_draft: bool = False


@dataclass(frozen=True)
class SplitParams:
    strategy: str = _opt("signer", choices=SPLIT_STRATEGIES)
    train: float = _opt(0.70, gt=0.0, lt=1.0)
    val: float = _opt(0.15, gt=0.0, lt=1.0)
    test: float = _opt(0.15, gt=0.0, lt=1.0)
    seed: int = _opt(0, ge=0, lt=SEED_LIMIT)

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
class Composite:
    """Training photos on random backgrounds (training/composite.py): the hand cut out of its wall.

    `share` of each batch's photos get a random smooth background; of those, `zoom_share` are first
    made up to `zoom_out` times smaller at a random place. share 0: off.
    """

    share: float = _opt(0.0, ge=0.0, le=1.0)
    zoom_share: float = _opt(0.0, ge=0.0, le=1.0)
    zoom_out: float = _opt(1.0, ge=1.0, le=4.0)

    @property
    def enabled(self) -> bool:
        return self.share > 0


@dataclass(frozen=True)
class TrainParams:
    """Everything that defines one training run, the network included: its dense layers (hidden, dropout,
    normalize_images) and, for a CNN, its conv blocks (channels); the memory estimate (core.limits) and
    the model (training.model.Arch) both read the network from here. channels and composite are
    written only in a CNN's section (CNN_ONLY); elsewhere they hold their defaults: a fully-connected
    network trained on the plain photos."""

    hidden: tuple[int, ...] = _opt((128,), ge=1, le=MAX_WIDTH)
    dropout: float = _opt(0.0, ge=0.0, lt=1.0)
    optimizer: str = _opt("adam", choices=OPTIMIZERS)
    lr: float = _opt(0.001, gt=0.0, le=10.0)
    momentum: float = _opt(0.9, ge=0.0, lt=1.0)
    weight_decay: float = _opt(0.0, ge=0.0)
    batch_size: int = _opt(32, ge=1)
    epochs: int = _opt(10, ge=1, le=10_000)
    scheduler: str = _opt("none", choices=SCHEDULERS)
    step_size: int = _opt(10, ge=1, le=10_000)
    gamma: float = _opt(0.1, gt=0.0, le=1.0)
    patience: int = _opt(0, ge=0, le=10_000)
    label_smoothing: float = _opt(0.0, ge=0.0, lt=1.0)
    normalize_images: bool = False
    augment: Augment = field(default_factory=Augment)
    ensemble: int = _opt(1, ge=1, le=64)
    balanced: bool = False
    seed: int = _opt(0, ge=0, lt=SEED_LIMIT)
    channels: tuple[int, ...] = _opt((), ge=1, le=MAX_CHANNELS)  # a CNN's conv blocks; none: fully connected
    composite: Composite = field(default_factory=Composite)

    @property
    def kind(self) -> str:
        return "cnn" if self.channels else "mlp"


# TrainParams fields written only in a CNN's section (train_cnn); anywhere else they are unknown keys and hold these.
CNN_ONLY = {"channels": (), "composite": Composite()}
CNN_CHANNELS = (16, 32, 64)  # a CNN section's channels where not written


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
class CNNParams:
    """train_cnn: its own familiarity check's components beside a training run's keys, which here include
    the conv blocks' channels (at least one) and the backgrounds (composite)."""

    familiarity_components: int = _opt(60, ge=1, le=4096)
    model: TrainParams = field(default_factory=lambda: TrainParams(channels=CNN_CHANNELS))

    def __post_init__(self):
        if not self.model.channels:
            raise PipelineError("params.yaml: train_cnn.channels = [] is not allowed: list at least 1 value")


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


@dataclass(frozen=True)
class EvaluateParams:
    bootstrap: int = _opt(1000, ge=10, le=100_000)
    seed: int = _opt(0, ge=0, lt=SEED_LIMIT)
    max_misclassified: int = _opt(40, ge=1, le=400)


@dataclass(frozen=True)
class FamiliarityParams:
    """The final model's check of photos unlike the training ones (training/familiarity.py).

    train_best reads `components`; evaluate and predict read `percentile`, applied to the stored
    validation scores, so changing it never retrains the network.
    """

    components: int = _opt(60, ge=1, le=4096)
    percentile: float = _opt(97.5, gt=PERCENTILE_RANGE[0], lt=PERCENTILE_RANGE[1])


@dataclass(frozen=True)
class ReviewParams:
    """The review's gate (signdigits.review), always read from the base revision's params.yaml.

    A model fails when its test accuracy drops by more than `max_drop` (a fraction: 0.01 is 1 point)
    and McNemar's exact test on the same photos says p < `alpha`; a familiarity check fails when the share of
    a shifted set's photos it flags drops by more than `max_flag_drop`. docs/review.md says why these defaults.
    """

    max_drop: float = _opt(0.01, ge=0.0, le=1.0)
    alpha: float = _opt(0.05, gt=0.0, lt=1.0)
    max_flag_drop: float = _opt(0.05, ge=0.0, le=1.0)


@dataclass(frozen=True)
class Params:
    runtime: Runtime
    prepare: PrepareParams
    split: SplitParams
    train_binary: BinaryParams
    train_base: TrainParams
    train_exp1: TrainParams
    exp2: SweepParams
    train_cnn: CNNParams
    final: TrainParams  # the top-level keys: what `dvc exp run -S lr=...` changes
    evaluate: EvaluateParams
    familiarity: FamiliarityParams
    review: ReviewParams
    # The sections of models paths.MODEL_LIST adds beyond the fields above, by stage name (docs/add-a-model.md):
    # any keys of a training run, read with no change to this file.
    listed: dict[str, TrainParams] = field(default_factory=dict)

    def section(self, name: str) -> TrainParams:
        """A model's section by its stage name: the top-level keys for train_best, a section paths.MODEL_LIST adds,
        or the field of that name."""
        if name == paths.FINAL_MODEL:
            return self.final
        return self.listed[name] if name in self.listed else getattr(self, name)


# Sections whose keys are TrainParams fields mixed with their own (grid lists, digits, familiarity_components).
_MODEL_SECTIONS = {"train_binary": BinaryParams, "exp2": SweepParams, "train_cnn": CNNParams}
CNN_SECTIONS = ("train_cnn",)  # where CNN_ONLY keys may be written


FINAL_KEYS = tuple(f.name for f in dataclasses.fields(TrainParams) if f.name not in CNN_ONLY)
EVERY_KEY = (*(f.name for f in dataclasses.fields(Params) if f.name not in ("final", "listed")), *FINAL_KEYS)


def load_params(
    path: str | Path = paths.PARAMS, require: Iterable[str] = EVERY_KEY, data: bytes | None = None
) -> Params:
    """params.yaml read strictly, with the keys in `require` written in it (by default all of them).

    Keys not required may be missing (predict and review read one key each, maybe from a partial file);
    they then hold the defaults above, which no consumer that did not require them reads. With `data`, the
    file's bytes as already read (a stage: the same bytes it compares before writing, core.workspace).
    """
    raw = read_yaml(path) if data is None else parse_yaml(data, str(path))
    require_keys(raw, require)
    return parse_params(raw)


def stage_requirements(script: str, dvc_yaml: str | Path = paths.DVC_YAML) -> tuple[str, ...]:
    """What a stage script (stages/<name>.py) reads: its `params:` list in dvc.yaml, the one place it is written
    (tests/test_stage_params.py checks it against what the script reads); every key for a script not in the pipeline.
    """
    stage = stage_entry(script, dvc_yaml)
    return tuple(stage.get("params", ())) if stage is not None else EVERY_KEY


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses anchors and aliases as it meets them, before any is expanded.

    Nothing in params.yaml needs them, and an alias bomb (aliases of aliases) would cost gigabytes.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self.key_path: list[str] = []

    def compose_node(self, parent, index):
        part = index.value if isinstance(index, yaml.ScalarNode) else f"[{index}]" if isinstance(index, int) else None
        if part is not None:
            self.key_path.append(str(part))
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            written = f"*{event.anchor}" if isinstance(event, yaml.AliasEvent) else f"&{event.anchor}"
            raise PipelineError(
                f"params.yaml: {_dotted(self.key_path) or 'the top level'} = {_short(written)} is not allowed: "
                f"YAML anchors and aliases are refused (line {event.start_mark.line + 1}); write the value out"
            )
        node = super().compose_node(parent, index)
        if part is not None:
            if isinstance(node, yaml.ScalarNode) and node.style is None:
                _refuse_yaml_1_1_only(node.value, self.key_path, node.start_mark.line + 1)
            self.key_path.pop()
        return node


# Plain scalars that YAML 1.1 (PyYAML) and YAML 1.2 (DVC's ruamel.yaml) read as different values: what the
# value would be for DVC (dvc.lock, `dvc params diff`, `dvc exp show`) and for a YAML 1.1 reader, and what to write.
_YAML_1_1_ONLY = (
    (re.compile(r"yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|y|Y|n|N"),
     "the string {text!r}", "a boolean", "write true or false"),
    (re.compile(r"[-+]?0[0-9_]+"), "the integer {decimal}", "octal (or a string)", "write it without leading zeros"),
    (re.compile(r"[-+]?0o[0-7_]+"), "the octal integer {octal}", "the string {text!r}", "write it in decimal"),
    (re.compile(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?"),
     "the string {text!r}", "a number in base 60", "write the number itself"),
)  # fmt: skip


def _refuse_yaml_1_1_only(text: str, key_path: list[str], line: int) -> None:
    """A value DVC (YAML 1.2) and PyYAML (YAML 1.1) read differently is refused: dvc.lock would state another one."""
    for pattern, for_dvc, for_1_1, advice in _YAML_1_1_ONLY:
        if pattern.fullmatch(text):
            digits = text.replace("_", "")
            values = {"text": text, "decimal": _int_or(digits, 10), "octal": _int_or(digits.replace("0o", ""), 8)}
            raise PipelineError(
                f"params.yaml: {_dotted(key_path)} = {_short(text)} is not allowed (line {line}): DVC (YAML 1.2) reads "
                f"{for_dvc.format(**values)}, a YAML 1.1 reader {for_1_1.format(**values)}; {advice}"
            )


def _int_or(digits: str, base: int) -> int | str:
    try:
        return int(digits, base)
    except ValueError:
        return digits


def read_yaml(path: str | Path) -> dict:
    """The mapping in params.yaml; refuses a missing or empty file, bad YAML, anchors and duplicate keys."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found; run the stage from the repository root")
    return parse_yaml(path.read_bytes(), str(path))


def parse_yaml(data: bytes, path: str) -> dict:
    """read_yaml of bytes that came from elsewhere (a revision's params.yaml from git); `path` names them in errors."""
    _require_utf8(path, data)
    loader = _StrictLoader(data)
    try:
        node = loader.get_single_node()
        if node is not None:
            _refuse_duplicates(node, [])
        raw = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as e:
        raise PipelineError(f"{path}: not valid YAML ({_short(str(e).replace(chr(10), ' '))})") from None
    except RecursionError:
        raise PipelineError(f"{path}: not valid YAML (nested too deeply)") from None
    finally:
        loader.dispose()
    if raw is None:
        raise PipelineError(f"{path}: the file is empty; it must hold every key the stages read (dvc.yaml)")
    if not isinstance(raw, dict):
        raise PipelineError("params.yaml: the top level must be a mapping of keys to values")
    return raw


def _require_utf8(path: str | Path, data: bytes) -> None:
    """UTF-8 (with or without a BOM), as DVC reads it; UTF-16 with its BOM, as YAML allows. The first bad byte named."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise PipelineError(
            f"{path}: not UTF-8 text: byte 0x{data[e.start]:02x} at position {e.start} (line {line}) "
            "is not UTF-8 (another encoding, such as Windows-1252?); save the file as UTF-8"
        ) from None


def _refuse_duplicates(node: yaml.Node, key_path: list[str]) -> None:
    """A key written twice in one mapping: PyYAML would keep the last one silently."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicates(item, [*key_path, f"[{i}]"])
    elif isinstance(node, yaml.MappingNode):
        lines: dict = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if name in lines:
                raise PipelineError(
                    f"params.yaml: {_short(_dotted([*key_path, name]))} is written twice "
                    f"(lines {lines[name]} and {key_node.start_mark.line + 1}); keep one"
                )
            if name is not None:
                lines[name] = key_node.start_mark.line + 1
            _refuse_duplicates(value_node, [*key_path, str(name)])


def require_keys(raw: dict, keys: Iterable[str]) -> None:
    """Every key (dotted for one inside a section) is written; none falls back to a default."""
    for key in keys:
        node = raw
        for part in key.split("."):
            if not isinstance(node, dict):
                break  # not a mapping: parse_params names the problem
            if part not in node:
                raise PipelineError(
                    f"params.yaml: {key} is missing; it is read here and has no built-in default "
                    "(DVC too requires every key dvc.yaml lists): write it, as in the committed params.yaml"
                )
            node = node[part]


def _dotted(key_path: list[str]) -> str:
    return "".join(part if part.startswith("[") else f".{part}" for part in key_path).lstrip(".")


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = 20
_SHORT_REPR.maxdict, _SHORT_REPR.maxlevel = 10, 3
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = _SHORT_REPR.maxlong = 100


def shown(value: Any) -> str:
    """repr(value) for a message, at most about SHOWN_CHARS long whatever the value (reprlib never builds the whole)."""
    return _short(_SHORT_REPR.repr(list(value) if isinstance(value, tuple) else value))


def _short(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def review_params(raw: dict) -> ReviewParams:
    """The review section of a params.yaml mapping (parse_yaml); keys not written hold their defaults."""
    return _parse_section("review", raw.get("review", {}))


def parse_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise PipelineError("params.yaml: the top level must be a mapping of keys to values")
    sections = {f.name for f in dataclasses.fields(Params)} - {"final", "listed"}
    listed = [name for name in paths.MODEL_LIST if name not in sections and name != paths.FINAL_MODEL]
    top_level = {k: v for k, v in raw.items() if k not in sections and k not in listed}
    values = {name: _parse_section(name, raw.get(name, {})) for name in sections}
    values["final"] = _build(TrainParams, top_level, prefix="", sections=sections | set(listed), **CNN_ONLY)
    values["listed"] = {name: _parse_section(name, raw.get(name, {})) for name in listed}
    return Params(**values)


def _parse_section(name: str, value: Any):
    """One section of params.yaml; a model paths.MODEL_LIST adds (Params.listed) is a fully-connected training run."""
    section_type = typing.get_type_hints(Params).get(name, TrainParams)
    if not isinstance(value, dict):
        raise PipelineError(f"params.yaml: {name} must be a mapping, got {shown(value)}")
    if name in _MODEL_SECTIONS:
        cls = _MODEL_SECTIONS[name]
        own = {f.name for f in dataclasses.fields(cls)} - {"model"}
        model_keys = {k: v for k, v in value.items() if k not in own}
        if name in CNN_SECTIONS:
            model_keys = {"channels": list(CNN_CHANNELS), **model_keys}
        fixed = {} if name in CNN_SECTIONS else CNN_ONLY
        model = _build(TrainParams, model_keys, prefix=f"{name}.", sections=frozenset(own), **fixed)
        return _build(cls, {k: v for k, v in value.items() if k in own}, prefix=f"{name}.", model=model)
    return _build(section_type, value, prefix=f"{name}.", **(CNN_ONLY if section_type is TrainParams else {}))


def _build(cls, mapping: dict, prefix: str, sections: frozenset = frozenset(), **extra):
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in extra}
    unknown = sorted(set(mapping) - set(fields), key=str)
    if unknown:
        allowed = ", ".join(sorted(set(fields) | set(sections)))
        raise PipelineError(f"params.yaml: unknown key {_short(f'{prefix}{unknown[0]}')}; allowed here: {allowed}")
    hints = typing.get_type_hints(cls)
    values = dict(extra)
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise PipelineError(f"params.yaml: {key} must be a mapping, got {shown(value)}")
            values[name] = _build(tp, value, prefix=f"{key}.")
            continue
        values[name] = _coerce(key, value, tp)
        _check(key, values[name], fields[name].metadata)
    return cls(**values)


def _coerce(key: str, value: Any, tp) -> Any:
    origin = typing.get_origin(tp)
    if tp == int | str:  # a count or auto
        if value == AUTO or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise PipelineError(f"params.yaml: {key} = {shown(value)} is not allowed: must be an integer or {AUTO}")
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):  # not read as [value]: dvc.lock and `dvc params diff` state value
            example = f", in brackets: [{shown(value)}]" if isinstance(value, (int, float, str)) else ""
            raise PipelineError(f"params.yaml: {key} = {shown(value)} is not allowed: must be a list{example}")
        return tuple(_coerce(f"{key}[{i}]", item, item_type) for i, item in enumerate(value))
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
    raise PipelineError(f"params.yaml: {key} = {shown(value)} is not allowed: must be {kind}")


def _to_float(value: Any) -> float | None:
    """Numbers either way: PyYAML reads a hand-typed `1e-4` as the string '1e-4', DVC as a float."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            return None
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
        if item == AUTO and "choices" not in rules:  # a count's range does not apply to auto
            continue
        if "choices" in rules and item not in rules["choices"]:
            problem = f"choose one of {', '.join(rules['choices'])}"
        elif "ge" in rules and item < rules["ge"]:
            problem = f"must be >= {rules['ge']}"
        elif "gt" in rules and item <= rules["gt"]:
            problem = f"must be > {rules['gt']}"
        elif "le" in rules and item > rules["le"]:
            problem = f"must be <= {rules['le']}"
        elif "lt" in rules and item >= rules["lt"]:
            problem = "must be < 2**63" if rules["lt"] == SEED_LIMIT else f"must be < {rules['lt']}"
        if problem:
            raise PipelineError(f"params.yaml: {key} = {shown(value)} is not allowed: {problem}")
