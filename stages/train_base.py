"""train_base: the reference 784-128-10 network, plain SGD; everything else must beat it."""

from signdigits.cli import run_stage
from signdigits.params import load_params


def main():
    params = load_params()
    from signdigits.training import train_stage  # torch loads only once params are valid

    train_stage("train_base", "train_base.", params.train_base, params.runtime)


if __name__ == "__main__":
    run_stage(main)
