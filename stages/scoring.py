"""Accuracy and cross-entropy of softmax outputs: one definition for the validation metrics of
train and the test metrics of evaluate (numpy only)."""

from __future__ import annotations

import numpy as np

# Keras clips probabilities the same way in its cross-entropy of probabilities. Fit's own loss
# differs only where a true class's probability is below EPSILON: fit computes it from the
# softmax's logits, unclipped, so such a confident mistake counts more there.
EPSILON = 1e-7


def accuracy_and_loss(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The share of argmax predictions that are right, and the mean cross-entropy."""
    labels = np.asarray(labels, dtype=np.int64)
    correct = probabilities.argmax(axis=1) == labels
    true_class_probability = probabilities[np.arange(len(labels)), labels]
    loss = -np.log(np.clip(true_class_probability, EPSILON, 1.0)).mean()
    return float(correct.mean()), float(loss)
