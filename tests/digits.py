"""Digits for the predict tests: MNIST-format digits drawn from fonts (learnable by a small model
in seconds, so the tests need no MNIST), and photos of MNIST-format digits as users take them."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stages.digit_image import to_mnist

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
# Sans, serif and monospaced faces shipped with matplotlib, upright and slanted, thin and bold.
FONTS = [
    FONT_DIR / name
    for name in (
        "DejaVuSans.ttf",
        "DejaVuSans-Bold.ttf",
        "DejaVuSans-Oblique.ttf",
        "DejaVuSerif.ttf",
        "DejaVuSerif-Bold.ttf",
        "DejaVuSerif-Italic.ttf",
        "DejaVuSansMono.ttf",
        "DejaVuSansMono-Bold.ttf",
        "STIXGeneral.ttf",
        "STIXGeneralBol.ttf",
    )
]
PHOTO_FORMATS = ("png", "jpeg", "bmp", "gif", "webp")


def font_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` MNIST-format digits (uint8, (N, 28, 28)) in random fonts, sizes, stroke widths
    and slants, made MNIST-like by the same `to_mnist` that predict uses; and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count)
    images = np.empty((count, 28, 28), dtype=np.uint8)
    for index, label in enumerate(labels):
        font = ImageFont.truetype(str(FONTS[rng.integers(len(FONTS))]), int(rng.integers(40, 70)))
        canvas = Image.new("L", (96, 96), 0)
        ImageDraw.Draw(canvas).text(
            (48, 48),
            str(label),
            fill=255,
            font=font,
            anchor="mm",
            stroke_width=int(rng.integers(0, 4)),
            stroke_fill=255,
        )
        canvas = canvas.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC)
        images[index] = to_mnist(canvas)
    return images, labels


def photograph(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """An MNIST-format digit as a user's photo or scan: enlarged 5–9 times, turned a few degrees,
    dark coloured ink on tinted paper with noise, off-centre on a larger canvas, saved as JPEG."""
    scale = int(rng.integers(5, 10))
    side = 28 * scale
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    big = big.rotate(rng.uniform(-6, 6), resample=Image.Resampling.BICUBIC)
    ink_share = np.asarray(big, dtype=np.float32)[..., np.newaxis] / 255
    paper = rng.uniform(0.75, 1.0, size=3)
    ink = rng.uniform(0.0, 0.35, size=3)
    height, width = side + int(rng.integers(20, 120)), side + int(rng.integers(20, 120))
    canvas = np.ones((height, width, 3), dtype=np.float32) * paper
    top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
    canvas[top : top + side, left : left + side] = paper * (1 - ink_share) + ink * ink_share
    canvas += rng.normal(0, 0.02, canvas.shape)
    photo = Image.fromarray(np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=int(rng.integers(60, 95)))
    return Image.open(buffer)


def save_photo(photo: Image.Image, path_stem: Path, image_format: str) -> Path:
    """Save a photo in one of the formats predict reads (GIF as a palette image)."""
    path = path_stem.with_suffix(f".{'jpg' if image_format == 'jpeg' else image_format}")
    if image_format == "gif":
        photo = photo.convert("P", palette=Image.Palette.ADAPTIVE)
    photo.save(path, image_format.upper())
    return path
