"""params.yaml validation (issue 2): every error names the key, the value and what is allowed."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from helpers import DVC_STAGES, ROOT

from signdigits.core.errors import PipelineError
from signdigits.core.params import (
    EVERY_KEY,
    Params,
    TrainParams,
    load_params,
    parse_params,
    stage_requirements,
)

REAL = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_changes(changes: dict) -> dict:
    """The real params.yaml as PyYAML reads it, with dotted keys set (value None deletes nothing)."""
    raw = copy.deepcopy(REAL)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return raw


def error_of(changes: dict) -> str:
    with pytest.raises(PipelineError) as info:
        parse_params(with_changes(changes))
    return str(info.value)


def test_real_params_yaml_loads():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.final.optimizer == raw["optimizer"]
    assert params.final.hidden == tuple(raw["hidden"])
    assert params.final.augment.rotate == float(raw["augment"]["rotate"])
    assert params.train_binary.digits == tuple(raw["train_binary"]["digits"])
    assert params.train_binary.model.balanced is True
    assert params.train_base.optimizer == "sgd" and params.train_base.lr == 0.01
    assert params.split.strategy == "signer"
    assert math.isclose(params.split.train + params.split.val + params.split.test, 1.0)
    assert params.prepare.image_size == 28 and params.prepare.on_bad_image == "fail"


def test_parse_params_fills_what_is_not_required_with_defaults():
    params = parse_params({})
    assert params.prepare.image_size == 28
    assert params.split.strategy == "signer"
    assert params.final == TrainParams()


SPELLINGS = {
    "top level": ("lr: 1e-4\n", "lr: 0.0001\n", lambda p: p.final.lr, 0.0001),
    "in a section": ("train_base:\n  lr: 1e-4\n", "train_base:\n  lr: 0.0001\n", lambda p: p.train_base.lr, 0.0001),
    "in a grid list": (
        "exp2:\n  lr: [1e-4, 2.5e-3]\n",
        "exp2:\n  lr: [0.0001, 0.0025]\n",
        lambda p: p.exp2.lr,
        (0.0001, 0.0025),
    ),
}


@pytest.mark.parametrize("text_e, text_dot, get, expected", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_both_number_spellings_give_the_same_float(text_e, text_dot, get, expected, tmp_path):
    """PyYAML reads a hand-typed 1e-4 as the string '1e-4'; DVC (-S lr=0.0001) writes a float."""
    assert "'1e-4'" in repr(yaml.safe_load(text_e))  # the premise: PyYAML keeps it a string
    (tmp_path / "e.yaml").write_text(text_e)
    (tmp_path / "dot.yaml").write_text(text_dot)
    a, b = load_params(tmp_path / "e.yaml", require=()), load_params(tmp_path / "dot.yaml", require=())
    assert a == b
    assert get(a) == expected
    values = get(a) if isinstance(get(a), tuple) else (get(a),)
    assert all(type(v) is float for v in values)


def test_integers_are_accepted_for_floats():
    params = parse_params(with_changes({"lr": 1, "train_base.weight_decay": 0}))
    assert params.final.lr == 1.0 and type(params.final.lr) is float
    assert type(params.train_base.weight_decay) is float


# (changes, substrings the message must hold: the key, the value, what is allowed)
ERRORS = {
    # unknown keys
    "unknown top-level key": (
        {"learning_rate": 0.1},
        ["unknown key learning_rate", "allowed here", "lr", "train_base"],
    ),
    "unknown key in prepare": ({"prepare.size": 28}, ["unknown key prepare.size", "allowed here", "image_size"]),
    "unknown key in train_base": ({"train_base.lrate": 0.1}, ["unknown key train_base.lrate", "lr", "momentum"]),
    "unknown key in train_binary": ({"train_binary.digit": [0, 1]}, ["unknown key train_binary.digit", "digits"]),
    "unknown key in exp2": ({"exp2.lrs": [0.1]}, ["unknown key exp2.lrs", "lr", "jobs"]),
    "unknown key in augment": ({"augment.flip": 1}, ["unknown key augment.flip", "shift", "rotate", "scale"]),
    "unknown key in runtime": ({"runtime.gpu": True}, ["unknown key runtime.gpu", "device", "threads"]),
    "unknown key in composite": (
        {"train_cnn.composite.zoom": 2},
        ["unknown key train_cnn.composite.zoom", "share", "zoom_out", "zoom_share"],
    ),
    # wrong types
    "int given a word": ({"epochs": "ten"}, ["epochs = 'ten'", "must be an integer"]),
    "int given a float": ({"train_base.batch_size": 32.5}, ["train_base.batch_size = 32.5", "must be an integer"]),
    "int given a bool": ({"seed": True}, ["seed = True", "must be an integer"]),
    "float given a word": ({"train_base.lr": "fast"}, ["train_base.lr = 'fast'", "must be a number"]),
    "float given nan": ({"lr": float("nan")}, ["lr = nan", "must be a number"]),
    "float given a bool": ({"dropout": False}, ["dropout = False", "must be a number"]),
    "bool given a string": ({"balanced": "yes"}, ["balanced = 'yes'", "must be true or false"]),
    "str given a number": ({"optimizer": 3}, ["optimizer = 3", "must be a string"]),
    "list item of wrong type": ({"hidden": [128, "wide"]}, ["hidden[1] = 'wide'", "must be an integer"]),
    "section not a mapping": ({"prepare": [28]}, ["prepare must be a mapping", "[28]"]),
    "nested section not a mapping": ({"augment": 0.1}, ["augment must be a mapping", "0.1"]),
    # out of range
    "negative lr": ({"train_base.lr": -0.01}, ["train_base.lr = -0.01", "must be > 0"]),
    "zero lr": ({"lr": 0}, ["lr = 0.0", "must be > 0"]),
    "huge lr": ({"train_base.lr": 1e6}, ["train_base.lr = 1000000.0", "must be <= 10"]),
    "batch size 0": ({"train_base.batch_size": 0}, ["train_base.batch_size = 0", "must be >= 1"]),
    "epochs 0": ({"train_exp1.epochs": 0}, ["train_exp1.epochs = 0", "must be >= 1"]),
    "dropout 1": ({"dropout": 1.0}, ["dropout = 1.0", "must be < 1"]),
    "momentum negative": ({"momentum": -0.5}, ["momentum = -0.5", "must be >= 0"]),
    "hidden width 0": ({"train_exp1.hidden": [256, 0]}, ["train_exp1.hidden = [256, 0]", "must be >= 1"]),
    "threads 0": ({"runtime.threads": 0}, ["runtime.threads = 0", "must be >= 1"]),
    "threads a word": ({"runtime.threads": "many"}, ["runtime.threads = 'many'", "must be an integer or auto"]),
    "threads true": ({"runtime.threads": True}, ["runtime.threads = True", "must be an integer or auto"]),
    "augment rotate": ({"augment.rotate": 270}, ["augment.rotate = 270.0", "must be <= 180"]),
    "composite share": ({"train_cnn.composite.share": 1.5}, ["train_cnn.composite.share = 1.5", "must be <= 1"]),
    "composite zoom_out": (
        {"train_cnn.composite.zoom_out": 0.5},
        ["train_cnn.composite.zoom_out = 0.5", "must be >= 1"],
    ),
    "split fraction 0": ({"split.val": 0.0}, ["split.val = 0.0", "must be > 0"]),
    "negative seed": ({"split.seed": -1}, ["split.seed = -1", "must be >= 0"]),
    "bootstrap too few": ({"evaluate.bootstrap": 5}, ["evaluate.bootstrap = 5", "must be >= 10"]),
    "grid lr out of range": ({"exp2.lr": [0.01, -1]}, ["exp2.lr = [0.01, -1.0]", "must be > 0"]),
    "image size 4": ({"prepare.image_size": 4}, ["prepare.image_size = 4", "must be >= 8"]),
    "image size 7": ({"prepare.image_size": 7}, ["prepare.image_size = 7", "must be >= 8"]),
    # unknown choices
    "optimizer": ({"optimizer": "rmsprop"}, ["optimizer = 'rmsprop'", "choose one of sgd, adam, adamw"]),
    "stage optimizer": ({"train_base.optimizer": "lbfgs"}, ["train_base.optimizer = 'lbfgs'", "sgd, adam, adamw"]),
    "grid optimizer": ({"exp2.optimizer": ["adam", "nadam"]}, ["exp2.optimizer = ['adam', 'nadam']", "sgd, adam"]),
    "scheduler": ({"scheduler": "exponential"}, ["scheduler = 'exponential'", "none, step, cosine, onecycle"]),
    "device": ({"runtime.device": "gpu"}, ["runtime.device = 'gpu'", "choose one of auto, cpu, cuda, mps"]),
    "split strategy": ({"split.strategy": "stratified"}, ["split.strategy = 'stratified'", "signer, random"]),
    "on_bad_image": ({"prepare.on_bad_image": "ignore"}, ["prepare.on_bad_image = 'ignore'", "fail, skip"]),
    # fractions
    "fractions sum above 1": ({"split.train": 0.8}, ["split.train + split.val + split.test = 1.1", "must sum to 1"]),
    "fractions sum below 1": ({"split.test": 0.05}, ["split.train + split.val + split.test = 0.9", "must sum to 1"]),
    # binary digits
    "binary digit 10": ({"train_binary.digits": [0, 10]}, ["train_binary.digits = [0, 10]", "must be <= 9"]),
    "binary digit -1": ({"train_binary.digits": [-1, 3]}, ["train_binary.digits = [-1, 3]", "must be >= 0"]),
    "binary same digit": ({"train_binary.digits": [3, 3]}, ["train_binary.digits = [3, 3]", "two different digits"]),
    "binary one digit": ({"train_binary.digits": [3]}, ["train_binary.digits = [3]", "two different digits"]),
    "binary three digits": ({"train_binary.digits": [1, 2, 3]}, ["train_binary.digits = [1, 2, 3]", "two different"]),
    # empty grid lists
    "empty grid lr": ({"exp2.lr": []}, ["exp2.lr = []", "at least 1 value"]),
    "empty grid batch_size": ({"exp2.batch_size": []}, ["exp2.batch_size = []", "at least 1 value"]),
    "empty grid epochs": ({"exp2.epochs": []}, ["exp2.epochs = []", "at least 1 value"]),
    "empty grid optimizer": ({"exp2.optimizer": []}, ["exp2.optimizer = []", "at least 1 value"]),
    # integers beyond what torch and numpy take
    "final seed 2**63": ({"seed": 2**63}, [f"seed = {2**63}", "must be < 2**63"]),
    "huge seed": ({"train_base.seed": 99999999999999999999999}, ["train_base.seed = 9999", "must be < 2**63"]),
    "split seed": ({"split.seed": 2**64}, ["split.seed", "must be < 2**63"]),
    "evaluate seed": ({"evaluate.seed": 2**63}, ["evaluate.seed", "must be < 2**63"]),
    "sweep seed": ({"exp2.seed": 2**63}, ["exp2.seed", "must be < 2**63"]),
    "binary seed": ({"train_binary.seed": 2**70}, ["train_binary.seed", "must be < 2**63"]),
    "hidden width": ({"hidden": [10**7]}, ["hidden = [10000000]", "must be <= 1000000"]),
    "patience": ({"patience": 10**30}, ["patience = 1000000000000000000000000000000", "must be <= 10000"]),
    "step_size": ({"step_size": 10**6}, ["step_size = 1000000", "must be <= 10000"]),
    "float beyond any float": ({"lr": 10**400}, ["lr = ", "must be a number"]),
}


@pytest.mark.parametrize("changes, expected", ERRORS.values(), ids=ERRORS.keys())
def test_error_names_key_value_and_what_is_allowed(changes, expected):
    message = error_of(changes)
    assert message.startswith("params.yaml: ")
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize(
    "changes",
    [
        {"prepare.image_size": 8},
        {"train_binary.digits": [9, 0]},
        {"exp2.lr": [0.5]},
        {"split.train": 0.8, "split.val": 0.1, "split.test": 0.1},
        {"split.train": 0.7, "split.val": 0.2, "split.test": 0.1},  # 0.7 + 0.2 + 0.1 != 1.0 in floats
        {"lr": 10},
        {"hidden": [64]},
    ],
)
def test_boundary_values_are_accepted(changes):
    parse_params(with_changes(changes))


def _list_keys(mapping: dict, prefix: str = "") -> list[str]:
    """The dotted keys of the real params.yaml whose values are lists (widths, channels, digits, the grid)."""
    keys = []
    for name, value in mapping.items():
        if isinstance(value, dict):
            keys += _list_keys(value, f"{prefix}{name}.")
        elif isinstance(value, list):
            keys.append(f"{prefix}{name}")
    return keys


LIST_KEYS = _list_keys(REAL)


def test_every_list_key_is_found():
    assert {"hidden", "train_cnn.channels", "train_binary.digits", "exp2.lr", "exp2.optimizer"} <= set(LIST_KEYS)


@pytest.mark.parametrize("key", LIST_KEYS)
def test_a_list_written_as_one_value_is_refused(key):
    """`channels: 16` is not read as [16]: dvc.lock, `dvc params diff` and `dvc exp show` would state 16."""
    listed = with_changes({})
    for part in key.split(".")[:-1]:
        listed = listed[part]
    value = (listed[key.split(".")[-1]] or [8])[0]
    message = error_of({key: value})
    assert message == f"params.yaml: {key} = {value!r} is not allowed: must be a list, in brackets: [{value!r}]"


def test_load_params_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(PipelineError, match="file not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [0.1\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_params(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- lr\n- 0.1\n")
    with pytest.raises(PipelineError, match="top level must be a mapping"):
        load_params(top)


def test_load_params_file_errors_name_the_key(tmp_path):
    """Through the file, as the stages read it: a typo in a hand-edited params.yaml."""
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("optimizer: sgd", "optimizer: sdg", 1))
    with pytest.raises(PipelineError) as info:
        load_params(path)
    assert "train_base.optimizer = 'sdg'" in str(info.value)
    assert "choose one of sgd, adam, adamw" in str(info.value)


def test_seed_just_below_2_63_is_accepted():
    assert parse_params(with_changes({"seed": 2**63 - 1})).final.seed == 2**63 - 1


# --- the file read strictly (issue 19) ------------------------------------------------------------


def load_text(tmp_path, text: str, require=()) -> Params:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return load_params(path, require=require)


def refusal(tmp_path, text: str, require=()) -> str:
    with pytest.raises(PipelineError) as info:
        load_text(tmp_path, text, require)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500
    return message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_file_is_refused(tmp_path, text):
    assert "params.yaml: the file is empty" in refusal(tmp_path, text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("lr: 0.1\nseed: 0\nlr: 0.2\n", "params.yaml: lr is written twice (lines 1 and 3); keep one"),
        ("train_base:\n  lr: 0.1\n  lr: 0.2\n", "params.yaml: train_base.lr is written twice (lines 2 and 3)"),
        ("augment:\n  shift: 0.1\naugment:\n  rotate: 2\n", "params.yaml: augment is written twice (lines 1 and 3)"),
        ((ROOT / "params.yaml").read_text() + "\nweight_decay: 0.5\n", "params.yaml: weight_decay is written twice"),
    ],
    ids=["top level", "in a section", "a section", "the committed file"],
)
def test_a_key_written_twice_is_refused(tmp_path, text, expected):
    assert expected in refusal(tmp_path, text, require=EVERY_KEY)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hidden: &width [64]\ntrain_base:\n  hidden: *width\n", "params.yaml: hidden = &width is not allowed"),
        ("lr: 0.1\ntrain_base: {lr: *x}\n", "params.yaml: train_base.lr = *x is not allowed"),
        ("exp2:\n  lr: [0.1, &a 0.2]\n", "params.yaml: exp2.lr[1] = &a is not allowed"),
        ("&top {lr: 0.1}\n", "params.yaml: the top level = &top is not allowed"),
    ],
)
def test_anchors_and_aliases_are_refused(tmp_path, text, expected):
    message = refusal(tmp_path, text)
    assert expected in message and "YAML anchors and aliases are refused" in message


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    """Nine levels of ten aliases: 10**9 items if expanded; refused at the first anchor, with a short message."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    message = refusal(tmp_path, "\n".join(levels) + "\nhidden: *a9\n")
    assert message.startswith("params.yaml: a0 = &a0 is not allowed")


def test_long_values_and_keys_are_shortened(tmp_path):
    word = "x" * 10_000  # 50 times what a message may print: PyYAML reads these slowly
    for text in (f"optimizer: {word}\n", f"{word}: 1\n", f"hidden: [{', '.join(['1'] * 5_000)}, wide]\n"):
        message = refusal(tmp_path, text)
        assert len(message) < 500, message[:600]
    many = refusal(tmp_path, f"exp2:\n  lr: [{', '.join(['0.1'] * 5_000)}, -1]\n")
    assert many.startswith("params.yaml: exp2.lr = [0.1, 0.1,") and "must be > 0" in many


def test_deep_nesting_is_refused(tmp_path):
    """20 times Python's recursion limit."""
    assert "not valid YAML" in refusal(tmp_path, "hidden: " + "[" * 20_000 + "]" * 20_000 + "\n")


# --- required keys: what each consumer reads must be written ------------------------------------


STAGE_PARAMS = {name: tuple(stage.get("params", ())) for name, stage in DVC_STAGES.items()}


def test_stage_requirements_are_the_params_dvc_yaml_lists():
    """Each stage requires exactly what DVC requires of it, read from dvc.yaml; every key elsewhere."""
    dvc_yaml = ROOT / "dvc.yaml"
    assert {name: stage_requirements(name, dvc_yaml) for name in STAGE_PARAMS} == STAGE_PARAMS
    assert stage_requirements("train_base", dvc_yaml) == ("runtime", "train_base")
    assert stage_requirements("my_script", dvc_yaml) == EVERY_KEY
    assert stage_requirements("train_base", dvc_yaml.parent / "no-such-dvc.yaml") == EVERY_KEY


@pytest.mark.parametrize("stage", STAGE_PARAMS)
def test_each_required_key_missing_is_refused(tmp_path, stage):
    for key in STAGE_PARAMS[stage]:
        raw = copy.deepcopy(REAL)
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        del node[last]
        with pytest.raises(PipelineError) as info:
            load_text(tmp_path, yaml.safe_dump(raw), require=STAGE_PARAMS[stage])
        assert str(info.value).startswith(f"params.yaml: {key} is missing; it is read here and has no built-in default")


def test_a_stage_needs_only_what_it_reads(tmp_path):
    """prepare reads only its section; predict only familiarity.percentile (a partial params.yaml elsewhere)."""
    assert load_text(tmp_path, "prepare:\n  image_size: 16\n", require=STAGE_PARAMS["prepare"]).prepare.image_size == 16
    partial = load_text(tmp_path, "familiarity:\n  percentile: 99\n", require=["familiarity.percentile"])
    assert partial.familiarity.percentile == 99.0
    with pytest.raises(PipelineError, match=r"^params.yaml: familiarity.percentile is missing"):
        load_text(tmp_path, "familiarity:\n  components: 10\n", require=["familiarity.percentile"])


def test_load_params_requires_every_key_by_default(tmp_path):
    with pytest.raises(PipelineError, match=r"^params.yaml: runtime is missing"):
        load_text(tmp_path, "prepare:\n  image_size: 16\n", require=EVERY_KEY)
    path = tmp_path / "whole.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in REAL.items() if k != "review"}))
    with pytest.raises(PipelineError, match=r"^params.yaml: review is missing"):
        load_params(path)


# --- one YAML for the stages and DVC (YAML 1.2) -----------------------------------------------------


def dvc_reads(text: str) -> dict:
    """params.yaml text as DVC reads it (dvc.lock, `dvc params diff`, `dvc exp show`): ruamel.yaml, YAML 1.2."""
    from dvc.utils.serialize import parse_yaml

    return parse_yaml(text, "params.yaml")


# Plain scalars that YAML 1.1 (PyYAML) and YAML 1.2 (DVC) read as different values: each is refused.
YAML_1_1_ONLY = ["010", "060", "-010", "08", "0_1", "1:00", "1:30.5", "yes", "No", "on", "OFF", "y", "n", "0o10"]


@pytest.mark.parametrize("written", YAML_1_1_ONLY)
@pytest.mark.parametrize("key, text", [("epochs", "epochs: {}\n"), ("exp2.epochs[1]", "exp2:\n  epochs: [5, {}]\n")])
def test_a_value_yaml_1_1_and_dvc_read_differently_is_refused_naming_the_key(tmp_path, written, key, text):
    text = text.format(written)
    message = refusal(tmp_path, text)
    assert message.startswith(f"params.yaml: {key} = {written} is not allowed (line ") and "DVC (YAML 1.2)" in message
    assert "\n" not in message


@pytest.mark.parametrize("written", ["010", "060", "1:00", "yes", "on", "0o10", "1e3"])
def test_the_refused_forms_are_those_dvc_reads_otherwise(written):
    """The premise: DVC's reading differs from PyYAML's, so a stage reading it with PyYAML would train another value."""
    assert dvc_reads(f"k: {written}\n")["k"] != yaml.safe_load(f"k: {written}\n")["k"]


AGREED = {  # written -> (key, what the stage reads)
    "1e-3": ("lr", lambda p: p.final.lr),
    "1.0e-3": ("lr", lambda p: p.final.lr),
    ".003": ("lr", lambda p: p.final.lr),
    "1_0e-4": ("lr", lambda p: p.final.lr),
    "0x10": ("epochs", lambda p: p.final.epochs),
    "1_000": ("epochs", lambda p: p.final.epochs),
    "0b11": ("epochs", lambda p: p.final.epochs),
    "+5": ("epochs", lambda p: p.final.epochs),
    "true": ("normalize_images", lambda p: p.final.normalize_images),
    "False": ("normalize_images", lambda p: p.final.normalize_images),
}


@pytest.mark.parametrize("written", AGREED, ids=AGREED.keys())
def test_every_other_form_reads_as_dvc_reads_it(tmp_path, written):
    key, get = AGREED[written]
    text = f"{key}: {written}\n"
    (tmp_path / "params.yaml").write_text(text)
    ours, dvcs = get(load_params(tmp_path / "params.yaml", require=())), dvc_reads(text)[key]
    assert ours == dvcs and type(ours) is type(dvcs)


def test_a_quoted_leading_zero_is_a_string_for_both(tmp_path):
    assert "must be an integer" in refusal(tmp_path, "epochs: '010'\n")
