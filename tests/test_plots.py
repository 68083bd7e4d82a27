"""The plots stage: confusion counts and the PNGs it writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from helpers import copy_project, edit_params, run_stage

from stages.params import PlotsParams
from stages.plots import confusion_matrix, plot_curves

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
    (plots / "test_predictions.csv").write_text("actual,predicted\n0,0\n1,1\n7,1\n")


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_MAGIC
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_stage_writes_three_pngs_at_the_requested_size(tmp_path):
    copy_project(tmp_path)
    write_inputs(tmp_path)
    edit_params(tmp_path, "plots", dpi=50, width=4, height=3)
    result = run_stage(tmp_path, "plots")
    assert result.stdout.startswith("plots: 3 PNGs in plots/ at 50 dpi")
    assert png_size(tmp_path / "plots" / "accuracy.png") == (200, 150)
    assert png_size(tmp_path / "plots" / "loss.png") == (200, 150)
    assert png_size(tmp_path / "plots" / "confusion_matrix.png") == (200, 200)


def test_missing_history_is_one_clear_line(tmp_path):
    copy_project(tmp_path)
    result = run_stage(tmp_path, "plots", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "plots: error: plots/history.csv not found: run `dvc repro` to produce it"
    ]
