"""The command: `python -m signdigits.review --base REV` (or `signdigits-review`), its options and exit codes."""

from __future__ import annotations

import argparse
import os
import traceback
from pathlib import Path

import signdigits.review.render as render
from signdigits.core import paths
from signdigits.core.cli import run_command
from signdigits.core.errors import PipelineError
from signdigits.core.files import write_text_atomic
from signdigits.review.gather import Revision, chdir_to_root, dvc_diff, stale_stages
from signdigits.review.judge import ACCEPTABLE, judge_all, threshold_changes


def build_review(base: str, full: bool = False, accept: list[str] = ()) -> tuple[str, int]:
    """The Markdown, and the exit code: 0 passes, 1 fails the base revision's gate, 3 needs more evidence."""
    if base.startswith("-"):
        raise PipelineError(f"--base {base!r}: a git revision cannot start with '-'")
    stale = stale_stages()
    if stale:
        raise PipelineError(f"the results are not what dvc.lock records ({'; '.join(stale)}); run `dvc repro` first")
    old, new = Revision(base), Revision(None)
    gate = old.thresholds()
    edits, loosens = threshold_changes(gate, new.thresholds())
    j = judge_all(old, new, gate, list(accept))
    lines = [f"## signdigits review against `{base}`\n", render.verdict_line(base, j, gate, edits, loosens)]
    if j.split:
        t = j.split.test
        lines.append(
            f"**Test parts differ: {t['paired_images']} of {t['either_images']} photos shared** (the split changed): "
            "each Change, McNemar p and verdict below is on the shared photos.\n"
        )
    lines += [render.headline_table(j.models), render.accuracy_chart(j.models), render.predict_line(j)]
    lines += [render.familiarity_table(j), render.gate_line(base, gate, edits)]
    lines += render.sections(old, new, j, gate, full)
    lines += ["### Params changed\n", render.diff_table(dvc_diff("params", base))]
    if full:
        lines += ["### Metrics changed\n", render.diff_table(dvc_diff("metrics", base))]
    return "\n".join(line for line in lines if line), j.exit_code


def main(argv: list[str] | None = None) -> int:
    """Exit 0 passes, 1 fails the base's gate, 2 could not run, 3 needs more evidence (docs/review.md)."""
    parser = argparse.ArgumentParser(
        prog="signdigits-review",
        description="Review the workspace's results against a base revision: every model, the familiarity check and "
        "predict's model, gated by the base's params.yaml. Exit 0 passes, 1 fails, 2 could not run, 3 needs more "
        "evidence (settled by --evidence).",
    )
    parser.add_argument("--base", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("--out", type=Path, help="also write the Markdown to this file")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write the plots diff page and changed charts here")
    parser.add_argument("--full", action="store_true", help="every table, also for changes within noise")
    parser.add_argument(
        "--accept",
        action="append",
        default=[],
        choices=ACCEPTABLE,
        metavar="NAME",
        help=f"a change a maintainer takes on purpose (repeatable): {', '.join(ACCEPTABLE)}",
    )
    parser.add_argument(
        "--evidence",
        action="store_true",
        help="settle 'needs more evidence': train seeds 0-4 of the final model and predict's model at --base and "
        "at HEAD, compare the means (exit 0 passes, 1 fails); see docs/review.md for its time",
    )
    args = parser.parse_args(argv)

    def body() -> int:
        here = Path.cwd()
        root = chdir_to_root()  # --out and --plots stay relative to where it was run
        out, plots = (Path(os.path.relpath(here / p, root)) if p else None for p in (args.out, args.plots))
        if args.evidence:
            from signdigits.review.evidence import settle

            markdown, code = settle(args.base)
        else:
            markdown, code = build_review(args.base, full=args.full, accept=args.accept)
            if plots:
                from signdigits.review.plots import write_plots

                changed = write_plots(args.base, plots)
                names = ", ".join(p.name for p in changed) or "none"
                markdown += f"\nCharts whose data changed (the `dvc plots diff` page beside them): {names}.\n"
        print(markdown)
        if out:
            write_text_atomic(out, markdown)
        return code

    def guarded() -> int:
        try:
            return body()
        except (PipelineError, KeyboardInterrupt):
            raise
        except Exception:  # a bug: exit 1 must only ever mean "the gate failed"
            traceback.print_exc()
            raise PipelineError("the review crashed (the traceback above); this is a bug of the review") from None

    return run_command(guarded)


__all__ = ["main", "build_review", "paths"]
