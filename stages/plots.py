"""Draw the training curves and the test confusion matrix as PNGs (matplotlib, no TensorFlow).

Reads `plots/history.csv` (train) and `plots/test_predictions.csv` (evaluate); writes
`plots/accuracy.png`, `plots/loss.png` and `plots/confusion_matrix.png`.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed, and the same output everywhere

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from stages.common import StageError, atomic_path, run
from stages.dataset import NUM_CLASSES
from stages.params import PlotsParams, load_params
from stages.paths import HISTORY, PLOTS_DIR, TEST_PREDICTIONS


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


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """counts[i, j] = how many images of digit i were predicted as digit j."""
    counts = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(counts, (actual, predicted), 1)
    return counts


def plot_confusion(counts: np.ndarray, params: PlotsParams) -> plt.Figure:
    side = max(params.width, params.height)
    figure, axes = plt.subplots(figsize=(side, side))
    axes.imshow(counts, cmap="Blues")
    threshold = counts.max() / 2
    for (row, column), count in np.ndenumerate(counts):
        color = "white" if count > threshold else "black"
        axes.text(column, row, count, ha="center", va="center", color=color, fontsize=7)
    ticks = range(NUM_CLASSES)
    axes.set(xticks=ticks, yticks=ticks, xlabel="predicted digit", ylabel="actual digit")
    axes.set_title(f"Test set: {np.trace(counts)} of {counts.sum()} correct")
    return figure


def save(figure: plt.Figure, path: Path, dpi: int) -> None:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi)
    plt.close(figure)


def main() -> None:
    params = load_params("plots").plots
    started = time.perf_counter()
    history = read_csv(HISTORY, ["member", "epoch", "accuracy", "val_accuracy", "loss", "val_loss"])
    predictions = read_csv(TEST_PREDICTIONS, ["actual", "predicted"])
    for metric in ("accuracy", "loss"):
        save(plot_curves(history, metric, params), PLOTS_DIR / f"{metric}.png", params.dpi)
    counts = confusion_matrix(predictions["actual"].to_numpy(), predictions["predicted"].to_numpy())
    save(plot_confusion(counts, params), PLOTS_DIR / "confusion_matrix.png", params.dpi)
    seconds = time.perf_counter() - started
    print(f"plots: 3 PNGs in {PLOTS_DIR}/ at {params.dpi} dpi in {seconds:.1f} s")


if __name__ == "__main__":
    run("plots", main)
