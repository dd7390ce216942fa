"""Photos from elsewhere as predict sees them, and how often a model reads them right, per source.

    PYTHONPATH=src python studies/foreign_photos.py PATH [--model models/train_cnn.pt]

PATH: an npz like ../shared/foreign-dev/foreign_dev.npz (arrays images, labels, source). Each
photo is written as a PNG and read back by `core.data.decode_image` at the model's input size:
the same decoding, crop and resizing as `python -m signdigits.predict`. Nothing here is trained
on these photos; they are kept out of the repository (their README says why).
"""

from __future__ import annotations

from signdigits.core.kernels import pin_convolutions, pin_cpu_kernels

pin_cpu_kernels("portable")  # before numpy and torch are imported, as predict does

import argparse  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from signdigits.core.data import decode_image  # noqa: E402


@dataclass(frozen=True)
class Foreign:
    pixels: np.ndarray  # (n, image_size, image_size) uint8, as predict decodes them
    labels: np.ndarray  # (n,) digits
    sources: np.ndarray  # (n,) source names


def load_foreign(path: str | Path, image_size: int) -> Foreign:
    """The npz's photos through predict's decoding (`decode_image`) at `image_size` pixels a side."""
    with np.load(path, allow_pickle=False) as arrays:
        images, labels, sources = arrays["images"], arrays["labels"], arrays["source"]
    with tempfile.TemporaryDirectory() as folder:
        pixels = []
        for i, image in enumerate(images):
            file = Path(folder) / f"{i}.png"
            Image.fromarray(image).save(file)
            pixels.append(decode_image(file, image_size))
    return Foreign(np.stack(pixels), labels.astype(np.int64), sources.astype(str))


def right_per_source(predictions: np.ndarray, foreign: Foreign) -> dict[str, float]:
    """The share right per source and in all ("all"), for predicted digits in the photos' order."""
    right = np.asarray(predictions) == foreign.labels
    shares = {str(s): float(right[foreign.sources == s].mean()) for s in np.unique(foreign.sources)}
    return {**shares, "all": float(right.mean())}


def predict_digits(model, foreign: Foreign) -> np.ndarray:
    """The model's digit for each photo, as predict computes it (to_inputs, then the model)."""
    import torch

    from signdigits.training.inputs import to_inputs

    with torch.inference_mode():
        indices = model(to_inputs(foreign.pixels)).argmax(dim=1).numpy()
    return np.asarray(model.classes)[indices]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="an npz of photos (images, labels, source)")
    parser.add_argument("--model", type=Path, default=Path("models/train_cnn.pt"))
    args = parser.parse_args()
    pin_convolutions("portable")
    from signdigits.training.model_file import load_model

    model = load_model(args.model)
    foreign = load_foreign(args.path, model.arch.image_size)
    for source, share in right_per_source(predict_digits(model, foreign), foreign).items():
        print(f"{source:<8} {np.sum(foreign.sources == source) if source != 'all' else len(foreign.labels):5d} "
              f"photos  {100 * share:5.1f}% right")  # fmt: skip


if __name__ == "__main__":
    main()
