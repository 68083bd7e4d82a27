"""Build the CNN described by the `model` section of `params.yaml`, and the wrappers the saved
model may carry: an ensemble's mean, and test-time augmentation."""

from __future__ import annotations

from stages.dataset import IMAGE_SHAPE, NUM_CLASSES
from stages.params import ModelParams
from stages.tf_setup import keras

layers = keras.layers

# The (down, right) pixel shifts of the views `model.tta` averages over; (0, 0) is the image.
TTA_SHIFTS = {
    "none": ((0, 0),),
    "cross": ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)),
    "grid": tuple((down, right) for down in (-1, 0, 1) for right in (-1, 0, 1)),
}


def build_model(params: ModelParams, name: str = "mnist_cnn") -> keras.Model:
    """Conv blocks (conv, possibly strided → [batch-norm] → ReLU → [2×2 max-pool] → [dropout]),
    then dense layers (dense → [batch-norm] → ReLU → [dropout]), then a softmax over the ten digits.
    """
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=IMAGE_SHAPE))
    for block in params.conv_blocks:
        # Batch-norm has its own shift, so the conv's bias would be redundant.
        model.add(
            layers.Conv2D(
                block.filters,
                block.kernel_size,
                strides=block.strides,
                padding=block.padding,
                use_bias=not params.batch_norm,
            )
        )
        _add_activation(model, params.batch_norm, block.dropout, pool=block.pool)
    model.add(layers.Flatten())
    for dense in params.dense:
        model.add(layers.Dense(dense.units, use_bias=not params.batch_norm))
        _add_activation(model, params.batch_norm, dense.dropout, pool=False)
    # The probabilities in float32 under a mixed precision policy too: bfloat16 keeps only
    # about three significant digits, too few for a loss near 0.01.
    model.add(layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"))
    return model


def build_ensemble(members: list[keras.Model]) -> keras.Model:
    """One model whose output is the mean of the members' softmax outputs.

    Saved as a single `.keras` file, so whatever loads the model needs no ensemble code.
    """
    inputs = keras.Input(shape=IMAGE_SHAPE)
    outputs = layers.Average(dtype="float32")([member(inputs) for member in members])
    return keras.Model(inputs, outputs, name="mnist_cnn_ensemble")


def _add_activation(model: keras.Sequential, batch_norm: bool, dropout: float, pool: bool) -> None:
    if batch_norm:
        model.add(layers.BatchNormalization())
    model.add(layers.ReLU())
    if pool:
        model.add(layers.MaxPooling2D(2))
    if dropout:
        model.add(layers.Dropout(dropout))


def with_test_time_augmentation(model: keras.Model, tta: str) -> keras.Model:
    """`model` behind test-time augmentation: one model whose output is the mean of `model`'s
    softmax outputs over the views `TTA_SHIFTS[tta]`, the image shifted by at most one pixel
    (the border filled with black, as the training augmentation fills it). The same fixed views
    for every image, built from Keras' own layers, so the saved file needs no code of ours.
    """
    shifts = TTA_SHIFTS[tta]
    if len(shifts) == 1:
        return model
    inputs = keras.Input(shape=IMAGE_SHAPE)
    padded = layers.ZeroPadding2D(1)(inputs)
    # Cropping 1 - down rows from the top of the padded image moves the digit `down` rows down.
    views = [
        layers.Cropping2D(((1 - down, 1 + down), (1 - right, 1 + right)))(padded)
        for down, right in shifts
    ]
    outputs = layers.Average(dtype="float32")([model(view) for view in views])
    return keras.Model(inputs, outputs, name=f"{model.name}_tta_{tta}")
