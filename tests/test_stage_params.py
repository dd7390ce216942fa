"""dvc.yaml lists, per stage, exactly the params.yaml keys the stage reads.

A key a stage reads but dvc.yaml does not list is a silent trap: `dvc exp run -S key=...` would
rerun nothing. The keys read are derived from the stage scripts' source: every `params.<section>`
or `params.<section>.<key>` they use. A section passed on whole (`params.final` to train_stage)
counts as reading all its keys, which is what the training stages do: they record every setting
in their metrics JSON. Static rather than a run with a recording proxy: it sees every code path
(not only the one a tiny run takes), needs no pipeline inputs (evaluate reads every model), and
a stage may not pass the whole `params` on, so nothing escapes it.

Not seen here, on purpose: run_stage reads runtime.cpu_kernels for every stage to pin torch's
kernels; prepare and split compute without torch, so it cannot change their outputs.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import typing

import pytest
import yaml
from helpers import DVC_PLOTS, DVC_STAGES, ROOT

from signdigits.core import paths
from signdigits.core.params import CNN_ONLY, CNN_SECTIONS, FINAL_KEYS, Params

SECTIONS = {name: tp for name, tp in typing.get_type_hints(Params).items() if name != "listed"}  # listed: added models
TRAIN_KEYS = list(FINAL_KEYS)  # a CNN's section (CNN_SECTIONS) also holds the CNN_ONLY keys
# Sections that hold a model's keys beside their own (train_binary, exp2): field `model`.
MODEL_SECTIONS = {
    name: cls
    for name, cls in SECTIONS.items()
    if dataclasses.is_dataclass(cls) and "model" in {f.name for f in dataclasses.fields(cls)}
}


def params_read(source: str) -> set[tuple[str, ...]]:
    """(section,) or (section, key) for every `params.section[.key]` in the stage's main(params)."""
    main = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == "main")
    parents = {child: node for node in ast.walk(main) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(main):
        if not (isinstance(node, ast.Name) and node.id == "params"):
            continue
        chain, at = [], node
        while isinstance(parents.get(at), ast.Attribute) and len(chain) < 2:
            at = parents[at]
            chain.append(at.attr)
        if not chain:
            raise AssertionError(f"line {node.lineno}: pass params.<section> on, never the whole params")
        call = parents.get(at)
        if chain == ["section"] and isinstance(call, ast.Call) and isinstance(call.args[0], ast.Constant):
            chain = [call.args[0].value]  # params.section("train_exp3"): a model the list adds (docs/add-a-model.md)
        found.add(tuple(chain))
    return found


def keys_of(read: tuple[str, ...]) -> list[str]:
    """The params.yaml keys (dotted) behind one read; `final` is the top-level keys."""
    section, *key = read
    prefix = "" if section == "final" else f"{section}."
    model_keys = TRAIN_KEYS + (list(CNN_ONLY) if section in CNN_SECTIONS else [])
    if section == "final" or (section in MODEL_SECTIONS and key == ["model"]):
        return [prefix + name for name in model_keys]
    if key:
        return [prefix + key[0]]
    if section in MODEL_SECTIONS:  # its own keys beside the model's
        own = [f.name for f in dataclasses.fields(MODEL_SECTIONS[section]) if f.name != "model"]
        return [prefix + name for name in own + model_keys]
    return [section]


def covers(listed: str, key: str) -> bool:
    return key == listed or key.startswith(listed + ".")


def missing_and_unused(source: str, listed: list[str]) -> tuple[list[str], list[str]]:
    """Keys read but not listed, and keys listed but never read."""
    read = sorted({key for r in params_read(source) for key in keys_of(r)})
    missing = [key for key in read if not any(covers(entry, key) for entry in listed)]
    unused = [entry for entry in listed if not any(covers(entry, key) or covers(key, entry) for key in read)]
    return missing, unused


def stage_source(name: str) -> str:
    return (ROOT / "stages" / f"{name}.py").read_text()


@pytest.mark.parametrize("stage", sorted(DVC_STAGES))
def test_dvc_yaml_lists_exactly_the_keys_the_stage_reads(stage):
    entry = DVC_STAGES[stage]
    assert entry["cmd"] == f"python stages/{stage}.py"
    missing, unused = missing_and_unused(stage_source(stage), entry.get("params", []))
    assert missing == [], f"dvc.yaml: stage {stage} reads {missing} but its params do not list them"
    assert unused == [], f"dvc.yaml: stage {stage} lists {unused} but never reads them"


def test_every_trained_model_is_a_stage_that_evaluate_depends_on():
    """What adding a model needs beyond its stage (docs/add-a-model.md): evaluate must read it."""
    trained = [name for name, entry in DVC_STAGES.items() if f"models/{name}.pt" in entry.get("outs", [])]
    assert sorted(trained) == sorted(paths.TRAINED_MODELS)
    evaluate = DVC_STAGES["evaluate"]
    outs = {next(iter(out)) if isinstance(out, dict) else out for out in evaluate["outs"]}
    charts = {next(iter(chart)) for chart in DVC_PLOTS if isinstance(chart, dict)}
    for name in trained:
        assert f"metrics/{name}.json" in evaluate["deps"]
        assert paths.predictions_path(name).as_posix() in outs
        assert f"confusion_{name}" in charts
        assert f"plots/{name}/history.csv" in [next(iter(plot)) for plot in DVC_STAGES[name]["plots"]]


def test_every_section_of_params_yaml_is_read_by_some_stage_or_command():
    read = {r[0] for stage in DVC_STAGES for r in params_read(stage_source(stage))}
    commands = {"review"}  # the review reads review.*; predict reads familiarity.percentile
    assert set(SECTIONS) - read - commands == set()


# --- the check can fail ------------------------------------------------------------------------


def test_a_key_read_but_not_listed_is_reported():
    source = "def main(params):\n    go(params.evaluate, params.familiarity.percentile, params.review.max_drop)\n"
    assert missing_and_unused(source, ["evaluate", "familiarity.percentile"]) == (["review.max_drop"], [])


def test_a_train_params_field_missing_from_train_best_is_reported():
    """The trap the issue names: add a field to TrainParams and forget train_best's hand-made list."""
    listed = [key for key in DVC_STAGES["train_best"]["params"] if key != "label_smoothing"]
    missing, _ = missing_and_unused(stage_source("train_best"), listed)
    assert missing == ["label_smoothing"]


def test_a_listed_key_never_read_is_reported():
    source = "def main(params):\n    go(params.final, params.runtime)\n"
    listed = [*TRAIN_KEYS, "runtime", "familiarity.components"]
    assert missing_and_unused(source, listed) == ([], ["familiarity.components"])


def test_passing_the_whole_params_on_is_refused():
    with pytest.raises(AssertionError, match=re.escape("never the whole params")):
        params_read("def main(params):\n    train_stage('train_x', params)\n")


@pytest.mark.parametrize("name", paths.TRAINED_MODELS)
def test_a_training_stage_names_its_keys_where_params_yaml_holds_them(name):
    """train_stage's messages say `<prefix>batch_size`: that key must exist in params.yaml."""
    from signdigits.training.stage import params_prefix

    section = yaml.safe_load((ROOT / "params.yaml").read_text())
    for part in params_prefix(name).split(".")[:-1]:
        section = section[part]
    assert "batch_size" in section


def test_a_listed_models_section_read_by_name_is_checked_like_the_others():
    """A model paths.MODEL_LIST adds is read as params.section("name") (docs/add-a-model.md)."""
    source = 'def main(params):\n    train_stage("train_exp3", params.section("train_exp3"), params.runtime)\n'
    assert missing_and_unused(source, ["runtime", "train_exp3"]) == ([], [])
    assert missing_and_unused(source, ["runtime"]) == (["train_exp3"], [])  # the whole section, read whole
