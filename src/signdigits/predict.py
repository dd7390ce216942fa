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
installed from. The threshold's percentile is `--percentile`, else `familiarity.percentile` of the
params.yaml of the repository the model lies in, else that key's default (core/params.py). The model's
repository is found from its path as given, not from where a symlink leads: with DVC's symlinked or
shared cache (`cache.type symlink`), models/train_best.pt points into the cache, outside the repository.

Photos are read, scored and printed in batches of BATCH, so memory does not grow with their number.
A file name's control characters (a TAB, a newline) print escaped (\\t, \\n, \\xNN) in the lines.

Exit codes: 0 every photo answered and familiar; 1 some files missing or unreadable (the others are
still answered); 2 nothing answered (no model, bad arguments or params, or not one readable photo;
with --json, a JSON object {"error": ..., "exit_code": 2} when not even that is known); 3 every
file read, but some photos are unfamiliar. With both unreadable files and unfamiliar photos, 1.
141 when the reader of its output went away (`| head`), as for any command ended by SIGPIPE.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from signdigits.core import paths
from signdigits.core.cli import run_command
from signdigits.core.errors import PipelineError
from signdigits.core.kernels import MODES, pin_convolutions, pin_cpu_kernels

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
EXIT_OK, EXIT_UNREADABLE, EXIT_ERROR, EXIT_UNFAMILIAR = 0, 1, 2, 3
EXIT_CLOSED_PIPE = 128 + 13  # SIGPIPE, as a shell reports a command that it ended
BATCH = 256  # photos decoded and scored at a time: memory stays flat in their number


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
        if stage:  # named: its file, checked or not (predict_batches says what it lacks)
            path = root / paths.model_path(stage)
            tried.append(path)
            if path.is_file():
                metrics = root / paths.metrics_path(stage)
                return Choice(path, stage, _val_accuracy(metrics) if metrics.is_file() else None)
            continue
        stages = [paths.FINAL_MODEL, *(n for n in paths.TRAINED_MODELS if n != paths.FINAL_MODEL)]
        candidates = _checked_models(root, stages, tried)
        if candidates:
            return best_choice(candidates)
    where = ", ".join(map(str, tried)) if tried else "nothing (no dvc.yaml above the current folder)"
    which = stage or paths.FINAL_MODEL
    raise PipelineError(
        f"no model found; tried {where}. Run `dvc pull {which}` or `dvc repro {which}` in the "
        "repository, or pass --model PATH"
    )


def best_choice(candidates: list[Choice]) -> Choice:
    """predict's rule among checked 10-digit models: the highest validation accuracy; ties go to the final model.
    (The review applies it to each revision's models to show and gate the model predict answers with.)"""
    return max(candidates, key=lambda c: (c.val_accuracy, c.stage == paths.FINAL_MODEL))


def _checked_models(root: Path, stages, tried: list[Path]) -> list[Choice]:
    """The stages' model files in `root` that read 10 digits and carry a familiarity check, with their val accuracy."""
    from signdigits.training.model_file import load_model

    found = []
    for stage in stages:
        path = root / paths.model_path(stage)  # not resolved: with a symlinked DVC cache, the target is the cache's
        tried.append(path)
        metrics = root / paths.metrics_path(stage)
        if not (path.is_file() and metrics.is_file()):
            continue
        model = load_model(path)
        if len(model.classes) == 10 and model.familiarity is not None:
            found.append(Choice(path, stage, _val_accuracy(metrics)))
    return found


def _val_accuracy(metrics: Path) -> float:
    from signdigits.core.files import read_json

    return float(read_json(metrics)["val"]["accuracy"])


def choose_model(model: str | None) -> Choice:
    """--model as a file, as a stage name (its file in the repository), or absent (the best checked model)."""
    if model is None:
        return find_model()
    if model in paths.TRAINED_MODELS and not Path(model).exists():
        return find_model(model)
    return Choice(Path(os.path.abspath(model)))  # as given: a symlink into DVC's cache keeps its repository


def describe_choice(choice: Choice) -> str:
    if choice.stage is None:
        return f"model: {choice.path}"
    if choice.val_accuracy is None:
        return f"model: {choice.stage} ({choice.path})"
    return f"model: {choice.stage} ({choice.path}), validation accuracy {choice.val_accuracy:.2%}"


def repository_of(model_file: Path) -> Path | None:
    """The repository (dvc.yaml and params.yaml) around the model file's path as given, else around each link
    it points through in turn: never first the end of the chain, which DVC's symlinked cache puts outside."""
    for step in _link_chain(model_file):
        for folder in step.parents:
            if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
                return folder
    return None


def _link_chain(path: Path, most: int = 40) -> list[Path]:
    """The path made absolute (not resolved), then each symlink's target in turn (at most `most`: a loop ends it)."""
    chain = [Path(os.path.abspath(path))]
    while chain[-1].is_symlink() and len(chain) < most:
        target = Path(os.path.abspath(chain[-1].parent / os.readlink(chain[-1])))
        if target in chain:
            break
        chain.append(target)
    return chain


def percentile_for(model_file: Path) -> float:
    """familiarity.percentile of the params.yaml of the model's repository (repository_of), else its default."""
    from signdigits.core.params import FamiliarityParams, load_params

    root = repository_of(model_file)
    if root is None:
        return FamiliarityParams().percentile
    return load_params(root / "params.yaml", require=["familiarity.percentile"]).familiarity.percentile


def expand(arguments: list[Path]) -> tuple[list[Path], list[Problem]]:
    """Files as given, folders as the images inside them (sorted); missing paths as problems."""
    from signdigits.core.files import why_missing

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
            problems.append(Problem(str(path), why_missing(path)))
    return images, problems


def predict_batches(
    model_file: Path, images: list[Path], percentile: float
) -> tuple[float, Iterator[Answer | Problem]]:
    """The familiarity threshold, and an Answer per readable image or a Problem per unreadable one, in input order.

    BATCH photos at a time are decoded and scored: memory does not grow with the number of photos.
    """
    from signdigits.training.model_file import load_model

    model = load_model(model_file)
    if model.familiarity is None:
        raise PipelineError(
            f"{model_file}: this model has no familiarity check; use train_best or train_cnn (--model STAGE)"
        )
    threshold = model.familiarity.threshold(percentile)
    return threshold, _answers(model, images, threshold)


def _answers(model, images: list[Path], threshold: float) -> Iterator[Answer | Problem]:
    import numpy as np

    from signdigits.core.data import decode_image
    from signdigits.training.inputs import to_inputs

    for start in range(0, len(images), BATCH):
        decoded: list[tuple[Path, np.ndarray | Problem]] = []
        for path in images[start : start + BATCH]:
            try:
                decoded.append((path, decode_image(path, model.arch.image_size)))
            except PipelineError as e:
                decoded.append((path, Problem(str(path), str(e).removeprefix(f"{path}: "))))
        read = [(path, pixels) for path, pixels in decoded if not isinstance(pixels, Problem)]
        if read:
            x = to_inputs(np.stack([pixels for _, pixels in read]))
            logits, scores = model.answer(x)
            best = logits.softmax(dim=1).max(dim=1)
            answered = {
                path: Answer(str(path), model.classes[int(i)], float(p), float(score), bool(score <= threshold))
                for (path, _), i, p, score in zip(read, best.indices, best.values, scores, strict=True)
            }
        for path, pixels in decoded:
            yield pixels if isinstance(pixels, Problem) else answered[path]


# Measured by studies/foreign.py on 1,620 photos from four other collections (foreign_dev, outside the
# repository; studies/README.md) with each committed model: (right, called familiar, right among familiar).
# tests/test_foreign_study.py holds them to studies/foreign.json.
MEASURED_ELSEWHERE = {"train_best": (0.139, 0.107, 0.329), "train_cnn": (0.575, 0.417, 0.822)}


def note(percentile: float, threshold: float, stage: str | None = None) -> str:
    elsewhere = MEASURED_ELSEWHERE.get(stage)
    measured = (
        f" On photos from other collections {stage} was right on {elsewhere[0]:.0%}, called {elsewhere[1]:.0%} of "
        f"them familiar, and was right on {elsewhere[2]:.0%} of those (studies/README.md)."
        if elsewhere
        else ""
    )
    return (
        f"UNFAMILIAR means the photo is farther from the training photos, or the network less sure of it, than "
        f"{percentile:g}% of the validation photos (score above {threshold:.2f}): do not use its digit. Retake it "
        "like the training photos: a plain light background, normal exposure, in focus, the hand centred and "
        "filling the frame; if it stays unfamiliar, this model cannot read it. familiar is no promise of right: it "
        f"means the photo looks like those the model was measured on.{measured}"
    )


def verdict(answer: Answer, threshold: float) -> str:
    if answer.familiar:
        return f"familiar (score {answer.score:.2f} <= {threshold:.2f})"
    return f"UNFAMILIAR (score {answer.score:.2f} > threshold {threshold:.2f}): do not trust this digit"


def exit_code(answered: int, unfamiliar: int, problems: int) -> int:
    if problems:
        return EXIT_UNREADABLE if answered else EXIT_ERROR
    return EXIT_UNFAMILIAR if unfamiliar else EXIT_OK


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\udc80-\udcff]")
_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(name: str) -> str:
    """A file name for a line of text: control characters escaped (\\t, \\n, \\xNN), bytes not UTF-8 as \\xNN."""
    return _CONTROL.sub(lambda m: _ESCAPES.get(m[0]) or f"\\x{ord(m[0]) & 0xFF:02x}", name)


def _percentile(text: str) -> float:
    from signdigits.core.params import PERCENTILE_RANGE

    value, (low, high) = float(text), PERCENTILE_RANGE
    if not low < value < high:
        raise argparse.ArgumentTypeError(f"{text}: must lie between {low:g} and {high:g}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors (exit 2) are also a JSON object on stdout when --json is asked for."""

    def error(self, message: str):
        if "--json" in sys.argv[1:] or "--json" in (self.argv or ()):
            print(json.dumps({"error": message, "exit_code": EXIT_ERROR}, indent=2))
        super().error(message)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="signdigits-predict", description=__doc__.splitlines()[0])
    parser.argv = argv
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
    try:
        return run_command(lambda: _predict(args))
    except BrokenPipeError:  # `predict ... | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush then goes nowhere
        return EXIT_CLOSED_PIPE


def _predict(args: argparse.Namespace) -> int:
    try:
        choice = choose_model(args.model)
        percentile = args.percentile or percentile_for(choice.path)
        images, problems = expand(args.images)
        threshold, results = predict_batches(choice.path, images, percentile)
    except PipelineError as e:
        if args.json:
            print(json.dumps({"error": str(e), "exit_code": EXIT_ERROR}, indent=2))
        raise
    if args.json:
        return _print_json(choice, percentile, threshold, results, problems)
    for problem in problems:
        print(f"error: {printable(problem.file)}: {problem.error}", file=sys.stderr)
    answered = unfamiliar = errors = 0
    for result in results:
        if isinstance(result, Problem):
            errors += 1
            print(f"error: {printable(result.file)}: {result.error}", file=sys.stderr)
            continue
        answered, unfamiliar = answered + 1, unfamiliar + (not result.familiar)
        print(f"{printable(result.file)}\t{result.digit}\t{result.probability:.4f}\t{verdict(result, threshold)}")
    print(describe_choice(choice), file=sys.stderr)
    print(note(percentile, threshold, choice.stage), file=sys.stderr)
    return exit_code(answered, unfamiliar, len(problems) + errors)


def _print_json(choice: Choice, percentile: float, threshold: float, results, problems: list[Problem]) -> int:
    """One JSON document, its images written as they are answered (one a line): memory stays flat."""
    head = {"model": str(choice.path), "stage": choice.stage, "val_accuracy": choice.val_accuracy}
    head |= {"percentile": percentile, "threshold": threshold}
    print(
        json.dumps({**head, "note": note(percentile, threshold, choice.stage)}, indent=2)[:-2] + ',\n  "images": [',
        end="",
    )
    answered = unfamiliar = 0
    for result in results:
        if isinstance(result, Problem):
            problems.append(result)
            continue
        print(("," if answered else "") + "\n    " + json.dumps(asdict(result)), end="")
        answered, unfamiliar = answered + 1, unfamiliar + (not result.familiar)
    print("\n  ]," if answered else "],")
    code = exit_code(answered, unfamiliar, len(problems))
    print(json.dumps({"errors": [asdict(p) for p in problems], "exit_code": code}, indent=2)[2:])
    return code


if __name__ == "__main__":
    sys.exit(main())
