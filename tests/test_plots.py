"""What DVC draws from the committed plot data: no bar sums rows, no score beyond [0, 1], every spec renders.

The charts are read from `dvc plots show --json` and `dvc plots diff --json` (two revisions side by side)
on a copy of the repository's dvc.yaml, templates (.dvc/plots/) and plot files, so what is checked is
exactly what a reviewer opens, and the repository itself is left untouched.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from helpers import ROOT

from signdigits.core import paths
from signdigits.devtools import git_identity, run

pytestmark = pytest.mark.integration  # every test reads charts that DVC drew in a pipeline repository

vl_convert = pytest.importorskip("vl_convert", reason="vl-convert-python is in the dev extra")

SCORE = re.compile(r"accuracy|precision|recall|f1|auc")  # every score is a share: [0, 1]
FINAL_CURVES = f"plots/{paths.FINAL_MODEL}/history.csv"
VEGA_LITE = "5.8"  # the oldest Vega-Lite vl-convert bundles; DVC's page loads 5.2


@pytest.fixture(scope="module")
def plots_copy(tmp_path_factory) -> Path:
    """A git + DVC repository holding the committed plot definitions and data, one commit."""
    repo = tmp_path_factory.mktemp("plots") / "repo"
    repo.mkdir()
    run(["git", "init", "--quiet"], cwd=repo)
    git_identity(repo)
    run(["dvc", "init", "--quiet"], cwd=repo)
    for folder in ("plots", "metrics", ".dvc/plots"):
        shutil.copytree(ROOT / folder, repo / folder)
    for file in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / file, repo / file)
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "--quiet", "-m", "committed plots"], cwd=repo)
    return repo


def vega_charts(repo: Path, *args: str) -> dict[str, dict]:
    """{plot file: Vega-Lite spec with its data} for every Vega chart DVC draws with `dvc plots <args> --json`."""
    out = json.loads(run(["dvc", "plots", *args, "--json", "-o", str(repo.parent / "shown")], cwd=repo).stdout)
    charts = {
        name: chart["content"] for name, drawn in out["data"].items() for chart in drawn if chart["type"] == "vega"
    }
    assert charts, out
    return charts


@pytest.fixture(scope="module")
def shown(plots_copy) -> dict[str, dict]:
    return vega_charts(plots_copy, "show")


@pytest.fixture(scope="module")
def diffed(plots_copy) -> dict[str, dict]:
    """The same charts for the commit and the workspace, as `dvc plots diff main` draws a pull request."""
    return vega_charts(plots_copy, "diff", "HEAD")


def marks(spec) -> set[str]:
    """Every mark type in a spec, its layers and facets included."""
    if isinstance(spec, list):
        return set().union(*map(marks, spec))
    if not isinstance(spec, dict):
        return set()
    found = {spec["mark"]["type"] if isinstance(spec["mark"], dict) else spec["mark"]} if "mark" in spec else set()
    return found.union(*(marks(value) for key, value in spec.items() if key in ("layer", "spec", "concat")))


def category_field(spec: dict) -> str:
    """The nominal field bars are laid out by (its y channel)."""
    return spec["encoding"]["y"]["field"]


@pytest.mark.parametrize("which", ["shown", "diffed"])
def test_every_bar_chart_has_one_row_per_category_and_revision(which, request):
    charts = request.getfixturevalue(which)
    bar_charts = {name: spec for name, spec in charts.items() if "bar" in marks(spec)}
    assert len(bar_charts) >= 3, sorted(charts)  # per digit, shifts, sweep
    for name, spec in bar_charts.items():
        rows = spec["data"]["values"]
        field = category_field(spec)
        revisions = {row["rev"] for row in rows}
        assert len(revisions) == (2 if which == "diffed" else 1), name
        repeated = [key for key, n in Counter((row[field], row["rev"]) for row in rows).items() if n > 1]
        assert not repeated, f"{name}: rows summed into one bar for {repeated[:3]}"


def test_no_bar_chart_stacks(shown):
    """Compiled to Vega, no bar chart holds a stack transform: each bar's length is one row's value."""
    for name, spec in shown.items():
        if "bar" not in marks(spec):
            continue
        vega = vl_convert.vegalite_to_vega(spec, vl_version=VEGA_LITE)
        transforms = [t["type"] for data in vega.get("data", []) for t in data.get("transform", [])]
        assert "stack" not in transforms, name


def test_every_score_is_within_0_and_1(shown):
    checked = 0
    for name, spec in shown.items():
        for row in spec["data"]["values"]:
            for key, value in row.items():
                if SCORE.search(key) and value not in ("", None):
                    assert 0 <= float(value) <= 1, f"{name}: {key} = {value}"
                    checked += 1
    assert checked > 100


def test_learning_curves_show_train_and_val_loss_and_accuracy(shown):
    histories = {name: spec for name, spec in shown.items() if name.endswith("/history.csv")}
    assert len(histories) == len(paths.TRAINED_MODELS)
    for name, spec in histories.items():
        folded = next(t["fold"] for t in spec["transform"] if "fold" in t)
        assert sorted(folded) == ["train_accuracy", "train_loss", "val_accuracy", "val_loss"], name
        assert all(set(folded) <= row.keys() for row in spec["data"]["values"]), name


def test_the_training_objective_is_not_drawn_as_if_it_were_the_validation_loss(shown):
    """Label-smoothed on augmented batches in train mode, it sits above the val loss: its own panel, named."""
    panels = shown[FINAL_CURVES]["encoding"]["column"]["sort"]
    assert panels == [
        "training objective (label-smoothed, augmented batches)",
        "validation loss (cross-entropy)",
        "accuracy (train solid, val dashed)",
    ]
    assert shown[FINAL_CURVES]["resolve"]["scale"]["y"] == "independent"


def test_every_chart_has_an_id_a_title_and_titled_axes(shown):
    """evaluate's charts have ids; a training stage's curves and the sweep are declared beside their stage,
    where a plot keeps the stage's run-cache, so their id is their file (dvc.yaml): each still has a title."""
    assert len(shown) == 15  # and the photo mosaic: 16 plots, none empty (train_cnn: curves, confusion, shifts)
    stage_plots = {"plots/sweep/results.csv", *(f"plots/{name}/history.csv" for name in paths.TRAINED_MODELS)}
    assert stage_plots <= set(shown)
    for name, spec in shown.items():
        assert name in stage_plots or "/" not in name, name
        assert spec["title"]["text"] and "/" not in spec["title"]["text"], name
        assert spec["data"]["values"], name
        svg = vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE)
        axis_titles = re.findall(r'aria-label="(?:X|Y)-axis titled \'([^\']*)\'', svg)
        assert len(axis_titles) >= 2 and all(t and t != "label" for t in axis_titles), (name, axis_titles)


def test_the_custom_templates_carry_dvcs_anchors(shown):
    """Colour per revision and size come from DVC (VS Code and Studio colour experiments through them)."""
    for template in (ROOT / ".dvc/plots").glob("*.json"):
        text = template.read_text()
        assert "<DVC_METRIC_COLOR>" in text and "<DVC_METRIC_PLOT_WIDTH>" in text, template.name
    assert shown[FINAL_CURVES]["encoding"]["color"]["field"] == "rev"


def test_test_accuracy_sets_the_binary_model_apart_and_zooms_to_the_data(shown):
    spec = shown["test_accuracy"]
    assert spec["facet"]["row"]["field"] == "task" and spec["resolve"]["scale"]["x"] == "independent"
    tasks = {row["model"]: row["classes"] for row in spec["data"]["values"]}
    assert tasks["train_binary"] == "2" and tasks["train_best"] == "10"
    (rule, point) = spec["spec"]["layer"]
    assert rule["encoding"]["x"]["scale"] == {"zero": False} and rule["encoding"]["x2"]["field"] == "ci95_high"


@pytest.mark.parametrize("which", ["shown", "diffed"])
def test_every_chart_renders_offline(which, request):
    for name, spec in request.getfixturevalue(which).items():
        svg = vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE)
        assert svg.startswith("<svg") and "<path" in svg, name
