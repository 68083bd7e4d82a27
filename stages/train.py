"""Train the CNN (or an ensemble of them) on the train split, selecting epochs by validation loss.

Writes `models/model.keras`, its layer-by-layer summary `models/summary.txt`, `metrics/train.json`
and the per-epoch history `plots/history.csv`.
The test split is not read here: it belongs to the evaluate stage.

With `train.distribute: mirrored`, training runs under `tf.distribute.MirroredStrategy`, one
replica per local GPU (or the CPU), with `train.batch_size` as the global batch.

`train.precision` picks float32 or Keras' `mixed_bfloat16` policy (bfloat16 computation, float32
weights); `auto` takes bfloat16 only where the hardware that trains computes it natively.
`metrics/train.json` records the precision and the device that ran, so runs can be told apart.

With `model.tta` other than `none`, the saved model averages its predictions over fixed
one-pixel shifts of each image (test-time augmentation); evaluate and predict score it as saved.
"""

from __future__ import annotations

import math
import time

import numpy as np

from stages.common import (
    StageError,
    atomic_outputs,
    interrupts_deferred,
    run,
    write_csv,
    write_json,
)
from stages.dataset import IMAGE_SHAPE, load_split
from stages.hardware import cpu_bf16_units, cpu_name
from stages.model import (
    build_ensemble,
    build_model,
    keras_batch_norm,
    with_test_time_augmentation,
)
from stages.params import StageParams, TrainParams, load_params
from stages.paths import HISTORY, MODEL, MODEL_SUMMARY, TRAIN_METRICS
from stages.scoring import accuracy_and_loss
from stages.tf_setup import InterruptCheck, batches, keras, onednn_enabled, seed_everything, tf

EPOCH_METRICS = ("accuracy", "loss", "val_accuracy", "val_loss")
HISTORY_COLUMNS = ("member", "epoch", *EPOCH_METRICS)
OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adadelta": keras.optimizers.Adadelta,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}
# One-cycle training's momentum (Smith 2018; fastai's defaults): Adam's β1 where the learning
# rate is 0 and where it peaks, moving against the rate in between.
BETA_1_AT_REST, BETA_1_AT_PEAK = 0.95, 0.85
# The smoothness of `train.augment_elastic`'s field, in pixels: Simard et al.'s for MNIST digits.
ELASTIC_SIGMA = 4.0
# NVIDIA GPUs from Ampere (compute capability 8.0) on have bfloat16 tensor cores.
BF16_GPU_CAPABILITY = (8, 0)


def distribution_strategy(params: TrainParams) -> tf.distribute.Strategy:
    """The strategy `train.distribute` names. `mirrored` takes every local GPU, or else every
    CPU device TensorFlow lists (one, unless the CPU was split into logical devices)."""
    if params.distribute == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if params.distribute == "multi_worker":
        raise StageError(
            "train.distribute: multi_worker cannot train with Keras 3, whose fit fails under "
            "MultiWorkerMirroredStrategy (keras-team/keras#20585, tensorflow/tensorflow#72388); "
            "use mirrored for the GPUs of one machine, or spread a sweep over machines "
            "(README: Past one machine)"
        )
    return tf.distribute.get_strategy()  # the default: one device, as without a strategy


def training_gpus(strategy: tf.distribute.Strategy) -> list[dict]:
    """TensorFlow's details (`device_name`, `compute_capability`) of the GPUs `strategy` trains
    on: the first GPU for the default strategy, every one for `mirrored`; none on a CPU."""
    gpus = tf.config.list_physical_devices("GPU")[: strategy.num_replicas_in_sync]
    return [tf.config.experimental.get_device_details(gpu) for gpu in gpus]


def bf16_native(cpu_bf16_units: list[str], gpus: list[dict]) -> bool:
    """Whether the hardware that trains computes bfloat16 natively: every training GPU of
    compute capability 8.0 or later or, without a GPU, a CPU with AMX or AVX-512 BF16 units.
    Elsewhere bfloat16 is emulated, slower than float32."""
    if gpus:
        return all(gpu.get("compute_capability", (0, 0)) >= BF16_GPU_CAPABILITY for gpu in gpus)
    return bool(cpu_bf16_units)


def choose_precision(requested: str, native_bf16: bool) -> str:
    """`train.precision`, with `auto` resolved: `mixed_bfloat16` where bfloat16 is native."""
    if requested != "auto":
        return requested
    return "mixed_bfloat16" if native_bf16 else "float32"


def resolve_precision(requested: str, gpus: list[dict]) -> tuple[str, bool]:
    """`requested` resolved for the hardware that trains (the CPU, or `gpus` where there are
    any), and whether that hardware computes bfloat16 natively."""
    native_bf16 = bf16_native(cpu_bf16_units(), gpus)
    return choose_precision(requested, native_bf16), native_bf16


def device_name(gpus: list[dict]) -> str:
    """The device that trains, as `metrics/train.json` records it: `gpu: <names>`, or
    `cpu: <model> (family F, model M), oneDNN on|off`: what changes a CPU run's figures."""
    if gpus:
        return "gpu: " + ", ".join(gpu.get("device_name", "unnamed GPU") for gpu in gpus)
    return f"cpu: {cpu_name()}, oneDNN {'on' if onednn_enabled() else 'off'}"


def learning_rate(
    params: TrainParams, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate, or a schedule sized to `epochs`: a linear warm-up from 0 over
    `warmup_epochs`, then either constant or a cosine decay to 0 at the end of the last epoch
    (`cosine`, and `one_cycle`, which cycles β1 as well: `OneCycleMomentum`)."""
    if params.lr_schedule == "constant" and not params.warmup_epochs:
        return params.learning_rate
    warmup_steps = params.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=params.epochs * steps_per_epoch - warmup_steps,
        warmup_target=params.learning_rate,
        warmup_steps=warmup_steps,
        # alpha is the floor of the decay as a fraction of the peak: 1 keeps the rate constant.
        alpha=1.0 if params.lr_schedule == "constant" else 0.0,
    )


def one_cycle_beta_1(rate: float, peak_rate: float) -> float:
    """Adam's β1 for a learning rate of `rate`: from `BETA_1_AT_REST` at 0 down to
    `BETA_1_AT_PEAK` at `peak_rate`, in a straight line."""
    return BETA_1_AT_REST + (BETA_1_AT_PEAK - BETA_1_AT_REST) * rate / peak_rate


class OneCycleMomentum(keras.callbacks.Callback):
    """Sets the optimizer's β1 (a variable its steps read) before each step from the rate that
    step will take (the optimizer's own schedule at its step count): high momentum while the
    rate is low, low while it is high."""

    def __init__(self, peak: float):
        super().__init__()
        self.peak = peak

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        optimizer.beta_1.assign(one_cycle_beta_1(optimizer.learning_rate, self.peak))


def augmentation_seeds(seed: int) -> tuple[int, int, int, int]:
    """Independent seeds for the rotation, zoom, shift and elastic layers, fixed by `seed` (NumPy's
    `SeedSequence`, whose first three words are those it gave before the elastic layer came),
    whichever of the layers are on."""
    rotation, zoom, shift, elastic = np.random.SeedSequence(seed).generate_state(4)
    return int(rotation), int(zoom), int(shift), int(elastic)


def gaussian_smoothing_matrix(size: int, sigma: float) -> np.ndarray:
    """The `size` × `size` matrix that smooths a vector with a Gaussian of `sigma` pixels, truncated
    at 4 sigma like SciPy's `gaussian_filter`, and zeros beyond the ends (its `mode="constant"`)."""
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    offsets = np.arange(size)[None, :] - np.arange(size)[:, None]
    return np.where(np.abs(offsets) <= radius, taps[np.clip(offsets + radius, 0, 2 * radius)], 0)


def bilinear_sample(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """Each image of a `(batch, height, width, 1)` batch read at the fractional pixel positions
    `rows`, `cols` (each `(batch, height, width)`), interpolated between the four nearest pixels;
    black outside the image. Four gathers: with `keras.ops.image.map_coordinates`, which
    interpolates along the batch axis too, the elastic layer took twice as long."""
    ops = keras.ops
    height, width = images.shape[1], images.shape[2]
    # A black border of one pixel: a position clipped onto it reads black, as outside the image.
    padded = ops.reshape(ops.pad(images[..., 0], ((0, 0), (1, 1), (1, 1))), (-1,))
    # Positions in the padded image, from its top (left) black border to its bottom (right) one;
    # the corner read is the pixel up to one before that last border.
    rows = ops.clip(rows + 1, 0, height + 1)
    cols = ops.clip(cols + 1, 0, width + 1)
    top, left = ops.minimum(ops.floor(rows), height), ops.minimum(ops.floor(cols), width)
    stride = width + 2
    image_start = ops.arange(ops.shape(images)[0], dtype="int32") * (height + 2) * stride
    corner = image_start[:, None, None] + ops.cast(top, "int32") * stride + ops.cast(left, "int32")
    top_left, top_right = ops.take(padded, corner), ops.take(padded, corner + 1)
    bottom_left, bottom_right = (
        ops.take(padded, corner + stride),
        ops.take(padded, corner + stride + 1),
    )
    across, down = cols - left, rows - top
    upper = top_left + (top_right - top_left) * across
    lower = bottom_left + (bottom_right - bottom_left) * across
    return (upper + (lower - upper) * down)[..., None]


class RandomElasticDistortion(keras.layers.Layer):
    """Simard, Steinkraus and Platt's elastic distortion (ICDAR 2003), while training only: every
    pixel of an image is moved by a random field, uniform in [-1, 1] per pixel and direction,
    smoothed by a Gaussian of `sigma` pixels and scaled by `alpha`; each image draws its own.

    The paper's digits, 29 × 29, took alpha 34 and sigma 4: a typical move of 1.4 pixels, smooth
    over a few pixels, so strokes bend without breaking. Computed in float32 whatever the dtype
    policy, as bfloat16 cannot hold a pixel position to a tenth."""

    def __init__(self, alpha: float, sigma: float, seed: int, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.alpha, self.sigma, self.seed = alpha, sigma, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not training:
            return images
        ops = keras.ops
        height, width = images.shape[1], images.shape[2]
        noise = keras.random.uniform(
            (ops.shape(images)[0], 2, height, width), -1, 1, seed=self.seed_generator
        )
        # Smoothing down the columns and along the rows: two matrix products, a separable
        # convolution with zero padding (faster here than Keras' depthwise convolution).
        down_cols = ops.convert_to_tensor(gaussian_smoothing_matrix(height, self.sigma), "float32")
        along_rows = ops.convert_to_tensor(gaussian_smoothing_matrix(width, self.sigma), "float32")
        field = self.alpha * ops.matmul(ops.matmul(down_cols, noise), ops.transpose(along_rows))
        rows = ops.arange(height, dtype="float32")[None, :, None] + field[:, 0]
        cols = ops.arange(width, dtype="float32")[None, None, :] + field[:, 1]
        return bilinear_sample(images, rows, cols)

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha, "sigma": self.sigma, "seed": self.seed}


def with_augmentation(model: keras.Model, params: TrainParams) -> keras.Model:
    """`model` behind random elastic distortions, rotations, zooms and shifts, which apply only
    while training.

    The empty border is filled with black (`fill_mode="constant"`), like MNIST's own margins.
    Each layer has its own seed, derived from `train.seed`: layers given one seed draw the same
    numbers, which would make every image's zoom and shift a function of its rotation.
    """
    rotation_seed, zoom_seed, shift_seed, elastic_seed = augmentation_seeds(params.seed)
    augmentation = []
    if params.augment_elastic:
        # First, on the digit as written: the paper's distortion of the untransformed image.
        augmentation.append(
            RandomElasticDistortion(params.augment_elastic, ELASTIC_SIGMA, seed=elastic_seed)
        )
    if params.augment_rotation:
        augmentation.append(
            keras.layers.RandomRotation(
                params.augment_rotation / 360, fill_mode="constant", seed=rotation_seed
            )
        )
    if params.augment_zoom:
        # One factor for both axes, so digits keep their proportions; negative zooms in.
        zoom = (-params.augment_zoom, params.augment_zoom)
        augmentation.append(keras.layers.RandomZoom(zoom, fill_mode="constant", seed=zoom_seed))
    if params.augment_shift:
        shift = params.augment_shift
        augmentation.append(
            keras.layers.RandomTranslation(shift, shift, fill_mode="constant", seed=shift_seed)
        )
    if not augmentation:
        return model
    return keras.Sequential([keras.Input(shape=IMAGE_SHAPE), *augmentation, model])


def fit(
    model: keras.Model, params: TrainParams, train: tuple, val: tuple
) -> tuple[list[dict[str, float]], int]:
    """Train `model` in place; return the per-epoch history and the (1-based) epoch kept.

    With early stopping on, the weights of the epoch with the lowest validation loss are
    restored at the end; without it, the last epoch's weights are kept, or with `ema_momentum`
    their exponential moving average over the steps (the per-epoch validation figures are
    those of the weights being trained). Augmentation layers wrap `model` only for training, so
    the saved model holds none of them.
    """
    steps_per_epoch = math.ceil(len(train[1]) / params.batch_size)
    trainer = with_augmentation(model, params)
    rate = learning_rate(params, steps_per_epoch)
    # Keras keeps the average beside the weights and writes it over them when fit ends.
    options = {"use_ema": params.ema_momentum > 0, "ema_momentum": params.ema_momentum}
    callbacks = [InterruptCheck()]
    if params.lr_schedule == "one_cycle":  # the schema allows it with adam only
        options["beta_1"] = keras.Variable(BETA_1_AT_REST, trainable=False, name="beta_1")
        callbacks.append(OneCycleMomentum(params.learning_rate))
    # Decoupled weight decay (AdamW's): each step first shrinks a weight by rate × decay of itself.
    optimizer = OPTIMIZERS[params.optimizer](
        rate, weight_decay=params.weight_decay or None, **options
    )
    if params.weight_decay:
        # Only the conv and dense kernels: biases and batch-norm's scale and offset set a unit's
        # range, not the model's capacity, and common practice leaves them undecayed.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    trainer.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    if params.early_stopping_patience:
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=params.early_stopping_patience, restore_best_weights=True
        )
        callbacks.append(stopper)
    result = trainer.fit(
        batches(*train, batch_size=params.batch_size, shuffle_seed=params.seed),
        validation_data=batches(*val, batch_size=params.batch_size),
        shuffle=False,  # the batches come shuffled; Keras cannot shuffle a dataset, and warns
        epochs=params.epochs,
        callbacks=callbacks,
        verbose=2,
    )
    epochs_run = len(result.history["loss"])
    history = [
        {
            "epoch": epoch + 1,
            **{key: float(result.history[key][epoch]) for key in EPOCH_METRICS},
        }
        for epoch in range(epochs_run)
    ]
    kept_epoch = stopper.best_epoch + 1 if params.early_stopping_patience else epochs_run
    return history, kept_epoch


def kept_metrics(history: list[dict[str, float]], kept_epoch: int) -> dict[str, float]:
    kept = history[kept_epoch - 1]
    return {
        "train_accuracy": kept["accuracy"],
        "train_loss": kept["loss"],
        "val_accuracy": kept["val_accuracy"],
        "val_loss": kept["val_loss"],
        "best_epoch": kept_epoch,
        "epochs_run": len(history),
    }


def validation_metrics(model: keras.Model, val: tuple, batch_size: int) -> dict[str, float]:
    """`model`'s accuracy and loss on the validation split, as evaluate scores the test split."""
    images, labels = val
    probabilities = model.predict(
        batches(images, batch_size=batch_size), verbose=0, callbacks=[InterruptCheck()]
    )
    accuracy, loss = accuracy_and_loss(probabilities, labels)
    return {"val_accuracy": accuracy, "val_loss": loss}


def train_member(
    params: StageParams, index: int, train: tuple, val: tuple
) -> tuple[keras.Model, list[dict[str, float]], int]:
    """Build and fit ensemble member `index` (from 0): exactly the model that a run with
    `train.seed` + `index` and `ensemble_size: 1` trains, so members differ only by seed.
    Trained with fused batch-norm layers, returned with Keras' own (`keras_batch_norm`)."""
    size = params.train.ensemble_size
    member_params = params.train.model_copy(update={"seed": params.train.seed + index})
    seed_everything(member_params.seed, member_params.deterministic)
    model = build_model(params.model, "mnist_cnn" if size == 1 else f"mnist_cnn_{index + 1}")
    member = f"member {index + 1} of {size} (seed {member_params.seed}): " if size > 1 else ""
    print(
        f"train: {member}{model.count_params():,} parameters, "
        f"{len(train[1])} train / {len(val[1])} validation images"
    )
    history, kept_epoch = fit(model, member_params, train, val)
    return keras_batch_norm(model), history, kept_epoch


def main() -> None:
    params = load_params("train")
    strategy = distribution_strategy(params.train)
    gpus = training_gpus(strategy)
    precision, native_bf16 = resolve_precision(params.train.precision, gpus)
    # Set before any model is built: every layer made afterwards takes this policy.
    keras.mixed_precision.set_global_policy(precision)
    device = device_name(gpus)
    setting = f"{precision} on {device}"
    if params.train.distribute != "none":
        replicas = strategy.num_replicas_in_sync
        setting = f"{params.train.distribute}, {replicas} replica{'s' * (replicas > 1)}, {setting}"
    if precision == "mixed_bfloat16" and not native_bf16:
        setting += " (bfloat16 emulated: slower than float32)"
    print(f"train: {setting}")
    size = params.train.ensemble_size
    train, val = load_split("train"), load_split("val")
    started = time.perf_counter()
    members, member_metrics, history_rows = [], [], []
    # Variables made in the strategy's scope are mirrored on every replica. Ctrl-C is taken
    # between steps while TensorFlow works, and anywhere while the outputs are written.
    with interrupts_deferred(), strategy.scope():
        for index in range(size):
            model, history, kept_epoch = train_member(params, index, train, val)
            members.append(model)
            kept = kept_metrics(history, kept_epoch)
            if params.train.ema_momentum:
                # The model now holds the average, which no epoch of fit validated.
                kept.update(validation_metrics(model, val, params.train.batch_size))
            member_metrics.append(kept)
            history_rows += [[index + 1, *(row[k] for k in HISTORY_COLUMNS[1:])] for row in history]
        if size == 1:
            model, metrics = members[0], member_metrics[0]
            summary = f"kept epoch {metrics['best_epoch']} of {metrics['epochs_run']}"
        else:
            model = build_ensemble(members)
            metrics = validation_metrics(model, val, params.train.batch_size)
            metrics["members"] = {str(i + 1): kept for i, kept in enumerate(member_metrics)}
            summary = f"ensemble of {size}"
        if params.model.tta != "none":
            # The saved model's figures are those with test-time augmentation; the figures of
            # the model it wraps stay beside them, so that `dvc exp show` shows what it adds.
            # Both scored alike, from the probabilities (fit's loss comes from the logits).
            without = validation_metrics(model, val, params.train.batch_size)
            metrics["val_accuracy_without_tta"] = without["val_accuracy"]
            metrics["val_loss_without_tta"] = without["val_loss"]
            model = with_test_time_augmentation(model, params.model.tta)
            metrics.update(validation_metrics(model, val, params.train.batch_size))
            summary += f", {params.model.tta} test-time augmentation"
    seconds = time.perf_counter() - started
    metrics["training_seconds"] = round(seconds, 1)
    metrics["precision"], metrics["device"] = precision, device
    summary_lines: list[str] = []
    model.summary(expand_nested=True, print_fn=summary_lines.append)
    outputs = (MODEL, MODEL_SUMMARY, HISTORY, TRAIN_METRICS)
    with atomic_outputs(*outputs) as (model_file, summary_file, history_file, metrics_file):
        model.save(model_file)
        summary_file.write_text("\n".join(summary_lines) + "\n")
        write_csv(history_file, HISTORY_COLUMNS, history_rows)
        write_json(metrics_file, metrics)
    print(
        f"train: {summary}, val_accuracy {metrics['val_accuracy']:.4f}, {seconds:.0f} s → {MODEL}"
    )


if __name__ == "__main__":
    run("train", main)
