"""Pull-request review: every model's test accuracy against a base revision, and whether a change is more than noise.

    python -m signdigits.review --base main [--full] [--out review.md] [--plots DIR] [--allow-different-photos]

Writes Markdown: a verdict; one table of every model in plots/evaluate/scores.csv (the final model first),
test accuracy old -> new with its interval and McNemar's exact test on the per-image test predictions of
both revisions (both in git); the final model's digits and confusions that changed where its change is
more than noise (always with --full); the params changed. The gate is the base revision's `review:`
section of params.yaml (docs/review.md). `--plots DIR` writes the `dvc plots diff` page to DIR/index.html,
a PNG of each chart whose data changed and the final model's confusion change. The workspace must be up
to date (`dvc status`) and score the same test photos as the base. Exits 0 when the change passes, 1 when
it fails the gate, 2 when the review cannot run.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from signdigits.core import paths
from signdigits.core.cli import run_command
from signdigits.core.errors import PipelineError
from signdigits.core.files import make_folder, require_file, write_bytes_atomic, write_text_atomic
from signdigits.core.params import ReviewParams, parse_yaml, review_params
from signdigits.reporting import figures
from signdigits.reporting.metrics import confusion_matrix
from signdigits.reporting.report import markdown_table

TOP_CONFUSIONS = 5  # the confusions that grew most, and those that shrank most
TEST_COLUMNS = ("model", "part", "images", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high")  # scores.csv


def _run(args: list[str]) -> str:
    return _run_bytes(args).decode()


def _run_bytes(args: list[str]) -> bytes:
    done = subprocess.run(args, capture_output=True)
    if done.returncode != 0:
        error = (done.stderr.strip() or done.stdout.strip()).decode(errors="replace")
        raise PipelineError(f"`{' '.join(args)}` failed: {error}")
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
        return self.data(path).decode()

    def data(self, path: Path) -> bytes:
        if self.base is None:
            return require_file(path).read_bytes()
        return _run_bytes(["git", "show", f"{self.base}:{path.as_posix()}"])

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
            numeric = [c for c in columns if c not in ("file", "model", "part", "label")]
            frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="raise")
            if "accuracy" in columns and not frame.accuracy.between(0, 1).all():
                raise ValueError("an accuracy is not a number in [0, 1]")
            return frame

        return self.parse(path, parse)

    def thresholds(self) -> ReviewParams:
        """The gate's settings: the review section of this revision's params.yaml (defaults for keys not written)."""
        label = self.label(paths.PARAMS)
        try:
            return review_params(parse_yaml(self.data(paths.PARAMS), label))
        except PipelineError as e:  # name the revision the setting came from
            raise PipelineError(str(e).replace("params.yaml: ", f"{label}: ", 1)) from None

    def test_scores(self) -> pd.DataFrame:
        """Every model evaluate scored, one row each (test part), in scores.csv's order: the headline's rows."""
        frame = self.table(paths.SCORES, TEST_COLUMNS)
        return frame[frame.part == "test"].set_index("model")[list(TEST_COLUMNS[2:])]

    def predictions(self, model: str) -> pd.DataFrame:
        return self.table(paths.predictions_path(model), ("file", "actual", "predicted"))

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
    """McNemar's test on the test photos both revisions scored (paired by file name), and how many they share."""
    pairs = old.merge(new, on="file", suffixes=("_old", "_new"))
    result = mcnemar(pairs.actual_old == pairs.predicted_old, pairs.actual_new == pairs.predicted_new)
    result["paired_images"] = len(pairs)
    result["either_images"] = len(set(old.file) | set(new.file))
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


def _pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def _pt(fraction: float, sign: bool = False) -> str:
    """An accuracy change (signed, two decimals) or a setting such as review.max_drop (0.01 -> "1 pt") in points."""
    return f"{100 * fraction:+.2f} pt" if sign else f"{round(100 * fraction, 6):g} pt"


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
    """Final and best validation accuracy and loss; the best epoch has the highest val accuracy (first on ties).

    Not the epoch whose weights the model kept (`best_epoch` of metrics/<stage>.json: the lowest val loss
    with early stopping, else the last epoch).
    """
    best = int(history.val_accuracy.to_numpy().argmax())
    return {
        "final val accuracy": float(history.val_accuracy.iloc[-1]),
        "best val accuracy": float(history.val_accuracy.iloc[best]),
        "epoch of the best val accuracy": int(history.epoch.iloc[best]),
        "epochs run": len(history),
        "final val loss": float(history.val_loss.iloc[-1]),
        "best val loss": float(history.val_loss.min()),
    }


def curve_table(old: dict, new: dict) -> str:
    def show(value) -> str:
        return str(value) if isinstance(value, int) else f"{value:.4f}"

    rows = [[name.capitalize(), show(old[name]), show(new[name])] for name in new]
    return markdown_table(["Learning curve (validation)", "Before", "After"], rows)


def curve_line(old: dict, new: dict) -> str:
    def best(c: dict) -> str:
        return f"{_pct(c['best val accuracy'])} at epoch {c['epoch of the best val accuracy']} of {c['epochs run']}"

    return f"Best val accuracy of the final model: {best(old)} -> {best(new)}.\n"


# --- the gate ----------------------------------------------------------------------------------------


@dataclass
class ModelChange:
    """One model's test accuracy at both revisions (None where it does not exist) and the gate's word on it."""

    model: str
    old: pd.Series | None
    new: pd.Series | None
    test: dict | None  # McNemar's test on the photos both scored
    significant: bool = False  # McNemar's p < review.alpha
    verdict: str = ""
    failure: str = ""  # why the change fails, if it does

    @property
    def change(self) -> float:
        return float(self.new.accuracy - self.old.accuracy)


def judge(model: ModelChange, gate: ReviewParams, floor: float | None) -> None:
    """The rule, one for every model: it fails when its accuracy drops by more than max_drop AND McNemar's test
    on the same photos gives p < alpha; the final model also fails when the change takes it below `floor` (the
    base model's accuracy at the base revision) from at or above it, whatever the test says (a revision already
    below it, such as a tiny test pipeline, is judged by the first rule alone). Sets verdict and failure."""
    if model.old is None or model.new is None:
        model.verdict = "new model" if model.old is None else "removed"
        return
    model.significant = model.test["p_value"] < gate.alpha
    drop = -model.change
    if model.significant and drop > gate.max_drop + 1e-12:
        limit = f"review.max_drop = {_pt(gate.max_drop)}"
        model.failure = f"dropped {100 * drop:.2f} pt (more than {limit}, p < {gate.alpha:g})"
    if floor is not None and model.new.accuracy < floor <= model.old.accuracy:
        model.failure = "; ".join(
            filter(None, [model.failure, f"fell below {paths.BASE_MODEL} at the base ({_pct(floor)})"])
        )
    if model.failure:
        model.verdict = "**FAILS**"
    elif model.significant:
        model.verdict = "better" if model.change > 0 else "worse, within max_drop"
    else:
        model.verdict = "no change" if model.test["only_old_correct"] + model.test["only_new_correct"] == 0 else "noise"


def compare_models(old: Revision, new: Revision, gate: ReviewParams) -> list[ModelChange]:
    """Every model of either revision (scores.csv), the final model first, judged by the gate."""
    old_scores, new_scores = old.test_scores(), new.test_scores()
    names = [paths.FINAL_MODEL] + [n for n in [*new_scores.index, *old_scores.index] if n != paths.FINAL_MODEL]
    floor = float(old_scores.accuracy[paths.BASE_MODEL]) if paths.BASE_MODEL in old_scores.index else None
    changes = []
    for name in dict.fromkeys(names):
        before = old_scores.loc[name] if name in old_scores.index else None
        after = new_scores.loc[name] if name in new_scores.index else None
        both = before is not None and after is not None
        test = paired_test(old.predictions(name), new.predictions(name)) if both else None
        change = ModelChange(name, before, after, test)
        judge(change, gate, floor if name == paths.FINAL_MODEL else None)
        changes.append(change)
    return changes


def headline_table(changes: list[ModelChange]) -> str:
    def score(s: pd.Series | None) -> str:
        if s is None:
            return "-"
        return f"{_pct(s.accuracy)} ({100 * s.accuracy_ci95_low:.1f}-{_pct(s.accuracy_ci95_high, 1)})"

    rows = []
    for c in changes:
        both = c.old is not None and c.new is not None
        change = _pt(c.change, sign=True) if both else "-"
        images = int((c.new if c.new is not None else c.old).images)
        rows.append(
            [
                f"{c.model} (final)" if c.model == paths.FINAL_MODEL else c.model,
                images,
                score(c.old),
                score(c.new),
                f"**{change}**" if c.significant else change,
                f"{c.test['p_value']:.2g}" if c.test else "-",
                c.verdict,
            ]
        )
    header = ["Model", "Test photos", "Before (95% interval)", "After (95% interval)", "Change", "McNemar p"]
    return markdown_table([*header, "Verdict"], rows)


def threshold_changes(base: ReviewParams, head: ReviewParams) -> tuple[list[str], bool]:
    """How this change edits the gate (lines), and whether it loosens it (a larger drop or a smaller alpha)."""
    lines, loosens = [], False
    if head.max_drop != base.max_drop:
        lines.append(f"review.max_drop {_pt(base.max_drop)} -> {_pt(head.max_drop)}")
        loosens |= head.max_drop > base.max_drop
    if head.alpha != base.alpha:
        lines.append(f"review.alpha {base.alpha:g} -> {head.alpha:g}")
        loosens |= head.alpha < base.alpha
    return lines, loosens


def different_photos(changes: list[ModelChange]) -> ModelChange | None:
    """The first model whose test photos differ between the revisions (the split changed), if any."""
    return next((c for c in changes if c.test and c.test["paired_images"] != c.test["either_images"]), None)


def build_review(base: str, full: bool = False, allow_different_photos: bool = False) -> tuple[str, bool]:
    """The Markdown, and whether the change passes the base revision's gate."""
    if base.startswith("-"):
        raise PipelineError(f"--base {base!r}: a git revision cannot start with '-'")
    stale = stale_stages()
    if stale:
        raise PipelineError(
            f"the results are stale (changed since dvc.lock was written: {'; '.join(stale)}); run `dvc repro` first"
        )
    old, new = Revision(base), Revision(None)
    gate = old.thresholds()
    edits, loosens = threshold_changes(gate, new.thresholds())
    changes = compare_models(old, new, gate)
    differ = different_photos(changes)
    if differ and not allow_different_photos:
        t = differ.test
        raise PipelineError(
            f"test parts differ: {t['paired_images']} of {t['either_images']} photos shared ({differ.model}); "
            "accuracy not comparable (the split changed); --allow-different-photos reviews it anyway"
        )
    failures = [c for c in changes if c.failure]
    final = changes[0]
    lines = [f"## signdigits review against `{base}`\n"]
    if differ:
        t = differ.test
        lines.append(
            f"**Test parts differ: {t['paired_images']} of {t['either_images']} photos shared; accuracy not "
            "comparable.** McNemar's test below uses the shared photos only.\n"
        )
    if failures:
        verdict = "**FAILS**: " + "; ".join(f"{c.model} {c.failure}" for c in failures) + "."
    else:
        verdict = (
            f"**Passes**: no model dropped by more than {_pt(gate.max_drop)} beyond noise "
            f"(McNemar p < {gate.alpha:g}), and the final model stays above {paths.BASE_MODEL}."
        )
    if loosens:
        verdict += f" **This change loosens the gate** ({', '.join(edits)}); the base's gate was applied."
    lines += [verdict + "\n", headline_table(changes)]
    floor = f", or when the final model falls below {paths.BASE_MODEL}'s accuracy at `{base}` from at or above it"
    lines.append(
        f"Gate, from `{base}`:params.yaml: a model fails when its test accuracy drops by more than review.max_drop "
        f"= {_pt(gate.max_drop)} and McNemar's exact test on the same photos gives p < review.alpha = {gate.alpha:g}"
        f"{floor}. Bold: a change with p < {gate.alpha:g}."
        + (f" This change edits the gate: {', '.join(edits)} (applies once merged)." if edits else "")
        + "\n"
    )
    lines += final_model_sections(old, new, final, gate, full)
    lines += ["### Params changed\n", _diff_table(_dvc_diff("params", base))]
    if full:
        lines += ["### Metrics changed\n", _diff_table(_dvc_diff("metrics", base))]
    return "\n".join(lines), not failures


def final_model_sections(old: Revision, new: Revision, final: ModelChange, gate: ReviewParams, full: bool) -> list[str]:
    """Per digit and per confusion where the final model's change is significant or beyond max_drop (or --full)."""
    if final.old is None or final.new is None:
        return []
    old_predictions, new_predictions = old.predictions(final.model), new.predictions(final.model)
    confusions = confusion_changes(old_predictions, new_predictions)
    digits = per_digit_table(old.per_digit(), new.per_digit())  # read either way: a malformed file is refused
    curves = curve_summary(old.history()), curve_summary(new.history())
    t = final.test
    lines = [
        f"### The final model ({final.model})\n",
        f"{t['only_old_correct']} test photos right only before, {t['only_new_correct']} right only after, "
        f"p = {t['p_value']:.4g}.\n",
    ]
    if full or final.significant or abs(final.change) > gate.max_drop + 1e-12:
        lines += [
            "Digits whose test recall or F1 changed:\n",
            digits,
            "Confusions that grew or shrank most (test photos, actual -> predicted):\n",
            confusion_table(confusions),
        ]
    else:
        largest = int(confusions.change.abs().max()) if len(confusions) else 0
        lines.append(
            f"Within noise: per-digit and confusion changes left out (the largest change of one confusion: "
            f"{largest} photo{'s' if largest != 1 else ''}); `--full` prints them.\n"
        )
    lines.append(curve_table(*curves) if full else curve_line(*curves))
    return lines


def _rows_by_revision(spec: dict) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in spec.get("data", {}).get("values", []):
        rows.setdefault(row.get("rev"), []).append({k: v for k, v in row.items() if k != "rev"})
    return rows


def write_plots(base: str, out_dir: Path) -> list[Path]:
    """`dvc plots diff` of base and the workspace as out_dir/index.html, a PNG of each chart whose data changed
    (named after its id in dvc.yaml, / as _: test_accuracy.png, plots_train_best_history.csv.png), and the
    final model's confusion change (new minus old).
    """
    try:
        import vl_convert
    except ImportError:
        raise PipelineError("--plots needs vl-convert-python: pip install -r requirements/lock.txt") from None
    make_folder(out_dir)
    _run(["dvc", "plots", "diff", base, "--out", str(out_dir)])
    shown = json.loads(_run(["dvc", "plots", "diff", base, "--json", "--out", str(out_dir / "static")]))
    written = []
    for plot_id, charts in sorted(shown.get("data", {}).items()):
        for chart in charts:
            if chart.get("type") != "vega":
                continue
            rows = _rows_by_revision(chart["content"])
            if rows.get(base) == rows.get("workspace"):
                continue
            png = vl_convert.vegalite_to_png(chart["content"], scale=1)
            written.append(write_bytes_atomic(out_dir / f"{plot_id.replace('/', '_')}.png", png))
    change = confusion_change(
        Revision(base).predictions(paths.FINAL_MODEL), Revision(None).predictions(paths.FINAL_MODEL)
    )
    if change is not None:
        name, png = figures.confusion_change(paths.FINAL_MODEL, *change)
        written.append(write_bytes_atomic(out_dir / name, png))
    return written


def confusion_change(old: pd.DataFrame, new: pd.DataFrame) -> tuple[np.ndarray, list[int]] | None:
    """The test confusion matrix of new minus old (rows actual, columns predicted) and its digits; None if equal."""
    classes = sorted({int(d) for frame in (old, new) for d in (*frame.actual, *frame.predicted)})
    index = {c: i for i, c in enumerate(classes)}

    def matrix(frame: pd.DataFrame) -> np.ndarray:
        return confusion_matrix(frame.actual.map(index), frame.predicted.map(index), len(classes))

    change = matrix(new) - matrix(old)
    return (change, classes) if change.any() else None


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the change passes the base's gate, 1 when it fails, 2 when the review cannot run."""
    parser = argparse.ArgumentParser(prog="signdigits-review", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("--out", type=Path, help="also write the Markdown to this file")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write the plots diff page and changed charts here")
    parser.add_argument("--full", action="store_true", help="every table, also for changes within noise")
    parser.add_argument(
        "--allow-different-photos",
        action="store_true",
        help="review even when the revisions' test parts differ (the split changed); accuracy is then not comparable",
    )
    args = parser.parse_args(argv)

    def body() -> int:
        markdown, passed = build_review(args.base, full=args.full, allow_different_photos=args.allow_different_photos)
        if args.plots:
            changed = write_plots(args.base, args.plots)
            names = ", ".join(p.name for p in changed) or "none"
            markdown += f"\nCharts whose data changed (the `dvc plots diff` page beside them): {names}.\n"
        print(markdown)
        if args.out:
            write_text_atomic(args.out, markdown)
        return 0 if passed else 1

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
