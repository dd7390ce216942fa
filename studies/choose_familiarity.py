"""Choose how the familiarity check combines its distances, on validation photos, never the test part.

Why: the first check scored only what the network sees (each image standardised), so it could not
see exposure, and blur hid in it: evaluate's under-exposed and blurred test photos were flagged less
often than the clean ones. This measures candidate scores on shifted copies of the validation photos.

Proxies: evaluate's seven shifts (reporting/familiarity_shifts.py) applied to the validation photos, and
thirteen other transforms a camera or another collection could produce (milder exposure and blur,
other backgrounds, framing, compression), so that the choice does not fit evaluate's seven alone.

For each candidate, with the threshold the pipeline uses (familiarity.percentile of the validation
scores): the share of each proxy flagged; of the final model's wrong answers on all proxies, the
share flagged (caught); of its right answers, the share flagged (the cost: a person told not to
trust a right answer).

Choice: among candidates that flag at least MIN_FLAGGED of each of evaluate's seven shifts, the one
that flags the fewest right answers.

Run from the repository root after `dvc repro train_best` (it reads the arrays and the final model:
its network's answers and its check; about 10 s):

    PYTHONPATH=src python studies/choose_familiarity.py [--out studies/familiarity_search.json]

It prints the table and writes it to --out (CI's smoke run: in a tiny workspace, --out to a temporary file).
"""

from signdigits.core.kernels import pin_cpu_kernels

pin_cpu_kernels("portable")  # before torch is imported: the kernels the pipeline's results are made with

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

from signdigits.core import paths  # noqa: E402
from signdigits.core.data import load_train_val  # noqa: E402
from signdigits.core.params import load_params  # noqa: E402
from signdigits.reporting.familiarity_shifts import SHIFTS, on_wall, shifted, smaller_in_frame  # noqa: E402
from signdigits.training.familiarity import photo_statistics  # noqa: E402
from signdigits.training.inputs import to_inputs  # noqa: E402
from signdigits.training.model_file import load_model  # noqa: E402

MIN_FLAGGED = 0.9
OUT = Path("studies/familiarity_search.json")


def _each(pixels: np.ndarray, transform: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(transform(Image.fromarray(p))) for p in pixels])


def _zoomed(pixels: np.ndarray, scale: float) -> np.ndarray:
    """The camera closer: the centre 1 / scale of the photo, at full size."""
    size = pixels.shape[1]
    crop = round(size * (1 - 1 / scale) / 2)
    return _each(pixels[:, crop:-crop, crop:-crop], lambda i: i.resize((size, size), Image.Resampling.LANCZOS))


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=10)
    return Image.open(buffer)


def other_proxies(pixels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Thirteen transforms beside evaluate's seven, as float images on 0-255."""
    x = pixels.astype(np.float64)
    texture = _each(rng.integers(0, 256, pixels.shape, dtype=np.uint8), lambda i: i.filter(ImageFilter.GaussianBlur(1)))
    return {
        "brighter_gamma_0.5": 255 * (x / 255) ** 0.5,
        "dimmer_0.55": x * 0.55,
        "brighter_1.6": x * 1.6,
        "low_contrast_0.4": 128 + (x - 128) * 0.4,
        "blur_radius_1.2": _each(pixels, lambda i: i.filter(ImageFilter.GaussianBlur(1.2))),
        "noise_sd_20": x + rng.normal(0, 20, x.shape),
        "rotated_180": np.rot90(pixels, 2, axes=(1, 2)),
        "scale_0.7": smaller_in_frame(pixels, 0.7),
        "zoom_1.5": _zoomed(pixels, 1.5),
        "off_centre_6px": np.roll(pixels, (6, 6), axis=(1, 2)),
        "textured_wall": on_wall(x, texture),
        "grey_wall": on_wall(x, 128.0),
        "jpeg_quality_10": _each(pixels, _jpeg),
    }


def candidate_scores(terms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each candidate from the terms: z-scored logs of the three distances, and each photo statistic's z."""
    pca, reconstruction, photo = terms["mahalanobis"], np.abs(terms["reconstruction"]), terms["photo_distance"]
    statistics = np.abs(terms["photo_statistics"])  # (n, 3)
    network_input = pca + reconstruction
    return {
        "network input only (before)": network_input,
        "+ photo distance (as built)": network_input + photo,
        "+ photo distance, not logged": network_input + terms["photo_distance_unlogged"],
        "+ sum of photo |z|": network_input + statistics.sum(axis=1),
        "+ largest photo |z|": network_input + statistics.max(axis=1),
        "largest of all terms": np.maximum.reduce([pca, reconstruction, *statistics.T]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    params = load_params(paths.PARAMS)
    train, _, val, val_labels = load_train_val()
    model = load_model(paths.model_path(paths.FINAL_MODEL))
    check = model.familiarity.pixels  # the pixel score, fitted by train_best on the same training part
    train_statistics = photo_statistics(to_inputs(train))
    mean, std = train_statistics.mean(axis=0), train_statistics.std(axis=0)

    def terms(pixels: np.ndarray) -> dict[str, np.ndarray]:
        x = to_inputs(pixels)
        distances = check.distances(x)
        z = (distances - check.log_mean) / check.log_std
        return {
            "mahalanobis": z[:, 0],
            "reconstruction": z[:, 1],
            "photo_distance": z[:, 2],
            "photo_distance_unlogged": np.exp(distances[:, 2]),
            "photo_statistics": (photo_statistics(x) - mean) / std,
        }

    def right(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(to_inputs(pixels)).argmax(dim=1).numpy() == val_labels

    proxies = {name: shifted(name, val) for name in SHIFTS}
    proxies |= {
        name: np.clip(np.rint(images), 0, 255).astype(np.uint8)
        for name, images in other_proxies(val, np.random.default_rng(0)).items()
    }
    clean = candidate_scores(terms(val))
    assert np.allclose(clean["+ photo distance (as built)"], check.val_scores), "the check's pixel score changed"
    shifted_scores = {name: candidate_scores(terms(images)) for name, images in proxies.items()}
    answers_right = {name: right(images) for name, images in proxies.items()}
    rows = []
    for candidate, clean_scores in clean.items():
        threshold = np.percentile(clean_scores, params.familiarity.percentile)
        flagged = {name: scores[candidate] > threshold for name, scores in shifted_scores.items()}
        all_flagged, all_right = np.concatenate(list(flagged.values())), np.concatenate(list(answers_right.values()))
        rows.append({
            "candidate": candidate,
            "min_flagged_of_evaluate_shifts": round(min(float(flagged[name].mean()) for name in SHIFTS), 4),
            "wrong_answers_flagged": round(float(all_flagged[~all_right].mean()), 4),
            "right_answers_flagged": round(float(all_flagged[all_right].mean()), 4),
            "flagged": {name: round(float(f.mean()), 4) for name, f in flagged.items()},
        })  # fmt: skip
    eligible = [row for row in rows if row["min_flagged_of_evaluate_shifts"] >= MIN_FLAGGED]
    chosen = min(eligible, key=lambda row: row["right_answers_flagged"])["candidate"] if eligible else None
    accuracy = {name: round(float(r.mean()), 4) for name, r in answers_right.items()}
    print(f"{'candidate':30s} {'min of 7':>8s} {'wrong flagged':>13s} {'right flagged':>13s}")
    for row in rows:
        print(f"{row['candidate']:30s} {row['min_flagged_of_evaluate_shifts']:8.3f} "
              f"{row['wrong_answers_flagged']:13.3f} {row['right_answers_flagged']:13.3f}")  # fmt: skip
    print(f"chosen: {chosen} (at least {MIN_FLAGGED:.0%} of each of evaluate's shifts, fewest right answers flagged)")
    table = {"chosen": chosen, "final_model_accuracy": accuracy, "candidates": rows}
    args.out.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
