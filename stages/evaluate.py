"""Score the trained model on the held-out test split: the only stage that reads it.

Writes `metrics/evaluate.json` (test accuracy and loss, accuracy per digit),
`plots/test_predictions.csv` (actual and predicted digit and the predicted digit's probability
per test image, for `dvc plots` and the plots stage) and `data/evaluated/confident_mistakes.npz`
(the test images the model got wrong with the most confidence, for the plots stage's gallery:
the plots stage does not read the test split itself).
"""

from __future__ import annotations

import numpy as np

from stages.common import atomic_outputs, interrupts_deferred, run, write_csv, write_json
from stages.dataset import NUM_CLASSES, load_split
from stages.params import load_params
from stages.paths import CONFIDENT_MISTAKES, EVALUATE_METRICS, MODEL, TEST_PREDICTIONS
from stages.scoring import accuracy_and_loss
from stages.tf_setup import InterruptCheck, batches, load_model

GALLERY_SIZE = 24


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """Accuracy, mean cross-entropy and per-digit accuracy of softmax outputs against labels."""
    accuracy, loss = accuracy_and_loss(probabilities, labels)
    correct = probabilities.argmax(axis=1) == labels
    per_class = {
        str(digit): float(correct[labels == digit].mean())
        for digit in range(NUM_CLASSES)
        if (labels == digit).any()
    }
    return {"test_accuracy": accuracy, "test_loss": loss, "per_class_accuracy": per_class}


def confident_mistakes(
    probabilities: np.ndarray, labels: np.ndarray, count: int = GALLERY_SIZE
) -> np.ndarray:
    """Indices of up to `count` wrong predictions, the most confident first (ties by index)."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count]


def main() -> None:
    params = load_params("evaluate").evaluate
    images, labels = load_split("test")
    with interrupts_deferred():  # Ctrl-C is taken between steps while TensorFlow works
        model = load_model(MODEL)
        probabilities = model.predict(
            batches(images, batch_size=params.batch_size), verbose=0, callbacks=[InterruptCheck()]
        )
    labels = labels.astype(np.int64)
    metrics = score(probabilities, labels)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(labels)), predicted]
    rows = zip(
        labels.tolist(),
        predicted.tolist(),
        confidence.astype(np.float64).round(6).tolist(),
        strict=True,
    )
    worst = confident_mistakes(probabilities, labels)
    outputs = (TEST_PREDICTIONS, CONFIDENT_MISTAKES, EVALUATE_METRICS)
    with atomic_outputs(*outputs) as (predictions_file, mistakes_file, metrics_file):
        write_csv(predictions_file, ("actual", "predicted", "probability"), rows)
        np.savez(
            mistakes_file,
            images=np.round(images[worst, ..., 0] * 255).astype(np.uint8),
            actual=labels[worst],
            predicted=predicted[worst],
            probability=confidence[worst],
        )
        write_json(metrics_file, metrics)
    print(
        f"evaluate: test_accuracy {metrics['test_accuracy']:.4f}, "
        f"test_loss {metrics['test_loss']:.4f} on {len(labels)} test images"
    )


if __name__ == "__main__":
    run("evaluate", main)
