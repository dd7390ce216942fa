"""The review's charts beside the comment: the `dvc plots diff` page, a PNG of each chart whose data changed (the
base's rows drawn before the head's), and the final model's confusion change (rows actual, columns predicted, as
every confusion chart of the project).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from signdigits.core import paths
from signdigits.core.errors import PipelineError
from signdigits.core.files import make_folder, write_bytes_atomic
from signdigits.reporting import figures
from signdigits.reporting.metrics import confusion_matrix
from signdigits.review.gather import Revision, run_text


def _rows_by_revision(spec: dict) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in spec.get("data", {}).get("values", []):
        rows.setdefault(row.get("rev"), []).append({k: v for k, v in row.items() if k != "rev"})
    return rows


def base_first(spec: dict, base: str) -> dict:
    """The chart's rows with the base revision's first, so colours, legends and panels put the base before the head."""
    values = spec.get("data", {}).get("values", [])
    ordered = sorted(values, key=lambda row: row.get("rev") != base)  # stable: each revision keeps its rows' order
    return {**spec, "data": {**spec["data"], "values": ordered}} if values else spec


def final_first(item: tuple[str, object]) -> tuple[bool, str]:
    """Charts in id order, the final model's first (its learning curves, declared beside its stage, come last in
    `dvc plots diff`)."""
    return paths.FINAL_MODEL not in item[0], item[0]


def write_plots(base: str, out_dir: Path) -> list[Path]:
    """`dvc plots diff` of base and the workspace as out_dir/index.html, a PNG of each chart whose data changed
    (named after its id in dvc.yaml, / as _: test_accuracy.png, plots_train_best_history.csv.png), and the
    final model's confusion change (new minus old). The final model's charts come first.
    """
    try:
        import vl_convert
    except ImportError:
        raise PipelineError("--plots needs vl-convert-python: pip install -r requirements/lock.txt") from None
    make_folder(out_dir)
    run_text(["dvc", "plots", "diff", base, "--out", str(out_dir)])
    shown = json.loads(run_text(["dvc", "plots", "diff", base, "--json", "--out", str(out_dir / "static")]))
    written = []
    for plot_id, charts in sorted(shown.get("data", {}).items(), key=final_first):
        for chart in charts:
            if chart.get("type") != "vega":
                continue
            rows = _rows_by_revision(chart["content"])
            if rows.get(base) == rows.get("workspace"):
                continue
            png = vl_convert.vegalite_to_png(base_first(chart["content"], base), scale=1)
            written.append(write_bytes_atomic(out_dir / f"{plot_id.replace('/', '_')}.png", png))
    old, new = Revision(base), Revision(None)
    if old.exists(paths.predictions_path(paths.FINAL_MODEL)) and new.exists(paths.predictions_path(paths.FINAL_MODEL)):
        change = confusion_change(old.predictions(paths.FINAL_MODEL), new.predictions(paths.FINAL_MODEL))
        if change is not None:
            name, png = figures.confusion_change(paths.FINAL_MODEL, *change)
            written.insert(0, write_bytes_atomic(out_dir / name, png))
    return written


def confusion_change(old: pd.DataFrame, new: pd.DataFrame) -> tuple[np.ndarray, list[int]] | None:
    """The test confusion matrix of new minus old (rows actual, columns predicted) and its digits; None if equal."""
    classes = sorted({int(d) for frame in (old, new) for d in (*frame.actual, *frame.predicted)})
    index = {c: i for i, c in enumerate(classes)}

    def matrix(frame: pd.DataFrame) -> np.ndarray:
        return confusion_matrix(frame.actual.map(index), frame.predicted.map(index), len(classes))

    change = matrix(new) - matrix(old)
    return (change, classes) if change.any() else None
