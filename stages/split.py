"""split: train/val/test index arrays, stratified by digit and grouped by signer, with a leakage audit."""

from signdigits.core import paths
from signdigits.core.cli import run_stage


def main(params):
    from signdigits.core.data import load_prepared, split_indices, split_metrics, write_split
    from signdigits.core.files import write_json

    prepared = load_prepared(paths.PREPARED)
    parts = split_indices(prepared.labels, prepared.signers, params.split)
    metrics = split_metrics(prepared, parts, params.split)
    write_split(paths.SPLIT, parts)
    write_json(paths.metrics_path("split"), metrics)
    print(f"split ({params.split.strategy}): sizes {metrics['sizes']}, audit {metrics['audit']}")


if __name__ == "__main__":
    run_stage(main)
