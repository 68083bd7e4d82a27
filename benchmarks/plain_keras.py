"""The baseline for the throughput check: a plain Keras script, no pipeline.

Trains a fresh copy of the pipeline's model architecture (from `models/model.keras`), behind the
same augmentation layers, on the same processed arrays with the same batch size, the way a
one-file notebook would: `np.load`, `compile`, `fit`. Run from the project root by
`benchmarks/run.py`, which compares its time per step with the train stage's.

    python benchmarks/plain_keras.py EPOCHS BATCH_SIZE SHIFT ROTATION_DEGREES ZOOM
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

epochs, batch_size = int(sys.argv[1]), int(sys.argv[2])
shift, rotation, zoom = (float(arg) for arg in sys.argv[3:6])

x_train = np.load("data/processed/train/x.npy")
y_train = np.load("data/processed/train/y.npy")
x_val = np.load("data/processed/val/x.npy")
y_val = np.load("data/processed/val/y.npy")

model = keras.models.clone_model(keras.models.load_model("models/model.keras"))
layers = [keras.Input(shape=(28, 28, 1))]
if rotation:
    layers.append(keras.layers.RandomRotation(rotation / 360, fill_mode="constant"))
if zoom:
    layers.append(keras.layers.RandomZoom((-zoom, zoom), fill_mode="constant"))
if shift:
    layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="constant"))
trainer = keras.Sequential([*layers, model])
trainer.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
trainer.fit(
    x_train,
    y_train,
    batch_size=batch_size,
    epochs=epochs,
    validation_data=(x_val, y_val),
    verbose=2,
)
