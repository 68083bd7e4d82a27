"""Import Keras on TensorFlow without its start-up log noise. Only train and evaluate use it.

Importing TensorFlow costs seconds, which is why the other stages never import this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stages.common import StageError
from stages.dataset import IMAGE_SHAPE, NUM_CLASSES

# Read by TensorFlow when first imported; 3 keeps only fatal C++ logs (Python errors still raise).
# Users can still set it themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# This pipeline is TensorFlow's, whatever backend a user exported for other work.
os.environ["KERAS_BACKEND"] = "tensorflow"


@contextmanager
def _c_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ start-up messages (oneDNN, CUDA
    probing) are written before its log level is read, so the variable above cannot hide them.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _c_stderr_silenced():
    import keras
    import tensorflow as tf

__all__ = ["keras", "load_model", "seed_everything", "tf"]


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; if `deterministic`, make TensorFlow's ops deterministic
    too (the same weights on every run on the same machine, at some cost in speed)."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def load_model(path: Path) -> keras.Model:
    """Load a `.keras` model in safe mode, which refuses files that would run arbitrary code,
    and check that it takes MNIST images and gives one probability per digit.

    Legacy formats (HDF5 `.h5`, SavedModel folders) are refused: they have no safe mode.
    """
    if path.suffix != ".keras":
        raise StageError(
            f"{path}: only .keras model files are loaded (legacy formats can run code)"
        )
    if not path.is_file():
        raise StageError(f"{path} not found: run the train stage first")
    try:
        model = keras.models.load_model(path, safe_mode=True)
    except (ValueError, OSError) as error:
        raise StageError(f"cannot load {path}: {error}") from None
    shapes = tuple(model.input_shape), tuple(model.output_shape)
    expected = (None, *IMAGE_SHAPE), (None, NUM_CLASSES)
    if shapes != expected:
        raise StageError(
            f"{path} takes inputs {shapes[0]} and gives {shapes[1]}; "
            f"expected {expected[0]} and {expected[1]} (a model of this pipeline)"
        )
    return model
