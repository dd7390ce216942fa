"""Settle "needs more evidence": seeds 0-4 of the final model and of predict's default model, trained by each
revision's own pipeline (`dvc repro evaluate` in a git worktree of the base and of HEAD, sharing this repository's
DVC cache), their validation and test accuracies pooled per seed, and the means compared.

    python -m signdigits.review --base main --evidence

A model fails when the mean of its per-seed accuracy on the validation and test photos together drops by more
than the base's review.max_drop and an exact one-sided permutation test of the 5 + 5 seeds gives p < review.alpha
(the smallest possible p is 1/252 = 0.004). Exit 0 passes, 1 fails, 2 could not run.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from signdigits.core import paths
from signdigits.core.errors import PipelineError
from signdigits.reporting.report import markdown_table, pct
from signdigits.review.gather import Revision, run_text, tool
from signdigits.review.judge import EPSILON, EXIT_FAIL, EXIT_PASS, predict_choice

SEEDS = (0, 1, 2, 3, 4)
HEAD = "HEAD"


def seed_key(model: str) -> str:
    """The params key of a model's seed: the final model's is top-level, every other model's is in its section."""
    return "seed" if model == paths.FINAL_MODEL else f"{model}.seed"


def with_seed(text: str, key: str, seed: int) -> str:
    """params.yaml's text with `key` (`seed` or `section.seed`) set to `seed`; comments and layout kept."""
    section, _, name = key.rpartition(".")
    lines = text.splitlines(keepends=True)
    inside = not section
    for i, line in enumerate(lines):
        if section and re.match(rf"{re.escape(section)}:\s*(#.*)?$", line):
            inside = True
            continue
        if section and inside and re.match(r"\S", line):
            break  # the next top-level key: the section has no seed
        match = re.match(rf"(\s*){name}:(\s*)\d+", line) if inside else None
        if match and bool(match.group(1)) == bool(section):
            lines[i] = line[: match.start()] + f"{match.group(1)}{name}:{match.group(2)}{seed}" + line[match.end() :]
            return "".join(lines)
    raise PipelineError(f"params.yaml: no `{key}` to set (the evidence trains each model with seeds 0-4)")


def part_scores(scores: pd.DataFrame, model: str) -> dict:
    """A model's val and test accuracy, and both pooled (weighted by photos)."""
    rows = scores[scores.model == model].set_index("part")
    if not {"val", "test"} <= set(rows.index):
        raise PipelineError(f"{paths.SCORES}: no val and test rows of {model}")
    val, test = rows.loc["val"], rows.loc["test"]
    pooled = (val.accuracy * val.images + test.accuracy * test.images) / (val.images + test.images)
    return {"val": float(val.accuracy), "test": float(test.accuracy), "pooled": float(pooled)}


def permutation_p(old: list[float], new: list[float]) -> float:
    """Exact one-sided permutation test: the share of the splits of all runs into two groups of these sizes whose
    mean drop is at least the observed one."""
    runs = np.array([*old, *new])
    observed = np.mean(old) - np.mean(new)
    splits = list(itertools.combinations(range(len(runs)), len(old)))
    drops = [runs[list(s)].mean() - np.delete(runs, list(s)).mean() for s in splits]
    return sum(d >= observed - EPSILON for d in drops) / len(splits)


def train_seeds(rev: str, models: list[str], cache: str, log) -> dict[str, list[dict]]:
    """{model: [scores of seed 0, ..., 4]} from the revision's own pipeline in a temporary git worktree."""
    folder = Path(tempfile.mkdtemp(prefix="signdigits-evidence-"))
    worktree = folder / "repo"
    run_text(["git", "worktree", "add", "--detach", "--quiet", str(worktree), rev])
    try:
        run_in = {"cwd": worktree, "capture_output": True, "env": {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}}
        subprocess.run([tool("dvc"), "cache", "dir", "--local", cache], check=True, **run_in)
        subprocess.run([tool("dvc"), "checkout", "--quiet"], **run_in)  # what the cache holds: seed 0 needs no training
        committed = (worktree / paths.PARAMS).read_text()
        result: dict[str, list[dict]] = {m: [] for m in models}
        for seed in SEEDS:
            text = committed
            for model in models:
                text = with_seed(text, seed_key(model), seed)
            (worktree / paths.PARAMS).write_text(text)
            started = time.perf_counter()
            done = subprocess.run([tool("dvc"), "repro", "evaluate"], **run_in)
            if done.returncode != 0:
                error = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
                first = next(
                    (line for line in error if "ERROR" in line or line.startswith("error")),
                    error[-1] if error else "no message",
                )
                raise PipelineError(f"{rev}, seed {seed}: dvc repro failed: {first}")
            log(f"{rev}: seed {seed} in {time.perf_counter() - started:.0f} s")
            scores = pd.read_csv(worktree / paths.SCORES)
            for model in models:
                result[model].append(part_scores(scores, model))
        return result
    finally:
        subprocess.run([tool("git"), "worktree", "remove", "--force", str(worktree)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def settle(base: str) -> tuple[str, int]:
    """The Markdown of the seeds' comparison, and the exit code: 0 passes, 1 fails."""
    if base.startswith("-"):
        raise PipelineError(f"--base {base!r}: a git revision cannot start with '-'")
    old, new = Revision(base), Revision(HEAD)
    gate = old.thresholds()
    models = [paths.FINAL_MODEL]
    for revision in (old, new):
        choice = predict_choice(revision, list(revision.test_scores().index))
        if choice and choice.stage not in models:
            models.append(choice.stage)
    cache = run_text(["dvc", "cache", "dir"]).strip()
    started = time.perf_counter()
    runs = {
        rev: train_seeds(rev, models, cache, lambda line: print(line, file=sys.stderr, flush=True))
        for rev in (base, HEAD)
    }
    took = time.perf_counter() - started
    rows, failures = [], []
    for model in models:
        before, after = ([s["pooled"] for s in runs[rev][model]] for rev in (base, HEAD))
        drop = float(np.mean(before) - np.mean(after))
        p_value = permutation_p(before, after)
        fails = drop > gate.max_drop + EPSILON and p_value < gate.alpha
        if fails:
            failures.append(f"{model} dropped {100 * drop:.2f} pt on average over seeds 0-4 (p = {p_value:.2g})")
        for rev in (base, HEAD):
            seeds = runs[rev][model]
            rows.append(
                [
                    model,
                    f"`{rev}`",
                    " ".join(pct(s["val"], 1) for s in seeds),
                    " ".join(pct(s["test"], 1) for s in seeds),
                    pct(np.mean([s["pooled"] for s in seeds])),
                    ""
                    if rev == base
                    else f"{-100 * drop:+.2f} pt, p = {p_value:.2g}: {'**FAILS**' if fails else 'passes'}",
                ]
            )
    verdict = (
        "**FAILS**: " + "; ".join(failures) + "."
        if failures
        else (
            f"**Passes**: no model's mean over seeds 0-4 dropped by more than {100 * gate.max_drop:g} pt with p < "
            f"{gate.alpha:g}."
        )
    )
    header = [
        "Model",
        "Revision",
        "Val accuracy, seeds 0-4",
        "Test accuracy, seeds 0-4",
        "Mean, val and test",
        "Change",
    ]
    markdown = "\n".join(
        [
            f"## signdigits evidence against `{base}`: seeds 0-4 at both revisions\n",
            verdict + "\n",
            markdown_table(header, rows),
            f"Each seed trained by its revision's own pipeline (`dvc repro evaluate`, seed 0 from the DVC cache where "
            f"it holds it); a model fails when the mean of its pooled val and test accuracy drops by more than "
            f"review.max_drop = {100 * gate.max_drop:g} pt (from `{base}`) and an exact one-sided permutation test "
            f"of the 5 + 5 seeds gives p < review.alpha = {gate.alpha:g}. Took {took:.0f} s.\n",
        ]
    )
    return markdown, EXIT_FAIL if failures else EXIT_PASS
