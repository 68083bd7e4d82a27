"""Draw the pictures of the data, the training and the test results as PNGs (matplotlib, no
TensorFlow).

Reads the train and validation splits (preprocess), `plots/history.csv` (train),
`plots/test_predictions.csv` and `data/evaluated/confident_mistakes.npz` (evaluate: the test
split itself is read by evaluate alone); writes seven PNGs to `plots/`, listed in `main`.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed, and the same output everywhere

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter, LogLocator

from stages.common import StageError, atomic_outputs, run
from stages.dataset import IMAGE_SHAPE, NUM_CLASSES, load_split
from stages.params import PlotsParams, load_params
from stages.paths import CONFIDENT_MISTAKES, HISTORY, PLOTS_DIR, TEST_PREDICTIONS

SAMPLE_ROWS, GRID_COLUMNS = 4, 10


def read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise StageError(f"{path} not found: run `dvc repro` to produce it") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise StageError(f"cannot read {path}: {error}") from None
    missing = sorted(set(columns) - set(table.columns))
    if missing or table.empty:
        raise StageError(f"{path} has no rows or lacks column(s) {', '.join(missing)}")
    return table


def plot_curves(history: pd.DataFrame, metric: str, params: PlotsParams) -> plt.Figure:
    """Train vs validation `metric` per epoch, one pair of lines per ensemble member."""
    figure, axes = plt.subplots(figsize=(params.width, params.height))
    members = history.groupby("member")
    for member, curves in members:
        name = f"member {member} " if len(members) > 1 else ""
        axes.plot(curves["epoch"], curves[metric], marker="o", label=f"{name}train")
        axes.plot(curves["epoch"], curves[f"val_{metric}"], marker="o", label=f"{name}validation")
    axes.set(xlabel="epoch", ylabel=metric, title=f"{metric.capitalize()} per epoch")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def plot_error(history: pd.DataFrame, params: PlotsParams) -> plt.Figure:
    """Train and validation error (1 − accuracy) per epoch on a log scale, where the last epochs
    of a run at 99 %+ are still told apart."""
    figure, axes = plt.subplots(figsize=(params.width, params.height))
    members = history.groupby("member")
    for member, curves in members:
        name = f"member {member} " if len(members) > 1 else ""
        for column, label in (("accuracy", "train"), ("val_accuracy", "validation")):
            error = (1 - curves[column]).clip(lower=1e-4)  # a perfect epoch stays on the plot
            axes.plot(curves["epoch"], error, marker="o", label=f"{name}{label}")
    axes.set_yscale("log")
    # Labels at 1, 2 and 5 of each decade (0.2 %, 0.5 %, 1 %, …): more would overlap.
    axes.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    percent = FuncFormatter(lambda error, _: f"{error * 100:g} %")
    axes.yaxis.set_major_formatter(percent)
    axes.yaxis.set_minor_formatter(percent)
    axes.tick_params(axis="y", which="minor", labelsize=8)
    axes.set(xlabel="epoch", ylabel="error (1 − accuracy), log scale", title="Error per epoch")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3, which="both")
    axes.legend()
    return figure


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """counts[i, j] = how many images of digit i were predicted as digit j."""
    counts = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(counts, (actual, predicted), 1)
    return counts


def plot_confusion(counts: np.ndarray, params: PlotsParams) -> plt.Figure:
    """Counts written in every cell; colour on a log scale, so that a handful of mistakes shows
    beside a thousand right answers (empty cells stay white)."""
    side = max(params.width, params.height)
    figure, axes = plt.subplots(figsize=(side, side))
    shown = np.ma.masked_equal(counts, 0)
    image = axes.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)))
    threshold = np.sqrt(max(counts.max(), 1))  # the middle of the log colour scale
    for (row, column), count in np.ndenumerate(counts):
        if count:
            color = "white" if count > threshold else "black"
            axes.text(column, row, count, ha="center", va="center", color=color, fontsize=7)
    ticks = range(NUM_CLASSES)
    axes.set(xticks=ticks, yticks=ticks, xlabel="predicted digit", ylabel="actual digit")
    axes.set_title(f"Test set: {np.trace(counts)} of {counts.sum()} correct")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="images (log scale)")
    return figure


def plot_grid(images: np.ndarray, titles: list[str], title: str, params: PlotsParams) -> plt.Figure:
    """Digit images in rows of GRID_COLUMNS, each under its own title."""
    rows = max(1, -(-len(images) // GRID_COLUMNS))
    cell = params.width / GRID_COLUMNS * 1.4
    figure, grid = plt.subplots(
        rows, GRID_COLUMNS, figsize=(cell * GRID_COLUMNS, cell * rows * 1.25 + 0.4), squeeze=False
    )
    for axes in grid.flat:
        axes.axis("off")
    for axes, image, label in zip(grid.flat, images, titles, strict=False):
        axes.imshow(np.asarray(image).reshape(IMAGE_SHAPE[:2]), cmap="gray_r", vmin=0, vmax=1)
        axes.set_title(label, fontsize=8)
    if not len(images):
        grid.flat[0].text(0, 0.5, "none", fontsize=10)
    figure.suptitle(title)
    return figure


def plot_samples(images: np.ndarray, labels: np.ndarray, params: PlotsParams) -> plt.Figure:
    titles = [f"label {label}" for label in labels]
    return plot_grid(images, titles, "Training digits and their labels", params)


def plot_mistakes(mistakes: dict[str, np.ndarray], params: PlotsParams) -> plt.Figure:
    titles = [
        f"{actual} as {predicted} ({probability:.2f})"
        for actual, predicted, probability in zip(
            mistakes["actual"], mistakes["predicted"], mistakes["probability"], strict=True
        )
    ]
    title = "The test set's most confident mistakes: true digit as predicted (probability)"
    return plot_grid(mistakes["images"] / 255, titles, title, params)


def plot_label_distribution(labels: dict[str, np.ndarray], params: PlotsParams) -> plt.Figure:
    """The share of each digit in each split, side by side."""
    figure, axes = plt.subplots(figsize=(params.width, params.height))
    width = 0.8 / len(labels)
    digits = np.arange(NUM_CLASSES)
    for index, (split, split_labels) in enumerate(labels.items()):
        share = np.bincount(split_labels, minlength=NUM_CLASSES) / len(split_labels)
        axes.bar(
            digits + (index - (len(labels) - 1) / 2) * width,
            share * 100,
            width,
            label=f"{split} ({len(split_labels):,} images)",
        )
    axes.set(xticks=digits, xlabel="digit", ylabel="% of the split", title="Labels per split")
    axes.set_ylim(0, axes.get_ylim()[1] * 1.25)  # room for the legend above the bars
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=7, loc="upper center", ncol=len(labels))
    return figure


def read_mistakes(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {
                name: archive[name] for name in ("images", "actual", "predicted", "probability")
            }
    except FileNotFoundError:
        raise StageError(f"{path} not found: run `dvc repro` to produce it") from None
    except (OSError, ValueError, KeyError) as error:
        raise StageError(f"cannot read {path}: {error}") from None


def main() -> None:
    params = load_params("plots").plots
    started = time.perf_counter()
    history = read_csv(HISTORY, ["member", "epoch", "accuracy", "val_accuracy", "loss", "val_loss"])
    predictions = read_csv(TEST_PREDICTIONS, ["actual", "predicted"])
    train_images, train_labels = load_split("train", mmap=True)
    _, val_labels = load_split("val", mmap=True)
    samples = SAMPLE_ROWS * GRID_COLUMNS
    actual = predictions["actual"].to_numpy()
    counts = confusion_matrix(actual, predictions["predicted"].to_numpy())
    split_labels = {"train": train_labels, "validation": val_labels, "test set": actual}
    figures = {
        "sample_digits": plot_samples(train_images[:samples], train_labels[:samples], params),
        "label_distribution": plot_label_distribution(split_labels, params),
        "accuracy": plot_curves(history, "accuracy", params),
        "loss": plot_curves(history, "loss", params),
        "validation_error": plot_error(history, params),
        "confusion_matrix": plot_confusion(counts, params),
        "confident_mistakes": plot_mistakes(read_mistakes(CONFIDENT_MISTAKES), params),
    }
    with atomic_outputs(*(PLOTS_DIR / f"{name}.png" for name in figures)) as files:
        for file, figure in zip(files, figures.values(), strict=True):
            figure.tight_layout()
            figure.savefig(file, dpi=params.dpi)
            plt.close(figure)
    seconds = time.perf_counter() - started
    print(f"plots: {len(figures)} PNGs in {PLOTS_DIR}/ at {params.dpi} dpi in {seconds:.1f} s")


if __name__ == "__main__":
    run("plots", main)
