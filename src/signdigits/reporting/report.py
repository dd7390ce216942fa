"""metrics/report.md: the study's tables, regenerated from what this run's stages wrote.

Settings come from each stage's JSON (the `config` it trained with), scores from evaluate: the
report never reads params.yaml, so it cannot disagree with what was actually run.
"""

from __future__ import annotations


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _layers(cfg: dict, image_size: int) -> list[str]:
    sizes = [image_size * image_size, *cfg["hidden"], 10]
    return [f"{a} -> {b}" for a, b in zip(sizes, sizes[1:], strict=False)]


def _figure(name: str, caption: str) -> str:
    return f"![{caption}](../plots/figures/{name})\n\n*{caption}*\n"


def build_report(
    image_size: int, split: dict, training: dict[str, dict], sweep: dict, scores: dict[str, dict], per_class: list[dict]
) -> str:
    """Markdown of every table of the study.

    `training` maps stage -> its JSON, `scores` model -> part -> scores, `per_class` the final model's test rows.
    """
    best = training["train_best"]
    base, exp1 = scores["train_base"], scores["train_exp1"]
    tests = {name: by_part["test"] for name, by_part in scores.items()}
    final = tests["train_best"]
    size = image_size
    cfg_base, cfg_exp1, cfg_best = (training[name]["config"] for name in ("train_base", "train_exp1", "train_best"))
    grid, winner = sweep["grid"], sweep["winner"]
    out = [
        "# signdigits: study report\n",
        "Written by the `evaluate` stage from this run's params and metrics files; every number below "
        "comes from them. Do not edit by hand: change params.yaml and run `dvc repro`.\n",
        "## What the numbers mean\n",
        _table(
            ["Setting", "Value"],
            [
                ["Images", f"{sum(split['sizes'].values())} photos, {size}x{size} grayscale"],
                [
                    "Split",
                    f"{split['strategy']} (seed {split['seed']}): "
                    + ", ".join(f"{k} {v}" for k, v in split["sizes"].items()),
                ],
                ["Signers per part", ", ".join(f"{k} {v}" for k, v in split["signers"].items())],
                ["Audit: signers in several parts", split["audit"]["signers_in_several_parts"]],
                ["Audit: identical images in several parts", split["audit"]["identical_images_in_several_parts"]],
                ["Device, threads, CPU kernels", f"{best['device']}, {best['threads']}, {best['cpu_kernels']}"],
                ["torch", best["torch_version"]],
                ["Seeds (base, exp1, final)", f"{cfg_base['seed']}, {cfg_exp1['seed']}, {cfg_best['seed']}"],
            ],
        ),
        "Validation numbers come from the val part, used for every choice (early stopping, the sweep's "
        "winner); test numbers come from the test part, which only this stage reads.\n",
        "## Table 1: hyperparameters of the base model\n",
        _table(
            ["Parameter", "Base model"],
            [
                ["Input layer neurons", size * size],
                ["Hidden layer(s)", ", ".join(map(str, cfg_base["hidden"]))],
                ["Output layer neurons", 10],
                ["Learning rate", cfg_base["lr"]],
                ["Batch size", cfg_base["batch_size"]],
                ["Epochs", cfg_base["epochs"]],
                ["Optimizer", cfg_base["optimizer"].upper()],
                ["Loss function", "Cross-Entropy"],
            ],
        ),
        _figure("curves_train_base.png", "Figure 1: training and validation loss and accuracy of the base model"),
        "## Table 2: evaluation metrics of the base model (validation, macro averages)\n",
        _table(
            ["Metric", "Base model"],
            [
                ["Training accuracy", _pct(base["train"]["accuracy"])],
                ["Validation accuracy", _pct(base["val"]["accuracy"])],
                ["Average precision", f"{base['val']['precision_macro']:.2f}"],
                ["Average recall", f"{base['val']['recall_macro']:.2f}"],
                ["Average F1-score", f"{base['val']['f1_macro']:.2f}"],
            ],
        ),
        "## Table 3: architecture comparison, base vs experiment 1\n",
        _architecture_table(cfg_base, cfg_exp1, size),
        _figure("curves_train_exp1.png", "Figure 2: training and validation loss and accuracy of experiment 1"),
        "## Table 4: performance comparison, base vs experiment 1\n",
        _table(
            ["Metric", "Base model", "Experiment 1"],
            [
                ["Training accuracy", _pct(base["train"]["accuracy"]), _pct(exp1["train"]["accuracy"])],
                ["Validation accuracy", _pct(base["val"]["accuracy"]), _pct(exp1["val"]["accuracy"])],
            ],
        ),
        "## Table 5: hyperparameter combinations tested in experiment 2\n",
        _table(
            ["Parameter", "Values tested"],
            [
                ["Learning rate", ", ".join(f"{v:g}" for v in grid["lr"])],
                ["Batch size", ", ".join(map(str, grid["batch_size"]))],
                ["Epochs", ", ".join(map(str, grid["epochs"]))],
                ["Optimizer", ", ".join(o.upper() if o == "sgd" else o.capitalize() for o in grid["optimizer"])],
            ],
        ),
        f"{sweep['runs']} runs on the experiment 1 network. Winner: {winner['optimizer']}, lr {winner['lr']:g}, "
        f"batch size {winner['batch_size']}, {winner['epochs']} epochs.\n",
        _figure("sweep.png", "Validation accuracy of every sweep run"),
        "## Table 6: performance comparison, experiment 1 vs the best of experiment 2\n",
        _table(
            ["Metric", "Experiment 1", "Experiment 2"],
            [
                ["Training accuracy", _pct(exp1["train"]["accuracy"]), _pct(winner["train_accuracy"])],
                ["Validation accuracy", _pct(exp1["val"]["accuracy"]), _pct(winner["val_accuracy"])],
                ["Convergence time (epochs)", training["train_exp1"]["epochs_run"], winner["epochs_run"]],
                ["Final loss (validation)", f"{exp1['val']['loss']:.4f}", f"{winner['val_loss']:.4f}"],
            ],
        ),
        "## Table 7: the final model, training and validation\n",
        f"Network {final['network']}"
        + (f", an ensemble of {final['ensemble']}" if final["ensemble"] > 1 else "")
        + f"; {cfg_best['optimizer']}, lr {cfg_best['lr']:g}, batch size {cfg_best['batch_size']}, "
        f"weight decay {cfg_best['weight_decay']:g}, {cfg_best['scheduler']} schedule, "
        f"dropout {cfg_best['dropout']:g}, "
        f"label smoothing {cfg_best['label_smoothing']:g}"
        + (", each image standardised by its own mean and std" if cfg_best["normalize_images"] else "")
        + f"; {best['epochs_run']} epochs run, best epoch "
        f"{best['best_epoch']}.\n",
        _table(
            ["Metric", "Value"],
            [
                ["Training loss", f"{best['train']['loss']:.4f}"],
                ["Training accuracy", _pct(best["train"]["accuracy"])],
                ["Validation loss", f"{best['val']['loss']:.4f}"],
                ["Validation accuracy", _pct(best["val"]["accuracy"])],
            ],
        ),
        _figure("curves_train_best.png", "Figure 3: training and validation loss and accuracy of the final model"),
        "## Table 8: the final model on the test set\n",
        _table(
            ["Metric", "Value"],
            [
                ["Total test images", final["images"]],
                ["Correct predictions", final["correct"]],
                ["Incorrect predictions", final["images"] - final["correct"]],
                ["Success rate", _pct(final["accuracy"])],
                ["95% bootstrap interval", _interval(final)],
            ],
        ),
        "## Per-class results of the final model (test)\n",
        _table(
            ["Digit", "Precision", "Recall", "F1", "Images"],
            [
                [s["digit"], f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", s["support"]]
                for s in per_class
            ],
        ),
        _figure("confusion_train_best.png", "Confusion matrix of the final model on the test set"),
        _figure("misclassified_train_best.png", "Test images the final model got wrong"),
        "## Every model on the test set\n",
        _table(
            [
                "Model",
                "Network",
                "Test images",
                "Accuracy",
                "95% interval",
                "Macro precision",
                "Macro recall",
                "Macro F1",
            ],
            [
                [
                    name,
                    s["network"],
                    s["images"],
                    _pct(s["accuracy"]),
                    _interval(s),
                    f"{s['precision_macro']:.3f}",
                    f"{s['recall_macro']:.3f}",
                    f"{s['f1_macro']:.3f}",
                ]
                for name, s in tests.items()
            ],
        ),
        f"The binary model separates digits {' and '.join(map(str, training['train_binary']['config']['classes']))} "
        f"(test ROC AUC {tests['train_binary']['roc_auc']:.4f}).\n",
    ]
    return "\n".join(out)


def _interval(scores: dict) -> str:
    return f"{_pct(scores['accuracy_ci95_low'])} - {_pct(scores['accuracy_ci95_high'])}"


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
    return _table(["Layer", "Base model", "Experiment 1"], rows)


def familiarity_section(percentile: float, rows: list[dict]) -> str:
    """The final model's familiarity check on the test part, clean and shifted (reporting/familiarity.py)."""
    clean, shifts = rows[0], rows[1:]
    return "\n".join(
        [
            "## Limits: photos unlike the training photos\n",
            "Every photo here shows a hand centred on a plain light wall at one distance. On 1,120 photos from "
            "three other collections an earlier final model was right on 14.8%, often with probability 0.9 or "
            "more, so the test accuracy above holds only for photos like these. The familiarity check flags a "
            f"photo whose score lies above the {percentile:g}th percentile of the validation photos' scores; "
            f"it flags {_pct(clean['flagged'])} of the {clean['images']} clean test photos. Below, the same "
            "test photos shifted as another camera or setting might take them: ROC AUC of the score against "
            "the clean photos, the share flagged, and the model's accuracy.\n",
            _table(
                ["Test photos", "ROC AUC", "Flagged", "Accuracy"],
                [["clean", "-", _pct(clean["flagged"]), _pct(clean["accuracy"])]]
                + [
                    [r["shift"].replace("_", " "), f"{r['roc_auc']:.3f}", _pct(r["flagged"]), _pct(r["accuracy"])]
                    for r in shifts
                ],
            ),
            _figure("familiarity_shifts.png", "The familiarity check on shifted test photos"),
        ]
    )
