"""Build the CNN described by the `model` section of `params.yaml`, and the wrappers the saved
model may carry: an ensemble's mean, and test-time augmentation."""

from __future__ import annotations

from stages.dataset import IMAGE_SHAPE, NUM_CLASSES
from stages.params import ModelParams
from stages.tf_setup import keras, tf

layers = keras.layers

# The (down, right) pixel shifts of the views `model.tta` averages over; (0, 0) is the image.
TTA_SHIFTS = {
    "none": ((0, 0),),
    "cross": ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)),
    "grid": tuple((down, right) for down in (-1, 0, 1) for right in (-1, 0, 1)),
}
# What `with_test_time_augmentation` puts between a model's name and the views' in its own.
TTA_NAME = "_tta_"


class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' batch-norm, with its training steps computed by TensorFlow's fused kernel.

    Keras 3 builds batch-norm from separate ops (moments, then the normalisation), in float32
    under `mixed_bfloat16`; one fused kernel made the longer configuration's training step a
    third shorter in bfloat16 (README: A longer configuration). The function is the same: the
    batch's mean and biased variance normalise it, and the moving statistics move as Keras moves
    them. Outside training this is Keras' layer itself, and it has Keras' weights, so
    `keras_batch_norm` can hand the trained weights to a model of Keras' own layers for saving.
    """

    def call(self, inputs, training=None, mask=None):
        last_axis = self.axis in (-1, inputs.ndim - 1)
        # Keras' path wherever it differs: inference, frozen layers, masks, other axes.
        if not (training and self.trainable) or mask is not None or not last_axis:
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        images = tf.reshape(inputs, (-1, 1, 1, channels)) if inputs.ndim != 4 else inputs
        # Computes in float32 whatever the input's float type, as Keras' layer does.
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            images, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
        )
        # The kernel returns the batch's unbiased variance (divided by n - 1); Keras' moving
        # variance averages the biased one (divided by n), which also normalised the batch.
        count = tf.cast(tf.size(images) // channels, variance.dtype)
        variance = variance * (count - 1) / count
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(tf.reshape(outputs, tf.shape(inputs)), self.compute_dtype)


def build_model(
    params: ModelParams,
    name: str = "mnist_cnn",
    batch_norm_layer: type[layers.BatchNormalization] = FusedBatchNormalization,
) -> keras.Model:
    """[The image's border cropped], [the image scaled], then conv blocks (conv, possibly strided or
    depthwise-separable → [batch-norm] → ReLU → [2×2 max-pool] → [dropout]), then dense layers
    (dense → [batch-norm] → ReLU → [dropout]), then a softmax over the ten digits.

    Batch-norm is `batch_norm_layer`: by default the fused one, which the train stage trains and
    `keras_batch_norm` swaps for Keras' own before saving; the precision benchmark passes Keras'
    own to time it beside the fused one.
    """
    batch_norm = batch_norm_layer if params.batch_norm else None
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=IMAGE_SHAPE))
    if params.crop:
        # After the training augmentation, which wraps this model, and before the first conv:
        # MNIST's 2-pixel border holds a quarter of a percent of its ink (README: "A cropped
        # input").
        model.add(layers.Cropping2D(params.crop))
    if params.resize:
        # Scaled by averaging the pixels each output pixel covers, so no ink is lost, only
        # resolution (README: "A scaled input").
        model.add(layers.Resizing(params.resize, params.resize, interpolation="area"))
    for block in params.conv_blocks:
        # A separable conv filters each channel on its own, then mixes the channels by a 1×1
        # conv: a fraction of a full conv's multiplications (README: "Separable convs").
        conv = layers.SeparableConv2D if block.separable else layers.Conv2D
        # Batch-norm has its own shift, so the conv's bias would be redundant.
        model.add(
            conv(
                block.filters,
                block.kernel_size,
                strides=block.strides,
                padding=block.padding,
                use_bias=not params.batch_norm,
            )
        )
        _add_activation(model, batch_norm, block.dropout, pool=block.pool)
    model.add(layers.Flatten())
    for dense in params.dense:
        model.add(layers.Dense(dense.units, use_bias=not params.batch_norm))
        _add_activation(model, batch_norm, dense.dropout, pool=False)
    # The probabilities in float32 under a mixed precision policy too: bfloat16 keeps only
    # about three significant digits, too few for a loss near 0.01.
    model.add(layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"))
    return model


def keras_batch_norm(model: keras.Model) -> keras.Model:
    """`model` with Keras' own batch-norm layers in place of the fused ones, holding the same
    weights: it computes what `model` computes outside training, and its saved file needs no
    code of ours to load."""
    if not any(isinstance(layer, FusedBatchNormalization) for layer in model.layers):
        return model

    def keras_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, FusedBatchNormalization):
            # Named as Keras names its own: batch_normalization, batch_normalization_1, ...
            config = {**layer.get_config(), "name": layer.name.removeprefix("fused_")}
            return layers.BatchNormalization.from_config(config)
        return type(layer).from_config(layer.get_config())

    twin = keras.models.clone_model(model, clone_function=keras_layer)
    twin.set_weights(model.get_weights())
    return twin


def build_ensemble(members: list[keras.Model]) -> keras.Model:
    """One model whose output is the mean of the members' softmax outputs.

    Saved as a single `.keras` file, so whatever loads the model needs no ensemble code.
    """
    inputs = keras.Input(shape=IMAGE_SHAPE)
    outputs = layers.Average(dtype="float32")([member(inputs) for member in members])
    return keras.Model(inputs, outputs, name="mnist_cnn_ensemble")


def _add_activation(
    model: keras.Sequential,
    batch_norm: type[layers.BatchNormalization] | None,
    dropout: float,
    pool: bool,
) -> None:
    if batch_norm:
        model.add(batch_norm())
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
    return keras.Model(inputs, outputs, name=f"{model.name}{TTA_NAME}{tta}")


def without_test_time_augmentation(model: keras.Model) -> keras.Model:
    """The model that `with_test_time_augmentation` wrapped in `model` (a saved one included),
    or `model` itself where it has no views."""
    if TTA_NAME not in model.name:
        return model
    (wrapped,) = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return wrapped
