"""Raw data validation, scaling and the validation split."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_mnist_arrays, run_stage, tiny_params, write_npz

from devtools.workspace import copy_project, write_params
from stages.common import StageError
from stages.dataset import normalize
from stages.preprocess import load_raw, split_validation


def test_normalize_scales_to_unit_float32_with_a_channel():
    images = np.zeros((1, 28, 28), dtype=np.uint8)
    images[0, 0, 1:3] = (128, 255)
    scaled = normalize(images)
    assert scaled.dtype == np.float32
    assert scaled.shape == (1, 28, 28, 1)
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    assert scaled[0, 0, 1, 0] == pytest.approx(128 / 255)


def test_split_is_seeded_disjoint_and_complete():
    images = np.arange(50, dtype=np.uint8).reshape(50, 1, 1)
    labels = np.arange(50) % 10
    (train_x, train_y), (val_x, val_y) = split_validation(images, labels, size=10, seed=3)
    assert len(val_x) == 10 and len(train_x) == 40
    assert sorted(np.concatenate([train_x, val_x]).ravel()) == list(range(50))
    # labels follow their images
    np.testing.assert_array_equal(train_y, train_x.ravel() % 10)
    np.testing.assert_array_equal(val_y, val_x.ravel() % 10)
    (again_x, _), _ = split_validation(images, labels, size=10, seed=3)
    np.testing.assert_array_equal(again_x, train_x)
    (other_x, _), _ = split_validation(images, labels, size=10, seed=4)
    assert not np.array_equal(other_x, train_x)


def test_validation_size_must_leave_training_images():
    images = np.zeros((5, 28, 28), dtype=np.uint8)
    with pytest.raises(StageError, match="validation_size is 5 but the training set has only 5"):
        split_validation(images, np.zeros(5), size=5, seed=0)


def broken(**changes) -> dict:
    arrays = make_mnist_arrays(n_train=20, n_test=10)
    arrays.update(changes)
    return {name: value for name, value in arrays.items() if value is not None}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (broken(y_test=None), r"lacks array\(s\) y_test"),
        (broken(x_train=np.zeros((20, 28, 27), np.uint8)), r"x_train is uint8 \(20, 28, 27\)"),
        (broken(x_train=np.zeros((20, 28, 28), np.float64)), "x_train is float64"),
        (broken(y_train=np.zeros(19, np.uint8)), r"y_train is uint8 \(19,\); expected .*\(20,\)"),
        (broken(y_train=np.full(20, 0.5)), "y_train is float64"),
        (
            broken(y_test=np.full(10, 10, np.uint8)),
            "y_test has labels from 10 to 10; expected 0 to 9",
        ),
        (broken(y_test=np.full(10, -1, np.int64)), "y_test has labels from -1"),
        (
            broken(x_test=np.zeros((0, 28, 28), np.uint8), y_test=np.zeros(0, np.uint8)),
            "x_test is empty",
        ),
        (broken(y_train=np.array([object()] * 20)), "not a valid MNIST .npz file: .*allow_pickle"),
    ],
)
def test_bad_raw_data_is_refused(tmp_path, arrays, message):
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    with pytest.raises(StageError, match=message):
        load_raw(path)


def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(StageError, match=r"is not a valid MNIST \.npz file"):
        load_raw(path)


def test_stage_writes_the_three_splits(tmp_path, mnist_dir):
    copy_project(tmp_path)
    raw = tmp_path / "data" / "raw" / "mnist.npz"
    sha = write_npz(raw, **make_mnist_arrays(n_train=300, n_test=50))
    write_params(tmp_path, tiny_params(str(raw), sha))
    result = run_stage(tmp_path, "preprocess")
    assert result.stdout.strip() == (
        f"preprocess: train 200, val 100, test 50 images in {result.stdout.split()[-2]} s"
    )
    processed = tmp_path / "data" / "processed"
    sizes = {}
    for split in ("train", "val", "test"):
        images = np.load(processed / split / "x.npy")
        labels = np.load(processed / split / "y.npy")
        assert images.dtype == np.float32 and images.shape[1:] == (28, 28, 1)
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert np.issubdtype(labels.dtype, np.integer) and len(labels) == len(images)
        sizes[split] = len(labels)
    assert sizes == {"train": 200, "val": 100, "test": 50}
    assert sorted(path.name for path in processed.iterdir()) == ["test", "train", "val"]


def test_stage_refuses_corrupt_raw_file_and_writes_nothing(tmp_path):
    copy_project(tmp_path)
    raw = tmp_path / "data" / "raw" / "mnist.npz"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"not an npz")
    write_params(tmp_path, tiny_params(str(raw), "0" * 64))
    result = run_stage(tmp_path, "preprocess", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("preprocess: error: data/raw/mnist.npz is not a valid MNIST")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data" / "processed").exists()
