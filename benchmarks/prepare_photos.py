"""prepare at phone-photo size: photos per second through prepare's decoding, and what JPEG draft would add.

    PYTHONPATH=src python benchmarks/prepare_photos.py [--photos 60] [--rounds 3] [--raw data/raw]
    PYTHONPATH=src python benchmarks/prepare_photos.py --photos 2 --rounds 1 --raw TINY/data/raw   # CI's smoke run

Makes `--photos` JPEGs of 4032x3024 (what a phone takes) in a temporary folder, from shipped photos
upscaled with jitter (turn, shift, brightness, noise), and never keeps them. Then times
core.data._decode_all on them in four ways, interleaved `--rounds` times (medians): one process
(before), prepare's process pool of the usable cores (after), and each with `prepare.jpeg_draft:
true` (Pillow's JPEG draft mode: decoding at 1/2..1/8 scale, still 4x the target size). Draft is
off by default: it changes up to 65 pixels by one level on each of the three shipped photos of
3024x3024, which would change data/prepared and every number after it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from signdigits.core import data
from signdigits.core.params import load_params

REPO = Path(__file__).resolve().parents[1]
PHONE = (4032, 3024)
WAYS = {  # name -> (prepare's pool from this many images, prepare.jpeg_draft)
    "one process (before)": (10**9, False),
    "process pool (after, prepare)": (1, False),
    "one process, jpeg_draft": (10**9, True),
    "process pool, jpeg_draft": (1, True),
}


def make_photos(folder: Path, count: int, seed: int = 0, raw: Path = REPO / "data/raw") -> list[Path]:
    """`count` phone-size JPEGs from shipped photos: upscaled, shifted, brightened and noised at random."""
    rng = np.random.default_rng(seed)
    sources = sorted(raw.glob("*/*"))
    paths = []
    for i, source in enumerate(rng.choice(sources, size=count, replace=False)):
        with Image.open(source) as image:
            small = image.convert("RGB").rotate(rng.uniform(-8, 8), translate=tuple(rng.integers(-4, 5, 2)))
        big = np.asarray(small.resize(PHONE, Image.Resampling.BICUBIC), dtype=np.float32) * rng.uniform(0.8, 1.2)
        big += rng.normal(0, 4, size=(PHONE[1] // 8, PHONE[0] // 8, 1)).repeat(8, 0).repeat(8, 1)
        path = folder / f"IMG_{i:04d}.JPG"
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path, quality=92)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--raw", type=Path, default=REPO / "data/raw", help="the shipped photos (default: data/raw)")
    args = parser.parse_args()
    size = load_params(REPO / "params.yaml").prepare.image_size
    seconds = {name: [] for name in WAYS}
    shipped = {name: [] for name in list(WAYS)[:2]}
    raw = [path for path, _ in data.list_raw_images(args.raw)]
    with tempfile.TemporaryDirectory(prefix="signdigits-photos-") as tmp:
        paths = make_photos(Path(tmp), args.photos, raw=args.raw)
        arrays = {}
        for _ in range(args.rounds):
            for name, (pool_from, draft) in list(WAYS.items())[:2]:  # the shipped photos, as prepare reads them
                data._POOL_MIN_IMAGES = pool_from
                started = time.perf_counter()
                data._decode_all(raw, size, draft)
                shipped[name].append(time.perf_counter() - started)
            for name, (pool_from, draft) in WAYS.items():
                data._POOL_MIN_IMAGES = pool_from
                started = time.perf_counter()
                arrays[name] = np.stack([pixels for pixels, _ in data._decode_all(paths, size, draft)])
                seconds[name].append(time.perf_counter() - started)
    before = statistics.median(seconds[next(iter(WAYS))])
    cores = len(os.sched_getaffinity(0))
    print(
        f"{args.photos} photos of {PHONE[0]}x{PHONE[1]} -> {size}x{size}, {cores} usable cores, median of {args.rounds}"
    )
    for name, times in seconds.items():
        t = statistics.median(times)
        print(f"  {name:<36} {args.photos / t:6.1f} photos/s  {before / t:5.2f}x")
    print(
        f"the {len(raw)} shipped photos: " + ", ".join(f"{n} {statistics.median(t):.2f} s" for n, t in shipped.items())
    )
    full, drafted = arrays["one process (before)"], arrays["process pool, jpeg_draft"]
    print(f"  pool == one process: {np.array_equal(full, arrays['process pool (after, prepare)'])}")
    print(f"  draft vs full decode: mean |difference| {np.abs(full.astype(int) - drafted).mean():.2f} levels of 255")


if __name__ == "__main__":
    main()
