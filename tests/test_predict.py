"""`python -m stages.predict`: photos of digits, arrays, folders and every kind of bad input,
through the CLI with a model trained here; and the photo-to-MNIST conversion on its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from digits import PHOTO_FORMATS, font_digits, photograph, save_photo
from helpers import run_command
from PIL import Image

from devtools.workspace import BIN, copy_project
from stages.common import StageError
from stages.dataset import normalize
from stages.digit_image import DIGIT_BOX, to_mnist
from stages.model import build_model, with_test_time_augmentation
from stages.params import ModelParams
from stages.tf_setup import keras, load_model, seed_everything

PHOTOS = 300


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained here on font digits (a few seconds), saved as the pipeline saves it."""
    images, labels = font_digits(3000, seed=1)
    seed_everything(1, deterministic=True)
    model = build_model(
        ModelParams(
            conv_blocks=[
                {"filters": 16, "kernel_size": 3, "pool": True},
                {"filters": 32, "kernel_size": 3, "pool": True},
            ],
            dense=[{"units": 64}],
            batch_norm=False,
            tta="none",
        )
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.003),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(normalize(images), labels, epochs=6, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The project's files, as a fresh clone has them (no trained model): where users run it."""
    copy_project(tmp_path)
    return tmp_path


def predict(*args: str, cwd: Path):
    return run_command([str(BIN / "python"), "-m", "stages.predict", *args], cwd, check=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A folder of photographed font digits the model never saw, in every supported format."""
    folder = tmp_path_factory.mktemp("photos")
    images, labels = font_digits(PHOTOS, seed=2)
    rng = np.random.default_rng(3)
    truth = {}
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        image_format = PHOTO_FORMATS[index % len(PHOTO_FORMATS)]
        path = save_photo(photograph(image, rng), folder / f"digit{index:03d}", image_format)
        truth[str(path)] = int(label)
    return folder, truth


def test_photographed_digits_come_back_with_their_label(model_path, photos, project):
    folder, truth = photos
    result = predict(str(folder), "--json", "--model", str(model_path), cwd=project)
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)
    assert [entry["file"] for entry in predictions] == sorted(truth)
    correct = sum(entry["digit"] == truth[entry["file"]] for entry in predictions)
    assert correct / len(truth) >= 0.98, f"{correct} of {len(truth)} right"


def test_plain_output_and_top_k(model_path, photos, project):
    files = sorted(photos[1])[:3]
    truth = photos[1]
    result = predict(*files, "--top", "3", "--model", str(model_path), cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for file, line in zip(files, lines, strict=True):
        name, ranked = line.split(": ")
        assert name == file
        probabilities = [float(part.split(" (")[1].rstrip(")")) for part in ranked.split(", ")]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert int(ranked[0]) == truth[file]


def bad_inputs(folder: Path) -> dict[str, str]:
    """Files predict cannot use, and the start of the error each must get."""
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (200, 150), (240, 235, 220)).save(folder / "blank.jpg")
    np.save(folder / "wrong_shape.npy", np.zeros((3, 32, 32), dtype=np.uint8))
    np.save(folder / "too_bright.npy", np.full((28, 28), 2.0))
    (folder / "empty").mkdir()
    return {
        str(folder / "missing.png"): "cannot read it: No such file or directory",
        str(folder / "notes.txt"): "unsupported file type '.txt' (use PNG, JPEG, BMP, GIF, WebP",
        str(folder / "broken.png"): "not a readable image",
        str(folder / "blank.jpg"): "no ink found: the image is blank",
        str(folder / "wrong_shape.npy"): "holds an array of shape (3, 32, 32); expected 28×28",
        str(folder / "too_bright.npy"): "holds floats outside 0–1",
        str(folder / "empty"): "no PNG, JPEG, BMP, GIF, WebP or .npy files in this folder",
    }


def test_bad_inputs_get_one_line_each_and_the_rest_are_predicted(model_path, photos, project):
    good = sorted(photos[1])[:2]
    bad = bad_inputs(project / "uploads")
    arguments = [good[0], *bad, good[1]]

    result = predict(*arguments, "--json", "--model", str(model_path), cwd=project)
    assert result.returncode == 1
    entries = json.loads(result.stdout)
    assert [entry["file"] for entry in entries] == arguments
    assert {"digit", "probability", "top"} <= set(entries[0]) and "digit" in entries[-1]
    for entry in entries[1:-1]:
        assert set(entry) == {"file", "error"}
        assert entry["error"].startswith(bad[entry["file"]]), entry
        assert "\n" not in entry["error"]

    plain = predict(*arguments, "--model", str(model_path), cwd=project)
    assert plain.returncode == 1
    assert [line.split(":")[0] for line in plain.stdout.splitlines()] == good
    errors = plain.stderr.splitlines()
    assert [line.split(": ")[2] for line in errors] == list(bad)
    assert all(line.startswith("predict: error: ") for line in errors)


def test_arrays_of_one_or_many_digits(model_path, project):
    images, labels = font_digits(20, seed=4)
    np.save(project / "many.npy", images)
    np.save(project / "one.npy", images[0].astype(np.float32) / 255)
    np.save(project / "channel.npy", images[:2, :, :, np.newaxis])
    result = predict(
        "many.npy", "one.npy", "channel.npy", "--json", "--model", str(model_path), cwd=project
    )
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    names = [f"many.npy[{index}]" for index in range(20)] + ["one.npy", "channel.npy[0]"]
    assert [entry["file"] for entry in entries] == [*names, "channel.npy[1]"]
    predicted = [entry["digit"] for entry in entries]
    assert np.mean(np.array(predicted[:20]) == labels) >= 0.9
    assert predicted[20] == predicted[0] == predicted[21]


def test_a_model_with_test_time_augmentation_predicts_as_it_does_in_keras(
    model_path, project, tmp_path
):
    """What `model.tta` saves, predict runs as it is: the mean over the views."""
    plain = load_model(model_path)
    wrapped = with_test_time_augmentation(plain, "cross")
    wrapped.save(tmp_path / "tta.keras")
    images, _ = font_digits(20, seed=5)
    np.save(project / "many.npy", images)
    result = predict("many.npy", "--json", "--model", str(tmp_path / "tta.keras"), cwd=project)
    assert result.returncode == 0, result.stderr
    got = [entry["probability"] for entry in json.loads(result.stdout)]
    expected = wrapped.predict(normalize(images), verbose=0).max(axis=1)
    assert np.allclose(got, expected, atol=2e-6)
    alone = plain.predict(normalize(images), verbose=0).max(axis=1)
    assert not np.allclose(got, alone, atol=1e-4)


def test_a_model_that_does_not_fit_mnist_is_one_line(project, photos):
    wrong = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )
    wrong.save(project / "wrong.keras")
    result = predict(sorted(photos[1])[0], "--model", "wrong.keras", cwd=project)
    assert result.returncode == 1
    assert result.stderr == (
        "predict: error: wrong.keras takes inputs (None, 32, 32, 1) and gives (None, 5); "
        "expected (None, 28, 28, 1) and (None, 10) (a model of this pipeline)\n"
    )


def test_no_model_yet_is_one_line(project, photos):
    result = predict(sorted(photos[1])[0], cwd=project)
    assert result.returncode == 1
    assert result.stderr == (
        "predict: error: models/model.keras not found: run the train stage first\n"
    )


# The conversion alone.


def mnist_digit() -> np.ndarray:
    return font_digits(1, seed=5)[0][0]


def test_dark_on_light_and_light_on_dark_give_the_same_digit():
    digit = mnist_digit()
    big = Image.fromarray(digit).resize((140, 140), Image.Resampling.BICUBIC)
    light_on_dark = to_mnist(big)
    dark_on_light = to_mnist(Image.fromarray(255 - np.asarray(big)))
    assert np.abs(light_on_dark.astype(int) - dark_on_light.astype(int)).max() <= 1


def test_the_digit_fits_20_by_20_with_its_centre_of_mass_in_the_middle():
    canvas = np.zeros((300, 200), dtype=np.uint8)
    canvas[40:240, 150:180] = 255  # a tall bar near the right edge, far from the centre
    digit = to_mnist(Image.fromarray(canvas)).astype(float)
    rows, columns = np.nonzero(digit)
    assert rows.max() - rows.min() + 1 == DIGIT_BOX
    assert columns.max() - columns.min() + 1 <= 5  # the aspect ratio is kept
    centre = [(np.indices(digit.shape)[axis] * digit).sum() / digit.sum() for axis in (0, 1)]
    assert centre == pytest.approx([14, 14], abs=0.5)


def test_a_phone_sized_photo_gives_the_digit_of_a_small_one():
    digit = mnist_digit()
    small = Image.fromarray(255 - digit).resize((300, 300), Image.Resampling.BICUBIC)
    huge = small.resize((4000, 3000), Image.Resampling.BICUBIC)  # 12 megapixels, stretched
    stretched = Image.fromarray(255 - digit).resize((400, 300), Image.Resampling.BICUBIC)
    assert np.corrcoef(to_mnist(huge).ravel(), to_mnist(stretched).ravel())[0, 1] > 0.95


def test_an_mnist_digit_converts_to_itself():
    digit = mnist_digit()
    again = to_mnist(Image.fromarray(digit))
    assert np.corrcoef(digit.ravel(), again.ravel())[0, 1] > 0.95


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((50, 50), 200, dtype=np.uint8), "no ink found: the image is blank"),
        (np.pad(np.full((1, 1), 0, dtype=np.uint8), 40, constant_values=255), "no ink found"),
    ],
    ids=["blank", "one speck"],
)
def test_blank_images_are_refused(image, message):
    with pytest.raises(StageError, match=message):
        to_mnist(Image.fromarray(image))
