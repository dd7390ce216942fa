"""train_best: the final model, from the top-level keys of params.yaml (`dvc exp run -S lr=...`),
with its familiarity check (familiarity.components) fitted on the same training images."""

from signdigits.core.cli import run_stage


def main(params):
    from signdigits.training.stage import train_stage  # torch loads after run_stage pinned the CPU kernels

    train_stage("train_best", params.final, params.runtime, familiarity_components=params.familiarity.components)


if __name__ == "__main__":
    run_stage(main)
