"""Raw photos to arrays (prepare), and the train/val/test split grouped by signer (split).

Neither imports torch: these stages start fast and run without it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from signdigits.core import lifeline, paths
from signdigits.core.errors import PipelineError
from signdigits.core.files import read_arrays, write_arrays
from signdigits.core.limits import usable_cores
from signdigits.core.params import PrepareParams, SplitParams
from signdigits.core.workspace import DvcIgnore

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")
DIGITS = tuple(range(10))
_NUMBER = re.compile(r"(\d+)(?!.*\d)")  # the last number in a file name: IMG_1118.JPG -> 1118


DRAFT_MARGIN = 4  # JPEG draft decodes at 1/2..1/8 scale, but never below this many times the target size


def decode_image(path: Path, image_size: int, jpeg_draft: bool = False) -> np.ndarray:
    """Any image file Pillow reads (JPEG, PNG, RGBA, CMYK, grayscale, any size) -> uint8 square.

    jpeg_draft: a large JPEG is decoded at a reduced scale (Pillow's draft mode), still at least
    DRAFT_MARGIN times the target size: 6-12x faster for phone photos, pixels a level apart from the
    full decode (so off by default: the committed arrays are the full decode's).

    A file of several frames (an animated GIF, PNG or WebP, a multi-page TIFF) is refused by name:
    which frame is the photo is not for this function to guess.

    Transparent pixels become white, the EXIF orientation is applied, 16-bit and float pixels are
    scaled by their format's range, a non-square image is centre-cropped. Raises PipelineError naming
    the file if it is not a complete image (or not a regular file, which is never opened).
    """
    from PIL import Image, ImageOps

    _require_regular_file(path)
    try:
        # below the error size (twice the warning size) an image is read, without a warning's dump
        with (
            warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning),
            Image.open(path) as image,
        ):
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and image.format != "MPO":  # a phone's MPO JPEG: the photo, then its previews
                raise PipelineError(
                    f"{path}: holds {frames} frames (an animated or multi-page {image.format}), not one photo; "
                    "save the frame you mean as an image of its own"
                )
            if jpeg_draft and image.format == "JPEG":
                image.draft(image.mode, (DRAFT_MARGIN * image_size, DRAFT_MARGIN * image_size))
            image.load()  # decodes now, so a truncated file fails here and not later
            image = _as_8_bits(ImageOps.exif_transpose(image))
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            gray = image.convert("L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise PipelineError(f"{path}: not a readable image ({e})") from None
    side = min(gray.size)
    left, top = (gray.width - side) // 2, (gray.height - side) // 2
    square = gray.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((image_size, image_size), Image.Resampling.LANCZOS), dtype=np.uint8)


def _require_regular_file(path: Path) -> None:
    """A FIFO, device or socket would block or never end: refused before anything opens it."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise PipelineError(f"{path}: not a readable image ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        raise PipelineError(f"{path}: not a regular file (a FIFO, device or socket is not read)")


def _as_8_bits(image):
    """16-bit and float grayscale to 8 bits by the format's range, not the image's (Pillow's convert clips at 255).

    I;16*: 0..65535 (divided by 257, so a 16-bit copy reads like its 8-bit original); I: the same
    16-bit range, the depth PNG, PGM and TIFF files open with in that mode; F: 0..1, float images' range.
    """
    from PIL import Image

    if not (image.mode.startswith("I;16") or image.mode in ("I", "F")):
        return image
    full_scale = 1.0 if image.mode == "F" else 65535.0
    scaled = np.asarray(image, dtype=np.float64) * (255.0 / full_scale)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # uint8: mode L


def list_raw_images(raw_dir: Path) -> list[tuple[Path, int]]:
    """(path, digit) for every file in raw_dir/<digit>/, checking the layout first."""
    if not raw_dir.is_dir():
        raise PipelineError(f"{raw_dir}: folder not found; it should hold one folder per digit, 0 to 9")
    ignore = DvcIgnore(raw_dir)  # what DVC does not hash is not data (.DS_Store, Thumbs.db: see .dvcignore)
    folders = sorted(p for p in raw_dir.iterdir() if p.is_dir() and not ignore.ignores(p))
    if not folders:
        raise PipelineError(f"{raw_dir}: no digit folders; expected {raw_dir}/0 ... {raw_dir}/9 holding images")
    found = []
    for folder in folders:
        if not re.fullmatch(r"[0-9]", folder.name):
            raise PipelineError(f"{folder}: label folder is not a digit 0-9")
        # not only regular files: a FIFO or device here is a bad image, failed or skipped (on_bad_image)
        files = sorted(p for p in folder.iterdir() if not p.is_dir() and not ignore.ignores(p))
        if not files:
            raise PipelineError(f"{folder}: digit folder holds no images")
        found += [(path, int(folder.name)) for path in files]
    missing = sorted(set(DIGITS) - {digit for _, digit in found})
    if missing:
        raise PipelineError(
            f"{raw_dir}: no folder for digit {', '.join(map(str, missing))}; every digit 0-9 needs a folder of images"
        )
    return found


def recover_signers(files: list[str], labels: np.ndarray) -> np.ndarray:
    """Signer id per image, from file numbers (the rule the dataset's notes give; README, "Data and credit").

    Each signer's photos were taken in one sitting with consecutive numbers and the digits in
    order 0, 1, 2, ...; sorted by number, a new signer starts wherever the digit stops increasing.
    A file without a number in its name is its own group.
    """
    numbers = [_NUMBER.search(Path(f).stem) for f in files]
    order = sorted(
        range(len(files)), key=lambda i: (numbers[i] is None, int(numbers[i][1]) if numbers[i] else 0, files[i])
    )
    signers = np.empty(len(files), dtype=np.int32)
    signer, previous_digit = -1, None
    for i in order:
        if numbers[i] is None or previous_digit is None or labels[i] <= previous_digit:
            signer += 1
        signers[i] = signer
        previous_digit = None if numbers[i] is None else labels[i]
    return signers


def prepare(raw_dir: Path, out_path: Path, params: PrepareParams) -> dict:
    """Decode every raw image; write pixels, labels, signers and file names; return the metrics."""
    entries = list_raw_images(raw_dir)
    pixels, labels, files, skipped = [], [], [], []
    decoded = _decode_all([path for path, _ in entries], params.image_size, params.jpeg_draft)
    for (path, digit), (array, error) in zip(entries, decoded, strict=True):
        if error is None:
            pixels.append(array)
        else:
            if params.on_bad_image == "fail":
                raise PipelineError(f"{error}\n(set prepare.on_bad_image: skip to leave such files out)")
            log.warning("skipped: %s", error)
            skipped.append(path.relative_to(raw_dir).as_posix())
            continue
        labels.append(digit)
        files.append(path.relative_to(raw_dir).as_posix())
    if not pixels:
        raise PipelineError(f"{raw_dir}: no readable images")
    labels = np.array(labels, dtype=np.int64)
    signers = recover_signers(files, labels)
    write_arrays(out_path, pixels=np.stack(pixels), labels=labels, signers=signers, files=np.array(files))
    counts = np.bincount(labels, minlength=10)
    return {
        "images": int(len(labels)),
        "images_per_digit": {str(d): int(counts[d]) for d in DIGITS},
        "signers": int(len(np.unique(signers))),
        "image_size": params.image_size,
        "skipped_files": len(skipped),
    }


def _decode_all(paths: list[Path], image_size: int, jpeg_draft: bool) -> list[tuple[np.ndarray | None, str | None]]:
    """(pixels, None) or (None, error) per path, in order; decoded in a pool of the usable cores when it pays."""
    cores = usable_cores()
    if cores < 2 or len(paths) < _POOL_MIN_IMAGES:
        return [_decode_or_error(path, image_size, jpeg_draft) for path in paths]
    with lifeline.process_pool(cores) as pool:  # the workers import PIL and numpy only
        chunk = -(-len(paths) // (cores * 8))
        n = len(paths)
        return list(pool.map(_decode_or_error, paths, [image_size] * n, [jpeg_draft] * n, chunksize=chunk))


_POOL_MIN_IMAGES = 256  # below this, starting the workers costs more than they save


def _decode_or_error(path: Path, image_size: int, jpeg_draft: bool) -> tuple[np.ndarray | None, str | None]:
    try:
        return decode_image(path, image_size, jpeg_draft), None
    except PipelineError as e:
        return None, str(e)


@dataclass(frozen=True)
class Prepared:
    pixels: np.ndarray  # (n, size, size) uint8
    labels: np.ndarray  # (n,) int64
    signers: np.ndarray  # (n,) int32
    files: np.ndarray  # (n,) str, relative to data/raw


def load_prepared(path: Path) -> Prepared:
    arrays = read_arrays(path, required=("pixels", "labels", "signers", "files"))
    return Prepared(arrays["pixels"], arrays["labels"].astype(np.int64), arrays["signers"], arrays["files"])


def select_digits(labels: np.ndarray, indices: np.ndarray, digits) -> tuple[np.ndarray, np.ndarray]:
    """The indices whose digit is one of `digits`, and each one's class index (its place in `digits`)."""
    digits = list(digits)
    kept = indices[np.isin(labels[indices], digits)]
    to_index = np.full(10, -1)
    to_index[digits] = np.arange(len(digits))
    return kept, to_index[labels[kept]]


def load_train_val(classes=DIGITS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training pixels and class indices, then validation ones: what every training stage and the sweep read."""
    prepared = load_prepared(paths.PREPARED)
    split = load_split(paths.SPLIT, len(prepared.labels))
    train, train_labels = select_digits(prepared.labels, split["train"], classes)
    val, val_labels = select_digits(prepared.labels, split["val"], classes)
    return prepared.pixels[train], train_labels, prepared.pixels[val], val_labels


def split_indices(labels: np.ndarray, signers: np.ndarray, params: SplitParams) -> dict[str, np.ndarray]:
    """Sorted index arrays per part, stratified by digit and (strategy signer) grouped by signer."""
    rng = np.random.default_rng(params.seed)
    fractions = np.array([params.train, params.val, params.test])
    if params.strategy == "random":
        groups = np.arange(len(labels))  # every image its own group: a plain stratified split
    else:
        groups = np.unique(signers, return_inverse=True)[1]
    n_groups = groups.max() + 1
    counts = np.zeros((n_groups, 10))
    np.add.at(counts, (groups, labels), 1)
    assignment = _assign_groups(counts, fractions, rng)
    part_of_image = assignment[groups]
    parts = {name: np.flatnonzero(part_of_image == p) for p, name in enumerate(PARTS)}
    empty = [name for name, idx in parts.items() if len(idx) == 0]
    if empty:
        source = f"{len(labels)} images" + (f" from {n_groups} signers" if params.strategy == "signer" else "")
        raise PipelineError(
            f"split: the {' and '.join(empty)} part{'s' if len(empty) > 1 else ''} would be empty: {source} "
            f"are too few for the fractions {params.train:g}/{params.val:g}/{params.test:g}; add images to data/raw"
        )
    return parts


def _assign_groups(counts: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Groups to parts so that every part's images per digit come as close as possible to its target.

    Greedy placement in a seeded random order, then local search: move one group, or swap two,
    whenever that lowers the squared distance to the targets, until nothing improves.
    """
    targets = fractions[:, None] * counts.sum(axis=0)[None, :]  # (parts, digits)
    order = rng.permutation(len(counts))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]  # big groups first
    totals = np.zeros_like(targets)
    assignment = np.empty(len(counts), dtype=np.int64)
    for g in order:
        cost = ((totals + counts[g] - targets) ** 2).sum(axis=1) - ((totals - targets) ** 2).sum(axis=1)
        p = int(np.argmin(cost))
        assignment[g] = p
        totals[p] += counts[g]

    def change(p: int, delta: np.ndarray) -> np.ndarray:
        """Cost change of adding each row of delta to part p."""
        return ((totals[p] + delta - targets[p]) ** 2).sum(axis=-1) - ((totals[p] - targets[p]) ** 2).sum()

    improved = True
    while improved:
        improved = False
        for g in order:
            p = assignment[g]
            for q in range(len(targets)):
                if q == p:
                    continue
                # move g from p to q, or swap it with every group h now in q
                in_q = np.flatnonzero(assignment == q)
                deltas = np.vstack([np.zeros(counts.shape[1]), counts[in_q]]) - counts[g]
                gain = change(p, deltas) + change(q, -deltas)
                best = int(np.argmin(gain))
                if gain[best] < -1e-9:
                    assignment[g] = q
                    totals[p] += deltas[best]
                    totals[q] -= deltas[best]
                    if best > 0:
                        assignment[in_q[best - 1]] = p
                    improved = True
                    break
    return assignment


def split_metrics(prepared: Prepared, parts: dict[str, np.ndarray], params: SplitParams) -> dict:
    """Sizes, images per digit per part, signers per part and the leakage audit."""
    signer_parts: dict[int, set] = {}
    image_parts: dict[bytes, set] = {}
    for name, idx in parts.items():
        for i in idx:
            signer_parts.setdefault(int(prepared.signers[i]), set()).add(name)
            digest = hashlib.sha256(prepared.pixels[i].tobytes()).digest()
            image_parts.setdefault(digest, set()).add(name)
    return {
        "strategy": params.strategy,
        "seed": params.seed,
        "sizes": {name: int(len(idx)) for name, idx in parts.items()},
        "images_per_digit": {
            name: {str(d): int(n) for d, n in enumerate(np.bincount(prepared.labels[idx], minlength=10))}
            for name, idx in parts.items()
        },
        "signers": {name: int(len(np.unique(prepared.signers[idx]))) for name, idx in parts.items()},
        "audit": {
            "signers_in_several_parts": sum(len(s) > 1 for s in signer_parts.values()),
            "identical_images_in_several_parts": sum(len(s) > 1 for s in image_parts.values()),
        },
    }


def write_split(path: Path, parts: dict[str, np.ndarray]) -> None:
    write_arrays(path, **parts)


def load_split(path: Path, n_images: int) -> dict[str, np.ndarray]:
    parts = read_arrays(path, required=PARTS)
    indices = np.concatenate([parts[name] for name in PARTS])
    if len(indices) and (indices.max() >= n_images or indices.min() < 0):
        raise PipelineError(f"{path}: indices do not match data/prepared; rerun `dvc repro split`")
    return {name: parts[name] for name in PARTS}
