"""Pull-request review: every model's test accuracy, the familiarity check and predict's default model against a
base revision, gated by the base's params.yaml (docs/review.md).

    python -m signdigits.review --base main [--full] [--out review.md] [--plots DIR] [--accept NAME ...]
    python -m signdigits.review --base main --evidence     # settles "needs more evidence" with seeds 0-4

Exit codes: 0 passes, 1 fails the gate, 2 could not run, 3 needs more evidence.
The code is split as it runs: gather (the files of both revisions, checked against their dvc.lock), judge (the
gate), render (the Markdown), plots (the charts beside it), evidence (the seeds), cli (the command).
"""

from signdigits.review.cli import main
from signdigits.review.judge import mcnemar
from signdigits.review.plots import confusion_change

__all__ = ["confusion_change", "main", "mcnemar"]
