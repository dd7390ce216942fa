"""`make exps` (signdigits.exps): the experiment table reads the same in a pipe and fits 120 columns, with a
column for each param any experiment changed and every model's test accuracy."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from helpers import ROOT

from signdigits.devtools import run
from signdigits.exps import dvc_command, kept_metrics, param_names, table

# `dvc exp show --csv --only-changed --keep ...` after the README's four experiments (some columns left out:
# Created, a stage record, an F1 score and a dependency stand for the columns the table must drop).
DVC_CSV = """\
Experiment,rev,typ,Created,metrics/train_base.json:config.lr,final.test_accuracy,final.test_f1_macro,\
final.val_accuracy,train_binary.test_accuracy,train_base.test_accuracy,train_exp1.test_accuracy,\
train_cnn.test_accuracy,lr,epochs,train_base.lr,models
,workspace,baseline,,0.01,0.970968,0.97109,0.980519,1.0,0.748387,0.790323,0.980645,0.003,150,0.01,58790a0b.dir
,main,baseline,2026-12-04T18:53:31,0.01,0.970968,0.97109,0.980519,1.0,0.748387,0.790323,0.980645,0.003,150,0.01,58790a0b.dir
scaly-sham,e419a57,branch_commit,,0.01,0.916129,0.916731,0.944805,1.0,0.748387,0.790323,0.980645,0.003,20,0.01,1471939e.dir
mated-doll,1b912e8,branch_commit,,0.01,0.670968,0.660084,0.652597,1.0,0.748387,0.790323,0.980645,0.003,2,0.01,184b3074.dir
garni-tomb,111285a,branch_commit,,0.1,0.970968,0.97109,0.980519,1.0,0.806452,0.790323,0.980645,0.003,150,0.1,f14ce379.dir
sneak-plug,91182df,branch_base,,0.01,0.970968,0.970946,0.980519,1.0,0.748387,0.790323,0.980645,0.002,150,0.01,77015caf.dir
"""
PARAMS = param_names(yaml.safe_load((ROOT / "params.yaml").read_text()))
KEPT = kept_metrics(json.loads((ROOT / "metrics/evaluate.json").read_text()))


def test_every_model_with_a_test_accuracy_is_kept():
    assert KEPT == [
        "final.val_accuracy",
        "final.test_accuracy",
        "train_binary.test_accuracy",
        "train_base.test_accuracy",
        "train_exp1.test_accuracy",
        "train_cnn.test_accuracy",
    ]
    keep = dvc_command(KEPT, [])[dvc_command(KEPT, []).index("--keep") + 1]
    assert re.search(keep, "metrics/evaluate.json:train_cnn.test_accuracy") and re.search(keep, "final.test_accuracy")
    assert not re.search(keep, "final.test_f1_macro") and not re.search(keep, "metrics/evaluate.json:")
    assert {"--csv", "--only-changed", "--no-pager"} <= set(dvc_command(KEPT, []))


def test_the_table_has_the_changed_params_and_every_models_accuracy_in_120_columns():
    text = table(DVC_CSV, PARAMS, KEPT)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert lines[1].split() == [
        "Experiment", "lr", "epochs", "train_base.lr",
        "final", "final", "train_binary", "train_base", "train_exp1", "train_cnn",
    ]  # fmt: skip
    assert lines[0].split() == ["val", "%"] + ["test", "%"] * 5
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[3:]}
    assert rows["main"][1:] == ["0.003", "150", "0.01", "98.05", "97.10", "100.00", "74.84", "79.03", "98.06"]
    assert rows["├── 111285a [garni-tomb]"][5:] == ["0.1", "98.05", "97.10", "100.00", "80.65", "79.03", "98.06"]
    assert "└── 91182df [sneak-plug]" in rows
    for dropped in ("Created", "f1", "models", "config.lr", ".dir"):
        assert dropped not in text


@pytest.mark.integration  # dvc exp show in a subprocess
def test_make_exps_in_a_pipe_keeps_every_column():
    done = run(["python", "-m", "signdigits.exps"], cwd=ROOT)
    lines = done.stdout.splitlines()
    assert lines[1].split()[0] == "Experiment" and lines[1].split()[-5:] == [
        "final", "train_binary", "train_base", "train_exp1", "train_cnn",
    ]  # fmt: skip
    assert "…" not in done.stdout
