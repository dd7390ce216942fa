"""predict on many photos: peak memory and time, at 4,000 and at 40,000 photos (memory must not grow with them).

    python benchmarks/predict_memory.py [--photos 4000,40000] [--model models/train_best.pt] [--raw data/raw]
    python benchmarks/predict_memory.py --photos 20 --model TINY.pt   # CI's smoke run

Synthesizes each folder in a temporary directory from the shipped photos: every synthetic photo is
a hard link to one of the 2,062 shipped JPEGs (real files that predict decodes one by one, at no disk
cost), under its own name. Then runs `python -m signdigits.predict FOLDER --json` in a fresh process
per size, its output thrown away, and reads the process's peak resident memory (ru_maxrss from
wait4) and its wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_folder(folder: Path, count: int, raw: Path = REPO / "data/raw") -> Path:
    sources = sorted(raw.glob("*/*.JPG"))
    folder.mkdir()
    for i in range(count):
        os.link(sources[i % len(sources)], folder / f"IMG_{i:06d}.JPG")
    return folder


def measure(folder: Path, model: Path) -> dict:
    command = [sys.executable, "-m", "signdigits.predict", str(folder), "--json", "--model", str(model)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):
        raise SystemExit(f"predict exited {code} on {folder}")
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024}  # ru_maxrss: KiB on Linux


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default="4000,40000", help="folder sizes to measure, comma-separated")
    parser.add_argument("--model", type=Path, default=REPO / "models/train_best.pt")
    parser.add_argument("--raw", type=Path, default=REPO / "data/raw", help="the photos to link to")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as scratch:
        for count in map(int, args.photos.split(",")):
            folder = make_folder(Path(scratch) / f"photos_{count}", count, args.raw)
            result = measure(folder, args.model)
            print(f"{count:>7,} photos: peak memory {result['peak_mb']:.0f} MB, {result['seconds']:.1f} s "
                  f"({count / result['seconds']:.0f} photos/s)")  # fmt: skip


if __name__ == "__main__":
    main()
