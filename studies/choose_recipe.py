"""Choose the final model's recipe (the top-level keys of params.yaml) by cross-validation, never the test part.

Why: `dvc exp run -S lr=...` should take seconds, so train_best must train in a small fraction of
the old recipe's compute without losing accuracy; this measures both for each candidate.

What it searches: CANDIDATES below, the record of a search by hand in rounds (each round varied
the best of the one before): the old 100-epoch recipe as the baseline, then shorter runs with
fewer epochs, narrower or deeper networks, batch sizes, cosine against onecycle, learning rates,
dropout, weight decay, label smoothing and augmentation. Every candidate is trained by the
pipeline's own engine (`signdigits.training.engine.train`). The data is train + val of
data/split/split.npz in 5 folds grouped by signer (StratifiedGroupKFold: no person in two folds),
so each fold's held-out images come from people the network never saw, as in the real split.
The test part is never loaded.

Cost of each candidate, three ways: epochs; multiply-adds of one epoch of the real stage (1444
training images forward and backward, 308 val images forward), which no load changes; and the
measured process-seconds (`time.process_time`, one thread) of one training run, mean over folds.

Choice: the cheapest candidate (fewest multiply-adds) whose CV mean accuracy is at most
TOLERANCE below the baseline's; 0.5 points is about one standard error of a 5-fold mean here.

Run from the repository root on the prepared arrays (`dvc repro split` makes them):

    PYTHONPATH=src nice -n 10 python studies/choose_recipe.py               # every candidate
    PYTHONPATH=src python studies/choose_recipe.py --only NAME,NAME --seeds 3  # redo some rows
    PYTHONPATH=src python studies/choose_recipe.py --smoke --out /tmp/x.json   # CI: 2 candidates, 1 epoch

It prints the table and writes it to studies/recipe_search.json (--only keeps the file's other
rows). On one thread: about 6 minutes for the baseline, 15-45 s for each other candidate, about
25 minutes in all.
"""

from signdigits.core.kernels import pin_cpu_kernels

pin_cpu_kernels("portable")  # before torch is imported: the kernels the pipeline's results are made with

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold  # noqa: E402

from signdigits.core import paths  # noqa: E402
from signdigits.core.data import load_prepared, load_split  # noqa: E402
from signdigits.core.params import Augment, Runtime, TrainParams  # noqa: E402
from signdigits.training.engine import Part, evaluate, setup_runtime, train  # noqa: E402
from signdigits.training.stage import settings  # noqa: E402

FOLDS = 5
N_TRAIN, N_VAL, IMAGE_SIZE = 1444, 308, 28  # the real stage's parts, for the multiply-add count
TOLERANCE = 0.005  # CV accuracy a candidate may lose against the baseline and still be chosen

BASELINE = TrainParams(
    hidden=(1024, 512),
    dropout=0.2,
    optimizer="adamw",
    lr=0.003,
    weight_decay=0.05,
    batch_size=256,
    epochs=100,
    scheduler="cosine",
    label_smoothing=0.1,
    normalize_images=True,
    augment=Augment(shift=0.06, rotate=8, scale=0.06),
)


def variant(**changes) -> TrainParams:
    return dataclasses.replace(BASELINE, **changes)


SHORT = variant(hidden=(256,), epochs=20, batch_size=64, scheduler="onecycle")  # what the short runs share

CANDIDATES = {
    "baseline": BASELINE,
    "h256_e20_b256_cos": variant(hidden=(256,), epochs=20),
    "h256_e20_b64_cos": dataclasses.replace(SHORT, scheduler="cosine"),
    "h256_e20_b64_oc": SHORT,
    "h256_e20_b64_oc_lr.01": dataclasses.replace(SHORT, lr=0.01),
    "h256_e20_b64_oc_lr.001": dataclasses.replace(SHORT, lr=0.001),
    "h256_e20_b128_oc_lr.006": dataclasses.replace(SHORT, batch_size=128, lr=0.006),
    "h256_e20_b32_oc": dataclasses.replace(SHORT, batch_size=32),
    "h128_e20_b64_oc": dataclasses.replace(SHORT, hidden=(128,)),
    "h512_e15_b64_oc": dataclasses.replace(SHORT, hidden=(512,), epochs=15),
    "h256-128_e20_b64_oc": dataclasses.replace(SHORT, hidden=(256, 128)),
    "h256_e10_b64_oc": dataclasses.replace(SHORT, epochs=10),
    "h256_e30_b64_oc": dataclasses.replace(SHORT, epochs=30),
    "h256_e20_b64_oc_drop0": dataclasses.replace(SHORT, dropout=0.0),
    "h256_e20_b64_oc_wd.01": dataclasses.replace(SHORT, weight_decay=0.01),
    "h256_e20_b64_oc_noaug": dataclasses.replace(SHORT, augment=Augment()),
    "h256_e30_b64_oc_drop0": dataclasses.replace(SHORT, epochs=30, dropout=0.0),
    "h256_e30_b128_oc_drop0_lr.006": dataclasses.replace(SHORT, epochs=30, dropout=0.0, batch_size=128, lr=0.006),
    "h128_e50_b64_oc_drop0": dataclasses.replace(SHORT, hidden=(128,), epochs=50, dropout=0.0),
    "h128_e60_b128_oc_drop0_lr.006": dataclasses.replace(
        SHORT, hidden=(128,), epochs=60, dropout=0.0, batch_size=128, lr=0.006
    ),
    "h64_e100_b128_oc_drop0_lr.006": dataclasses.replace(
        SHORT, hidden=(64,), epochs=100, dropout=0.0, batch_size=128, lr=0.006
    ),
    "h256_e30_b64_oc_drop0_wd.1": dataclasses.replace(SHORT, epochs=30, dropout=0.0, weight_decay=0.1),
    "h256_e30_b64_cos_drop0": dataclasses.replace(SHORT, epochs=30, dropout=0.0, scheduler="cosine"),
    "h256_e30_b64_oc_drop0_ls0": dataclasses.replace(SHORT, epochs=30, dropout=0.0, label_smoothing=0.0),
    "h128_e30_b32_oc_drop0": dataclasses.replace(SHORT, hidden=(128,), epochs=30, dropout=0.0, batch_size=32),
    "h256-128_e30_b64_oc_drop0": dataclasses.replace(SHORT, hidden=(256, 128), epochs=30, dropout=0.0),
    "h256_e40_b64_oc_drop0": dataclasses.replace(SHORT, epochs=40, dropout=0.0),
    "h256-256_e30_b64_oc_drop0": dataclasses.replace(SHORT, hidden=(256, 256), epochs=30, dropout=0.0),
    "h256-128_e40_b64_oc_drop0": dataclasses.replace(SHORT, hidden=(256, 128), epochs=40, dropout=0.0),
    "h128-128_e40_b64_oc_drop0": dataclasses.replace(SHORT, hidden=(128, 128), epochs=40, dropout=0.0),
    "h256-128-128_e30_b64_oc_drop0": dataclasses.replace(SHORT, hidden=(256, 128, 128), epochs=30, dropout=0.0),
    "h256-128_e30_b64_oc_drop.1": dataclasses.replace(SHORT, hidden=(256, 128), epochs=30, dropout=0.1),
    "h512-256_e20_b64_oc_drop0": dataclasses.replace(SHORT, hidden=(512, 256), epochs=20, dropout=0.0),
    "h256-128_e50_b64_oc_drop0": dataclasses.replace(SHORT, hidden=(256, 128), epochs=50, dropout=0.0),
    "h256-128_e60_b64_oc_drop0": dataclasses.replace(SHORT, hidden=(256, 128), epochs=60, dropout=0.0),
    "h128-128_e60_b64_oc_drop0": dataclasses.replace(SHORT, hidden=(128, 128), epochs=60, dropout=0.0),
    "h128-128_e40_b32_oc_drop0": dataclasses.replace(SHORT, hidden=(128, 128), epochs=40, dropout=0.0, batch_size=32),
    # issue 26, item 5: the chosen recipe 2.5x longer with stronger shifts, rotations and zooms
    "h256-128_e150_b64_oc_drop0_aug.1-12-.1": dataclasses.replace(
        SHORT, hidden=(256, 128), epochs=150, dropout=0.0, augment=Augment(shift=0.1, rotate=12, scale=0.1)
    ),
}


SMOKE = ("baseline", "h256_e10_b64_oc")  # --smoke: the baseline and one other, for 1 epoch


def smoke_candidates(candidates: dict, names) -> dict:
    """The named candidates trained for 1 epoch: CI's smoke run of a search (tests/test_scripts.py)."""

    def one_epoch(params):
        if hasattr(params, "epochs"):
            return dataclasses.replace(params, epochs=1)
        return dataclasses.replace(params, model=dataclasses.replace(params.model, epochs=1))

    return {name: one_epoch(candidates[name]) for name in names}


def multiply_adds_per_epoch(cfg: TrainParams) -> int:
    """Forward n*in*out per dense layer and side^2*9*in*out per 3x3 conv; backward the same for weight
    gradients and, but for the first layer, inputs."""
    side, before, layers = IMAGE_SIZE, 1, []
    for after in cfg.channels:
        layers.append((side * side * 9 * before, after))  # a conv as a matrix product over its output pixels
        side, before = side // 2, after
    widths = (before * side * side if cfg.channels else IMAGE_SIZE * IMAGE_SIZE, *cfg.hidden, 10)
    layers += list(zip(widths[:-1], widths[1:], strict=False))
    forward = sum(i * o for i, o in layers)
    backward = forward + sum(i * o for i, o in layers[1:])
    return N_TRAIN * (forward + backward) + N_VAL * forward


def folds(labels: np.ndarray, signers: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    splitter = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=0)
    return list(splitter.split(np.zeros(len(labels)), labels, groups=signers))


def cross_validate(cfg: TrainParams, data: list[tuple[Part, Part]], seeds: list[int]) -> dict:
    """Train on each fold's rest, score its held-out signers; with cfg.channels, a CNN (engine.train's)."""
    accuracies, correct, seconds, wall = [], 0, [], []
    for train_part, held_out in data:
        for seed in seeds:
            started, wall_started = time.process_time(), time.perf_counter()
            result = train(dataclasses.replace(cfg, seed=seed), train_part, held_out, list(range(10)), "cv")
            seconds.append(time.process_time() - started)
            wall.append(time.perf_counter() - wall_started)
            scored = evaluate(result.model, held_out)
            accuracies.append(scored.accuracy)
            correct += int((scored.predictions == held_out.y.numpy()).sum())
    per_fold = [statistics.mean(accuracies[i : i + len(seeds)]) for i in range(0, len(accuracies), len(seeds))]
    return {
        "cv_mean": statistics.mean(per_fold),
        "cv_std": statistics.stdev(per_fold),
        "pooled": correct / (len(seeds) * sum(len(held_out) for _, held_out in data)),
        "per_fold": per_fold,
        "seeds": len(seeds),
        "epochs": cfg.epochs,
        "gmacs_per_epoch": multiply_adds_per_epoch(cfg) / 1e9,
        "gmacs": cfg.epochs * multiply_adds_per_epoch(cfg) / 1e9,
        "train_process_s": statistics.mean(seconds),
        "train_wall_s": statistics.mean(wall),
        "params": settings(cfg),
    }


def load_folds(device) -> list[tuple[Part, Part]]:
    """Train + val of the committed split in FOLDS signer-grouped folds, as (rest, held out) parts on `device`."""
    prepared = load_prepared(paths.PREPARED)
    split = load_split(paths.SPLIT, len(prepared.labels))
    idx = np.concatenate([split["train"], split["val"]])  # the test part stays unread
    pixels, labels, signers = prepared.pixels[idx], prepared.labels[idx], prepared.signers[idx]
    return [
        (Part.from_arrays(pixels[a], labels[a], device), Part.from_arrays(pixels[b], labels[b], device))
        for a, b in folds(labels, signers)
    ]


def search(names: list[str], run, out: Path, keep: dict) -> dict:
    """run(name) for each name, the rows written to `out` after each (so a stopped search keeps its rows)."""
    rows = dict(keep)
    for name in names:
        rows[name] = run(name)
        out.write_text(json.dumps({"folds": FOLDS, "candidates": rows}, indent=1))
    return rows


def print_row(name: str, r: dict) -> None:
    print(
        f"{name:<32} cv {100 * r['cv_mean']:5.2f} ± {100 * r['cv_std']:4.2f}% ({r['seeds']} seeds)  "
        f"epochs {r['epochs']:3d}  {r['gmacs_per_epoch']:5.2f} GMAC/epoch  {r['gmacs']:6.1f} GMAC  "
        f"{r['train_process_s']:5.2f} process-s",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated candidate names (default: all)")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per fold (default 1)")
    parser.add_argument("--out", type=Path, default=Path("studies/recipe_search.json"))
    parser.add_argument("--smoke", action="store_true", help=f"CI's smoke run: {', '.join(SMOKE)} for 1 epoch")
    args = parser.parse_args()
    data = load_folds(setup_runtime(Runtime(device="cpu", threads=1)))
    candidates = smoke_candidates(CANDIDATES, SMOKE) if args.smoke else CANDIDATES
    names = list(SMOKE) if args.smoke else args.only.split(",") if args.only else list(CANDIDATES)
    keep = {}
    if args.only and args.out.is_file():  # keep the other candidates' rows, so a subset can be redone
        keep = {n: r for n, r in json.loads(args.out.read_text())["candidates"].items() if n in CANDIDATES}
    seeds = list(range(args.seeds))
    rows = search(names, lambda name: cross_validate(candidates[name], data, seeds), args.out, keep)
    for name, r in rows.items():
        print_row(name, r)
    chosen = None
    if "baseline" in rows:
        good = [n for n in rows if rows[n]["cv_mean"] >= rows["baseline"]["cv_mean"] - TOLERANCE]
        chosen = min(good, key=lambda n: (rows[n]["gmacs"], -rows[n]["cv_mean"]))
    print(f"chosen: {chosen}")
    args.out.write_text(json.dumps({"folds": FOLDS, "chosen": chosen, "candidates": rows}, indent=1))


if __name__ == "__main__":
    main()
