"""Pull-request review: what changed against a base revision, and whether it is more than noise.

    python -m signdigits.review --base main [--out review.md]

Writes Markdown: params changed (`dvc params diff`), metrics changed (`dvc metrics diff`), the
final model's test accuracy old -> new with McNemar's exact test on the per-image test
predictions of both revisions (both in git). Exits 1 when that accuracy drops by more than
`review.max_drop` of params.yaml; DVC's own diff always exits 0.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from signdigits.core import paths
from signdigits.core.cli import run_command
from signdigits.core.errors import PipelineError
from signdigits.core.files import read_json, require_file, write_text_atomic
from signdigits.core.params import load_params


def _run(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise PipelineError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _dvc_diff(kind: str, base: str) -> dict:
    """{file: {key: {old, new, diff}}} from `dvc params|metrics diff --json`."""
    return json.loads(_run(["dvc", kind, "diff", base, "--json"]) or "{}")


def _at_base(base: str, path: Path) -> str:
    return _run(["git", "show", f"{base}:{path.as_posix()}"])


def _final_accuracy(evaluation: dict) -> float:
    """metrics/evaluate.json's final test accuracy (also in the layout of revisions before its `final` key)."""
    if "final" in evaluation:
        return evaluation["final"]["test_accuracy"]
    return evaluation["models"][paths.FINAL_MODEL]["accuracy"]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def _diff_table(diff: dict) -> str:
    rows = [
        f"| {file} | `{key}` | {_fmt(change.get('old'))} | {_fmt(change.get('new'))} | {_fmt(change.get('diff'))} |"
        for file, changes in sorted(diff.items())
        for key, change in sorted(changes.items())
    ]
    if not rows:
        return "No changes.\n"
    return "\n".join(["| File | Key | Old | New | Change |", "|---|---|---|---|---|", *rows]) + "\n"


def paired_test(old_csv: str, new_csv: str) -> dict:
    """McNemar's test on the test images both revisions scored (paired by file name)."""
    import pandas as pd

    old, new = (pd.read_csv(io.StringIO(text)) for text in (old_csv, new_csv))
    pairs = old.merge(new, on="file", suffixes=("_old", "_new"))
    result = mcnemar(pairs.actual_old == pairs.predicted_old, pairs.actual_new == pairs.predicted_new)
    result["paired_images"] = len(pairs)
    return result


def mcnemar(correct_old, correct_new) -> dict:
    """Exact two-sided McNemar test: do two models on the same images err on different ones more than chance allows?"""
    correct_old, correct_new = np.asarray(correct_old, bool), np.asarray(correct_new, bool)
    only_old = int((correct_old & ~correct_new).sum())
    only_new = int((~correct_old & correct_new).sum())
    n = only_old + only_new
    tail = sum(math.comb(n, k) for k in range(min(only_old, only_new) + 1))
    p_value = min(1.0, 2 * tail / 2**n) if n else 1.0
    return {"only_old_correct": only_old, "only_new_correct": only_new, "p_value": p_value}


def build_review(base: str) -> tuple[str, bool]:
    """The Markdown, and whether the change passes (final accuracy drop within review.max_drop)."""
    max_drop = load_params(require=["review.max_drop"]).review.max_drop
    evaluation_file = paths.metrics_path("evaluate")
    predictions_file = paths.predictions_path(paths.FINAL_MODEL)
    new_accuracy = _final_accuracy(read_json(evaluation_file))
    old_accuracy = _final_accuracy(json.loads(_at_base(base, evaluation_file)))
    test = paired_test(_at_base(base, predictions_file), require_file(predictions_file).read_text())
    drop = old_accuracy - new_accuracy
    passed = drop <= max_drop + 1e-12
    significant = test["p_value"] < 0.05
    verdict = "passes" if passed else f"FAILS: the drop exceeds review.max_drop = {max_drop:g}"
    lines = [
        f"## signdigits review against `{base}`\n",
        f"**Final model ({paths.FINAL_MODEL}) test accuracy: {old_accuracy:.2%} -> {new_accuracy:.2%} "
        f"({new_accuracy - old_accuracy:+.2%})**; {verdict}.\n",
        f"McNemar's exact test on {test['paired_images']} paired test images: {test['only_old_correct']} right "
        f"only before, {test['only_new_correct']} right only after, p = {test['p_value']:.4g} "
        + ("(a real difference at the 5% level)." if significant else "(not distinguishable from noise at 5%).")
        + "\n",
        "### Params changed\n",
        _diff_table(_dvc_diff("params", base)),
        "### Metrics changed\n",
        _diff_table(_dvc_diff("metrics", base)),
    ]
    return "\n".join(lines), passed


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the change passes, 1 when the final accuracy dropped more than review.max_drop, 2 on an error."""
    parser = argparse.ArgumentParser(prog="signdigits-review", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = parser.parse_args(argv)

    def body() -> int:
        markdown, passed = build_review(args.base)
        print(markdown)
        if args.out:
            write_text_atomic(args.out, markdown)
        return 0 if passed else 1

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
