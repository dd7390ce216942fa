"""Data scale: each stage's seconds and peak memory with the shipped photos and with `--factor` times as many.

    python benchmarks/scale.py [--rev HEAD] [--factor 10]
    python benchmarks/scale.py --repo TINY --factor 2 --stages prepare,split,train_base   # CI's smoke run

In a git clone of --rev, every stage runs in order as `python stages/<stage>.py` (what DVC runs),
first on data/raw as shipped, then on data/raw plus factor-1 jittered copies of every photo (a
pixel's shift and a brightness change; numbered as new signers, so split groups them as it would
real ones). Seconds are the stage's wall time; peak memory is its process tree's largest resident
set (the sweep's workers included). Several minutes at 10x on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageEnhance

from signdigits.devtools import PIPELINE_STAGES, git_clone, run, venv_env

REPO = Path(__file__).resolve().parents[1]

_MEASURED = """import resource, subprocess, sys
done = subprocess.run([sys.executable, sys.argv[1]])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(done.returncode)"""


def add_copies(raw: Path, factor: int, seed: int = 0) -> int:
    """factor-1 jittered copies of every photo in raw/<digit>/, numbered past the originals; how many photos now."""
    rng = np.random.default_rng(seed)
    originals = sorted(raw.glob("*/*"))
    for copy in range(1, factor):
        for path in originals:
            with Image.open(path) as image:
                moved = ImageChops.offset(image.convert("RGB"), *map(int, rng.integers(-1, 2, 2)))
            number = int("".join(filter(str.isdigit, path.stem)) or 0) + copy * 100_000
            ImageEnhance.Brightness(moved).enhance(rng.uniform(0.9, 1.1)).save(path.parent / f"IMG_{number}.JPG")
    return len(originals) * factor


def run_stages(clone: Path, env: dict, stages=PIPELINE_STAGES) -> dict:
    """Seconds and peak resident MB of each stage, run in order in a fresh measuring process."""
    results = {}
    for stage in stages:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _MEASURED, f"stages/{stage}.py"], cwd=clone, env=env,
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{stage} failed:\n{done.stderr[-3000:]}")
        peak_kb = int(done.stderr.strip().splitlines()[-1])
        results[stage] = (time.perf_counter() - started, peak_kb / 1024)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--repo", type=Path, default=REPO, help="the repository to clone (default: this one)")
    parser.add_argument("--stages", default=",".join(PIPELINE_STAGES), help="the first stages only (default: all)")
    args = parser.parse_args()
    stages = args.stages.split(",")
    with tempfile.TemporaryDirectory(prefix="signdigits-scale-") as tmp:
        clone = git_clone(args.repo, Path(tmp) / "clone")
        run(["git", "checkout", "--quiet", args.rev], cwd=clone)
        env = {**venv_env(), "PYTHONPATH": str(clone / "src")}
        one = run_stages(clone, env, stages)
        photos = add_copies(clone / "data/raw", args.factor)
        many = run_stages(clone, env, stages)
    print(
        f"{'stage':<14} {'1x s':>7} {'1x MB':>7} {f'{args.factor}x s':>8} {f'{args.factor}x MB':>8}  ({photos} photos)"
    )
    for stage in stages:
        print(f"{stage:<14} {one[stage][0]:7.1f} {one[stage][1]:7.0f} {many[stage][0]:8.1f} {many[stage][1]:8.0f}")


if __name__ == "__main__":
    main()
