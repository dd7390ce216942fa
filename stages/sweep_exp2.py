"""sweep_exp2: the study's grid (lr x batch size x epochs x optimizer) on the exp1 network."""

from signdigits.core import paths
from signdigits.core.cli import run_stage


def main(params):
    from signdigits.core.files import write_json, write_text_atomic
    from signdigits.training.stage import require_batch_fits, settings
    from signdigits.training.sweep import load_sweep_data, pick_winner, results_csv, run_sweep

    data = load_sweep_data()
    for i, batch_size in enumerate(params.exp2.batch_size):
        require_batch_fits(f"exp2.batch_size[{i}]", batch_size, len(data.train_labels))
    rows = run_sweep(params.exp2, params.runtime, data)
    winner = pick_winner(rows)
    grid = {key: list(getattr(params.exp2, key)) for key in ("lr", "batch_size", "epochs", "optimizer")}
    write_text_atomic(paths.SWEEP_RESULTS, results_csv(rows))
    write_json(
        paths.metrics_path("sweep"),
        {"runs": len(rows), "winner": winner, "grid": grid, "config": settings(params.exp2.model)},
    )
    print(f"sweep: {len(rows)} runs; winner {winner}")


if __name__ == "__main__":
    run_stage(main)
