"""The experiment table of `make exps`: one row per experiment, a column for each param that any experiment
changed, and every model's test accuracy, in plain text that reads the same in a pipe and in 120 columns.

    python -m signdigits.exps [dvc exp show options, e.g. -A or --sort-by ...]

`dvc exp show` alone draws to the terminal's width (a pipe gets 80 columns, so `| cat` keeps 3 of them)
and has a column for every param, dependency and stage record. This asks it for CSV with `--only-changed`
(the params and metrics whose values differ between the rows) and `--keep` for the models' accuracies
(metrics/evaluate.json's `<model>.test_accuracy` keys and the final model's `val_accuracy`, kept even
when no experiment moved them), keeps the params among those columns and the accuracies, and prints them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

EVALUATE = Path("metrics/evaluate.json")
EVALUATE_PREFIX = "metrics/evaluate.json:"
PARAMS_PREFIX = "params.yaml:"


def kept_metrics(evaluate: dict) -> list[str]:
    """The final model's validation accuracy, then each model's test accuracy, in evaluate.json's order."""
    tests = [f"{model}.test_accuracy" for model, scores in evaluate.items() if "test_accuracy" in scores]
    return ["final.val_accuracy", *tests]


def param_names(params: dict, prefix: str = "") -> set[str]:
    """params.yaml's keys as `dvc exp show` names them (dotted: train_base.lr, augment.shift)."""
    names = set()
    for key, value in params.items():
        name = f"{prefix}{key}"
        names |= param_names(value, f"{name}.") if isinstance(value, dict) else {name}
    return names


def dvc_command(kept: list[str], options: list[str]) -> list[str]:
    keep = "^(" + "|".join(f"(?:{re.escape(EVALUATE_PREFIX)})?{re.escape(name)}" for name in kept) + ")$"
    return ["dvc", "exp", "show", "--no-pager", "--csv", "--only-changed", "--keep", keep, *options]


def experiment_labels(rows: list[dict]) -> list[str]:
    """`workspace`, a branch, or an experiment under its baseline as `├── <rev> [<name>]` (as dvc exp show)."""
    labels = []
    for index, row in enumerate(rows):
        if row.get("typ", "baseline") == "baseline":  # no experiment at all: DVC writes no typ column
            labels.append(row.get("Experiment") or row["rev"])
            continue
        last = index + 1 == len(rows) or rows[index + 1]["typ"] == "baseline"
        labels.append(f"{'└──' if last else '├──'} {row['rev']} [{row['Experiment']}]")
    return labels


def percent(value: str) -> str:
    return f"{100 * float(value):.2f}" if value else "-"


def table(dvc_csv: str, params: set[str], kept: list[str]) -> str:
    """The text table of `dvc exp show --csv` output: the changed params, then the accuracies in percent."""
    rows = list(csv.DictReader(io.StringIO(dvc_csv)))
    columns = list(rows[0]) if rows else []
    changed = [name for name in columns if name.removeprefix(PARAMS_PREFIX) in params]
    metrics = {
        name.removeprefix(EVALUATE_PREFIX): name for name in columns if name.removeprefix(EVALUATE_PREFIX) in kept
    }
    accuracies = [name for name in kept if name in metrics]
    head = ["Experiment", *changed, *(name.split(".")[0] for name in accuracies)]
    groups = [
        "",
        *([""] * len(changed)),
        *(("val %" if name.endswith("val_accuracy") else "test %") for name in accuracies),
    ]
    body = [
        [label, *(row[name] or "-" for name in changed), *(percent(row[metrics[name]]) for name in accuracies)]
        for label, row in zip(experiment_labels(rows), rows, strict=True)
    ]
    widths = [max(len(line[column]) for line in [head, groups, *body]) for column in range(len(head))]
    numeric = len(changed) + 1  # the accuracies are right-aligned
    lines = []
    for line in [groups, head, *body]:
        cells = [
            cell.rjust(width) if column >= numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    rule = "-" * len(max(lines, key=len))
    return "\n".join([lines[0], lines[1], rule, *lines[2:]]) + "\n"


def main(argv: list[str] | None = None) -> int:
    kept = kept_metrics(json.loads(EVALUATE.read_text()))
    params = param_names(yaml.safe_load(Path("params.yaml").read_text()))
    done = subprocess.run(dvc_command(kept, argv if argv is not None else sys.argv[1:]), capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        return done.returncode
    sys.stdout.write(table(done.stdout, params, kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())
