"""A short run on real MNIST digits, where a local copy exists (skipped elsewhere).

Looks for `$MNIST_NPZ`, else `../shared/mnist/mnist.npz` beside the project. Uses a small subset
so that it stays quick on two CPU cores.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import run_stage, tiny_params, write_npz

from devtools.workspace import PROJECT, copy_project, edit_params, write_params

MIRROR = Path(os.environ.get("MNIST_NPZ", PROJECT.parent / "shared" / "mnist" / "mnist.npz"))

pytestmark = pytest.mark.skipif(not MIRROR.is_file(), reason=f"no MNIST copy at {MIRROR}")


def test_short_run_on_real_digits_learns(tmp_path):
    with np.load(MIRROR, allow_pickle=False) as full:
        subset = {
            "x_train": full["x_train"][:4000],
            "y_train": full["y_train"][:4000],
            "x_test": full["x_test"][:1000],
            "y_test": full["y_test"][:1000],
        }
    source = tmp_path / "mirror" / "mnist.npz"
    sha = write_npz(source, **subset)
    repo = tmp_path / "repo"
    copy_project(repo)
    write_params(repo, tiny_params(str(source), sha))
    edit_params(repo, "preprocess", validation_size=500)
    edit_params(repo, "train", epochs=3)
    for stage in ("download", "preprocess", "train", "evaluate"):
        run_stage(repo, stage)
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    # 3 epochs on 3,500 images with a 4-filter model: well above chance (0.1), far from the best.
    assert metrics["test_accuracy"] > 0.85
    assert min(metrics["per_class_accuracy"].values()) > 0.5
