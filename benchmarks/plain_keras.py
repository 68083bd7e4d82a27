"""The baseline for the throughput check: a plain Keras script, no pipeline.

Trains the pipeline's model architecture (built by the train stage's own `build_model` from the
`model` params, without the test-time augmentation that only predictions use), behind the same
augmentation layers (built by its own `with_augmentation`, so the two cannot drift apart), in
the precision the train stage resolves `train.precision` to, on the same processed arrays with
the same batch size, the way a one-file notebook would:
`np.load`, `compile`, `fit`. Run from the project root by `benchmarks/run.py`, which compares
its time per step with the train stage's.

    python -m benchmarks.plain_keras EPOCHS
"""

import sys

import keras
import numpy as np
import tensorflow as tf

from stages.model import build_model
from stages.params import load_params
from stages.train import resolve_precision, training_gpus, with_augmentation

epochs = int(sys.argv[1])
params = load_params("train")
train = params.train

x_train = np.load("data/processed/train/x.npy")
y_train = np.load("data/processed/train/y.npy")
x_val = np.load("data/processed/val/x.npy")
y_val = np.load("data/processed/val/y.npy")

# `auto` is bfloat16 on hardware that computes it natively: a float32 baseline there would
# compare two different computations.
precision, _ = resolve_precision(train.precision, training_gpus(tf.distribute.get_strategy()))
keras.mixed_precision.set_global_policy(precision)
print(f"plain keras: {keras.mixed_precision.global_policy().name}")

model = build_model(params.model)
trainer = with_augmentation(model, train)
trainer.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
trainer.fit(
    x_train,
    y_train,
    batch_size=train.batch_size,
    epochs=epochs,
    validation_data=(x_val, y_val),
    verbose=2,
)
