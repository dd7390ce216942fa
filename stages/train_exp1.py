"""train_exp1: the study's first experiment, a deeper 784-256-128-64-10 network with dropout."""

from signdigits.core.cli import run_stage


def main(params):
    from signdigits.training.stage import train_stage  # torch loads after run_stage pinned the CPU kernels

    train_stage("train_exp1", params.train_exp1, params.runtime)


if __name__ == "__main__":
    run_stage(main)
