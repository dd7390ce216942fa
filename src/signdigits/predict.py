"""Predict the digit of hand-sign photos, and say when a photo is unlike the training photos.

    python -m signdigits.predict photo.jpg more_photos/ [--model PATH|STAGE] [--percentile P] [--json]

Prints one tab-separated line per image: path, digit, probability, verdict. The verdict is
`familiar`, or `UNFAMILIAR` with the photo's score and the threshold: the model was trained on
photos of one setting (a hand centred on a plain light wall) and is mostly wrong on others, however
confident. A folder stands for the images directly inside it, sorted by name. `--json` prints the
same as one JSON document instead. Both say which model answered.

The model is `--model` (a model file, or a training stage's name such as train_cnn), else the most
accurate on the validation part (metrics/<stage>.json) of the repository's 10-digit models that carry
a familiarity check (train_best and train_cnn; ties go to train_best), in the repository around the
current folder (the first folder upwards holding dvc.yaml), else in the repository this package is
installed from. The threshold's percentile is `--percentile`, else `familiarity.percentile` of that
repository's params.yaml, else that key's default (core/params.py).

Exit codes: 0 every photo answered and familiar; 1 some files missing or unreadable (the others are
still answered); 2 nothing answered (no model, bad arguments or params); 3 every file read, but
some photos are unfamiliar. With both unreadable files and unfamiliar photos, 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from signdigits.core import paths
from signdigits.core.cli import run_command
from signdigits.core.errors import PipelineError
from signdigits.core.kernels import MODES, pin_convolutions, pin_cpu_kernels

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
EXIT_OK, EXIT_UNREADABLE, EXIT_ERROR, EXIT_UNFAMILIAR = 0, 1, 2, 3


@dataclass
class Answer:
    file: str
    digit: int
    probability: float
    score: float  # familiarity score: higher is farther from the training photos
    familiar: bool


@dataclass
class Problem:
    file: str
    error: str


def repository_roots() -> list[Path]:
    """Where to look for the model: the repository around the current folder, then the package's own."""
    roots = [folder for folder in (Path.cwd(), *Path.cwd().parents) if (folder / "dvc.yaml").is_file()][:1]
    package_root = Path(__file__).resolve().parents[2]  # src/signdigits/predict.py -> the repository
    if (package_root / "dvc.yaml").is_file() and package_root not in roots:
        roots.append(package_root)
    return roots


@dataclass
class Choice:
    """The model that answers: its file, and its stage and validation accuracy when predict chose it."""

    path: Path
    stage: str | None = None
    val_accuracy: float | None = None


def find_model(stage: str | None = None) -> Choice:
    """`stage`'s model in the first repository that has it, else the most accurate checked 10-digit model there."""
    tried = []
    for root in repository_roots():
        stages = [stage] if stage else [paths.FINAL_MODEL, *(n for n in paths.TRAINED_MODELS if n != paths.FINAL_MODEL)]
        candidates = _checked_models(root, stages, tried)
        if candidates:  # by validation accuracy; ties go to the final model
            return max(candidates, key=lambda c: (c.val_accuracy, c.stage == paths.FINAL_MODEL))
    where = ", ".join(map(str, tried)) if tried else "nothing (no dvc.yaml above the current folder)"
    which = stage or paths.FINAL_MODEL
    raise PipelineError(
        f"no model found; tried {where}. Run `dvc pull {which}` or `dvc repro {which}` in the "
        "repository, or pass --model PATH"
    )


def _checked_models(root: Path, stages, tried: list[Path]) -> list[Choice]:
    """The stages' model files in `root` that read 10 digits and carry a familiarity check, with their val accuracy."""
    from signdigits.core.files import read_json
    from signdigits.training.model_file import load_model

    found = []
    for stage in stages:
        path = (root / paths.model_path(stage)).resolve()
        tried.append(path)
        metrics = root / paths.metrics_path(stage)
        if not (path.is_file() and metrics.is_file()):
            continue
        model = load_model(path)
        if len(model.classes) == 10 and model.familiarity is not None:
            found.append(Choice(path, stage, float(read_json(metrics)["val"]["accuracy"])))
    return found


def choose_model(model: str | None) -> Choice:
    """--model as a file, as a stage name (its file in the repository), or absent (the best checked model)."""
    if model is None:
        return find_model()
    if model in paths.TRAINED_MODELS and not Path(model).exists():
        return find_model(model)
    return Choice(Path(model).resolve())


def describe_choice(choice: Choice) -> str:
    if choice.stage is None:
        return f"model: {choice.path}"
    return f"model: {choice.stage} ({choice.path}), validation accuracy {choice.val_accuracy:.2%}"


def percentile_for(model_file: Path) -> float:
    """familiarity.percentile of the params.yaml of the repository the model file lies in, else its default."""
    from signdigits.core.params import FamiliarityParams, load_params

    for folder in model_file.resolve().parents:
        if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
            return load_params(folder / "params.yaml", require=["familiarity.percentile"]).familiarity.percentile
    return FamiliarityParams().percentile


def expand(arguments: list[Path]) -> tuple[list[Path], list[Problem]]:
    """Files as given, folders as the images inside them (sorted); missing paths as problems."""
    images, problems = [], []
    for path in arguments:
        if path.is_dir():
            # not only regular files: a FIFO named like an image is reported (not a regular file), not skipped
            inside = sorted(p for p in path.iterdir() if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES)
            images += inside
            if not inside:
                problems.append(Problem(str(path), f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})"))
        elif path.exists():
            images.append(path)
        else:
            problems.append(Problem(str(path), "no such file"))
    return images, problems


def predict_files(model_file: Path, images: list[Path], percentile: float) -> tuple[list[Answer], list[Problem], float]:
    """An Answer per readable image, a Problem per unreadable one, and the familiarity threshold."""
    import numpy as np
    import torch

    from signdigits.core.data import decode_image
    from signdigits.training.inputs import to_inputs
    from signdigits.training.model_file import load_model

    model = load_model(model_file)
    if model.familiarity is None:
        raise PipelineError(
            f"{model_file}: this model has no familiarity check; use train_best or train_cnn (--model STAGE)"
        )
    threshold = model.familiarity.threshold(percentile)
    read, problems, pixels = [], [], []
    for path in images:
        try:
            pixels.append(decode_image(path, model.arch.image_size))
            read.append(path)
        except PipelineError as e:
            problems.append(Problem(str(path), str(e).removeprefix(f"{path}: ")))
    if not read:
        return [], problems, threshold
    x = to_inputs(np.stack(pixels))
    with torch.inference_mode():
        best = model(x).softmax(dim=1).max(dim=1)
    scores = model.familiarity.scores(x)
    answers = [
        Answer(str(path), model.classes[int(i)], float(p), float(score), bool(score <= threshold))
        for path, i, p, score in zip(read, best.indices, best.values, scores, strict=True)
    ]
    return answers, problems, threshold


def note(percentile: float, threshold: float) -> str:
    return (
        f"UNFAMILIAR means the photo is farther from the training photos than {percentile:g}% of the "
        f"validation photos (score above {threshold:.2f}): the model is often wrong on such photos, however "
        "confident. Retake it like the training photos: a plain light background, normal exposure, in focus, "
        "the hand centred and filling the frame."
    )


def verdict(answer: Answer, threshold: float) -> str:
    if answer.familiar:
        return f"familiar (score {answer.score:.2f} <= {threshold:.2f})"
    return f"UNFAMILIAR (score {answer.score:.2f} > threshold {threshold:.2f}): do not trust this digit"


def exit_code(answers: list[Answer], problems: list[Problem]) -> int:
    if problems:
        return EXIT_UNREADABLE
    return EXIT_OK if all(a.familiar for a in answers) else EXIT_UNFAMILIAR


def _percentile(text: str) -> float:
    from signdigits.core.params import PERCENTILE_RANGE

    value, (low, high) = float(text), PERCENTILE_RANGE
    if not low < value < high:
        raise argparse.ArgumentTypeError(f"{text}: must lie between {low:g} and {high:g}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="signdigits-predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="JPEG or PNG files (any size or colour mode), or folders")
    parser.add_argument(
        "--model", help="model file or training stage (default: the repository's best checked model by validation)"
    )
    parser.add_argument("--percentile", type=_percentile, help="flag photos beyond this percentile of validation")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    parser.add_argument("--cpu-kernels", choices=MODES, default="portable", help="as runtime.cpu_kernels")
    args = parser.parse_args(argv)
    pin_cpu_kernels(args.cpu_kernels)
    pin_convolutions(args.cpu_kernels)
    return run_command(lambda: _predict(args))


def _predict(args: argparse.Namespace) -> int:
    choice = choose_model(args.model)
    model_file = choice.path
    percentile = args.percentile or percentile_for(model_file)
    images, problems = expand(args.images)
    answers, unreadable, threshold = predict_files(model_file, images, percentile)
    problems += unreadable
    code = exit_code(answers, problems)
    if args.json:
        document = {
            "model": str(model_file),
            "stage": choice.stage,
            "val_accuracy": choice.val_accuracy,
            "percentile": percentile,
            "threshold": threshold,
            "note": note(percentile, threshold),
            "images": [asdict(a) for a in answers],
            "errors": [asdict(p) for p in problems],
            "exit_code": code,
        }
        print(json.dumps(document, indent=2))
        return code
    for answer in answers:
        print(f"{answer.file}\t{answer.digit}\t{answer.probability:.4f}\t{verdict(answer, threshold)}")
    for problem in problems:
        print(f"error: {problem.file}: {problem.error}", file=sys.stderr)
    print(describe_choice(choice), file=sys.stderr)
    print(note(percentile, threshold), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
