"""Turn a photo or scan of one handwritten digit into an MNIST image, the way MNIST was made.

MNIST's digits are light ink on a black field, size-normalised to fit a 20×20 box with their
aspect ratio kept, anti-aliased, and centred by their centre of mass in a 28×28 field. A photo
is dark ink on light paper of some tone, anywhere on a canvas of any size, with noise. So:
greyscale; find the paper (the border's usual tone) and make the ink light on dark; remove the
paper's tone and its faint noise; crop to the ink; fit in 20×20; centre by the centre of mass.
The result is uint8 like MNIST's files, for the same `normalize` as training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from stages.common import StageError
from stages.dataset import IMAGE_SHAPE

FIELD = IMAGE_SHAPE[0]
DIGIT_BOX = 20
# Larger photos are reduced first (the digit ends up 20 pixels tall anyway), so that a phone's
# 12-megapixel photo takes as long as a scan.
MAX_SIDE = 600
# Below this fraction of the ink's full strength a pixel is paper: its grain, shadows, JPEG noise.
INK_FLOOR = 0.25
# Pixels of noise that may be stronger than the ink itself.
SPECKS = 4
# Less contrast than this between ink and paper (on a 0–1 scale) is a blank page.
MIN_CONTRAST = 0.15


def greyscale(image: Image.Image) -> Image.Image:
    """8-bit luminance, at most MAX_SIDE pixels a side; transparent parts count as white paper."""
    image = ImageOps.exif_transpose(image)  # photos from phones are often stored rotated
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        paper = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(paper, image)
    grey = image.convert("L")
    grey.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BOX)
    return grey


@dataclass(frozen=True)
class InkScale:
    """Grey levels to ink strength: 0 on the paper, 1 for the strongest ink, whatever the paper's
    tone and whether the ink is darker or lighter than it."""

    paper: float
    ink: float

    @classmethod
    def measure(cls, grey: np.ndarray) -> InkScale:
        """The paper is the border's usual tone; the ink's full strength is the SPECKS-th most
        ink-like pixel, so that a few specks of noise are not it."""
        border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
        paper = float(np.median(border))
        # Dark ink on light paper is made MNIST's light ink on black by the sign of the scale.
        values = grey.ravel() if paper > 127 else 255 - grey.ravel()
        ink = float(np.partition(values, SPECKS)[SPECKS])
        ink = ink if paper > 127 else 255 - ink
        if abs(ink - paper) < MIN_CONTRAST * 255:
            raise StageError("no ink found: the image is blank or has too little contrast")
        return cls(paper, ink)

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        strength = np.clip((grey.astype(np.float32) - self.paper) / (self.ink - self.paper), 0, 1)
        strength[strength < INK_FLOOR] = 0.0
        return strength


def fit_in_field(strength: np.ndarray, solid: np.ndarray) -> np.ndarray:
    """Crop to the ink (the pixels `solid` marks), scale it to fit DIGIT_BOX keeping its aspect
    ratio, and centre its centre of mass in a FIELD×FIELD image; uint8 0–255."""
    rows, columns = np.nonzero(solid)
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
    grey_image = greyscale(image)
    grey = np.asarray(grey_image)
    to_strength = InkScale.measure(grey)
    strength = to_strength(grey)
    # The crop keeps ink pixels with ink around them: a 3×3 blur leaves an isolated speck at a
    # ninth of its strength, below INK_FLOOR, while a stroke even one pixel wide keeps a third.
    blurred = np.asarray(grey_image.filter(ImageFilter.BoxBlur(1)))
    return fit_in_field(strength, (strength > 0) & (to_strength(blurred) > 0))


def _centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    total = digit.sum()
    rows, columns = np.indices(digit.shape)
    return float((rows * digit).sum() / total), float((columns * digit).sum() / total)
