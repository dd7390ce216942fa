"""PNG figures for the report: learning curves, confusion heatmaps, the sweep, the final model's mistakes.

Rendered with Agg and without a timestamp or version in the file, so the bytes repeat run to run.
Each figure function returns its file name and PNG bytes; `drawn_aside` runs them in a second process
while the stage computes, and writes what they return with the stage's other outputs.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator

import numpy as np

from signdigits.core import lifeline
from signdigits.core.files import write_bytes_atomic
from signdigits.core.limits import usable_cores
from signdigits.core.paths import FIGURES

_PNG_METADATA = {"Software": None}
Png = tuple[str, bytes]  # a file name in plots/figures and its bytes


@contextlib.contextmanager
def drawn_aside() -> Iterator[Callable[..., None]]:
    """draw(figure, *args): the figure drawn in one worker process, written to plots/figures at the end.

    DVC deletes a stage's outputs before it runs, so every figure is drawn every time; a second
    process (where a second core is free) draws them while this one imports torch and scores the
    models, and this process never imports matplotlib. The bytes are the same either way.
    """
    if usable_cores() < 2:
        drawn: list[Png] = []
        yield lambda figure, *args: drawn.append(figure(*args))
    else:
        with lifeline.process_pool(1) as pool:
            pending = []
            yield lambda figure, *args: pending.append(pool.submit(figure, *args))
            drawn = [future.result() for future in pending]
    for name, png in drawn:
        write_bytes_atomic(FIGURES / name, png)


def _pyplot():
    """matplotlib with Agg, imported where a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, name: str) -> Png:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata=_PNG_METADATA)
    _pyplot().close(fig)
    return name, buffer.getvalue()


def learning_curves(name: str, history: list[dict]) -> Png:
    """Per epoch: the training objective, the validation loss and both accuracies, as the study's figures 1-3.

    The two losses get their own panels: the training objective is label-smoothed cross-entropy averaged over
    the augmented batches in train mode while the weights change; the validation loss is plain cross-entropy
    in eval mode after the epoch. On one axis the first would sit above the second and read as underfitting.
    """
    plt = _pyplot()
    epochs = [int(r["epoch"]) for r in history]
    fig, (train_ax, val_ax, acc_ax) = plt.subplots(1, 3, figsize=(13, 4))
    train_ax.plot(epochs, [float(r["train_loss"]) for r in history], "-")
    train_ax.set(title=f"{name}: training objective", xlabel="epoch", ylabel="label-smoothed CE, augmented batches")
    val_ax.plot(epochs, [float(r["val_loss"]) for r in history], "--", color="tab:orange")
    val_ax.set(title=f"{name}: validation loss", xlabel="epoch", ylabel="cross-entropy (eval mode)")
    for split, style in (("train", "-"), ("val", "--")):
        acc_ax.plot(epochs, [float(r[f"{split}_accuracy"]) for r in history], style, label=split)
    acc_ax.set(title=f"{name}: accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.01))
    acc_ax.legend(["train (augmented batches)", "val"])
    for ax in (train_ax, val_ax, acc_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig, f"curves_{name}.png")


def confusion_heatmap(name: str, matrix: np.ndarray, classes: list[int]) -> Png:
    threshold = matrix.max() / 2 if matrix.size else 0
    fig = _matrix_chart(
        matrix,
        classes,
        f"{name}: test confusion matrix",
        lambda count: (str(count), "white" if count > threshold else "black"),
        cmap="Blues",
    )
    return _png(fig, f"confusion_{name}.png")


def confusion_change(name: str, change: np.ndarray, classes: list[int]) -> Png:
    """New minus old test confusion counts: red where a cell grew, blue where it shrank, blank where equal."""
    limit = max(1, int(np.abs(change).max()))
    fig = _matrix_chart(
        change,
        classes,
        f"{name}: test confusion, new minus old",
        lambda count: (f"{count:+d}" if count else "", "black"),
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
        colorbar_label="photos",
    )
    return _png(fig, f"confusion_change_{name}.png")


def _matrix_chart(matrix: np.ndarray, classes: list[int], title: str, cell, colorbar_label: str = "", **imshow):
    """A heatmap, rows actual and columns predicted digits, each cell's text and colour from cell(count)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    image = ax.imshow(matrix, **imshow)
    ax.set(
        title=title,
        xlabel="predicted",
        ylabel="actual",
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
    )
    for (i, j), count in np.ndenumerate(matrix):
        text, color = cell(count)
        if text:
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, **({"label": colorbar_label} if colorbar_label else {}))
    fig.tight_layout()
    return fig


def sweep_chart(rows: list[dict], winner_run: int) -> Png:
    plt = _pyplot()
    labels = [r["label"] for r in rows]
    accuracy = [float(r["val_accuracy"]) for r in rows]
    colors = ["tab:orange" if int(r["run"]) == winner_run else "tab:blue" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    ax.barh(range(len(rows)), accuracy, color=colors)
    ax.set(yticks=range(len(rows)), yticklabels=labels, xlabel="validation accuracy", xlim=(0, 1))
    ax.set_title("sweep_exp2 (winner in orange)")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig, "sweep.png")


def misclassified_grid(name: str, pixels: np.ndarray, actual: np.ndarray, predicted: np.ndarray, limit: int) -> Png:
    """The mistakes as one mosaic with a caption under each image: one axes draws far faster than one per image."""
    plt = _pyplot()
    wrong = np.flatnonzero(actual != predicted)[:limit]
    columns, size = 8, pixels.shape[1]
    rows = max(1, -(-len(wrong) // columns))
    cell = size + size // 2  # room for the caption below each image
    mosaic = np.full((rows * cell, columns * size), 255, dtype=np.uint8)
    fig, ax = plt.subplots(figsize=(columns * 1.2, rows * 1.4 + 0.5))
    for k, i in enumerate(wrong):
        top, left = (k // columns) * cell, (k % columns) * size
        mosaic[top : top + size, left : left + size] = pixels[i]
        ax.text(
            left + size / 2,
            top + size + 1,
            f"true {actual[i]} / pred {predicted[i]}",
            fontsize=7,
            ha="center",
            va="top",
        )
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255)
    ax.axis("off")
    ax.set_title(f"{name}: {len(wrong)} misclassified test images" if len(wrong) else f"{name}: no mistakes")
    fig.tight_layout()
    return _png(fig, f"misclassified_{name}.png")


def familiarity_shifts(rows: list[dict], examples: np.ndarray) -> Png:
    """One test photo per shift, and per shift: the share the check flags and the model's accuracy."""
    plt = _pyplot()
    names = [r["shift"] for r in rows]
    fig = plt.figure(figsize=(10, 5.5))
    grid = fig.add_gridspec(2, len(rows), height_ratios=(1, 2.2))
    for i, (name, image) in enumerate(zip(names, examples, strict=True)):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(name.replace("_", " "), fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [float(r["flagged"]) for r in rows], 0.4, label="flagged unfamiliar")
    ax.bar(x + 0.2, [float(r["accuracy"]) for r in rows], 0.4, label="model accuracy")
    for i, r in enumerate(rows[1:], start=1):
        ax.text(i, 1.03, f"AUC {float(r['roc_auc']):.2f}", ha="center", fontsize=8)
    ax.set(xticks=x, xticklabels=[n.replace("_", " ") for n in names], ylim=(0, 1.12), ylabel="share of test photos")
    ax.set_title("familiarity check: test photos, clean and shifted", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return _png(fig, "familiarity_shifts.png")
