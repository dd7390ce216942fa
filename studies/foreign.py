"""Photos from elsewhere: how often each checked model is right, calls a photo familiar, and is right
on the photos it calls familiar, per source and in all, beside the same figures on the test part.

    PYTHONPATH=src python studies/foreign.py ../shared/foreign-dev/foreign_dev.npz --readme studies/README.md
    PYTHONPATH=src python studies/foreign.py PHOTOS/       # a folder with one subfolder per digit, 0/ to 9/
    PYTHONPATH=src python studies/foreign.py --smoke OUT/  # a tiny folder made from the test part (no photos needed)

PATH: an npz with `images` (n, h, w) uint8, `labels` and `source` (foreign_dev's layout), or a folder
of digit subfolders (its name is the source). Nothing is read from outside the repository unless it
is given. Every photo goes through predict's own path (predict.predict_batches: decode_image, the
model, its familiarity check, the threshold of familiarity.percentile): the npz's images are written
as PNG files to a temporary folder first. Run from the repository root, with the models trained.

Writes to --out (default studies/): foreign.json (every figure, the 95% Wilson intervals, the
leave-one-source-out choice of signals), foreign_risk_coverage.csv and .png (right among accepted
against the share accepted, the photos accepted in order of their familiarity score). --readme
replaces the table between this script's markers in that file. The test part is read for its
flagged share only; nothing here chooses by it.

Leave one source out: for each source, the combination of the check's signals (any non-empty subset
of pixels, features, unsure) that is most often right among the photos it calls familiar on the
other sources, among those calling at least 100 of 1,620 photos' share familiar there; the figures
of the held-out source under that choice are what the table calls held-out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
from pathlib import Path

from signdigits.core.kernels import pin_convolutions, pin_cpu_kernels

pin_cpu_kernels("portable")  # before numpy and torch load: predict's kernels
pin_convolutions("portable")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from signdigits.core import paths  # noqa: E402
from signdigits.core.data import decode_image, load_prepared, load_split, load_train_val  # noqa: E402
from signdigits.predict import IMAGE_SUFFIXES, Problem, percentile_for, predict_batches  # noqa: E402
from signdigits.training.familiarity import SIGNALS  # noqa: E402
from signdigits.training.inputs import to_inputs  # noqa: E402
from signdigits.training.model_file import load_model  # noqa: E402

MODELS = ("train_best", "train_cnn")  # the models with a familiarity check
MIN_FAMILIAR_SHARE = 100 / 1620  # the goal's "at least 100 of foreign_dev's 1,620 photos called familiar"
BEGIN, END = "<!-- studies/foreign.py: begin -->", "<!-- studies/foreign.py: end -->"


def wilson(k: int, n: int) -> list[float | None]:
    """95% Wilson score interval of k successes in n."""
    if n == 0:
        return [None, None]
    z, p = 1.959964, k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [(centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)]


def figures(right: np.ndarray, familiar: np.ndarray) -> dict:
    """Share right, share called familiar, right among familiar: counts and 95% intervals."""
    n, f, rf = len(right), int(familiar.sum()), int((right & familiar).sum())
    return {
        "photos": n,
        "right": int(right.sum()) / n if n else None,
        "right_ci95": wilson(int(right.sum()), n),
        "familiar": f,
        "familiar_share": f / n if n else None,
        "familiar_ci95": wilson(f, n),
        "right_among_familiar": rf / f if f else None,
        "right_among_familiar_ci95": wilson(rf, f),
    }


def write_photos(folder: Path, images: np.ndarray) -> list[Path]:
    """uint8 images as PNG files (lossless), so that predict's decoder reads exactly these pixels."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, image in enumerate(images):
        written.append(folder / f"{i:05d}.png")
        Image.fromarray(image).save(written[-1])
    return written


def load_photos(path: Path, scratch: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """The photos as files predict reads, their digits and sources."""
    if path.is_dir():
        files, labels = [], []
        for digit in range(10):
            inside = sorted(p for p in (path / str(digit)).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            files += inside
            labels += [digit] * len(inside)
        if not files:
            sys.exit(f"error: {path}: no photos in subfolders 0/ to 9/")
        return files, np.array(labels), np.array([path.name] * len(files))
    with np.load(path) as npz:
        images, labels, sources = npz["images"], npz["labels"], npz["source"]
    return write_photos(scratch, images), np.asarray(labels), np.asarray(sources).astype(str)


def through_predict(model_file: Path, files: list[Path], percentile: float):
    """predict's answers: (digit, familiar, score) arrays, in order; an unreadable photo is a stop."""
    _, results = predict_batches(model_file, files, percentile)
    answers = list(results)
    problems = [a for a in answers if isinstance(a, Problem)]
    if problems:
        sys.exit(f"error: {problems[0].file}: {problems[0].error} ({len(problems)} unreadable)")
    return (np.array([getattr(a, k) for a in answers]) for k in ("digit", "familiar", "score"))


def raw_signals(model, pixels: np.ndarray) -> np.ndarray:
    """The check's three signals of uint8 images (as predict decodes them), before standardisation."""
    x = to_inputs(pixels)
    features, top = model.signals(x)
    return model.familiarity.signals(x, features, top)


def combined(check, signals: np.ndarray, subset: tuple[str, ...]) -> np.ndarray:
    z = (signals - check.signal_mean) / check.signal_std
    return z[:, [SIGNALS.index(s) for s in subset]].max(axis=1)


def leave_one_source_out(check, percentile, val, foreign, test, right, sources) -> dict:
    """Each signal subset's figures per source, and the subset each held-out source gets when chosen on the others."""
    subsets = [s for r in range(1, 4) for s in itertools.combinations(SIGNALS, r)]
    familiar, test_flagged = {}, {}
    for subset in subsets:
        threshold = np.percentile(combined(check, val, subset), percentile)
        familiar[subset] = combined(check, foreign, subset) <= threshold
        test_flagged["+".join(subset)] = float((combined(check, test, subset) > threshold).mean())
    held_out = {}
    for source in sorted(set(sources)):
        others = sources != source
        allowed = [s for s in subsets if familiar[s][others].sum() >= MIN_FAMILIAR_SHARE * others.sum()]
        chosen = max(
            allowed or subsets, key=lambda s: figures(right[others], familiar[s][others])["right_among_familiar"] or 0
        )
        mine = sources == source
        held_out[source] = {"chosen": "+".join(chosen), **figures(right[mine], familiar[chosen][mine])}
    pooled = {"familiar": np.zeros(len(right), bool)}
    for source in held_out:  # every photo judged by the subset chosen without its source
        mine = sources == source
        pooled["familiar"][mine] = familiar[tuple(held_out[source]["chosen"].split("+"))][mine]
    per_subset = {
        "+".join(s): {src: figures(right[sources == src], familiar[s][sources == src]) for src in sorted(set(sources))}
        | {"all": figures(right, familiar[s]), "test_flagged": test_flagged["+".join(s)]}
        for s in subsets
    }
    return {"held_out": held_out, "held_out_all": figures(right, pooled["familiar"]), "subsets": per_subset}


def risk_coverage(score: np.ndarray, right: np.ndarray) -> list[dict]:
    """Photos accepted from the most familiar: right among the accepted against the share accepted."""
    order = np.argsort(score, kind="stable")
    hits = np.cumsum(right[order])
    return [
        {
            "accepted": k,
            "coverage": round(k / len(order), 6),
            "right_among_accepted": round(float(hits[k - 1] / k), 6),
            "score": round(float(score[order][k - 1]), 6),
        }
        for k in range(1, len(order) + 1)
    ]


def study(path: Path, models: tuple[str, ...]) -> dict:
    prepared = load_prepared(paths.PREPARED)
    test_idx = load_split(paths.SPLIT, len(prepared.labels))["test"]
    _, _, val_pixels, _ = load_train_val()
    results = {"photos": str(path), "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        files, labels, sources = load_photos(path, Path(scratch) / "photos")
        test_files = write_photos(Path(scratch) / "test", prepared.pixels[test_idx])
        for name in models:
            model_file = paths.model_path(name)
            if not model_file.is_file():
                continue
            model = load_model(model_file)
            percentile = percentile_for(model_file)
            digit, familiar, score = through_predict(model_file, files, percentile)
            t_digit, t_familiar, _ = through_predict(model_file, test_files, percentile)
            right, t_right = digit == labels, t_digit == prepared.labels[test_idx]
            decoded = np.stack([decode_image(f, model.arch.image_size) for f in files])  # predict's decoding
            with torch.inference_mode():
                loso = leave_one_source_out(
                    model.familiarity, percentile, raw_signals(model, val_pixels), raw_signals(model, decoded),
                    raw_signals(model, prepared.pixels[test_idx]), right, sources,
                )  # fmt: skip
            results["models"][name] = {
                "percentile": percentile,
                "test": figures(t_right, t_familiar),
                "sources": {s: figures(right[sources == s], familiar[sources == s]) for s in sorted(set(sources))},
                "all": figures(right, familiar),
                "leave_one_source_out": loso,
                "risk_coverage": risk_coverage(score, right),
            }
    return results


def pct(value, interval=None) -> str:
    if value is None:
        return "-"
    text = f"{value:.1%}"
    return text + (f" ({interval[0]:.0%}-{interval[1]:.0%})" if interval and interval[0] is not None else "")


def table(results: dict) -> str:
    """The markdown table for studies/README.md."""
    lines = [
        "| model | photos | n | right | called familiar | right among familiar (95% interval) "
        "| held out: chosen signals, right among familiar |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        held = r["leave_one_source_out"]["held_out"]
        rows = [("test part", r["test"], None), *((s, f, held[s]) for s, f in r["sources"].items())]
        rows.append(
            ("foreign, all", r["all"], {"chosen": "(each source's own)", **r["leave_one_source_out"]["held_out_all"]})
        )
        for label, f, h in rows:
            held_text = (
                ""
                if h is None
                else f"{h['chosen']}: {pct(h['right_among_familiar'], h['right_among_familiar_ci95'])} "
                f"of {h['familiar']}"
            )
            familiar = f"{pct(f['familiar_share'])} ({f['familiar']})"
            lines.append(
                f"| {name} | {label} | {f['photos']} | {pct(f['right'])} | {familiar} | "
                f"{pct(f['right_among_familiar'], f['right_among_familiar_ci95'])} | {held_text} |"
            )
    sources = list(next(iter(results["models"].values()))["sources"])
    lines += [
        "",
        "Every combination of the check's signals (the stored check uses all three), at the same percentile: "
        "test part flagged; per source and in all, photos called familiar and right among them.",
        "",
        f"| model | signals | test flagged | {' | '.join(sources)} | all (95% interval) |",
        "|---|---|---|" + "---|" * (len(sources) + 1),
    ]
    for name, r in results["models"].items():
        for subset, f in r["leave_one_source_out"]["subsets"].items():
            cells = [f"{pct(f[s]['right_among_familiar'])} of {f[s]['familiar']}" for s in r["sources"]]
            every = pct(f["all"]["right_among_familiar"], f["all"]["right_among_familiar_ci95"])
            every += f" of {f['all']['familiar']}"
            lines.append(f"| {name} | {subset} | {pct(f['test_flagged'])} | {' | '.join(cells)} | {every} |")
    return "\n".join(lines)


def write_outputs(results: dict, out: Path) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    curves = {name: r.pop("risk_coverage") for name, r in results["models"].items()}
    (out / "foreign.json").write_text(json.dumps(results, indent=1) + "\n")
    with open(out / "foreign_risk_coverage.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["model", "accepted", "coverage", "right_among_accepted", "score"])
        writer.writeheader()
        for name, rows in curves.items():
            writer.writerows({"model": name, **row} for row in rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in curves.items():
        line = ax.plot([r["coverage"] for r in rows], [r["right_among_accepted"] for r in rows], label=name)
        at = results["models"][name]["all"]
        if at["familiar"]:
            ax.plot(at["familiar_share"], at["right_among_familiar"], "o", color=line[0].get_color(),
                    label=f"{name}: its threshold")  # fmt: skip
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("share of the photos accepted (most familiar first)")
    ax.set_ylabel("right among the accepted")
    ax.set_title(f"photos from elsewhere ({Path(results['photos']).name}): risk against coverage", fontsize=10)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "foreign_risk_coverage.png", dpi=100)
    plt.close(fig)


def smoke_photos(folder: Path) -> Path:
    """A tiny folder of photos made from the test part, half on a darkened wall, at twice the size, as JPEG."""
    from PIL import Image

    from signdigits.reporting.familiarity_shifts import shifted

    prepared = load_prepared(paths.PREPARED)
    idx = load_split(paths.SPLIT, len(prepared.labels))["test"][:20]
    pixels = prepared.pixels[idx]
    pixels[::2] = shifted("dark_background", pixels[::2])
    for i, (image, digit) in enumerate(zip(pixels, prepared.labels[idx], strict=True)):
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
        side = 2 * image.shape[0]
        Image.fromarray(image).resize((side, side)).convert("RGB").save(folder / str(digit) / f"{i}.jpg")
    return folder


def replace_table(readme: Path, text: str) -> None:
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        sys.exit(f"error: {readme}: no {BEGIN} ... {END} markers to write the table between")
    head, rest = content.split(BEGIN, 1)
    readme.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "path", type=Path, help="an npz like foreign_dev.npz, or a folder of 0/..9/; with --smoke: where to write"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="make a tiny folder of photos at PATH from the test part, and study it"
    )
    parser.add_argument("--out", type=Path, default=Path("studies"), help="where the JSON, CSV and PNG go")
    parser.add_argument("--readme", type=Path, help="write the table between this script's markers in this file")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    path = smoke_photos(args.path) if args.smoke else args.path
    if not path.exists():
        sys.exit(f"error: {path}: no such file or folder")
    results = study(path, tuple(args.models))
    if not results["models"]:
        sys.exit(f"error: none of {', '.join(args.models)} is trained here (models/): run `dvc repro` first")
    write_outputs(results, args.out)
    text = table(results)
    print(text)
    if args.readme:
        replace_table(args.readme, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
