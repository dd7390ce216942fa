"""Pull-request review: what changed against a base revision, and whether it is more than noise.

    python -m signdigits.review --base main [--out review.md] [--plots DIR]

Writes Markdown: the final model's test accuracy old -> new with McNemar's exact test on the
per-image test predictions of both revisions (both in git), the digits whose recall or F1 changed,
the confusions that grew or shrank most, the final model's learning curve, then params and metrics
changed (`dvc params diff`, `dvc metrics diff`). `--plots DIR` writes the `dvc plots diff` page to
DIR/index.html and a PNG of each chart whose data changed. The workspace must be up to date
(`dvc status`). Exits 1 when that accuracy drops by more than `review.max_drop` of params.yaml,
2 when the review cannot run; DVC's own diff always exits 0.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from signdigits.core import paths
from signdigits.core.cli import run_command
from signdigits.core.errors import PipelineError
from signdigits.core.files import make_folder, require_file, write_bytes_atomic, write_text_atomic
from signdigits.core.params import load_params
from signdigits.reporting.report import markdown_table

TOP_CONFUSIONS = 5  # the confusions that grew most, and those that shrank most


def _run(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise PipelineError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _dvc_diff(kind: str, base: str) -> dict:
    """{file: {key: {old, new, diff}}} from `dvc params|metrics diff --json`."""
    return json.loads(_run(["dvc", kind, "diff", base, "--json"]) or "{}")


MISSING = ("deleted", "not in cache")  # how `dvc status` names an output that is simply not here


def _is_git_tracked(path: str) -> bool:
    return bool(_run(["git", "ls-files", "--", path]).strip())


def stale_stages() -> list[str]:
    """Stages whose params, command or dependencies changed since dvc.lock was written.

    Outputs merely missing (every fresh clone: not pulled, not in the cache) do not count, nor does a
    DVC-tracked dependency that reads as changed only because such an output is missing in it.
    """
    status = json.loads(_run(["dvc", "status", "--json"]) or "{}")
    missing = {
        out
        for changes in status.values()
        for change in changes
        if isinstance(change, dict)
        for out, what in change.get("changed outs", {}).items()
        if what in MISSING
    }

    def changed(dep: str, what) -> bool:
        if isinstance(what, dict) or _is_git_tracked(dep):  # params, or code and files in git
            return True
        return what not in MISSING and not any(out == dep or out.startswith(dep.rstrip("/") + "/") for out in missing)

    stale = []
    for stage, changes in status.items():
        reasons = []
        for change in changes:
            if change == "changed command" or (isinstance(change, dict) and "changed command" in change):
                reasons.append("its command")
            deps = change.get("changed deps", {}) if isinstance(change, dict) else {}
            reasons += [
                f"{dep}: {', '.join(what)}" if isinstance(what, dict) else dep  # params: the keys that changed
                for dep, what in sorted(deps.items())
                if changed(dep, what)
            ]
        if reasons:
            stale.append(f"{stage}: {', '.join(reasons)}")
    return stale


class Revision:
    """The result files of the base revision (from git) or of the workspace, parsed with the file named on error."""

    def __init__(self, base: str | None):
        self.base = base

    def label(self, path: Path) -> str:
        return f"{self.base}:{path.as_posix()}" if self.base else path.as_posix()

    def text(self, path: Path) -> str:
        if self.base is None:
            return require_file(path).read_text()
        return _run(["git", "show", f"{self.base}:{path.as_posix()}"])

    def parse(self, path: Path, parser: Callable[[str], object]):
        text = self.text(path)
        try:
            return parser(text)
        except Exception as e:  # any parse or layout error of a result file is the file's fault
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise PipelineError(f"{self.label(path)}: malformed ({reason})") from None

    def table(self, path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
        def parse(text: str) -> pd.DataFrame:
            frame = pd.read_csv(io.StringIO(text))
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise ValueError(f"no column {', '.join(missing)}")
            numeric = [c for c in columns if c not in ("file", "model", "label")]
            frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="raise")
            return frame

        return self.parse(path, parse)

    def final_accuracy(self) -> float:
        """metrics/evaluate.json's final test accuracy (also in the layout of revisions before its `final` key)."""

        def parse(text: str) -> float:
            evaluation = json.loads(text)
            if "final" in evaluation:
                value = evaluation["final"]["test_accuracy"]
            else:
                value = evaluation["models"][paths.FINAL_MODEL]["accuracy"]
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"test accuracy {value!r} is not a number in [0, 1]")
            return float(value)

        return self.parse(paths.metrics_path("evaluate"), parse)

    def predictions(self) -> pd.DataFrame:
        return self.table(paths.predictions_path(paths.FINAL_MODEL), ("file", "actual", "predicted"))

    def per_digit(self) -> pd.DataFrame:
        frame = self.table(paths.PER_CLASS, ("model", "digit", "recall", "f1"))
        return frame[frame.model == paths.FINAL_MODEL].set_index("digit")[["recall", "f1"]]

    def history(self) -> pd.DataFrame:
        return self.table(paths.history_path(paths.FINAL_MODEL), ("epoch", "val_loss", "val_accuracy"))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def _diff_table(diff: dict) -> str:
    rows = [
        [file, f"`{key}`", _fmt(change.get("old")), _fmt(change.get("new")), _fmt(change.get("diff"))]
        for file, changes in sorted(diff.items())
        for key, change in sorted(changes.items())
    ]
    return markdown_table(["File", "Key", "Old", "New", "Change"], rows) if rows else "No changes.\n"


def paired_test(old: pd.DataFrame, new: pd.DataFrame) -> dict:
    """McNemar's test on the test images both revisions scored (paired by file name)."""
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


def _change(old: float, new: float) -> str:
    return f"{old:.3f} -> {new:.3f}" if f"{old:.3f}" != f"{new:.3f}" else f"{new:.3f}"


def per_digit_table(old: pd.DataFrame, new: pd.DataFrame) -> str:
    """The digits whose recall or F1 changed (at the 3 decimals shown), old -> new."""
    both = old.merge(new, left_index=True, right_index=True, how="outer", suffixes=("_old", "_new"))
    rows = [
        [int(digit), _change(r.recall_old, r.recall_new), _change(r.f1_old, r.f1_new)]
        for digit, r in both.fillna(0.0).sort_index().iterrows()
        if f"{r.recall_old:.3f}|{r.f1_old:.3f}" != f"{r.recall_new:.3f}|{r.f1_new:.3f}"
    ]
    return markdown_table(["Digit", "Recall", "F1"], rows) if rows else "No digit's recall or F1 changed.\n"


def confusion_changes(old: pd.DataFrame, new: pd.DataFrame, top: int = TOP_CONFUSIONS) -> pd.DataFrame:
    """Counts of each (actual, predicted) mistake before and after, the largest growths then the largest shrinkages."""

    def counts(predictions: pd.DataFrame) -> pd.Series:
        wrong = predictions[predictions.actual != predictions.predicted]
        return wrong.groupby(["actual", "predicted"]).size()

    both = pd.concat({"before": counts(old), "after": counts(new)}, axis=1).fillna(0).astype(int)
    both["change"] = both.after - both.before
    both = both.reset_index().sort_values(["actual", "predicted"], kind="stable")
    grew = both[both.change > 0].sort_values("change", ascending=False, kind="stable").head(top)
    shrank = both[both.change < 0].sort_values("change", kind="stable").head(top)
    return pd.concat([grew, shrank])


def confusion_table(changes: pd.DataFrame) -> str:
    rows = [[int(r.actual), int(r.predicted), r.before, r.after, f"{r.change:+d}"] for r in changes.itertuples()]
    if not rows:
        return "No confusion changed.\n"
    return markdown_table(["Actual", "Predicted as", "Before", "After", "Change"], rows)


def curve_summary(history: pd.DataFrame) -> dict:
    """Final and best validation accuracy and loss; the best epoch has the highest val accuracy (first on ties)."""
    best = int(history.val_accuracy.to_numpy().argmax())
    return {
        "final val accuracy": float(history.val_accuracy.iloc[-1]),
        "best val accuracy": float(history.val_accuracy.iloc[best]),
        "best epoch": int(history.epoch.iloc[best]),
        "epochs run": len(history),
        "final val loss": float(history.val_loss.iloc[-1]),
        "best val loss": float(history.val_loss.min()),
    }


def curve_table(old: dict, new: dict) -> str:
    def show(value) -> str:
        return str(value) if isinstance(value, int) else f"{value:.4f}"

    rows = [[name.capitalize(), show(old[name]), show(new[name])] for name in new]
    return markdown_table(["Learning curve (validation)", "Before", "After"], rows)


def build_review(base: str) -> tuple[str, bool]:
    """The Markdown, and whether the change passes (final accuracy drop within review.max_drop)."""
    if base.startswith("-"):
        raise PipelineError(f"--base {base!r}: a git revision cannot start with '-'")
    max_drop = load_params(require=["review.max_drop"]).review.max_drop
    stale = stale_stages()
    if stale:
        raise PipelineError(
            f"the results are stale (changed since dvc.lock was written: {'; '.join(stale)}); run `dvc repro` first"
        )
    old, new = Revision(base), Revision(None)
    old_accuracy, new_accuracy = old.final_accuracy(), new.final_accuracy()
    old_predictions, new_predictions = old.predictions(), new.predictions()
    per_digit = per_digit_table(old.per_digit(), new.per_digit())
    confusions = confusion_table(confusion_changes(old_predictions, new_predictions))
    curves = curve_table(curve_summary(old.history()), curve_summary(new.history()))
    test = paired_test(old_predictions, new_predictions)
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
        "### Digits whose test recall or F1 changed\n",
        per_digit,
        "### Confusions that grew or shrank most (test images, actual -> predicted)\n",
        confusions,
        "### The final model's learning curve\n",
        curves,
        "### Params changed\n",
        _diff_table(_dvc_diff("params", base)),
        "### Metrics changed\n",
        _diff_table(_dvc_diff("metrics", base)),
    ]
    return "\n".join(lines), passed


def _rows_by_revision(spec: dict) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in spec.get("data", {}).get("values", []):
        rows.setdefault(row.get("rev"), []).append({k: v for k, v in row.items() if k != "rev"})
    return rows


def write_plots(base: str, out_dir: Path) -> list[Path]:
    """`dvc plots diff` of base and the workspace as out_dir/index.html, and a PNG of each chart whose data changed.

    A PNG is named after its plot file (plots/train_best/history.csv -> plots_train_best_history.png).
    """
    try:
        import vl_convert
    except ImportError:
        raise PipelineError("--plots needs vl-convert-python: pip install -r requirements/lock.txt") from None
    make_folder(out_dir)
    _run(["dvc", "plots", "diff", base, "--out", str(out_dir)])
    shown = json.loads(_run(["dvc", "plots", "diff", base, "--json", "--out", str(out_dir / "static")]))
    written = []
    for plot_file, charts in sorted(shown.get("data", {}).items()):
        for chart in charts:
            if chart.get("type") != "vega":
                continue
            rows = _rows_by_revision(chart["content"])
            if rows.get(base) == rows.get("workspace"):
                continue
            png = vl_convert.vegalite_to_png(chart["content"], scale=1)
            name = Path(plot_file).with_suffix(".png").as_posix().replace("/", "_")
            written.append(write_bytes_atomic(out_dir / name, png))
    return written


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the change passes, 1 when the final accuracy dropped more than review.max_drop, 2 on an error."""
    parser = argparse.ArgumentParser(prog="signdigits-review", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("--out", type=Path, help="also write the Markdown to this file")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write the plots diff page and changed charts here")
    args = parser.parse_args(argv)

    def body() -> int:
        markdown, passed = build_review(args.base)
        if args.plots:
            changed = write_plots(args.base, args.plots)
            names = ", ".join(p.name for p in changed) or "none"
            markdown += f"\nPlots: `{args.plots / 'index.html'}`; charts whose data changed: {names}.\n"
        print(markdown)
        if args.out:
            write_text_atomic(args.out, markdown)
        return 0 if passed else 1

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
