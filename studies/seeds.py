"""The final model's test accuracy over seeds 0-4: how much of a result the seed alone moves.

    python studies/seeds.py [--rev HEAD] [--seeds 0,1,2,3,4]

In a git clone of --rev (no DVC cache), `dvc exp run -S seed=N` for each seed, as a person would,
then each run's final.test_accuracy from metrics/evaluate.json: the table, mean, std and minimum.
Several minutes: one cold run of the pipeline, then train_best and evaluate per seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from signdigits.devtools import git_clone, run, venv_env

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args()
    accuracy = {}
    with tempfile.TemporaryDirectory(prefix="signdigits-seeds-") as tmp:
        clone = git_clone(REPO, Path(tmp) / "clone")
        run(["git", "checkout", "--quiet", args.rev], cwd=clone)
        env = {**venv_env(), "PYTHONPATH": str(clone / "src")}
        for seed in map(int, args.seeds.split(",")):
            run(["dvc", "exp", "run", "-S", f"seed={seed}"], cwd=clone, env=env)
            accuracy[seed] = json.loads((clone / "metrics/evaluate.json").read_text())["final"]["test_accuracy"]
            print(f"seed {seed}: test accuracy {accuracy[seed]:.2%}", flush=True)
    values = list(accuracy.values())
    spread = f" +- {statistics.stdev(values):.2%}" if len(values) > 1 else ""
    print(f"mean {statistics.mean(values):.2%}{spread}, min {min(values):.2%}")


if __name__ == "__main__":
    main()
