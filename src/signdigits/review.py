"""Pull-request review: what changed against a base revision, and whether it is more than noise.

    python -m signdigits.review --base main [--out review.md]

Writes Markdown: params changed (`dvc params diff`), metrics changed (`dvc metrics diff`), the
final model's test accuracy old -> new with McNemar's exact test on the per-image test
predictions of both revisions (both in git). Exits 1 when that accuracy drops by more than
`review.max_drop` of params.yaml; DVC's own diff always exits 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from signdigits.core import paths
from signdigits.core.errors import PipelineError
from signdigits.core.files import write_text_atomic
from signdigits.core.params import load_params
from signdigits.reporting.metrics import mcnemar


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
    from signdigits.reporting.evaluation import read_predictions

    old, new = read_predictions(old_csv), read_predictions(new_csv)
    common = sorted(set(old) & set(new))
    result = mcnemar(
        [old[f][0] == old[f][1] for f in common],
        [new[f][0] == new[f][1] for f in common],
    )
    result["paired_images"] = len(common)
    return result


def build_review(base: str) -> tuple[str, bool]:
    """The Markdown, and whether the change passes (final accuracy drop within review.max_drop)."""
    max_drop = load_params().review.max_drop
    evaluation_file = paths.metrics_path("evaluate")
    predictions_file = paths.predictions_path(paths.FINAL_MODEL)
    new_accuracy = _final_accuracy(json.loads(evaluation_file.read_text()))
    old_accuracy = _final_accuracy(json.loads(_at_base(base, evaluation_file)))
    test = paired_test(_at_base(base, predictions_file), predictions_file.read_text())
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
    parser = argparse.ArgumentParser(prog="signdigits-review", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = parser.parse_args(argv)
    try:
        markdown, passed = build_review(args.base)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown)
    if args.out:
        write_text_atomic(args.out, markdown)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
