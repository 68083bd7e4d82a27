"""Each set of test-time views scored on the validation split, for models already trained. By hand,
from the root of a project whose preprocess stage has run:

    python -m benchmarks.views MODEL [MODEL ...] [--views none cross grid] [--output FILE]

Each MODEL is a file the train stage saved (a run's `models/model.keras`, with its views or
without). The model it holds is put behind each set of views of `model.tta`
(`stages.model.with_test_time_augmentation`) and scored on `data/processed/val` as the train
stage scores it, so a model's own `model.tta` gives the `val_accuracy` and `val_loss` of its
run's `metrics/train.json` again. Compares views without training again: `dvc exp run -S
model.tta=grid` would train the same model anew. Nothing reads the test split.

Writes a markdown table, a row for each set of views, to `--output` if given, and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import typing
from pathlib import Path

from stages.common import atomic_path, run
from stages.dataset import load_split
from stages.params import ModelParams

# The sets of views `model.tta` takes, read from the schema so that asking for help, naming an
# unknown set or running without a validation split does not wait for TensorFlow.
VIEWS = typing.get_args(ModelParams.model_fields["tta"].annotation)
# Big batches: predicting is all this does. Each image's prediction does not depend on them.
BATCH_SIZE = 1024


def markdown(models: list[Path], images: int, scores: dict[str, list[dict[str, float]]]) -> str:
    """The table: for each set of views, every model's validation accuracy and loss, and the
    mean of each over the models."""
    names = ", ".join(str(model) for model in models)
    lines = [
        f"Scored on {datetime.date.today().isoformat()}, on the validation split "
        f"({images:,} images), the models {names}.",
        "",
        f"| views | validation accuracy | mean | right, of {images * len(models):,} "
        "| validation loss | mean |",
        "|---|---|---|---|---|---|",
    ]
    for views, figures in scores.items():
        accuracies = [figure["val_accuracy"] for figure in figures]
        losses = [figure["val_loss"] for figure in figures]
        right = sum(round(accuracy * images) for accuracy in accuracies)
        lines.append(
            f"| `{views}` | {', '.join(f'{a:.4f}' for a in accuracies)} | "
            f"{statistics.mean(accuracies):.5f} | {right:,} | "
            f"{', '.join(f'{loss:.4f}' for loss in losses)} | {statistics.mean(losses):.5f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, nargs="+", metavar="MODEL")
    parser.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    val = load_split("val")
    # TensorFlow only once the arguments and the split are known to be right.
    from stages.model import with_test_time_augmentation, without_test_time_augmentation
    from stages.tf_setup import load_model, tf
    from stages.train import validation_metrics

    # Each set of views is a model of its own, whose predictions TensorFlow traces anew; after
    # five it warns of retracing, which is expected here.
    tf.get_logger().setLevel("ERROR")
    scores: dict[str, list[dict[str, float]]] = {views: [] for views in args.views}
    for number, path in enumerate(args.models, 1):
        model = without_test_time_augmentation(load_model(path))
        print(f"model {number} of {len(args.models)}: {path}", file=sys.stderr)
        for views in args.views:
            wrapped = with_test_time_augmentation(model, views)
            scores[views].append(validation_metrics(wrapped, val, BATCH_SIZE))
    table = markdown(args.models, len(val[1]), scores)
    if args.output:
        with atomic_path(args.output) as output:
            output.write_text(table)
    print(table, end="")


if __name__ == "__main__":
    run("views", main)
