"""Predict the digit of image files with the final model, preprocessed exactly as in training.

    python -m signdigits.predict photo1.jpg photo2.png [--model models/train_best.pt]

Prints `path<TAB>digit<TAB>probability` per image. A file that is not an image is reported on
stderr by name and the others are still answered; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from signdigits.core import paths
from signdigits.core.errors import PipelineError
from signdigits.core.kernels import MODES, pin_cpu_kernels


def predict_files(model_file: Path, images: list[Path]) -> tuple[list[tuple[Path, int, float]], list[str]]:
    """(path, digit, probability) for each readable image, and one error message per unreadable one."""
    import numpy as np
    import torch

    from signdigits.core.data import decode_image
    from signdigits.training.model import load_model

    model = load_model(model_file)
    answers, errors, pixels = [], [], []
    for path in images:
        try:
            pixels.append(decode_image(path, model.arch.image_size))
            answers.append(path)
        except PipelineError as e:
            errors.append(str(e))
    if not answers:
        return [], errors
    x = torch.from_numpy(np.stack(pixels).reshape(len(pixels), -1)).float() / 255.0
    with torch.inference_mode():
        probabilities = model(x).softmax(dim=1)
    best = probabilities.max(dim=1)
    predictions = [
        (path, model.classes[int(i)], float(p)) for path, i, p in zip(answers, best.indices, best.values, strict=True)
    ]
    return predictions, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="signdigits-predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="JPEG or PNG files, any size or colour mode")
    parser.add_argument("--model", type=Path, default=paths.model_path(paths.FINAL_MODEL), help="model file")
    parser.add_argument("--cpu-kernels", choices=MODES, default="portable", help="as runtime.cpu_kernels")
    args = parser.parse_args(argv)
    pin_cpu_kernels(args.cpu_kernels)
    try:
        predictions, errors = predict_files(args.model, args.images)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, digit, probability in predictions:
        print(f"{path}\t{digit}\t{probability:.4f}")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
