"""The baseline for the throughput check: a plain Keras script, no pipeline.

Trains a fresh copy of the pipeline's model architecture (from `models/model.keras`), behind the
same augmentation layers (built by the train stage's own `with_augmentation`, so the two cannot
drift apart), on the same processed arrays with the same batch size, the way a one-file notebook
would: `np.load`, `compile`, `fit`. Run from the project root by `benchmarks/run.py`, which
compares its time per step with the train stage's.

    python -m benchmarks.plain_keras EPOCHS
"""

import sys

import numpy as np

from stages.params import load_params
from stages.tf_setup import keras
from stages.train import with_augmentation

epochs = int(sys.argv[1])
train = load_params("train").train

x_train = np.load("data/processed/train/x.npy")
y_train = np.load("data/processed/train/y.npy")
x_val = np.load("data/processed/val/x.npy")
y_val = np.load("data/processed/val/y.npy")

model = keras.models.clone_model(keras.models.load_model("models/model.keras"))
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
