"""Judge: every model, the familiarity check and predict's default model, at the base and the head, by the gate of
the base's params.yaml; what fails, what needs more evidence, what a maintainer accepted (`--accept NAME`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from signdigits.core import paths
from signdigits.core.params import ReviewParams
from signdigits.predict import Choice, best_choice
from signdigits.reporting.report import pct
from signdigits.review.gather import Revision

EXIT_PASS, EXIT_FAIL, EXIT_CANNOT_RUN, EXIT_NEEDS_EVIDENCE = 0, 1, 2, 3
ACCEPTABLE = ("removed-model", "split-change", "familiarity", "predict-model")  # --accept NAME
EPSILON = 1e-12  # a drop exactly at a threshold passes


def pt(fraction: float, sign: bool = False) -> str:
    """An accuracy change (signed, two decimals) or a setting such as review.max_drop (0.01 -> "1 pt") in points."""
    return f"{100 * fraction:+.2f} pt" if sign else f"{round(100 * fraction, 6):g} pt"


def mcnemar(correct_old, correct_new) -> dict:
    """Exact two-sided McNemar test: do two models on the same images err on different ones more than chance allows?"""
    correct_old, correct_new = np.asarray(correct_old, bool), np.asarray(correct_new, bool)
    only_old = int((correct_old & ~correct_new).sum())
    only_new = int((~correct_old & correct_new).sum())
    n = only_old + only_new
    tail = sum(math.comb(n, k) for k in range(min(only_old, only_new) + 1))
    p_value = min(1.0, 2 * tail / 2**n) if n else 1.0
    return {"only_old_correct": only_old, "only_new_correct": only_new, "p_value": p_value}


def paired_test(old: pd.DataFrame, new: pd.DataFrame) -> dict:
    """McNemar's test on the test photos both revisions scored (paired by file name), how many they share, and
    each revision's accuracy on those shared photos."""
    pairs = old.merge(new, on="file", suffixes=("_old", "_new"))
    correct_old, correct_new = pairs.actual_old == pairs.predicted_old, pairs.actual_new == pairs.predicted_new
    result = mcnemar(correct_old, correct_new)
    result["paired_images"] = len(pairs)
    result["either_images"] = len(set(old.file) | set(new.file))
    result["shared_accuracy"] = (float(correct_old.mean()), float(correct_new.mean())) if len(pairs) else (0.0, 0.0)
    return result


@dataclass
class Finding:
    """Something the gate fails: its reason, and the --accept name that lets a maintainer take it on purpose."""

    subject: str
    reason: str
    accept: str | None = None  # None: no label lets it through (a real drop)


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
    accept: str | None = None  # the --accept name that lets the failure through, if any
    needs_evidence: bool = False  # dropped by more than max_drop, but the test cannot tell it from noise

    @property
    def photos_differ(self) -> bool:
        return bool(self.test) and self.test["paired_images"] != self.test["either_images"]

    @property
    def change(self) -> float:
        """New minus old test accuracy, on the photos both revisions scored when their test parts differ."""
        if self.photos_differ:
            old, new = self.test["shared_accuracy"]
            return new - old
        return float(self.new.accuracy - self.old.accuracy)


def judge(model: ModelChange, gate: ReviewParams, floor: float | None) -> None:
    """The rule, one for every model: it fails when its accuracy drops by more than max_drop AND McNemar's test on the
    same photos gives p < alpha; a drop beyond max_drop that the test cannot tell from noise needs more evidence;
    the final model also fails when the change takes it below `floor` (the base model's accuracy at the base
    revision) from at or above it (a revision already below it, such as a tiny test pipeline, is judged by the
    first rule alone). A model the head lacks fails (a maintainer may accept it: removed-model). Sets the verdict."""
    if model.old is None:
        model.verdict = "new model"
        return
    if model.new is None:
        model.verdict, model.accept = "**removed**", "removed-model"
        model.failure = "removed (the base scored it, the head does not)"
        return
    model.significant = model.test["p_value"] < gate.alpha
    drop = -model.change
    beyond = drop > gate.max_drop + EPSILON
    if model.significant and beyond:
        limit = f"review.max_drop = {pt(gate.max_drop)}"
        model.failure = f"dropped {100 * drop:.2f} pt (more than {limit}, p < {gate.alpha:g})"
    if floor is not None and model.new.accuracy < floor <= model.old.accuracy:
        below = f"fell below {paths.BASE_MODEL} at the base ({pct(floor)})"
        model.failure = "; ".join(filter(None, [model.failure, below]))
    if model.failure:
        model.verdict = "**FAILS**"
    elif beyond:
        model.needs_evidence, model.verdict = True, "**needs more evidence**"
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
        if before is None and after is None:
            continue  # the final model, absent at both
        both = before is not None and after is not None
        test = paired_test(old.predictions(name), new.predictions(name)) if both else None
        change = ModelChange(name, before, after, test)
        judge(change, gate, floor if name == paths.FINAL_MODEL else None)
        changes.append(change)
    return changes


def split_changed(old: Revision, new: Revision, changes: list[ModelChange]) -> ModelChange | None:
    """The model that shows the split changed, if it did: the final model's test photos differ, or
    metrics/split.json does (then the first model whose photos differ). A model whose own settings choose its
    test photos (train_binary.digits) changes only its own test part: that is not a split change."""
    records = old.split_record(), new.split_record()
    record_differs = None not in records and records[0] != records[1]
    differ = [c for c in changes if c.photos_differ]
    final = next((c for c in differ if c.model == paths.FINAL_MODEL), None)
    if final or (record_differs and differ):
        return final or differ[0]
    if record_differs:  # the split moved, yet every model scored the same photos: say it, on the final model
        return next((c for c in changes if c.test), None)
    return None


@dataclass
class ShiftChange:
    model: str
    shift: str
    old: float | None  # share flagged
    new: float | None
    images: int


def compare_familiarity(old: Revision, new: Revision, changes: list[ModelChange], gate: ReviewParams):
    """Each checked model's flagged shares (clean test photos, then each shifted set) at both revisions, and the
    findings: a shifted set flagged less by more than review.max_flag_drop, a shift no longer measured, a check
    gone from a model that is still there."""
    rows, findings = [], []
    for change in changes:
        before, after = old.familiarity(change.model), new.familiarity(change.model)
        if before is None and after is None:
            continue
        if after is None and change.new is not None:
            findings.append(Finding(change.model, "lost its familiarity check", "familiarity"))
        lost = []
        for shift in dict.fromkeys(
            [*(before.index if before is not None else []), *(after.index if after is not None else [])]
        ):
            share_old = float(before.flagged[shift]) if before is not None and shift in before.index else None
            share_new = float(after.flagged[shift]) if after is not None and shift in after.index else None
            frame = after if share_new is not None else before
            rows.append(ShiftChange(change.model, shift, share_old, share_new, int(frame.images[shift])))
            if shift == "clean" or share_old is None or after is None:
                continue
            if share_new is None:
                lost.append(f"{shift} no longer measured")
            elif share_old - share_new > gate.max_flag_drop + EPSILON:
                lost.append(f"{shift} {pct(share_old, 1)} -> {pct(share_new, 1)}")
        if lost:
            limit = f"more than review.max_flag_drop = {pt(gate.max_flag_drop)}"
            findings.append(
                Finding(change.model, f"familiarity check flags less ({limit}): {', '.join(lost)}", "familiarity")
            )
    return rows, findings


def predict_choice(revision: Revision, models: list[str]) -> Choice | None:
    """The model predict answers with by default at this revision (predict.best_choice over the models with a
    familiarity check, by the kept model's validation accuracy), or None when no model has a check."""
    candidates = []
    for model in models:
        record = revision.record(model) if revision.familiarity(model) is not None else None
        if record is not None:
            candidates.append(Choice(paths.model_path(model), model, record["val_accuracy"]))
    return best_choice(candidates) if candidates else None


@dataclass
class PredictChange:
    old: Choice | None
    new: Choice | None
    switch: ModelChange | None = None  # old choice at the base against the new choice at the head, when they differ
    finding: Finding | None = None


def compare_predict(old: Revision, new: Revision, changes: list[ModelChange], gate: ReviewParams) -> PredictChange:
    """predict's default model at both revisions; a change of model is judged by the gate's first rule, the base's
    model at the base against the head's model at the head, on the same test photos."""
    at_base, at_head = [c.model for c in changes if c.old is not None], [c.model for c in changes if c.new is not None]
    result = PredictChange(predict_choice(old, at_base), predict_choice(new, at_head))
    if result.old is None:
        return result
    if result.new is None:
        result.finding = Finding("predict", "no model with a familiarity check is left for predict", "predict-model")
        return result
    if result.old.stage == result.new.stage:
        return result
    by_model = {c.model: c for c in changes}
    before, after = by_model[result.old.stage].old, by_model[result.new.stage].new
    test = paired_test(old.predictions(result.old.stage), new.predictions(result.new.stage))
    switch = ModelChange(f"predict: {result.old.stage} -> {result.new.stage}", before, after, test)
    judge(switch, gate, None)
    result.switch = switch
    if switch.failure:
        result.finding = Finding("predict", f"now answers with {result.new.stage}: {switch.failure}", "predict-model")
    return result


@dataclass
class Judgement:
    """Everything the gate said, and the exit code: 1 for an unaccepted failure, else 3 when something needs more
    evidence, else 0."""

    models: list[ModelChange]
    split: ModelChange | None
    shifts: list[ShiftChange]
    predict: PredictChange
    findings: list[Finding] = field(default_factory=list)
    accepted: list[Finding] = field(default_factory=list)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f not in self.accepted]

    @property
    def needs_evidence(self) -> list[ModelChange]:
        switch = [self.predict.switch] if self.predict.switch else []
        return [c for c in [*self.models, *switch] if c.needs_evidence]

    @property
    def exit_code(self) -> int:
        if self.failures:
            return EXIT_FAIL
        return EXIT_NEEDS_EVIDENCE if self.needs_evidence else EXIT_PASS


def judge_all(old: Revision, new: Revision, gate: ReviewParams, accept: list[str]) -> Judgement:
    models = compare_models(old, new, gate)
    split = split_changed(old, new, models)
    shifts, familiarity_findings = compare_familiarity(old, new, models, gate)
    predict = compare_predict(old, new, models, gate)
    findings = [Finding(c.model, c.failure, c.accept) for c in models if c.failure]
    if split:
        t = split.test
        findings.append(
            Finding(
                "split",
                f"the split changed: {t['paired_images']} of {t['either_images']} test photos shared ({split.model}); "
                "verdicts use the shared photos",
                "split-change",
            )
        )
    findings += familiarity_findings + ([predict.finding] if predict.finding else [])
    accepted = [f for f in findings if f.accept in accept]
    return Judgement(models, split, shifts, predict, findings, accepted)


def threshold_changes(base: ReviewParams, head: ReviewParams) -> tuple[list[str], bool]:
    """How this change edits the gate (lines), and whether it loosens it (a larger drop or a smaller alpha)."""
    lines, loosens = [], False
    for key in ("max_drop", "max_flag_drop"):
        if getattr(head, key) != getattr(base, key):
            lines.append(f"review.{key} {pt(getattr(base, key))} -> {pt(getattr(head, key))}")
            loosens |= getattr(head, key) > getattr(base, key)
    if head.alpha != base.alpha:
        lines.append(f"review.alpha {base.alpha:g} -> {head.alpha:g}")
        loosens |= head.alpha < base.alpha
    return lines, loosens
