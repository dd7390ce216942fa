"""metrics/report.md: the study's tables, regenerated from what this run's stages wrote.

Settings come from each stage's JSON (the `config` it trained with), scores from evaluate: the
report never reads params.yaml, so it cannot disagree with what was actually run. Each table has
its own builder; layer sizes come from the configs' classes, and the table of every model and
the binary models' line from the models evaluate scored. The study's tables compare three roles:
the base model, experiment 1 and the final model (paths.BASE_MODEL, EXPERIMENT_MODEL, FINAL_MODEL).
"""

from __future__ import annotations

from signdigits.core import paths


def build_report(
    image_size: int, split: dict, training: dict[str, dict], sweep: dict, scores: dict[str, dict], per_class: list[dict]
) -> str:
    """Markdown of every table of the study.

    `training` maps stage -> its JSON, `scores` model -> part -> scores, `per_class` the final model's test rows.
    """
    base, exp1, final = (training[name] for name in (paths.BASE_MODEL, paths.EXPERIMENT_MODEL, paths.FINAL_MODEL))
    base_scores, exp1_scores = scores[paths.BASE_MODEL], scores[paths.EXPERIMENT_MODEL]
    tests = {name: by_part["test"] for name, by_part in scores.items()}
    final_test = tests[paths.FINAL_MODEL]
    winner = sweep["winner"]
    sections = [
        "# signdigits: study report\n",
        "Written by the `evaluate` stage from this run's params and metrics files; every number below "
        "comes from them. Do not edit by hand: change params.yaml and run `dvc repro`.\n",
        "## What the numbers mean\n",
        _setup_table(image_size, split, base, exp1, final),
        "Validation numbers come from the val part, used for every choice (early stopping, the sweep's "
        "winner); test numbers come from the test part, which only this stage reads.\n",
        "## Table 1: hyperparameters of the base model\n",
        _hyperparameter_table(base["config"], image_size),
        _curves_figure(paths.BASE_MODEL, "Figure 1", "the base model"),
        "## Table 2: evaluation metrics of the base model (validation, macro averages)\n",
        _validation_table(base_scores),
        "## Table 3: architecture comparison, base vs experiment 1\n",
        _architecture_table(base["config"], exp1["config"], image_size),
        _curves_figure(paths.EXPERIMENT_MODEL, "Figure 2", "experiment 1"),
        "## Table 4: performance comparison, base vs experiment 1\n",
        _accuracy_table({"Base model": base_scores, "Experiment 1": exp1_scores}),
        "## Table 5: hyperparameter combinations tested in experiment 2\n",
        _grid_table(sweep["grid"]),
        f"{sweep['runs']} runs on the experiment 1 network. Winner: {winner['optimizer']}, lr {winner['lr']:g}, "
        f"batch size {winner['batch_size']}, {winner['epochs']} epochs.\n",
        _figure("sweep.png", "Validation accuracy of every sweep run"),
        "## Table 6: performance comparison, experiment 1 vs the best of experiment 2\n",
        _sweep_winner_table(exp1, exp1_scores, winner),
        "## Table 7: the final model, training and validation\n",
        _final_recipe(final, final_test),
        _final_training_table(final),
        _curves_figure(paths.FINAL_MODEL, "Figure 3", "the final model"),
        "## Table 8: the final model on the test set\n",
        _test_table(final_test),
        "## Per-class results of the final model (test)\n",
        _per_class_table(per_class),
        _figure(f"confusion_{paths.FINAL_MODEL}.png", "Confusion matrix of the final model on the test set"),
        _figure(f"misclassified_{paths.FINAL_MODEL}.png", "Test images the final model got wrong"),
        "## Every model on the test set\n",
        _every_model_table(tests),
        *_binary_lines(training, tests),
    ]
    return "\n".join(sections)


def familiarity_section(percentile: float, shifts: dict[str, list[dict]]) -> str:
    """Each model's familiarity check on the test part, clean and shifted (reporting/familiarity_shifts.py):
    `shifts` maps model -> rows, the final model first; the others follow, each under its own heading."""
    (final, rows), *others = shifts.items()
    clean = rows[0]
    sections = [
        "## Limits: photos unlike the training photos\n",
        "Every photo here shows a hand centred on a plain light wall at one distance. Photos from other "
        "collections are mostly read wrong, often with probability 0.9 or more, and a photo the check calls "
        "familiar can still be wrong (studies/foreign.py, studies/README.md), so the test accuracy above holds "
        "only for photos like these. The familiarity check flags a photo whose score (the largest of its "
        "pixel, feature and confidence z-scores) lies above the "
        f"{percentile:g}th percentile of the validation photos' scores; "
        f"it flags {pct(clean['flagged'])} of the {clean['images']} clean test photos. Below, the same "
        "test photos shifted as another camera or setting might take them: ROC AUC of the score against "
        "the clean photos, the share flagged, the model's accuracy, and its accuracy on the photos called "
        "familiar.\n",
        _shift_table(rows),
        _figure("familiarity_shifts.png", "The familiarity check on shifted test photos"),
    ]
    for name, rows in others:
        sections += [
            f"### {name}{_beyond(name)}: its own familiarity check\n",
            f"Fitted on the same training photos with its own settings; it flags {pct(rows[0]['flagged'])} "
            f"of the clean test photos.\n",
            _shift_table(rows),
        ]
    return "\n".join(sections)


def _shift_table(rows: list[dict]) -> str:
    clean, shifts = rows[0], rows[1:]
    return markdown_table(
        ["Test photos", "ROC AUC", "Flagged", "Accuracy", "Right among familiar"],
        [["clean", "-", pct(clean["flagged"]), pct(clean["accuracy"]), pct(clean["right_among_familiar"])]]
        + [
            [
                r["shift"].replace("_", " "),
                f"{r['roc_auc']:.3f}",
                pct(r["flagged"]),
                pct(r["accuracy"]),
                pct(r["right_among_familiar"]),
            ]  # fmt: skip
            for r in shifts
        ],
    )


def _beyond(name: str) -> str:
    return " (beyond the study)" if name in paths.BEYOND_STUDY else ""


# --- one builder per table ---------------------------------------------------------------------


def _setup_table(image_size: int, split: dict, base: dict, exp1: dict, final: dict) -> str:
    sizes = split["sizes"]
    seeds = ", ".join(str(stage["config"]["seed"]) for stage in (base, exp1, final))
    return markdown_table(
        ["Setting", "Value"],
        [
            ["Images", f"{sum(sizes.values())} photos, {image_size}x{image_size} grayscale"],
            [
                "Split",
                f"{split['strategy']} (seed {split['seed']}): " + ", ".join(f"{k} {v}" for k, v in sizes.items()),
            ],
            ["Signers per part", ", ".join(f"{k} {v}" for k, v in split["signers"].items())],
            ["Audit: signers in several parts", split["audit"]["signers_in_several_parts"]],
            ["Audit: identical images in several parts", split["audit"]["identical_images_in_several_parts"]],
            ["Device, threads, CPU kernels", f"{final['device']}, {final['threads']}, {final['cpu_kernels']}"],
            ["torch", final["torch_version"]],
            ["Seeds (base, exp1, final)", seeds],
        ],
    )


def _hyperparameter_table(cfg: dict, image_size: int) -> str:
    return markdown_table(
        ["Parameter", "Base model"],
        [
            ["Input layer neurons", image_size * image_size],
            ["Hidden layer(s)", ", ".join(map(str, cfg["hidden"]))],
            ["Output layer neurons", len(cfg["classes"])],
            ["Learning rate", cfg["lr"]],
            ["Batch size", cfg["batch_size"]],
            ["Epochs", cfg["epochs"]],
            ["Optimizer", cfg["optimizer"].upper()],
            ["Loss function", "Cross-Entropy"],
        ],
    )


def _validation_table(scores: dict) -> str:
    val = scores["val"]
    return markdown_table(
        ["Metric", "Base model"],
        [
            ["Training accuracy", pct(scores["train"]["accuracy"])],
            ["Validation accuracy", pct(val["accuracy"])],
            ["Average precision", f"{val['precision_macro']:.2f}"],
            ["Average recall", f"{val['recall_macro']:.2f}"],
            ["Average F1-score", f"{val['f1_macro']:.2f}"],
        ],
    )


def _architecture_table(base: dict, exp1: dict, image_size: int) -> str:
    """Layer by layer, the output layer aligned at the bottom of the deeper network."""
    left, right = _layers(base, image_size), _layers(exp1, image_size)
    depth = max(len(left), len(right))

    def layer(layers: list[str], i: int) -> str:
        if i == depth - 1:
            return layers[-1]
        return layers[i] if i < len(layers) - 1 else "-"

    rows = [
        ["Input" if i == 0 else "Output" if i == depth - 1 else f"Hidden {i}", layer(left, i), layer(right, i)]
        for i in range(depth)
    ]
    rows.append(["Dropout", base["dropout"], exp1["dropout"]])
    return markdown_table(["Layer", "Base model", "Experiment 1"], rows)


def _accuracy_table(columns: dict[str, dict]) -> str:
    """Training and validation accuracy, one column per model's scores."""
    return markdown_table(
        ["Metric", *columns],
        [
            [label, *(pct(scores[part]["accuracy"]) for scores in columns.values())]
            for label, part in (("Training accuracy", "train"), ("Validation accuracy", "val"))
        ],
    )


def _grid_table(grid: dict) -> str:
    return markdown_table(
        ["Parameter", "Values tested"],
        [
            ["Learning rate", ", ".join(f"{v:g}" for v in grid["lr"])],
            ["Batch size", ", ".join(map(str, grid["batch_size"]))],
            ["Epochs", ", ".join(map(str, grid["epochs"]))],
            ["Optimizer", ", ".join(o.upper() if o == "sgd" else o.capitalize() for o in grid["optimizer"])],
        ],
    )


def _sweep_winner_table(exp1: dict, exp1_scores: dict, winner: dict) -> str:
    return markdown_table(
        ["Metric", "Experiment 1", "Experiment 2"],
        [
            ["Training accuracy", pct(exp1_scores["train"]["accuracy"]), pct(winner["train_accuracy"])],
            ["Validation accuracy", pct(exp1_scores["val"]["accuracy"]), pct(winner["val_accuracy"])],
            ["Convergence time (epochs)", exp1["epochs_run"], winner["epochs_run"]],
            ["Final loss (validation)", f"{exp1_scores['val']['loss']:.4f}", f"{winner['val_loss']:.4f}"],
        ],
    )


def _final_recipe(final: dict, test: dict) -> str:
    """One sentence: the network and the settings it was trained with."""
    cfg = final["config"]
    return (
        f"Network {test['network']}"
        + (f", an ensemble of {test['ensemble']}" if test["ensemble"] > 1 else "")
        + f"; {cfg['optimizer']}, lr {cfg['lr']:g}, batch size {cfg['batch_size']}, "
        f"weight decay {cfg['weight_decay']:g}, {cfg['scheduler']} schedule, dropout {cfg['dropout']:g}, "
        f"label smoothing {cfg['label_smoothing']:g}"
        + (", each image standardised by its own mean and std" if cfg["normalize_images"] else "")
        + f"; {final['epochs_run']} epochs run, best epoch {final['best_epoch']}.\n"
    )


def _final_training_table(final: dict) -> str:
    return markdown_table(
        ["Metric", "Value"],
        [
            ["Training loss", f"{final['train']['loss']:.4f}"],
            ["Training accuracy", pct(final["train"]["accuracy"])],
            ["Validation loss", f"{final['val']['loss']:.4f}"],
            ["Validation accuracy", pct(final["val"]["accuracy"])],
        ],
    )


def _test_table(test: dict) -> str:
    return markdown_table(
        ["Metric", "Value"],
        [
            ["Total test images", test["images"]],
            ["Correct predictions", test["correct"]],
            ["Incorrect predictions", test["images"] - test["correct"]],
            ["Success rate", pct(test["accuracy"])],
            ["95% bootstrap interval", _interval(test)],
        ],
    )


def _per_class_table(per_class: list[dict]) -> str:
    return markdown_table(
        ["Digit", "Precision", "Recall", "F1", "Images"],
        [
            [s["digit"], f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", s["support"]]
            for s in per_class
        ],
    )


def _every_model_table(tests: dict[str, dict]) -> str:
    header = ["Model", "Network", "Test images", "Accuracy", "95% interval"]
    return markdown_table(
        [*header, "Macro precision", "Macro recall", "Macro F1"],
        [
            [name + _beyond(name), s["network"], s["images"], pct(s["accuracy"]), _interval(s)]
            + [f"{s[key]:.3f}" for key in ("precision_macro", "recall_macro", "f1_macro")]
            for name, s in tests.items()
        ],
    )


def _binary_lines(training: dict[str, dict], tests: dict[str, dict]) -> list[str]:
    """A line per two-digit model: which digits, and its test ROC AUC."""
    lines = []
    for name, test in tests.items():
        digits = training[name]["config"]["classes"]
        if len(digits) == 2:
            lines.append(
                f"The binary model separates digits {' and '.join(map(str, digits))} "
                f"(test ROC AUC {test['roc_auc']:.4f}).\n"
            )
    return lines


# --- formatting --------------------------------------------------------------------------------


def pct(x: float | str, digits: int = 2) -> str:
    """A share as a percentage, the report's and the review's one format; "" (none to measure: no photo
    called familiar) as "-"."""
    return "-" if x == "" else f"{100 * x:.{digits}f}%"


def _interval(scores: dict) -> str:
    return f"{pct(scores['accuracy_ci95_low'])} - {pct(scores['accuracy_ci95_high'])}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: the report's and the review's."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _layers(cfg: dict, image_size: int) -> list[str]:
    sizes = [image_size * image_size, *cfg["hidden"], len(cfg["classes"])]
    return [f"{a} -> {b}" for a, b in zip(sizes, sizes[1:], strict=False)]


def _figure(name: str, caption: str) -> str:
    return f"![{caption}](../plots/figures/{name})\n\n*{caption}*\n"


def _curves_figure(model: str, number: str, whose: str) -> str:
    return _figure(f"curves_{model}.png", f"{number}: training and validation loss and accuracy of {whose}")
