"""Import Keras on TensorFlow without its start-up log noise; load a model; say whether
TensorFlow's oneDNN operations run; and the input pipeline that feeds train and evaluate. Only
train, evaluate and the predict command use it.

Importing TensorFlow costs seconds, which is why the other stages never import this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stages.common import StageError, check_interrupt
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

__all__ = [
    "InterruptCheck",
    "batches",
    "keras",
    "load_model",
    "onednn_enabled",
    "seed_everything",
    "tf",
]


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN operations on the CPU: as `TF_ENABLE_ONEDNN_OPTS` says
    where it is set, else by the CPU (TensorFlow turns them on only for AVX-512 VNNI or BF16,
    AVX-VNNI or AMX units). They compute in another order, so a run with them and one without
    differ in their last digits. TensorFlow has no public call for this; its own tests, and
    Intel's, ask the same private one."""
    from tensorflow.python.util import _pywrap_util_port

    return _pywrap_util_port.IsMklEnabled()


class InterruptCheck(keras.callbacks.Callback):
    """Raises a Ctrl-C or SIGTERM noted by `interrupts_deferred` before each step of `fit`,
    `evaluate` or `predict`: between steps, where raising is safe. Hooks that run before a step
    take no logs, so Keras still does not wait for each step's results (as it must for hooks
    after one)."""

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        check_interrupt()

    on_test_batch_begin = on_predict_batch_begin = on_train_batch_begin


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; if `deterministic`, make TensorFlow's ops deterministic
    too (the same weights on every run on the same machine, at some cost in speed)."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def batches(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    batch_size: int,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """`images` (with their `labels`) in batches of `batch_size`: in order, or with
    `shuffle_seed` in an order drawn from that seed anew for each epoch.

    This is the input pipeline that `fit` and `predict` would build from the arrays themselves,
    but without tf.data's autotuning, which Keras turns on there: on 2 cores the autotuner held
    every training step of whole epochs at 51.1 ms where one takes 25-40 ms without it (README:
    The input pipeline). So one batch is prepared ahead, by one thread. Batches gather from the
    arrays by shuffled indices, as Keras does, and tf.data's graph rewrites stay off, as Keras
    keeps them, since they would serialise the captured arrays.
    """
    arrays = tuple(tf.convert_to_tensor(a) for a in (images, labels) if a is not None)
    order = tf.data.Dataset.range(len(images))
    if shuffle_seed is not None:
        order = order.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)

    def gather(indices: tf.Tensor) -> tuple[tf.Tensor, ...] | tf.Tensor:
        batch = tuple(tf.gather(array, indices) for array in arrays)
        return batch if labels is not None else batch[0]

    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return order.batch(batch_size).map(gather).prefetch(1).with_options(options)


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
