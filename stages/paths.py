"""Where each stage reads and writes: the same paths as the deps and outs in `dvc.yaml`."""

from pathlib import Path

RAW_MNIST = Path("data/raw/mnist.npz")
PROCESSED_DIR = Path("data/processed")
MODEL = Path("models/model.keras")
MODEL_SUMMARY = Path("models/summary.txt")
TRAIN_METRICS = Path("metrics/train.json")
EVALUATE_METRICS = Path("metrics/evaluate.json")
HISTORY = Path("plots/history.csv")
TEST_PREDICTIONS = Path("plots/test_predictions.csv")
CONFIDENT_MISTAKES = Path("data/evaluated/confident_mistakes.npz")
PLOTS_DIR = Path("plots")
