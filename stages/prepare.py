"""prepare: data/raw/<digit>/*.JPG -> data/prepared/images.npz (pixels, labels, signers, files)."""

from signdigits.core import paths
from signdigits.core.cli import run_stage


def main(params):
    from signdigits.core.data import prepare
    from signdigits.core.files import write_json

    metrics = prepare(paths.RAW_DIR, paths.PREPARED, params.prepare)
    write_json(paths.metrics_path("prepare"), metrics)
    print(f"prepare: {metrics['images']} images, {metrics['signers']} signers, {metrics['skipped_files']} skipped")


if __name__ == "__main__":
    run_stage(main)
