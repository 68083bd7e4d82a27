"""Score the trained model on the held-out test split: the only stage that reads it.

Writes `metrics/evaluate.json` (test accuracy and loss, accuracy per digit) and
`plots/test_predictions.csv` (actual vs predicted digit per test image, for `dvc plots`).
"""

from __future__ import annotations

import numpy as np

from stages.common import run, write_csv, write_json
from stages.dataset import NUM_CLASSES, load_split
from stages.params import load_params
from stages.paths import EVALUATE_METRICS, MODEL, TEST_PREDICTIONS
from stages.tf_setup import load_model

# Keras clips probabilities the same way in its cross-entropy, so the loss here matches fit's.
EPSILON = 1e-7


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """Accuracy, mean cross-entropy and per-digit accuracy of softmax outputs against labels."""
    predicted = probabilities.argmax(axis=1)
    correct = predicted == labels
    true_class_probability = probabilities[np.arange(len(labels)), labels]
    loss = -np.log(np.clip(true_class_probability, EPSILON, 1.0)).mean()
    per_class = {
        str(digit): float(correct[labels == digit].mean())
        for digit in range(NUM_CLASSES)
        if (labels == digit).any()
    }
    return {
        "test_accuracy": float(correct.mean()),
        "test_loss": float(loss),
        "per_class_accuracy": per_class,
    }


def main() -> None:
    params = load_params("evaluate").evaluate
    images, labels = load_split("test")
    model = load_model(MODEL)
    probabilities = model.predict(images, batch_size=params.batch_size, verbose=0)
    labels = labels.astype(np.int64)
    metrics = score(probabilities, labels)
    predicted = probabilities.argmax(axis=1)
    rows = zip(labels.tolist(), predicted.tolist(), strict=True)
    write_csv(TEST_PREDICTIONS, ("actual", "predicted"), rows)
    write_json(EVALUATE_METRICS, metrics)
    print(
        f"evaluate: test_accuracy {metrics['test_accuracy']:.4f}, "
        f"test_loss {metrics['test_loss']:.4f} on {len(labels)} test images"
    )


if __name__ == "__main__":
    run("evaluate", main)
