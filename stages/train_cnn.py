"""train_cnn: a small convolutional network beside the study's models, with its own familiarity check.

Its settings are its own params.yaml section (channels, training keys, familiarity_components and
composite: its training photos laid on random backgrounds, so it reads photos taken elsewhere), so
`dvc exp run -S lr=...` never retrains it. The recipe was chosen by signer-grouped cross-validation
(studies/choose_cnn.py).
"""

from signdigits.core.cli import run_stage


def main(params):
    from signdigits.training.stage import train_stage  # torch loads after run_stage pinned the CPU kernels

    cnn = params.train_cnn  # its network (channels) and backgrounds (composite) are in cnn.model
    train_stage("train_cnn", cnn.model, params.runtime, familiarity_components=cnn.familiarity_components)


if __name__ == "__main__":
    run_stage(main)
