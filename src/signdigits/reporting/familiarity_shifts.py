"""evaluate's measure of the familiarity check: how often it flags the clean test photos, and how
well it tells them from shifted copies a camera could plausibly take (ROC AUC), with the model's
accuracy on each shift, so the cost of an unflagged shift is visible.

The dataset's photos share one setting (plain light wall, centred hand, one camera distance); on
photos from other collections the final model was right on about 15%. No such photos ship here,
so the stage makes its own shifted copies of the test photos.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from signdigits.core import paths
from signdigits.core.files import csv_text, rounded, write_text_atomic
from signdigits.reporting.metrics import roc_auc
from signdigits.training.engine import accuracy
from signdigits.training.inputs import to_inputs
from signdigits.training.model import Classifier

SHIFT_COLUMNS = ("shift", "images", "flagged", "roc_auc", "accuracy", "right_among_familiar")  # the last: issue 32


def _dark_background(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The light wall darkened to a quarter."""
    return on_wall(pixels, pixels * 0.25)


def on_wall(pixels: np.ndarray, wall_pixels) -> np.ndarray:
    """Images (n, size, size) with the wall replaced: pixels brighter than their image's mean count as wall."""
    return np.where(pixels > pixels.mean(axis=(1, 2), keepdims=True), wall_pixels, pixels)


def _underexposed(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A third of the light, shadows crushed by the camera's tone curve."""
    return 255 * (pixels / 255) ** 2.2 * 0.35


def _overexposed(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two and a half times the light: the wall and much of the hand clip to white."""
    return pixels * 2.5


def _blurred(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Out of focus or shaken: a Gaussian blur of a tenth of the image's side."""
    from PIL import Image, ImageFilter

    radius = pixels.shape[1] / 10
    return np.stack([np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(radius))) for p in pixels])


def _small_hand(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The camera twice as far: the photo at half size, centred on its own wall colour."""
    return smaller_in_frame(pixels, 0.5)


def smaller_in_frame(pixels: np.ndarray, scale: float) -> np.ndarray:
    """uint8 images (n, size, size) at `scale` (< 1) of their size, centred on their median border colour."""
    from PIL import Image

    size = pixels.shape[1]
    inner = round(size * scale)
    out = np.empty_like(pixels)
    for i, p in enumerate(pixels):
        border = np.concatenate([p[0], p[-1], p[:, 0], p[:, -1]])
        canvas = Image.new("L", (size, size), int(np.median(border)))
        canvas.paste(Image.fromarray(p).resize((inner, inner), Image.Resampling.LANCZOS), ((size - inner) // 2,) * 2)
        out[i] = np.asarray(canvas)
    return out


def _noisy(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """High-ISO sensor noise: Gaussian, standard deviation 40 of 255."""
    return pixels + rng.normal(0.0, 40.0, size=pixels.shape)


def _rotated(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The phone held sideways: a quarter turn."""
    return np.rot90(pixels, k=1, axes=(1, 2))


SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "dark_background": _dark_background,
    "underexposed": _underexposed,
    "overexposed": _overexposed,
    "blurred": _blurred,
    "small_hand": _small_hand,
    "sensor_noise": _noisy,
    "rotated_90": _rotated,
}


def shifted(name: str, pixels: np.ndarray, seed: int = 0) -> np.ndarray:
    """One shift of uint8 images (n, size, size), as uint8."""
    out = SHIFTS[name](pixels.astype(np.float64) if name != "blurred" else pixels, np.random.default_rng(seed))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclass
class FamiliarityResult:
    rows: list[dict]  # the clean test part first, then one row per shift
    headline: dict  # for metrics/evaluate.json
    examples: np.ndarray  # (1 + shifts, size, size): one test photo, clean then shifted, for the figure


def measure_familiarity(
    model: Classifier, pixels: np.ndarray, digits: np.ndarray, percentile: float
) -> FamiliarityResult:
    """Share flagged, ROC AUC against the clean photos, the model's accuracy, and its accuracy on the photos
    the check calls familiar, clean and per shift.

    pixels: the test photos, uint8 (n, size, size); digits: their true digits.
    """
    check = model.familiarity
    threshold = check.threshold(percentile)

    def measure(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Familiarity scores and the digits the model answers."""
        logits, scores = model.answer(to_inputs(images))
        return scores, np.array(model.classes)[logits.argmax(dim=1).cpu().numpy()]

    def row(name: str, scores: np.ndarray, answers: np.ndarray, auc: float | str) -> dict:
        familiar = scores <= threshold
        among = accuracy(answers[familiar], digits[familiar]) if familiar.any() else ""  # empty: none familiar
        # rounded as the CSV keeps them, so the report built from these rows is the one its CSV rebuilds
        return rounded({"shift": name, "images": len(scores), "flagged": float((~familiar).mean()), "roc_auc": auc,
                        "accuracy": accuracy(answers, digits), "right_among_familiar": among})  # fmt: skip

    clean_scores, clean_answers = measure(pixels)
    rows, examples = [row("clean", clean_scores, clean_answers, "")], [pixels[0]]
    for name in SHIFTS:
        images = shifted(name, pixels)
        scores, answers = measure(images)
        is_shifted = np.r_[np.zeros(len(clean_scores), bool), np.ones(len(scores), bool)]
        rows.append(row(name, scores, answers, roc_auc(is_shifted, np.r_[clean_scores, scores])))
        examples.append(images[0])
    headline = {
        "test_flagged": rows[0]["flagged"],
        "mean_shift_roc_auc": float(np.mean([row["roc_auc"] for row in rows[1:]])),
    }
    return FamiliarityResult(rows, headline, np.stack(examples))


def write_shifts_csv(result: FamiliarityResult, name: str = paths.FINAL_MODEL) -> Path:
    return write_text_atomic(paths.familiarity_shifts_path(name), csv_text(result.rows, SHIFT_COLUMNS))
