"""The model section builds the architectures of the reference notebooks, layer for layer."""

from __future__ import annotations

import numpy as np
import pytest

from stages.model import (
    FusedBatchNormalization,
    build_ensemble,
    build_model,
    keras_batch_norm,
    with_test_time_augmentation,
    without_test_time_augmentation,
)
from stages.params import ModelParams
from stages.tf_setup import keras, load_model, tf


def build(
    conv_blocks: list[dict],
    dense: list[dict],
    batch_norm: bool = False,
    name: str = "mnist_cnn",
    crop: int = 0,
    resize: int = 0,
) -> keras.Model:
    params = ModelParams(
        crop=crop,
        resize=resize,
        conv_blocks=conv_blocks,
        dense=dense,
        batch_norm=batch_norm,
        tta="none",
    )
    return build_model(params, name)


def test_keras_mnist_cnn_example():
    # conv 32 → conv 64 → max-pool → dropout 0.25 → dense 128 → dropout 0.5 → dense 10
    model = build(
        [
            {"filters": 32, "kernel_size": 3},
            {"filters": 64, "kernel_size": 3, "pool": True, "dropout": 0.25},
        ],
        [{"units": 128, "dropout": 0.5}],
    )
    assert model.count_params() == 1_199_882


def test_two_pooled_convs_and_dense_64():
    # conv 32 → pool → conv 64 → pool → dense 64 → dense 10
    model = build(
        [
            {"filters": 32, "kernel_size": 3, "pool": True},
            {"filters": 64, "kernel_size": 3, "pool": True},
        ],
        [{"units": 64}],
    )
    assert model.count_params() == 121_930


def test_4x4_kernels_with_dropout():
    # conv 32 (4×4) → pool → dropout → conv 32 (4×4) → pool → dropout → dense 256 → dropout → 10
    block = {"filters": 32, "kernel_size": 4, "pool": True, "dropout": 0.25}
    model = build([block, block], [{"units": 256, "dropout": 0.5}])
    assert model.count_params() == 150_858
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers) == 3


def test_strided_convs_downsample_as_the_schema_computes():
    # 28 → same, stride 2 → 14 → valid 3×3, stride 2 → 6 → same, stride 3 → 2
    model = build(
        [
            {"filters": 4, "kernel_size": 5, "padding": "same", "strides": 2},
            {"filters": 4, "kernel_size": 3, "strides": 2},
            {"filters": 4, "kernel_size": 3, "padding": "same", "strides": 3},
        ],
        [],
    )
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    conv_outputs = [layer.output.shape[1:3] for layer in convs]
    assert conv_outputs == [(14, 14), (6, 6), (2, 2)]


def test_separable_blocks_filter_each_channel_then_mix_them():
    # conv 32 → sep 32 stride 2 → sep 64 → sep 64 → pool → dense 256 → dense 10. A separable
    # conv has 3×3 weights per input channel, then a 1×1 conv across them, then its biases.
    sep = {"kernel_size": 3, "separable": True}
    blocks = [
        {"filters": 32, "kernel_size": 3},
        {**sep, "filters": 32, "strides": 2},
        {**sep, "filters": 64},
        {**sep, "filters": 64, "pool": True},
    ]
    kinds = (keras.layers.Conv2D, keras.layers.SeparableConv2D)
    model = build(blocks, [{"units": 256, "dropout": 0.5}])
    convs = [layer for layer in model.layers if isinstance(layer, kinds)]
    assert [type(layer).__name__ for layer in convs] == ["Conv2D"] + ["SeparableConv2D"] * 3
    assert [layer.count_params() for layer in convs] == [
        9 * 32 + 32,
        9 * 32 + 32 * 32 + 32,
        9 * 32 + 32 * 64 + 64,
        9 * 64 + 64 * 64 + 64,
    ]
    assert [layer.output.shape[1:3] for layer in convs] == [(26, 26), (12, 12), (10, 10), (8, 8)]
    assert model.count_params() == 273_770
    with_batch_norm = build(blocks, [{"units": 256, "dropout": 0.5}], batch_norm=True)
    assert not any(layer.use_bias for layer in with_batch_norm.layers if isinstance(layer, kinds))


# The default's conv blocks.
DEFAULT_BLOCKS = [
    {"filters": 32, "kernel_size": 3},
    {"filters": 32, "kernel_size": 3, "strides": 2},
    {"filters": 64, "kernel_size": 3},
    {"filters": 64, "kernel_size": 3, "pool": True},
]


def test_crop_cuts_the_border_before_the_first_conv():
    # The default's blocks on 24×24: conv → 22, stride 2 → 10, conv → 8, conv → 6, pool → 3.
    model = build(DEFAULT_BLOCKS, [{"units": 256, "dropout": 0.5}], crop=2)
    assert isinstance(model.layers[0], keras.layers.Cropping2D)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.output.shape[1:3] for layer in convs] == [(22, 22), (10, 10), (8, 8), (6, 6)]
    assert model.count_params() == 215_274  # the dense layer sees 3 × 3 × 64 = 576 values
    assert model.input_shape == (None, 28, 28, 1)  # it still takes whole images
    # Ink in the 2-pixel border changes nothing; ink just inside it does.
    images = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    border = images.copy()
    border[:, :2] = border[:, -2:] = border[:, :, :2] = border[:, :, -2:] = 1.0
    inside = images.copy()
    inside[:, 2, 2:-2] = 1.0
    probabilities = [model.predict(batch, verbose=0) for batch in (images, border, inside)]
    np.testing.assert_array_equal(probabilities[0], probabilities[1])
    assert not np.allclose(probabilities[0], probabilities[2])


def test_resize_scales_the_whole_image_before_the_first_conv():
    # The default's blocks on 24×24, as with the crop, but every pixel of the 28×28 counts.
    model = build(DEFAULT_BLOCKS, [{"units": 256, "dropout": 0.5}], resize=24)
    assert isinstance(model.layers[0], keras.layers.Resizing)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.output.shape[1:3] for layer in convs] == [(22, 22), (10, 10), (8, 8), (6, 6)]
    assert model.count_params() == 215_274
    assert model.input_shape == (None, 28, 28, 1)
    # Area averaging: one lit pixel, wherever it is, border included, keeps all of its ink in
    # the scaled image (its sum scaled by the area, (24 / 28)²); sampling would miss some.
    scale = keras.Sequential([keras.Input((28, 28, 1)), model.layers[0]])
    dots = np.zeros((28 * 28, 28, 28, 1), np.float32)
    dots.reshape(28 * 28, -1)[np.arange(28 * 28), np.arange(28 * 28)] = 1.0
    scaled = scale.predict(dots, verbose=0)
    assert scaled.shape == (28 * 28, 24, 24, 1)
    np.testing.assert_allclose(scaled.sum(axis=(1, 2, 3)), (24 / 28) ** 2, rtol=1e-5)
    images = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    border = images.copy()
    border[:, 0] = 1.0
    probabilities = [model.predict(batch, verbose=0) for batch in (images, border)]
    assert not np.allclose(probabilities[0], probabilities[1])


def test_longer_configuration_of_the_readme():
    # three convs (the last 5×5 with stride 2) → dropout, twice, then conv 128 (4×4) → dropout
    def stage(filters: int) -> list[dict]:
        return [
            {"filters": filters, "kernel_size": 3},
            {"filters": filters, "kernel_size": 3},
            {"filters": filters, "kernel_size": 5, "strides": 2, "padding": "same", "dropout": 0.4},
        ]

    last = {"filters": 128, "kernel_size": 4, "dropout": 0.4}
    members = [
        build([*stage(32), *stage(64), last], [], batch_norm=True, name=f"member_{index}")
        for index in (1, 2)
    ]
    assert members[0].count_params() == 326_826
    flatten = next(layer for layer in members[0].layers if isinstance(layer, keras.layers.Flatten))
    assert flatten.output.shape == (None, 128)  # the last conv sees 4×4 and leaves 1×1
    # its ensemble_size: 2 adds nothing to learn beyond the two members
    ensemble = build_ensemble(members)
    assert ensemble.count_params() == 653_652
    assert ensemble.output.shape == (None, 10)


def test_batch_norm_replaces_biases():
    model = build([{"filters": 8, "kernel_size": 3, "padding": "same"}], [{"units": 16}], True)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D",
        "FusedBatchNormalization",
        "ReLU",
        "Flatten",
        "Dense",
        "FusedBatchNormalization",
        "ReLU",
        "Dense",
    ]
    assert not model.layers[0].use_bias
    assert model.output_shape == (None, 10)


def batch_norm_step(layer: keras.layers.BatchNormalization, inputs: np.ndarray) -> list[np.ndarray]:
    """One training step's outputs of `layer`, the gradients of a loss on them (for the inputs,
    gamma and beta), and the moving statistics after it, all as float32 arrays."""
    channels = inputs.shape[-1]
    layer.build(inputs.shape)
    layer.gamma.assign(np.linspace(0.5, 1.5, channels))
    layer.beta.assign(np.linspace(-1.0, 1.0, channels))
    x = tf.cast(inputs, layer.compute_dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x, training=True)
        weighted = tf.cast(outputs, "float32") ** 2 * tf.range(channels, dtype="float32")
        loss = tf.reduce_sum(weighted)
    gradients = tape.gradient(loss, [x, layer.gamma, layer.beta])
    values = [outputs, *gradients, layer.moving_mean, layer.moving_variance]
    return [np.asarray(tf.cast(value, "float32")) for value in values]


@pytest.mark.parametrize("shape", [(16, 6, 6, 5), (32, 7)], ids=["conv", "dense"])
@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-5), ("mixed_bfloat16", 2e-2)])
def test_fused_batch_norm_trains_as_keras_batch_norm(shape, dtype, tolerance):
    """The same outputs, gradients and moving statistics as Keras' own layer, from TensorFlow's
    fused kernel: the moving variance averages the batch's biased variance, as Keras' does,
    not the unbiased one the kernel returns."""
    inputs = np.random.default_rng(0).normal(2.0, 3.0, shape).astype(np.float32)
    layer = FusedBatchNormalization(dtype=dtype)
    fused = batch_norm_step(layer, inputs)
    expected = batch_norm_step(keras.layers.BatchNormalization(dtype=dtype), inputs)
    # The input's gradient is a small difference of large terms, so rounding weighs more there.
    tolerances = {
        "outputs": tolerance,
        "input gradient": max(tolerance, 2e-2),
        "gamma gradient": tolerance,
        "beta gradient": tolerance,
    }
    for (name, limit), actual, wanted in zip(tolerances.items(), fused, expected, strict=False):
        assert np.abs(actual - wanted).max() <= limit * np.abs(wanted).max(), name
    for actual, wanted in zip(fused[-2:], expected[-2:], strict=True):
        np.testing.assert_allclose(actual, wanted, rtol=1e-6, atol=1e-7)
    assert (fused[-1] != 1.0).all()  # the step moved the statistics away from their start
    # and it was the fused kernel that computed them
    graph = tf.function(layer.call).get_concrete_function(tf.constant(inputs), training=True).graph
    assert "FusedBatchNormV3" in {operation.type for operation in graph.get_operations()}


def test_the_saved_model_holds_keras_batch_norm_with_the_trained_weights(tmp_path):
    """What `build_model` trains with fused batch-norm, `keras_batch_norm` hands to Keras' own
    layers: the same predictions, and a file that loads in safe mode without our layer."""
    model = build([{"filters": 4, "kernel_size": 3, "pool": True}], [{"units": 8}], True)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    random = np.random.default_rng(0)
    images = random.random((64, 28, 28, 1), dtype=np.float32)
    model.fit(images, random.integers(0, 10, 64), batch_size=16, epochs=2, verbose=0)
    saved = keras_batch_norm(model)
    keras_layer = keras.layers.BatchNormalization
    batch_norms = [layer for layer in saved.layers if isinstance(layer, keras_layer)]
    assert [type(layer) for layer in batch_norms] == [keras_layer] * 2
    # named as Keras names its own layer, as the model summary shows them
    assert all(layer.name.startswith("batch_normalization") for layer in batch_norms)
    assert saved.name == model.name
    for trained, kept in zip(model.weights, saved.weights, strict=True):
        assert (trained.numpy() == kept.numpy()).all()
    expected = model.predict(images, verbose=0)
    assert (saved.predict(images, verbose=0) == expected).all()
    saved.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    assert not [layer for layer in loaded.layers if isinstance(layer, FusedBatchNormalization)]
    assert np.allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    # a model without batch-norm is saved as trained
    plain = build([{"filters": 4, "kernel_size": 3, "pool": True}], [])
    assert keras_batch_norm(plain) is plain


def shifted(images: np.ndarray, down: int, right: int) -> np.ndarray:
    """`images` moved `down` rows down and `right` columns right, black coming in at the edge."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return padded[:, 1 - down : 29 - down, 1 - right : 29 - right, :]


@pytest.mark.parametrize(
    ("tta", "shifts"),
    [
        ("cross", [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]),
        ("grid", [(down, right) for down in (-1, 0, 1) for right in (-1, 0, 1)]),
    ],
)
def test_test_time_augmentation_averages_one_pixel_shifts(tta, shifts, tmp_path):
    model = build([{"filters": 4, "kernel_size": 3, "pool": True}], [{"units": 8}])
    images = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    expected = np.mean([model.predict(shifted(images, *s), verbose=0) for s in shifts], axis=0)
    wrapped = with_test_time_augmentation(model, tta)
    assert np.allclose(wrapped.predict(images, verbose=0), expected, atol=1e-6)
    assert wrapped.count_params() == model.count_params()
    # saved as the train stage saves it and loaded as evaluate and predict load it: safe mode
    wrapped.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    assert np.allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)


def test_each_view_moves_the_image_by_at_most_one_pixel():
    """Through a "model" that only flattens, the mean of the views of a one-pixel image spreads
    that pixel evenly over exactly the places the views move it to."""
    flatten = keras.Sequential([keras.Input(shape=(28, 28, 1)), keras.layers.Flatten()])
    image = np.zeros((1, 28, 28, 1), dtype=np.float32)
    image[0, 10, 20, 0] = 1
    for tta, places in [
        ("cross", {(10, 20), (9, 20), (11, 20), (10, 19), (10, 21)}),
        ("grid", {(10 + down, 20 + right) for down in (-1, 0, 1) for right in (-1, 0, 1)}),
    ]:
        mean = with_test_time_augmentation(flatten, tta).predict(image, verbose=0)
        mean = mean.reshape(28, 28)
        assert {tuple(place) for place in np.argwhere(mean)} == places
        assert np.allclose(mean[mean > 0], 1 / len(places))


def test_no_test_time_augmentation_leaves_the_model_as_it_is():
    model = build([{"filters": 4, "kernel_size": 3}], [])
    assert with_test_time_augmentation(model, "none") is model


def test_the_model_behind_the_views_comes_back_out_of_a_saved_file(tmp_path):
    """What `with_test_time_augmentation` wrapped, a single model or an ensemble, saved and
    loaded again: the same weights without the views; a model without views is left as it is."""
    members = [build([{"filters": 4, "kernel_size": 3}], [], name=f"m{i}") for i in (1, 2)]
    images = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    for model in (members[0], build_ensemble(members)):
        assert without_test_time_augmentation(model) is model
        with_test_time_augmentation(model, "cross").save(tmp_path / "model.keras")
        unwrapped = without_test_time_augmentation(load_model(tmp_path / "model.keras"))
        assert unwrapped.name == model.name
        assert np.allclose(unwrapped.predict(images, verbose=0), model.predict(images, verbose=0))
