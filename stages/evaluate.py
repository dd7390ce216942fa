"""evaluate: every model on the held-out test part; metrics, confusion data, figures and the report."""

from signdigits.core import paths
from signdigits.core.cli import run_stage
from signdigits.core.files import read_json, write_json, write_text_atomic


def main(params):
    from signdigits.reporting import figures
    from signdigits.reporting.evaluation import confusion, evaluate_models, write_predictions
    from signdigits.reporting.familiarity import measure_familiarity, write_shifts_csv
    from signdigits.reporting.metrics import rounded
    from signdigits.reporting.report import build_report, familiarity_section
    from signdigits.training.engine import setup_runtime

    split, sweep = read_json(paths.metrics_path("split")), read_json(paths.metrics_path("sweep"))
    training = {name: read_json(paths.metrics_path(name)) for name in paths.TRAINED_MODELS}
    histories = {name: figures.read_csv(paths.history_path(name)) for name in paths.TRAINED_MODELS}
    sweep_rows = figures.read_csv(paths.PLOTS / "sweep" / "results.csv")

    device = setup_runtime(params.runtime)
    results = evaluate_models(paths.TRAINED_MODELS, params.evaluate, device)
    evaluation = rounded({"final_model": paths.FINAL_MODEL, "models": {r.name: r.scores for r in results}})

    for result in results:
        write_predictions(result)
        figures.confusion_heatmap(result.name, confusion(result), result.model.classes)
        figures.learning_curves(result.name, histories[result.name])
    final = results[paths.TRAINED_MODELS.index(paths.FINAL_MODEL)]
    limit = params.evaluate.max_misclassified
    figures.misclassified_grid(final.name, final.pixels, final.actual, final.predicted, limit)
    figures.sweep_chart(sweep_rows, sweep["winner"]["run"])
    familiarity = measure_familiarity(final.model, final.pixels, final.actual, params.familiarity.percentile)
    write_shifts_csv(familiarity)
    figures.familiarity_shifts(familiarity.rows, familiarity.examples)
    evaluation["familiarity"] = rounded(familiarity.headline)
    write_json(paths.metrics_path("evaluate"), evaluation)
    report = build_report(params, split, training, sweep, evaluation)
    report += "\n" + familiarity_section(params.familiarity.percentile, familiarity.rows)
    write_text_atomic(paths.METRICS / "report.md", report)
    for name, scores in evaluation["models"].items():
        print(f"evaluate: {name:13s} test accuracy {scores['accuracy']:.4f} {scores['accuracy_ci95']}")


if __name__ == "__main__":
    run_stage(main)
