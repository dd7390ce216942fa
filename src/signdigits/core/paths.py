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

STUDY_MODELS = ("train_binary", "train_base", "train_exp1", "train_best")  # the study's models
BEYOND_STUDY = ("train_cnn",)  # models the study did not have: last, so the study's rows keep their bytes
TRAINED_MODELS = STUDY_MODELS + BEYOND_STUDY  # what evaluate scores, in this order
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
