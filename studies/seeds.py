"""A model's test accuracy over seeds 0-4: how much of a result the seed alone moves.

    python studies/seeds.py [--rev HEAD] [--seeds 0,1,2,3,4]                      # the final model
    python studies/seeds.py --key train_cnn.seed --metric train_cnn.test_accuracy  # train_cnn
    python studies/seeds.py --repo TINY --seeds 1   # CI's smoke run: a tiny reproduced repository

In a git clone of --rev that shares this repository's DVC cache (so stages already run there are
restored, not rerun), `dvc exp run -S <key>=N` for each seed, as a person would, then each run's
<metric> from metrics/evaluate.json: the table, mean, std and minimum. Several minutes: the stages
the cache lacks, then the seeded stage and evaluate per seed.
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
    parser.add_argument("--repo", type=Path, default=REPO, help="the repository to clone (default: this one)")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--key", default="seed", help="the params key of the seed (default: the final model's)")
    parser.add_argument("--metric", default="final.test_accuracy", help="the key of metrics/evaluate.json to read")
    args = parser.parse_args()
    accuracy = {}
    with tempfile.TemporaryDirectory(prefix="signdigits-seeds-") as tmp:
        clone = git_clone(args.repo, Path(tmp) / "clone")
        run(["git", "checkout", "--quiet", args.rev], cwd=clone)
        cache = run(["dvc", "cache", "dir"], cwd=args.repo).stdout.strip()  # wherever that repository keeps it
        run(["dvc", "cache", "dir", "--local", cache], cwd=clone)
        env = {**venv_env(), "PYTHONPATH": str(clone / "src")}
        for seed in map(int, args.seeds.split(",")):
            run(["dvc", "exp", "run", "-S", f"{args.key}={seed}"], cwd=clone, env=env)
            value = json.loads((clone / "metrics/evaluate.json").read_text())
            for part in args.metric.split("."):
                value = value[part]
            accuracy[seed] = value
            print(f"seed {seed}: test accuracy {accuracy[seed]:.2%}", flush=True)
    values = list(accuracy.values())
    spread = f" +- {statistics.stdev(values):.2%}" if len(values) > 1 else ""
    print(f"mean {statistics.mean(values):.2%}{spread}, min {min(values):.2%}")


if __name__ == "__main__":
    main()
