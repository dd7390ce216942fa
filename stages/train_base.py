"""train_base: the reference 784-128-10 network, plain SGD; everything else must beat it."""

from signdigits.core.cli import run_stage


def main(params):
    from signdigits.training.stage import train_stage  # torch loads after run_stage pinned the CPU kernels

    train_stage("train_base", params.train_base, params.runtime)


if __name__ == "__main__":
    run_stage(main)
