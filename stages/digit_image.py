"""Turn a photo or scan of one handwritten digit into an MNIST image, the way MNIST was made.

MNIST's digits are light ink on a black field, size-normalised to fit a 20×20 box with their
aspect ratio kept, anti-aliased, and centred by their centre of mass in a 28×28 field. A photo
is dark ink on light paper of some tone, anywhere on a canvas of any size, with noise. So:
greyscale; find the paper (the border's usual tone) and make the ink light on dark; remove the
paper's tone and its faint noise; crop to the ink; fit in 20×20; centre by the centre of mass.
The result is uint8 like MNIST's files, for the same `normalize` as training.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from stages.common import StageError
from stages.dataset import IMAGE_SHAPE

FIELD = IMAGE_SHAPE[0]
DIGIT_BOX = 20
# Below this fraction of the ink's full strength a pixel is paper: its grain, shadows, JPEG noise.
INK_FLOOR = 0.25
# Less contrast than this between ink and paper (on a 0–1 scale) is a blank page.
MIN_CONTRAST = 0.15


def greyscale(image: Image.Image) -> np.ndarray:
    """Luminance in [0, 1]; transparent parts count as white paper."""
    image = ImageOps.exif_transpose(image)  # photos from phones are often stored rotated
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        paper = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(paper, image)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def ink_strength(grey: np.ndarray) -> np.ndarray:
    """0 where the paper is, up to 1 for the strongest ink, whatever the paper's tone."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    paper = float(np.median(border))
    if paper > 0.5:  # dark ink on light paper: make it MNIST's light ink on black
        grey, paper = 1.0 - grey, 1.0 - paper
    # The ink's full strength, from a median-filtered copy so that a speck of noise is not it.
    ink = float(_median3(grey).max())
    if ink - paper < MIN_CONTRAST:
        raise StageError("no ink found: the image is blank or has too little contrast")
    strength = np.clip((grey - paper) / (ink - paper), 0.0, 1.0)
    strength[strength < INK_FLOOR] = 0.0
    return strength


def fit_in_field(strength: np.ndarray) -> np.ndarray:
    """Crop to the ink, scale it to fit DIGIT_BOX keeping its aspect ratio, and centre its centre
    of mass in a FIELD×FIELD image; uint8 0–255."""
    # The crop ignores isolated specks: the median filter removes them from the mask.
    rows, columns = np.nonzero(_median3(strength) > 0)
    if len(rows) == 0:
        raise StageError("no ink found: only specks of noise")
    crop = strength[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    scale = DIGIT_BOX / max(crop.shape)
    height, width = (max(1, round(side * scale)) for side in crop.shape)
    resized = Image.fromarray(crop, mode="F").resize((width, height), Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(resized), 0.0, 1.0)
    # MNIST's digits have their centre of mass at pixel (14, 14) (the mean over its test set is
    # (13.99, 14.00)); keep the digit inside the field.
    centre_row, centre_column = _centre_of_mass(digit)
    top = int(np.clip(round(FIELD / 2 - centre_row), 0, FIELD - height))
    left = int(np.clip(round(FIELD / 2 - centre_column), 0, FIELD - width))
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    field[top : top + height, left : left + width] = digit
    return np.round(field * 255).astype(np.uint8)


def to_mnist(image: Image.Image) -> np.ndarray:
    """One photographed or scanned digit as a 28×28 uint8 MNIST image."""
    return fit_in_field(ink_strength(greyscale(image)))


def _median3(values: np.ndarray) -> np.ndarray:
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.filter(ImageFilter.MedianFilter(3)))


def _centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    total = digit.sum()
    rows, columns = np.indices(digit.shape)
    return float((rows * digit).sum() / total), float((columns * digit).sum() / total)
