"""Test-set scoring and the model loader."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from devtools.workspace import BIN, PROJECT, command_env
from stages.common import StageError
from stages.evaluate import confident_mistakes, score
from stages.tf_setup import keras, load_model


def one_hot(predicted: list[int], confidence: float = 0.9) -> np.ndarray:
    probabilities = np.full((len(predicted), 10), (1 - confidence) / 9, dtype=np.float32)
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_score_accuracy_loss_and_per_class():
    labels = np.array([0, 0, 1, 1, 2])
    metrics = score(one_hot([0, 1, 1, 1, 2]), labels)
    assert metrics["test_accuracy"] == pytest.approx(0.8)
    # four right at p=0.9, one wrong where the true class got p=0.1/9
    expected_loss = -(4 * np.log(0.9) + np.log(0.1 / 9)) / 5
    assert metrics["test_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert metrics["per_class_accuracy"] == {"0": 0.5, "1": 1.0, "2": 1.0}


def test_confident_mistakes_are_the_wrong_predictions_most_confident_first():
    probabilities = np.concatenate(
        [
            one_hot([3], 0.99),
            one_hot([5], 0.6),
            one_hot([1], 0.95),
            one_hot([2], 0.99),
            one_hot([4], 0.8),
        ]
    )
    labels = np.array([3, 4, 0, 7, 4])  # right, wrong (0.6), wrong (0.95), wrong (0.99), right
    assert confident_mistakes(probabilities, labels).tolist() == [3, 2, 1]
    assert confident_mistakes(probabilities, labels, count=2).tolist() == [3, 2]
    assert confident_mistakes(probabilities[:1], labels[:1]).tolist() == []


def test_score_loss_is_keras_cross_entropy():
    probabilities = np.random.default_rng(0).dirichlet(np.ones(10) * 0.3, size=500)
    probabilities = probabilities.astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 10, size=500)
    keras_loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
    assert score(probabilities, labels)["test_loss"] == pytest.approx(float(keras_loss), rel=1e-5)


def test_score_clips_zero_probabilities_like_keras():
    probabilities = np.zeros((1, 10), dtype=np.float32)
    probabilities[0, 3] = 1.0
    assert score(probabilities, np.array([4]))["test_loss"] == pytest.approx(-np.log(1e-7))


def test_missing_model_file(tmp_path):
    with pytest.raises(StageError, match="not found: run the train stage first"):
        load_model(tmp_path / "model.keras")


def test_model_with_a_lambda_layer_is_refused(tmp_path):
    """safe_mode: a Lambda layer would run code from the file; loading must refuse it."""
    inputs = keras.Input(shape=(2,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "unsafe.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(StageError, match=r"cannot load .*unsafe\.keras: .*(unsafe|safe_mode)"):
        load_model(path)


def test_legacy_model_formats_are_refused(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(StageError, match=r"model\.h5: only \.keras model files are loaded"):
        load_model(path)


@pytest.mark.parametrize(
    ("inputs", "classes", "shapes"),
    [
        ((32, 32, 1), 10, "inputs (None, 32, 32, 1) and gives (None, 10)"),
        ((28, 28, 1), 5, "inputs (None, 28, 28, 1) and gives (None, 5)"),
    ],
)
def test_a_model_that_does_not_fit_mnist_is_refused(tmp_path, inputs, classes, shapes):
    model = keras.Sequential(
        [keras.Input(inputs), keras.layers.Flatten(), keras.layers.Dense(classes)]
    )
    path = tmp_path / "other.keras"
    model.save(path)
    with pytest.raises(StageError) as error:
        load_model(path)
    assert str(error.value) == (
        f"{path} takes {shapes}; expected (None, 28, 28, 1) and (None, 10) (a model of this "
        "pipeline)"
    )


def test_garbage_model_file_is_refused(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"not a keras archive")
    with pytest.raises(StageError, match="cannot load"):
        load_model(path)


def test_the_pipeline_runs_keras_on_tensorflow_whatever_backend_is_exported():
    probe = "from stages.tf_setup import keras; print(keras.backend.backend())"
    result = subprocess.run(
        [str(BIN / "python"), "-c", probe],
        cwd=PROJECT,
        env={**command_env(), "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "tensorflow\n"), result.stderr
