"""Render: the review's Markdown. The verdict first, then one table of every model (base before head), a bar
chart GitHub draws as text, the familiarity check, predict's model, the gate, a section for the final model
and for every model that fails or needs more evidence, and the params that changed.
"""

from __future__ import annotations

import pandas as pd

from signdigits.core import paths
from signdigits.core.params import ReviewParams
from signdigits.reporting.report import markdown_table, pct
from signdigits.review.gather import Revision
from signdigits.review.judge import Judgement, ModelChange, pt

TOP_CONFUSIONS = 5  # the confusions that grew most, and those that shrank most
BAR_WIDTH = 40  # characters of the longest bar in the text charts
ACCEPT_LABEL = "review: accept {}"  # the pull-request label a maintainer sets; the workflow passes --accept NAME


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def diff_table(diff: dict) -> str:
    rows = [
        [file, f"`{key}`", fmt(change.get("old")), fmt(change.get("new")), fmt(change.get("diff"))]
        for file, changes in sorted(diff.items())
        for key, change in sorted(changes.items())
    ]
    return markdown_table(["File", "Key", "Old", "New", "Change"], rows) if rows else "No changes.\n"


def verdict_line(base: str, j: Judgement, gate: ReviewParams, edits: list[str], loosens: bool) -> str:
    failures, evidence = j.failures, j.needs_evidence
    if failures:
        line = "**FAILS**: " + "; ".join(f"{f.subject} {f.reason}" for f in failures) + "."
        labels: dict[str, list[str]] = {}
        for f in failures:
            if f.accept:
                labels.setdefault(f.accept, []).append(f.subject)
        if labels:
            line += " A maintainer can accept on purpose, with the pull-request label: " + ", ".join(
                f"`{ACCEPT_LABEL.format(name)}` ({', '.join(dict.fromkeys(subjects))})"
                for name, subjects in labels.items()
            )
            line += "."
    elif evidence:
        line = (
            "**Needs more evidence**: "
            + "; ".join(f"{c.model} dropped {100 * -c.change:.2f} pt, p = {c.test['p_value']:.2g}" for c in evidence)
            + f": more than {pt(gate.max_drop)}, but McNemar's test cannot tell it from noise at p < {gate.alpha:g}. "
            f"The seeds settle it: `python -m signdigits.review --base {base} --evidence` (docs/review.md)."
        )
    else:
        kept = [c for c in j.models if c.model == paths.FINAL_MODEL and c.new is not None]
        line = (
            f"**Passes**: no model dropped by more than {pt(gate.max_drop)} beyond noise (McNemar p < {gate.alpha:g})"
            + (f", and the final model stays above {paths.BASE_MODEL}" if kept else "")
            + f"; no familiarity check flags a shifted set less by more than {pt(gate.max_flag_drop)}."
        )
    if j.accepted:
        line += " **Accepted on purpose by a maintainer**: " + "; ".join(
            f"{f.subject} {f.reason} (`--accept {f.accept}`)" for f in j.accepted
        )
        line += "."
    if loosens:
        line += f" **This change loosens the gate** ({', '.join(edits)}); the base's gate was applied."
    return line + "\n"


def headline_table(changes: list[ModelChange]) -> str:
    def score(s: pd.Series | None) -> str:
        if s is None:
            return "-"
        return f"{pct(s.accuracy)} ({100 * s.accuracy_ci95_low:.1f}-{pct(s.accuracy_ci95_high, 1)})"

    rows = []
    for c in changes:
        both = c.old is not None and c.new is not None
        change = pt(c.change, sign=True) if both else "-"
        if c.photos_differ:
            change += f" on the {c.test['paired_images']} shared"
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


def bar(value: float, low: float, high: float) -> str:
    """A text bar for `value` on an axis from `low` to `high` (eighths of a character)."""
    eighths = round(max(0.0, min(1.0, (value - low) / (high - low))) * BAR_WIDTH * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")


def accuracy_chart(changes: list[ModelChange]) -> str:
    """Each model's test accuracy before and after as text bars (GitHub draws them: no image, no host), the final
    model first, before above after, on an axis from 1 pt under the lowest to the highest: the change is visible."""
    both = [c for c in changes if c.old is not None and c.new is not None]
    if not both:
        return ""
    values = [float(v) for c in both for v in (c.old.accuracy, c.new.accuracy)]
    low, high = max(0.0, (int(100 * min(values)) - 1) / 100), min(1.0, (int(100 * max(values)) + 1) / 100)
    width = max(len(c.model) for c in both)
    lines = [f"Test accuracy, axis {pct(low, 0)} to {pct(high, 0)}; for each model before (base) then after (head)"]
    for c in both:
        lines.append(f"{c.model:<{width}}  before {pct(c.old.accuracy):>7} {bar(c.old.accuracy, low, high)}")
        lines.append(f"{'':<{width}}  after  {pct(c.new.accuracy):>7} {bar(c.new.accuracy, low, high)}")
    return "```text\n" + "\n".join(lines) + "\n```\n"


def familiarity_table(j: Judgement) -> str:
    """One row per set of photos (the clean test photos, then each shifted set), one column per checked model:
    the share flagged before -> after, or one share where it did not change."""
    if not j.shifts:
        return ""
    models = list(dict.fromkeys(s.model for s in j.shifts))
    cells: dict[str, dict[str, str]] = {}
    for s in j.shifts:
        shown = [pct(v, 1) if v is not None else "-" for v in (s.old, s.new)]
        cell = shown[1] if shown[0] == shown[1] else f"{shown[0]} -> {shown[1]}"
        if None not in (s.old, s.new) and shown[0] != shown[1]:
            cell = f"**{cell}**" if s.new < s.old and s.shift != "clean" else cell
        name = "clean test photos" if s.shift == "clean" else s.shift.replace("_", " ")
        cells.setdefault(name, {})[s.model] = cell
    rows = [[name, *(row.get(m, "-") for m in models)] for name, row in cells.items()]
    return (
        "### The familiarity check\n\nShare of the test photos flagged unfamiliar, before -> after: the clean ones "
        "(lower is better) and evaluate's shifted copies (higher is better; bold: flagged less; CI has no foreign "
        "photos).\n\n" + markdown_table(["Photos", *models], rows)
    )


def predict_line(j: Judgement) -> str:
    def who(choice) -> str:
        return f"{choice.stage} (validation accuracy {pct(choice.val_accuracy)})" if choice else "no model"

    p = j.predict
    if p.old is None and p.new is None:
        return ""
    line = f"**predict's default model**: {who(p.old)} -> {who(p.new)}"
    if p.switch is not None:
        s = p.switch
        line += (
            f"; its test accuracy {pct(s.old.accuracy)} -> {pct(s.new.accuracy)} ({pt(s.change, sign=True)}, "
            f"McNemar p = {s.test['p_value']:.2g}): {s.verdict}"
        )
    else:
        line += " (unchanged)" if p.old and p.new else ""
    return line + ".\n"


def gate_line(base: str, gate: ReviewParams, edits: list[str]) -> str:
    floor = f", or when the final model falls below {paths.BASE_MODEL}'s accuracy at `{base}` from at or above it"
    return (
        f"Gate, from `{base}`:params.yaml: a model fails when its test accuracy drops by more than review.max_drop "
        f"= {pt(gate.max_drop)} and McNemar's exact test on the same photos gives p < review.alpha = {gate.alpha:g}"
        f"{floor}; a drop beyond max_drop with p >= {gate.alpha:g} needs more evidence; a familiarity check fails "
        f"when it flags a shifted set less by more than review.max_flag_drop = {pt(gate.max_flag_drop)}; a model "
        f"the base scored and the head lacks fails. Bold: a change with p < {gate.alpha:g}."
        + (f" This change edits the gate: {', '.join(edits)} (applies once merged)." if edits else "")
        + "\n"
    )


def per_digit_table(old: pd.DataFrame, new: pd.DataFrame) -> str:
    """The digits whose recall or F1 changed (at the 3 decimals shown), old -> new."""

    def change(a: float, b: float) -> str:
        return f"{a:.3f} -> {b:.3f}" if f"{a:.3f}" != f"{b:.3f}" else f"{b:.3f}"

    both = old.merge(new, left_index=True, right_index=True, how="outer", suffixes=("_old", "_new"))
    rows = [
        [int(digit), change(r.recall_old, r.recall_new), change(r.f1_old, r.f1_new)]
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
    """Final and best validation accuracy and loss over the epochs run; the best epoch has the highest val accuracy
    (first on ties). Not the kept model's (`best_epoch` of metrics/<stage>.json), which the section prints."""
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


def kept_line(model: str, old: dict | None, new: dict | None) -> str:
    """The validation accuracy of the model each revision kept (metrics/<model>.json), not of its best epoch."""
    if old is None or new is None:
        return ""

    def kept(r: dict) -> str:
        return f"{pct(r['val_accuracy'])} (epoch {r['best_epoch']} of {r['epochs_run']})"

    return f"Validation accuracy of the kept {model}: {kept(old)} -> {kept(new)}.\n"


def model_section(old: Revision, new: Revision, c: ModelChange, gate: ReviewParams, full: bool) -> list[str]:
    """Per digit and per confusion where the model's change is significant or beyond max_drop (or --full), the kept
    model's validation accuracy and, with --full, the learning curve's summary."""
    old_predictions, new_predictions = old.predictions(c.model), new.predictions(c.model)
    confusions = confusion_changes(old_predictions, new_predictions)
    digits = per_digit_table(old.per_digit(c.model), new.per_digit(c.model))  # read either way: malformed is refused
    histories = old.history(c.model), new.history(c.model)
    t = c.test
    role = "The final model" if c.model == paths.FINAL_MODEL else "Model"
    lines = [
        f"### {role} ({c.model}): {c.verdict.strip('*')}\n",
        f"{t['only_old_correct']} test photos right only before, {t['only_new_correct']} right only after, "
        f"p = {t['p_value']:.4g}.\n",
    ]
    if full or c.significant or abs(c.change) > gate.max_drop + 1e-12:
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
    lines.append(kept_line(c.model, old.record(c.model), new.record(c.model)))
    if full and all(h is not None for h in histories):
        lines.append(curve_table(*(curve_summary(h) for h in histories)))
    return [line for line in lines if line]


def sections(old: Revision, new: Revision, j: Judgement, gate: ReviewParams, full: bool) -> list[str]:
    """The final model's section, then one for every other model that fails or needs more evidence."""
    lines = []
    for c in j.models:
        if c.old is None or c.new is None:
            continue
        if c.model == paths.FINAL_MODEL or c.failure or c.needs_evidence:
            lines += model_section(old, new, c, gate, full)
    return lines
