"""Where every stage reads and writes, relative to the repository root (dvc.yaml names the same paths)."""

from pathlib import Path

PARAMS = Path("params.yaml")
DVC_YAML = Path("dvc.yaml")
RAW_DIR = Path("data/raw")
PREPARED = Path("data/prepared/images.npz")
SPLIT = Path("data/split/split.npz")
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
FIGURES = PLOTS / "figures"
SWEEP_RESULTS = PLOTS / "sweep" / "results.csv"
SCORES = PLOTS / "evaluate" / "scores.csv"
PER_CLASS = PLOTS / "evaluate" / "per_class.csv"
FAMILIARITY_SHIFTS = PLOTS / "evaluate" / "familiarity_shifts.csv"
REPORT = METRICS / "report.md"

# The one list of trained models the code reads: each is a stage of dvc.yaml that writes models/<name>.pt, listed
# in the order evaluate scores them, with whether the study had it (a model beyond the study reports its test
# accuracy alone in metrics/evaluate.json). A new model goes last, so the existing rows, seeded bootstraps and
# intervals keep their bytes (docs/add-a-model.md). This file is in src/signdigits/core, on which every stage
# depends: after a change here `dvc repro` reruns every stage, and all but evaluate (and a new model's stage)
# write the bytes they had. tests/test_stage_params.py checks dvc.yaml's stages and evaluate's entries against it.
MODEL_LIST = {
    "train_binary": "study",
    "train_base": "study",
    "train_exp1": "study",
    "train_best": "study",
    "train_cnn": "beyond the study",
}
TRAINED_MODELS = tuple(MODEL_LIST)  # what evaluate scores, in this order
STUDY_MODELS = tuple(name for name, origin in MODEL_LIST.items() if origin == "study")
BEYOND_STUDY = tuple(name for name, origin in MODEL_LIST.items() if origin == "beyond the study")
BASE_MODEL = "train_base"  # the study's reference
EXPERIMENT_MODEL = "train_exp1"  # the study's experiment 1, whose network the sweep (experiment 2) trains
FINAL_MODEL = "train_best"
REPORTED_CURVES = (BASE_MODEL, EXPERIMENT_MODEL, FINAL_MODEL)  # the study's figures 1-3


def model_path(name: str) -> Path:
    return MODELS / f"{name}.pt"


def metrics_path(name: str) -> Path:
    return METRICS / f"{name}.json"


def digest_path(stage: str) -> Path:
    """What the stage's output in the DVC cache holds, array by array (files.digest_text), kept in git."""
    return METRICS / "digests" / f"{stage}.tsv"


def history_path(name: str) -> Path:
    return PLOTS / name / "history.csv"


def familiarity_shifts_path(name: str) -> Path:
    """A model's familiarity check on shifted test photos (the final model's file keeps its first name)."""
    return FAMILIARITY_SHIFTS if name == FINAL_MODEL else FAMILIARITY_SHIFTS.with_name(f"familiarity_shifts_{name}.csv")


def predictions_path(name: str) -> Path:
    """Per-image test predictions: the confusion plot data, and what McNemar's test pairs up."""
    return PLOTS / "evaluate" / f"predictions_{name}.csv"
