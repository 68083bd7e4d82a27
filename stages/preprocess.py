"""Validate the raw `mnist.npz`, scale images to float32 in [0, 1], and split off a validation set.

Writes `data/processed/{train,val,test}/`. The validation split is carved out of the training
images, so the test split stays untouched until the evaluate stage.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np

from stages.common import StageError, atomic_outputs, run
from stages.dataset import IMAGE_SHAPE, NUM_CLASSES, normalize, save_split
from stages.params import load_params
from stages.paths import PROCESSED_DIR, RAW_MNIST

ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def load_raw(path: Path) -> dict[str, np.ndarray]:
    """Read the four MNIST arrays from `path`, refusing anything that is not MNIST-shaped."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in ARRAYS if name not in archive.files]
            if missing:
                raise StageError(f"{path} lacks array(s) {', '.join(missing)}")
            arrays = {name: archive[name] for name in ARRAYS}
    except FileNotFoundError:
        raise StageError(f"{path} not found: run the download stage first") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        # numpy reports pickled (object) arrays as a ValueError about allow_pickle.
        raise StageError(f"{path} is not a valid MNIST .npz file: {error}") from None
    for split in ("train", "test"):
        _check_split(path, split, arrays[f"x_{split}"], arrays[f"y_{split}"])
    return arrays


def _check_split(path: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE[:2]:
        raise StageError(
            f"{path}: x_{split} is {images.dtype} {images.shape}; expected uint8 (N, 28, 28)"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),):
        raise StageError(
            f"{path}: y_{split} is {labels.dtype} {labels.shape}; "
            f"expected integer labels of shape ({len(images)},)"
        )
    if len(images) == 0:
        raise StageError(f"{path}: x_{split} is empty")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise StageError(
            f"{path}: y_{split} has labels from {labels.min()} to {labels.max()}; "
            f"expected 0 to {NUM_CLASSES - 1}"
        )


def split_validation(
    images: np.ndarray, labels: np.ndarray, size: int, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Shuffle with `seed`; return ((train_x, train_y), (val_x, val_y)) with `size` in val."""
    if size >= len(images):
        raise StageError(
            f"preprocess.validation_size is {size} but the training set has only "
            f"{len(images)} images; use a value from 1 to {len(images) - 1}"
        )
    order = np.random.default_rng(seed).permutation(len(images))
    val, train = order[:size], order[size:]
    return (images[train], labels[train]), (images[val], labels[val])


def main() -> None:
    params = load_params("preprocess").preprocess
    started = time.perf_counter()
    raw = load_raw(RAW_MNIST)
    train, val = split_validation(
        raw["x_train"], raw["y_train"], params.validation_size, params.seed
    )
    splits = {"train": train, "val": val, "test": (raw["x_test"], raw["y_test"])}
    with atomic_outputs(*(PROCESSED_DIR / split for split in splits), dirs=True) as folders:
        for folder, (images, labels) in zip(folders, splits.values(), strict=True):
            save_split(folder, normalize(images), labels.astype(np.uint8))
    counts = ", ".join(f"{split} {len(labels)}" for split, (_, labels) in splits.items())
    print(f"preprocess: {counts} images in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    run("preprocess", main)
