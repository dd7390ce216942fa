"""train_binary: two digits from params, 784-128-2 with dropout, Adam, balanced batches."""

from signdigits.core.cli import run_stage


def main(params):
    from signdigits.training.stage import train_stage  # torch loads after run_stage pinned the CPU kernels

    digits = params.train_binary.digits
    train_stage("train_binary", params.train_binary.model, params.runtime, classes=digits)


if __name__ == "__main__":
    run_stage(main)
