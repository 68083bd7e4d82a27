"""The plots stage: confusion counts and the PNGs it writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from helpers import declared_outputs, run_stage

from devtools.workspace import copy_project, edit_params
from stages.dataset import normalize, save_split
from stages.params import PlotsParams
from stages.plots import confusion_matrix, plot_confusion, plot_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_confusion_matrix_counts():
    counts = confusion_matrix(np.array([0, 0, 1, 9, 9, 9]), np.array([0, 1, 1, 9, 9, 3]))
    assert counts.shape == (10, 10)
    assert counts[0, 0] == 1 and counts[0, 1] == 1 and counts[1, 1] == 1
    assert counts[9, 9] == 2 and counts[9, 3] == 1
    assert counts.sum() == 6


def test_curves_of_an_ensemble_are_drawn_per_member():
    history = pd.DataFrame(
        {
            "member": [1, 1, 2, 2],
            "epoch": [1, 2, 1, 2],
            "loss": [0.3, 0.2, 0.4, 0.1],
            "val_loss": [0.2, 0.1, 0.3, 0.05],
        }
    )
    figure = plot_curves(history, "loss", PlotsParams(dpi=30, width=3, height=2))
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == [
        "member 1 train",
        "member 1 validation",
        "member 2 train",
        "member 2 validation",
    ]
    assert list(lines[3].get_ydata()) == [0.3, 0.05]


def write_inputs(repo) -> None:
    plots = repo / "plots"
    plots.mkdir()
    (plots / "history.csv").write_text(
        "member,epoch,accuracy,loss,val_accuracy,val_loss\n"
        "1,1,0.9,0.3,0.95,0.2\n1,2,0.95,0.2,0.97,0.1\n"
    )
    (plots / "test_predictions.csv").write_text(
        "actual,predicted,probability\n0,0,0.9\n1,1,0.8\n7,1,0.6\n"
    )
    images = np.random.default_rng(0).random((50, 28, 28), dtype=np.float32)
    splits = {"train": (images[:45], np.arange(45) % 10), "val": (images[45:], np.arange(5))}
    for split, (part, labels) in splits.items():
        folder = repo / "data/processed" / split
        folder.mkdir(parents=True)
        save_split(folder, normalize((part * 255).astype(np.uint8)), labels)
    np.savez(
        repo / "data/evaluated/confident_mistakes.npz",
        images=np.zeros((1, 28, 28), dtype=np.uint8),
        actual=np.array([7]),
        predicted=np.array([1]),
        probability=np.array([0.6]),
    )


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_MAGIC
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_stage_writes_every_declared_png_at_the_requested_size(tmp_path):
    copy_project(tmp_path)
    (tmp_path / "data/evaluated").mkdir(parents=True)
    write_inputs(tmp_path)
    edit_params(tmp_path, "plots", dpi=50, width=4, height=3)
    result = run_stage(tmp_path, "plots")
    declared = declared_outputs("plots", kinds=("plots",))
    assert len(declared) == 7
    assert result.stdout.startswith("plots: 7 PNGs in plots/ at 50 dpi")
    sizes = {path.stem: png_size(tmp_path / path) for path in declared}
    for curve in ("accuracy", "loss", "validation_error", "label_distribution"):
        assert sizes.pop(curve) == (200, 150)
    assert sizes.pop("confusion_matrix") == (200, 200)
    for grid, (width, height) in sizes.items():  # the digit grids: ten columns, wider than tall
        assert 200 <= width <= 400 and 50 <= height < width, grid


def test_confusion_colours_show_a_single_mistake():
    counts = np.zeros((10, 10), dtype=np.int64)
    np.fill_diagonal(counts, 1000)
    counts[7, 1] = 1
    figure = plot_confusion(counts, PlotsParams(dpi=30, width=3, height=2))
    image = figure.axes[0].get_images()[0]
    one, empty = image.norm(1), image.get_array()[0, 1]
    assert one == 0.0 and np.ma.is_masked(empty)  # 1 sits at the bottom of the log scale
    rgba = image.to_rgba(image.get_array())
    assert tuple(rgba[7, 1]) != tuple(rgba[0, 1])  # a single mistake is coloured, zero is not
    assert "1" in [text.get_text() for text in figure.axes[0].texts]


def test_missing_history_is_one_clear_line(tmp_path):
    copy_project(tmp_path)
    result = run_stage(tmp_path, "plots", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "plots: error: plots/history.csv not found: run `dvc repro` to produce it"
    ]
