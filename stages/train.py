"""Train the CNN on the train split, selecting the epoch by validation loss.

Writes `models/model.keras`, `metrics/train.json` and the per-epoch history `plots/history.csv`.
The test split is not read here: it belongs to the evaluate stage.
"""

from __future__ import annotations

import math
import time

from stages.common import atomic_path, run, write_csv, write_json
from stages.dataset import IMAGE_SHAPE, load_split
from stages.model import build_model
from stages.params import TrainParams, load_params
from stages.paths import HISTORY, MODEL, TRAIN_METRICS
from stages.tf_setup import keras, seed_everything

HISTORY_COLUMNS = ("epoch", "accuracy", "loss", "val_accuracy", "val_loss")
OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adadelta": keras.optimizers.Adadelta,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}


def learning_rate(
    params: TrainParams, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate, or a schedule sized to `epochs`: a linear warm-up from 0 over
    `warmup_epochs`, then either constant or a cosine decay to 0 at the end of the last epoch."""
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


def with_augmentation(model: keras.Model, params: TrainParams) -> keras.Model:
    """`model` behind random rotations, zooms and shifts, which Keras applies only while training.

    The empty border is filled with black (`fill_mode="constant"`), like MNIST's own margins.
    """
    augmentation = []
    if params.augment_rotation:
        augmentation.append(
            keras.layers.RandomRotation(
                params.augment_rotation / 360, fill_mode="constant", seed=params.seed
            )
        )
    if params.augment_zoom:
        # One factor for both axes, so digits keep their proportions; negative zooms in.
        zoom = (-params.augment_zoom, params.augment_zoom)
        augmentation.append(keras.layers.RandomZoom(zoom, fill_mode="constant", seed=params.seed))
    if params.augment_shift:
        shift = params.augment_shift
        augmentation.append(
            keras.layers.RandomTranslation(shift, shift, fill_mode="constant", seed=params.seed)
        )
    if not augmentation:
        return model
    return keras.Sequential([keras.Input(shape=IMAGE_SHAPE), *augmentation, model])


def fit(
    model: keras.Model, params: TrainParams, train: tuple, val: tuple
) -> tuple[list[dict[str, float]], int]:
    """Train `model` in place; return the per-epoch history and the (1-based) epoch kept.

    With early stopping on, the weights of the epoch with the lowest validation loss are
    restored at the end; without it, the last epoch's weights are kept. Augmentation layers
    wrap `model` only for training, so the saved model holds none of them.
    """
    steps_per_epoch = math.ceil(len(train[1]) / params.batch_size)
    trainer = with_augmentation(model, params)
    trainer.compile(
        optimizer=OPTIMIZERS[params.optimizer](learning_rate(params, steps_per_epoch)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = []
    if params.early_stopping_patience:
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=params.early_stopping_patience, restore_best_weights=True
        )
        callbacks.append(stopper)
    result = trainer.fit(
        *train,
        validation_data=val,
        epochs=params.epochs,
        batch_size=params.batch_size,
        callbacks=callbacks,
        verbose=2,
    )
    epochs_run = len(result.history["loss"])
    history = [
        {
            "epoch": epoch + 1,
            **{key: float(result.history[key][epoch]) for key in HISTORY_COLUMNS[1:]},
        }
        for epoch in range(epochs_run)
    ]
    kept_epoch = stopper.best_epoch + 1 if params.early_stopping_patience else epochs_run
    return history, kept_epoch


def main() -> None:
    params = load_params("train")
    seed_everything(params.train.seed, params.train.deterministic)
    train, val = load_split("train"), load_split("val")
    model = build_model(params.model)
    print(
        f"train: {model.count_params():,} parameters, "
        f"{len(train[1])} train / {len(val[1])} validation images"
    )
    started = time.perf_counter()
    history, kept_epoch = fit(model, params.train, train, val)
    seconds = time.perf_counter() - started
    kept = history[kept_epoch - 1]
    with atomic_path(MODEL) as tmp:
        model.save(tmp)
    write_csv(HISTORY, HISTORY_COLUMNS, ([row[key] for key in HISTORY_COLUMNS] for row in history))
    write_json(
        TRAIN_METRICS,
        {
            "train_accuracy": kept["accuracy"],
            "train_loss": kept["loss"],
            "val_accuracy": kept["val_accuracy"],
            "val_loss": kept["val_loss"],
            "best_epoch": kept_epoch,
            "epochs_run": len(history),
            "training_seconds": round(seconds, 1),
        },
    )
    print(
        f"train: kept epoch {kept_epoch} of {len(history)}, val_accuracy "
        f"{kept['val_accuracy']:.4f}, {seconds:.0f} s → {MODEL}"
    )


if __name__ == "__main__":
    run("train", main)
