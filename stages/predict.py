"""Predict the digit in your own images with the trained model.

    python -m stages.predict IMAGE... [--json] [--top K] [--model PATH]

A command, not a pipeline stage. IMAGE is a PNG, JPEG, BMP, GIF or WebP file of one digit (a
photo or scan of any size, colour or grey, dark ink on light paper or light on dark), a `.npy`
array of one or many 28×28 MNIST images (uint8 0–255 or float 0–1), or a folder of them. Photos
become MNIST digits the way MNIST was made (`stages.digit_image`); every image then gets the
same `normalize` as training, and all are predicted in one batch.

Prints one line per input, `<file>: <digit> (<probability>)`, or with `--json` one JSON array.
An input that fails gets a one-line error and the others are still predicted; the exit status
is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stages.common import StageError, run
from stages.dataset import IMAGE_SHAPE, NUM_CLASSES, normalize
from stages.digit_image import to_mnist
from stages.paths import MODEL

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
ARRAY_SUFFIX = ".npy"
FORMATS = "PNG, JPEG, BMP, GIF, WebP or .npy"


@dataclass
class Digit:
    """One input: its name, and its MNIST image or why there is none."""

    file: str
    image: np.ndarray | None = None
    error: str | None = None


def read_all(arguments: list[str]) -> list[Digit]:
    """Every digit the arguments hold, in order: each file's, and in a folder every image and
    array file's, by name; a folder with none gets one entry saying so."""
    digits: list[Digit] = []
    for argument in arguments:
        path = Path(argument)
        if not path.is_dir():
            digits += read(path)
            continue
        found = sorted(
            child
            for child in path.iterdir()
            if child.is_file() and child.suffix.lower() in (*IMAGE_SUFFIXES, ARRAY_SUFFIX)
        )
        digits += [digit for child in found for digit in read(child)]
        if not found:
            digits.append(Digit(argument, error=f"no {FORMATS} files in this folder"))
    return digits


def read(path: Path) -> list[Digit]:
    """The digit(s) in one file, or one entry saying why it cannot be read."""
    suffix = path.suffix.lower()
    try:
        if suffix == ARRAY_SUFFIX:
            return read_array(path)
        if suffix not in IMAGE_SUFFIXES:
            raise StageError(f"unsupported file type '{path.suffix}' (use {FORMATS})")
        with Image.open(path) as image:
            return [Digit(str(path), to_mnist(image))]
    except StageError as error:
        return [Digit(str(path), error=str(error))]
    except UnidentifiedImageError:
        return [Digit(str(path), error=f"not a readable image (use {FORMATS})")]
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        cause = getattr(error, "strerror", None) or " ".join(str(error).split())
        return [Digit(str(path), error=f"cannot read it: {cause}")]


def read_array(path: Path) -> list[Digit]:
    """A `.npy` of 28×28 images: (28, 28), (N, 28, 28) or (N, 28, 28, 1); uint8 or float 0–1."""
    array = np.load(path, allow_pickle=False)
    shape = array.shape
    if array.ndim == 4 and shape[-1] == 1:
        array = array[..., 0]
    single = array.ndim == 2
    if single:
        array = array[np.newaxis]
    if array.ndim != 3 or array.shape[1:] != IMAGE_SHAPE[:2] or len(array) == 0:
        raise StageError(
            f"holds an array of shape {shape}; expected 28×28 images: "
            "(28, 28), (N, 28, 28) or (N, 28, 28, 1)"
        )
    if np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise StageError("holds floats outside 0–1; expected 0–1 floats or 0–255 uint8")
        array = np.round(array * 255)
    elif array.dtype != np.uint8:
        raise StageError(f"holds {array.dtype}; expected uint8 (0–255) or floats (0–1)")
    images = array.astype(np.uint8)
    if single:
        return [Digit(str(path), images[0])]
    return [Digit(f"{path}[{index}]", image) for index, image in enumerate(images)]


def predict(digits: list[Digit], model_path: Path) -> np.ndarray:
    """Softmax outputs for the digits that have an image, in order."""
    from stages.tf_setup import load_model  # here: TensorFlow's import is the slow part

    batch = normalize(np.stack([digit.image for digit in digits]))
    return load_model(model_path).predict_on_batch(batch)


def entry(digit: Digit, probabilities: np.ndarray | None, top: int) -> dict[str, object]:
    if probabilities is None:
        return {"file": digit.file, "error": digit.error}
    ranked = np.argsort(-probabilities, kind="stable")[:top]
    best = int(ranked[0])
    return {
        "file": digit.file,
        "digit": best,
        "probability": round(float(probabilities[best]), 6),
        "top": [[int(d), round(float(probabilities[d]), 6)] for d in ranked],
    }


def plain_line(result: dict[str, object]) -> str:
    ranked = ", ".join(f"{digit} ({probability:.3f})" for digit, probability in result["top"])
    return f"{result['file']}: {ranked}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stages.predict",
        description="Predict the digit in each image with the trained model.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help=f"{FORMATS} files or folders")
    parser.add_argument("--json", action="store_true", help="print one JSON array")
    parser.add_argument(
        "--top",
        type=int,
        default=1,
        choices=range(1, NUM_CLASSES + 1),
        metavar="K",
        help="show the K most likely digits (1–10, default 1)",
    )
    parser.add_argument("--model", type=Path, default=MODEL, help=f"default: {MODEL}")
    args = parser.parse_args(argv)

    digits = read_all(args.images)
    readable = [digit for digit in digits if digit.image is not None]
    outputs = iter(predict(readable, args.model) if readable else [])
    results = [
        entry(digit, next(outputs) if digit.image is not None else None, args.top)
        for digit in digits
    ]
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for result in results:
            if "error" in result:
                print(f"predict: error: {result['file']}: {result['error']}", file=sys.stderr)
            else:
                print(plain_line(result))
    return 1 if len(readable) < len(digits) else 0


if __name__ == "__main__":
    run("predict", main)
