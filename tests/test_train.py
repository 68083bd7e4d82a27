"""Training: the learning-rate schedule, augmentation, and bit-for-bit reproducibility."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import local_project, read_json, run_stage

from devtools.workspace import edit_params
from stages.common import interrupts_deferred
from stages.params import TrainParams
from stages.tf_setup import InterruptCheck, batches, keras, load_model
from stages.train import (
    ELASTIC_SIGMA,
    OneCycleMomentum,
    RandomElasticDistortion,
    bilinear_sample,
    fit,
    gaussian_smoothing_matrix,
    learning_rate,
    one_cycle_beta_1,
    with_augmentation,
)

BASE = {
    "epochs": 10,
    "batch_size": 32,
    "optimizer": "adam",
    "learning_rate": 0.01,
    "lr_schedule": "cosine",
    "warmup_epochs": 2,
    "weight_decay": 0.0,
    "augment_shift": 0.0,
    "augment_rotation": 0.0,
    "augment_zoom": 0.0,
    "augment_elastic": 0.0,
    "seed": 1,
    "deterministic": True,
    "early_stopping_patience": 0,
    "ema_momentum": 0.0,
    "ensemble_size": 1,
    "distribute": "none",
    "precision": "float32",
}


def train_params(**changes: object) -> TrainParams:
    return TrainParams(**{**BASE, **changes})


def rates(schedule, steps: list[int]) -> list[float]:
    return [float(schedule(step)) for step in steps]


def test_constant_rate_without_warmup_is_a_plain_number():
    assert learning_rate(train_params(lr_schedule="constant", warmup_epochs=0), 100) == 0.01


def test_warmup_then_cosine_to_zero():
    schedule = learning_rate(train_params(), steps_per_epoch=100)
    start, mid_warmup, peak, middle, end = rates(schedule, [0, 100, 200, 600, 1000])
    assert start == 0.0
    assert mid_warmup == pytest.approx(0.005)
    assert peak == pytest.approx(0.01)
    assert middle == pytest.approx(0.005)  # halfway through the decay
    assert end == pytest.approx(0.0, abs=1e-9)


def test_warmup_then_constant():
    schedule = learning_rate(train_params(lr_schedule="constant"), steps_per_epoch=100)
    assert rates(schedule, [100, 200, 600, 1000]) == pytest.approx([0.005, 0.01, 0.01, 0.01])


def test_one_cycle_moves_adams_beta_1_against_the_rate():
    schedule = learning_rate(train_params(lr_schedule="one_cycle"), steps_per_epoch=100)
    assert rates(schedule, [0, 200, 600, 1000]) == pytest.approx([0.0, 0.01, 0.005, 0.0], abs=1e-9)
    beta_1 = [one_cycle_beta_1(rate, 0.01) for rate in rates(schedule, [0, 200, 600, 1000])]
    assert beta_1 == pytest.approx([0.95, 0.85, 0.90, 0.95])


def test_one_cycle_needs_adam():
    with pytest.raises(ValueError, match="lr_schedule one_cycle needs optimizer adam, not sgd"):
        train_params(lr_schedule="one_cycle", optimizer="sgd")


def tiny_fit_data() -> tuple[tuple, tuple]:
    images = np.random.default_rng(0).random((256, 28, 28, 1), dtype=np.float32)
    labels = np.arange(256) % 10
    return (images, labels), (images[:32], labels[:32])


def dense_classifier() -> keras.Model:
    keras.utils.set_random_seed(1)
    layers = [keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    return keras.Sequential([keras.Input((28, 28, 1)), *layers])


def test_adam_steps_with_the_beta_1_the_callback_sets():
    """The steps read β1 afresh, not a value fixed when fit traced them."""
    (images, labels), _ = tiny_fit_data()
    weights = []
    for callbacks in ([], [OneCycleMomentum(0.01)]):
        model = dense_classifier()
        beta_1 = keras.Variable(0.95, trainable=False)
        adam = keras.optimizers.Adam(learning_rate(train_params(), 8), beta_1=beta_1)
        model.compile(adam, "sparse_categorical_crossentropy")
        model.fit(images, labels, batch_size=32, epochs=2, callbacks=callbacks, verbose=0)
        weights.append(model.get_weights()[0])
    assert not np.array_equal(*weights)


def test_fit_with_one_cycle_leaves_beta_1_where_the_last_step_put_it():
    model = dense_classifier()
    params = train_params(lr_schedule="one_cycle", epochs=2, warmup_epochs=1)
    fit(model, params, *tiny_fit_data())  # 8 steps an epoch
    last_rate = float(learning_rate(params, steps_per_epoch=8)(15))
    assert 0 < last_rate < 0.001
    assert float(model.optimizer.beta_1) == pytest.approx(one_cycle_beta_1(last_rate, 0.01))


def test_weight_decay_shrinks_each_kernel_by_rate_times_decay_of_itself_and_no_bias():
    """One SGD step at a constant rate from the same start: the gradient is taken at the start
    either way, so the decayed kernel ends rate × decay × its start below the undecayed one."""
    start_kernel, zeros = dense_classifier().get_weights()
    start_bias = zeros + 0.5  # not zero, so that decaying it would show
    ends = []
    for decay in (0.0, 0.5):
        model = dense_classifier()
        model.set_weights([start_kernel, start_bias])
        params = train_params(
            optimizer="sgd",
            lr_schedule="constant",
            warmup_epochs=0,
            epochs=1,
            batch_size=256,
            weight_decay=decay,
        )
        fit(model, params, *tiny_fit_data())  # one step of the 256 images
        ends.append(model.get_weights())
    (kernel, bias), (decayed_kernel, decayed_bias) = ends
    shrink = BASE["learning_rate"] * 0.5 * start_kernel  # the rate those params train at
    assert np.abs(shrink).max() > 1e-4
    assert np.allclose(decayed_kernel, kernel - shrink, rtol=0, atol=1e-7)
    assert np.array_equal(decayed_bias, bias)


def test_warmup_must_be_shorter_than_training():
    with pytest.raises(ValueError, match=r"warmup_epochs \(10\) must be less than epochs \(10\)"):
        train_params(warmup_epochs=10)


def test_every_member_seed_must_be_valid():
    with pytest.raises(ValueError, match=r"seed \+ ensemble_size - 1 must be at most 4294967295"):
        train_params(seed=2**32 - 1, ensemble_size=2)


def test_augmentation_wraps_the_model_only_when_asked():
    model = keras.Sequential([keras.Input(shape=(28, 28, 1)), keras.layers.Flatten()])
    assert with_augmentation(model, train_params()) is model
    wrapped = with_augmentation(
        model, train_params(augment_shift=0.1, augment_rotation=10, augment_zoom=0.1)
    )
    kinds = [type(layer).__name__ for layer in wrapped.layers]
    assert kinds == ["RandomRotation", "RandomZoom", "RandomTranslation", "Sequential"]
    assert all(layer.fill_mode == "constant" for layer in wrapped.layers[:3])
    # zoom in and out alike, keeping the digit's proportions
    assert wrapped.layers[1].height_factor == (-0.1, 0.1)
    assert wrapped.layers[1].width_factor is None
    # the elastic distortion first, on the digit as written
    elastic = with_augmentation(model, train_params(augment_rotation=10, augment_elastic=34))
    kinds = [type(layer).__name__ for layer in elastic.layers]
    assert kinds == ["RandomElasticDistortion", "RandomRotation", "Sequential"]
    assert (elastic.layers[0].alpha, elastic.layers[0].sigma) == (34, ELASTIC_SIGMA)


def test_each_augmentation_layer_draws_its_own_random_numbers():
    """Layers sharing one seed draw the same numbers: the zoom and shift of every image would
    follow from its rotation."""
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten()])
    every_layer = {
        "augment_shift": 0.1,
        "augment_rotation": 10,
        "augment_zoom": 0.1,
        "augment_elastic": 34,
    }
    wrapped = with_augmentation(model, train_params(seed=7, **every_layer))
    seeds = [layer.seed for layer in wrapped.layers[:4]]
    assert len(set(seeds)) == 4
    again = with_augmentation(model, train_params(seed=7, **every_layer))
    assert [layer.seed for layer in again.layers[:4]] == seeds  # fixed by train.seed
    shift_only = with_augmentation(model, train_params(seed=7, augment_shift=0.1))
    assert shift_only.layers[0].seed == seeds[3]  # whichever other layers are on
    other = with_augmentation(model, train_params(seed=8, **every_layer))
    assert not {layer.seed for layer in other.layers[:4]} & set(seeds)
    # the elastic layer's seed came last: the seeds of runs without it are those of before
    assert with_augmentation(model, train_params(seed=42, augment_rotation=10)).layers[0].seed == (
        3444837047
    )


def test_gaussian_smoothing_matrix_is_a_zero_padded_convolution():
    sigma = 1.5
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    vector = np.random.default_rng(0).uniform(-1, 1, 28)
    smoothed = gaussian_smoothing_matrix(28, sigma) @ vector
    np.testing.assert_allclose(smoothed, np.convolve(vector, taps / taps.sum(), "same"))


def test_bilinear_sample_reads_between_pixels_as_keras_map_coordinates_does():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (3, 7, 9, 1)).astype("float32")
    rows = rng.uniform(0, 6, (3, 7, 9)).astype("float32")
    cols = rng.uniform(0, 8, (3, 7, 9)).astype("float32")
    rows[:, 0, 0], cols[:, 0, 0] = 3.0, 4.0
    sampled = keras.ops.convert_to_numpy(bilinear_sample(images, rows, cols))
    batch = np.broadcast_to(np.arange(3, dtype="float32")[:, None, None], rows.shape)
    expected = keras.ops.image.map_coordinates(images[..., 0], [batch, rows, cols], order=1)
    np.testing.assert_allclose(sampled[..., 0], keras.ops.convert_to_numpy(expected), atol=1e-6)
    assert (sampled[:, 0, 0] == images[:, 3, 4]).all()


def test_bilinear_sample_reads_black_beyond_the_edges():
    """As Keras' rotations fill (TensorFlow's `fill_mode="constant"`): the pixels beyond the
    image are black, and a position between the edge and them reads a blend."""
    image = np.ones((1, 4, 4, 1), dtype="float32")
    rows = np.array([[[-0.5, -1.0, -3.0, 1.5], [3.5, 4.0, 9.0, 1.5]]], dtype="float32")
    cols = np.array([[[1.5, 1.5, 1.5, -0.25], [1.5, 1.5, 1.5, 3.75]]], dtype="float32")
    sampled = keras.ops.convert_to_numpy(bilinear_sample(image, rows, cols))[0, ..., 0]
    np.testing.assert_allclose(sampled, [[0.5, 0, 0, 0.75], [0.5, 0, 0, 0.25]])


def displacements(alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, columns) that `RandomElasticDistortion` moved each pixel of 64 images by,
    read off from ramps: an image whose value is its row number, and one of its column number,
    each distorted by a layer of the same seed (so the same field)."""
    ramp = np.broadcast_to(np.arange(28, dtype="float32")[:, None], (64, 28, 28))
    moved = []
    for image in (ramp, np.swapaxes(ramp, 1, 2)):
        layer = RandomElasticDistortion(alpha, ELASTIC_SIGMA, seed=seed)
        distorted = layer(np.ascontiguousarray(image)[..., None], training=True)
        moved.append(keras.ops.convert_to_numpy(distorted)[..., 0] - image)
    # Only where the ramp is read inside the image: a position off it reads black.
    middle = (slice(None), slice(8, 20), slice(8, 20))
    return moved[0][middle], moved[1][middle]


def test_elastic_distortion_moves_each_pixel_by_a_smooth_field_of_its_own():
    rows, cols = displacements(34, seed=3)
    # Each direction's move: uniform noise (variance 1/3) smoothed and scaled by alpha.
    smoothing = gaussian_smoothing_matrix(28, ELASTIC_SIGMA)[14]
    expected_std = 34 * np.sqrt(1 / 3) * (smoothing**2).sum()
    for moves in (rows, cols):
        assert moves.std() == pytest.approx(expected_std, rel=0.15)
        assert abs(moves.mean()) < 0.3
        # smooth: neighbours move almost alike
        assert np.corrcoef(moves[:, :, :-1].ravel(), moves[:, :, 1:].ravel())[0, 1] > 0.95
    # the two directions drawn apart (Keras' RandomElasticTransform draws them alike)
    assert abs(np.corrcoef(rows.ravel(), cols.ravel())[0, 1]) < 0.1
    # and every image its own field
    assert abs(np.corrcoef(cols[0].ravel(), cols[1].ravel())[0, 1]) < 0.5
    same_rows, same_cols = displacements(34, seed=3)
    assert (same_rows == rows).all() and (same_cols == cols).all()
    assert not (displacements(34, seed=4)[1] == cols).all()
    assert np.allclose(displacements(17, seed=3)[1], cols / 2, atol=1e-3)


def test_elastic_distortion_only_while_training():
    images = np.random.default_rng(0).uniform(0, 1, (2, 28, 28, 1)).astype("float32")
    layer = RandomElasticDistortion(34, ELASTIC_SIGMA, seed=1)
    assert (keras.ops.convert_to_numpy(layer(images, training=False)) == images).all()
    assert not np.allclose(keras.ops.convert_to_numpy(layer(images, training=True)), images)


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory):
    """A project with tiny processed data and a training run with every feature on."""
    repo = tmp_path_factory.mktemp("train") / "repo"
    local_project(repo, 400, 100)
    edit_params(
        repo,
        "model",
        batch_norm=True,
        conv_blocks=[{"filters": 4, "kernel_size": 3, "pool": True, "dropout": 0.1}],
    )
    edit_params(
        repo,
        "train",
        epochs=2,
        lr_schedule="cosine",
        warmup_epochs=1,
        augment_shift=0.1,
        augment_rotation=10,
        augment_zoom=0.1,
        augment_elastic=34,
        early_stopping_patience=1,
    )
    run_stage(repo, "preprocess")
    return repo


def accuracy_on(model: keras.Model, repo: Path, split: str) -> float:
    """`model`'s accuracy on one split of `repo`'s processed data."""
    images = np.load(repo / f"data/processed/{split}/x.npy")
    labels = np.load(repo / f"data/processed/{split}/y.npy")
    return float((model.predict(images, verbose=0).argmax(axis=1) == labels).mean())


def train_and_evaluate(repo) -> tuple[list, bytes]:
    run_stage(repo, "train")
    run_stage(repo, "evaluate")
    weights = [weight.copy() for weight in load_model(repo / "models/model.keras").get_weights()]
    return weights, (repo / "metrics/evaluate.json").read_bytes()


def test_same_params_and_seed_give_identical_weights_and_metrics(tiny_project):
    first_weights, first_metrics = train_and_evaluate(tiny_project)
    second_weights, second_metrics = train_and_evaluate(tiny_project)
    assert second_metrics == first_metrics
    assert len(first_weights) == len(second_weights)
    for first, second in zip(first_weights, second_weights, strict=True):
        assert (first == second).all()
    # and the saved model holds no augmentation layers
    saved = load_model(tiny_project / "models/model.keras")
    assert not [layer for layer in saved.layers if type(layer).__name__.startswith("Random")]


def test_the_seed_alone_decides_the_weights(tiny_project, tmp_path):
    """Another seed draws every kernel differently; back on the first seed, the very same
    weights come back. On a copy, so that the shared project keeps its params."""
    other = tmp_path / "other"
    shutil.copytree(tiny_project, other)
    seed = yaml.safe_load((tiny_project / "params.yaml").read_text())["train"]["seed"]
    first_weights, _ = train_and_evaluate(tiny_project)
    edit_params(other, "train", seed=seed + 1)
    other_weights, _ = train_and_evaluate(other)
    pairs = list(zip(first_weights, other_weights, strict=True))
    kernels = [(first, second) for first, second in pairs if first.ndim > 1]
    assert len(kernels) >= 2 and all((first != second).all() for first, second in kernels)
    edit_params(other, "train", seed=seed)
    again_weights, _ = train_and_evaluate(other)
    assert all((a == b).all() for a, b in zip(first_weights, again_weights, strict=True))


def test_an_ensemble_averages_the_models_each_seed_trains_alone(tiny_project):
    edit_params(tiny_project, "train", seed=5, ensemble_size=1)
    run_stage(tiny_project, "train")
    alone = load_model(tiny_project / "models/model.keras").get_weights()
    edit_params(tiny_project, "train", seed=4, ensemble_size=2)
    try:
        result = run_stage(tiny_project, "train")
        run_stage(tiny_project, "evaluate")
    finally:
        edit_params(tiny_project, "train", ensemble_size=1)
    assert "train: member 2 of 2 (seed 5): " in result.stdout
    assert "train: ensemble of 2, val_accuracy " in result.stdout
    ensemble = load_model(tiny_project / "models/model.keras")
    first, second = ensemble.get_layer("mnist_cnn_1"), ensemble.get_layer("mnist_cnn_2")
    for expected, actual in zip(alone, second.get_weights(), strict=True):
        assert (expected == actual).all()
    images = np.load(tiny_project / "data/processed/val/x.npy")
    mean = (first.predict(images, verbose=0) + second.predict(images, verbose=0)) / 2
    assert np.allclose(ensemble.predict(images, verbose=0), mean, atol=1e-6)

    metrics = read_json(tiny_project / "metrics/train.json")
    assert set(metrics) == {
        "val_accuracy",
        "val_loss",
        "members",
        "training_seconds",
        "precision",
        "device",
    }
    assert set(metrics["members"]) == {"1", "2"}
    labels = np.load(tiny_project / "data/processed/val/y.npy")
    assert metrics["val_accuracy"] == pytest.approx(float((mean.argmax(axis=1) == labels).mean()))
    history = pd.read_csv(tiny_project / "plots/history.csv")
    for member, kept in metrics["members"].items():
        assert (history["member"] == int(member)).sum() == kept["epochs_run"]


def test_test_time_augmentation_wraps_the_model_that_training_alone_gives(tiny_project):
    """`model.tta` changes what the saved model predicts, not what is trained: the wrapped
    model's weights are those of a run without it, and train.json scores both."""
    run_stage(tiny_project, "train")
    alone = load_model(tiny_project / "models/model.keras").get_weights()
    alone_metrics = read_json(tiny_project / "metrics/train.json")
    edit_params(tiny_project, "model", tta="cross")
    try:
        result = run_stage(tiny_project, "train")
        run_stage(tiny_project, "evaluate")
    finally:
        edit_params(tiny_project, "model", tta="none")
    assert ", cross test-time augmentation, val_accuracy " in result.stdout
    saved = load_model(tiny_project / "models/model.keras")
    wrapped = saved.get_layer("mnist_cnn")
    for expected, actual in zip(alone, wrapped.get_weights(), strict=True):
        assert (expected == actual).all()

    metrics = read_json(tiny_project / "metrics/train.json")
    assert metrics["val_accuracy_without_tta"] == pytest.approx(alone_metrics["val_accuracy"])
    assert metrics["val_loss_without_tta"] == pytest.approx(alone_metrics["val_loss"], rel=1e-4)
    assert metrics["val_accuracy"] == pytest.approx(accuracy_on(saved, tiny_project, "val"))
    # and evaluate scores the saved model, views and all
    evaluated = read_json(tiny_project / "metrics/evaluate.json")
    assert evaluated["test_accuracy"] == pytest.approx(accuracy_on(saved, tiny_project, "test"))


def test_weight_averaging_saves_the_moving_average_of_the_weights(tiny_project, tmp_path):
    """With one step an epoch and a constant rate, a run of two epochs passes through the
    weights a one-epoch run ends with; Keras starts the average at the first step's weights,
    so with momentum 0.5 the saved model is the mean of the weights after steps 1 and 2,
    while training itself is unchanged. On a copy, so that the shared project keeps its params."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_project, repo)
    one_step_an_epoch = {
        "batch_size": len(np.load(repo / "data/processed/train/y.npy")),
        "lr_schedule": "constant",
        "warmup_epochs": 0,
        "early_stopping_patience": 0,
    }
    runs = []
    for epochs, momentum in ((1, 0), (2, 0), (2, 0.5)):
        edit_params(repo, "train", epochs=epochs, ema_momentum=momentum, **one_step_an_epoch)
        run_stage(repo, "train")
        model = load_model(repo / "models/model.keras")
        runs.append(
            (
                [weight.numpy() for weight in model.trainable_weights],
                [weight.numpy() for weight in model.non_trainable_weights],
            )
        )
    (first, _), (second, second_stats), (averaged, averaged_stats) = runs
    for after_one, after_two, average in zip(first, second, averaged, strict=True):
        assert np.allclose(average, (after_one + after_two) / 2, rtol=0, atol=1e-7)
        assert not np.allclose(average, after_two, rtol=0, atol=1e-7)
    # Batch-norm's statistics are not trained, so not averaged: those of the last step.
    assert second_stats and all(
        (last == kept).all() for last, kept in zip(second_stats, averaged_stats, strict=True)
    )

    # train.json scores the saved (averaged) weights, the last run's, not those of the last epoch
    metrics = read_json(repo / "metrics/train.json")
    assert metrics["val_accuracy"] == pytest.approx(accuracy_on(model, repo, "val"))


def batch_arrays(dataset) -> list[tuple[np.ndarray, ...]]:
    return [tuple(np.asarray(part) for part in batch) for batch in dataset]


def test_batches_in_order_give_every_image_once_with_a_short_last_batch():
    images = np.arange(10 * 4, dtype=np.float32).reshape(10, 2, 2)
    parts = [np.asarray(batch) for batch in batches(images, batch_size=4)]
    assert [len(batch) for batch in parts] == [4, 4, 2]
    assert np.array_equal(np.concatenate(parts), images)


def test_batches_shuffled_by_seed_keep_pairs_and_draw_a_new_order_each_epoch():
    images = np.arange(50, dtype=np.float32).reshape(50, 1, 1) * 10
    labels = np.arange(50)
    dataset = batches(images, labels, batch_size=8, shuffle_seed=7)
    epochs = []
    for _ in range(2):
        parts = batch_arrays(dataset)
        epoch_images = np.concatenate([image for image, _ in parts])
        epoch_labels = np.concatenate([label for _, label in parts])
        assert np.array_equal(epoch_images[:, 0, 0], epoch_labels * 10)  # pairs kept
        assert sorted(epoch_labels) == list(range(50))  # every image once
        epochs.append(epoch_labels)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], labels)
    again = batch_arrays(batches(images, labels, batch_size=8, shuffle_seed=7))
    assert np.array_equal(np.concatenate([label for _, label in again]), epochs[0])
    other = batch_arrays(batches(images, labels, batch_size=8, shuffle_seed=8))
    assert not np.array_equal(np.concatenate([label for _, label in other]), epochs[0])


def test_batches_turn_tf_data_autotuning_off():
    """Keras' own pipeline autotunes, which held training steps at 51 ms on 2 cores."""
    images = np.zeros((4, 28, 28, 1), dtype=np.float32)
    assert batches(images, batch_size=2).options().autotune.enabled is False


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_a_deferred_interrupt_stops_keras_before_its_next_step(method):
    images = np.zeros((8, 28, 28, 1), np.float32)
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    steps = []

    class CountSteps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

        on_test_batch_end = on_predict_batch_end = on_train_batch_end

    data = batches(images, np.zeros(8, np.int64), batch_size=2)
    run = {
        "fit": lambda callbacks: model.fit(
            data, epochs=1, shuffle=False, verbose=0, callbacks=callbacks
        ),
        "evaluate": lambda callbacks: model.evaluate(data, verbose=0, callbacks=callbacks),
        "predict": lambda callbacks: model.predict(
            batches(images, batch_size=2), verbose=0, callbacks=callbacks
        ),
    }[method]
    run([InterruptCheck(), CountSteps()])  # four steps, none interrupted
    assert len(steps) == 4
    steps.clear()
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        run([InterruptCheck(), CountSteps()])
    assert steps == []
