"""train_best: the final model, from the top-level keys of params.yaml (`dvc exp run -S lr=...`)."""

from signdigits.cli import run_stage
from signdigits.params import load_params


def main():
    params = load_params()
    from signdigits.training import train_stage  # torch loads only once params are valid

    train_stage("train_best", "", params.final, params.runtime)


if __name__ == "__main__":
    run_stage(main)
