"""The processed dataset: one folder per split holding `x.npy` (images) and `y.npy` (labels).

Shared by preprocess, train and evaluate, and by any code that must feed the model images in the
exact form it was trained on (`normalize`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.common import StageError
from stages.params import IMAGE_SIZE
from stages.paths import PROCESSED_DIR

SPLITS = ("train", "val", "test")
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
NUM_CLASSES = 10


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) → float32 in [0, 1] with a channel axis, (N, 28, 28, 1)."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def save_split(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write a split into `folder`, one of `atomic_outputs`' temporary folders."""
    np.save(folder / "x.npy", images)
    np.save(folder / "y.npy", labels)


def load_split(split: str, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A split's images and labels; with `mmap`, read from disk only where they are used."""
    folder = PROCESSED_DIR / split
    mode = "r" if mmap else None
    try:
        images = np.load(folder / "x.npy", allow_pickle=False, mmap_mode=mode)
        labels = np.load(folder / "y.npy", allow_pickle=False, mmap_mode=mode)
    except (OSError, ValueError) as error:
        raise StageError(f"cannot read the {split} split in {folder}: {error}") from None
    if images.shape[1:] != IMAGE_SHAPE or images.dtype != np.float32 or len(images) != len(labels):
        raise StageError(
            f"{folder} holds images {images.shape} {images.dtype} and {len(labels)} labels; "
            f"expected (N, {', '.join(map(str, IMAGE_SHAPE))}) float32 and N labels: "
            "re-run the preprocess stage"
        )
    return images, labels
