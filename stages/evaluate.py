"""evaluate: every model on the held-out test part; metrics, tables, figures and the report.

It reads only what the other stages wrote (arrays, models, their JSON and CSV), never their params.
"""

from signdigits.core import paths
from signdigits.core.cli import run_stage


def main(params):
    from signdigits.core.files import read_csv, read_json, write_json, write_text_atomic
    from signdigits.reporting import figures

    split, sweep = read_json(paths.metrics_path("split")), read_json(paths.metrics_path("sweep"))
    training = {name: read_json(paths.metrics_path(name)) for name in paths.TRAINED_MODELS}
    histories = {name: read_csv(paths.history_path(name)) for name in paths.REPORTED_CURVES}
    sweep_rows = read_csv(paths.SWEEP_RESULTS)

    # Only the figures the report shows (DVC's own plots draw the rest), drawn aside while this process works.
    with figures.drawn_aside() as draw:
        for name in paths.REPORTED_CURVES:
            draw(figures.learning_curves, name, histories[name])
        draw(figures.sweep_chart, sweep_rows, sweep["winner"]["run"])

        # torch, from here on
        from signdigits.reporting.evaluation import evaluate_models, summary, write_digests, write_tables
        from signdigits.reporting.familiarity_shifts import measure_familiarity, write_shifts_csv
        from signdigits.reporting.report import build_report, familiarity_section
        from signdigits.training.engine import setup_runtime

        device = setup_runtime(params.runtime)
        results = evaluate_models(paths.TRAINED_MODELS, params.evaluate, device)
        write_tables(results)
        write_digests()
        final = results[paths.TRAINED_MODELS.index(paths.FINAL_MODEL)]
        draw(figures.confusion_heatmap, final.name, final.confusion, final.model.classes)
        limit = params.evaluate.max_misclassified
        draw(figures.misclassified_grid, final.name, final.pixels, final.actual, final.predicted, limit)
        checked = [final] + [r for r in results if r.model.familiarity is not None and r is not final]
        shifts = {
            r.name: measure_familiarity(r.model, r.pixels, r.actual, params.familiarity.percentile) for r in checked
        }
        for name, result in shifts.items():
            write_shifts_csv(result, name)
        familiarity = shifts[final.name]
        draw(figures.familiarity_shifts, familiarity.rows, familiarity.examples)
        write_json(paths.metrics_path("evaluate"), summary(results, sweep, familiarity.headline), sort_keys=False)
        scores = {r.name: r.scores for r in results}
        report = build_report(final.pixels.shape[1], split, training, sweep, scores, final.per_class)
        report += "\n" + familiarity_section(params.familiarity.percentile, {n: r.rows for n, r in shifts.items()})
        write_text_atomic(paths.REPORT, report)
    for r in results:
        test = r.scores["test"]
        interval = f"[{test['accuracy_ci95_low']:.4f}, {test['accuracy_ci95_high']:.4f}]"
        print(f"evaluate: {r.name:13s} test accuracy {test['accuracy']:.4f} {interval}")


if __name__ == "__main__":
    run_stage(main)
