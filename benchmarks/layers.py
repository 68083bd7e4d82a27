"""Where a training step of the default model goes: each layer's forward and backward time. By hand:

    python -m benchmarks.layers [--precision float32] [--batch-size 128] [--rounds 3] [--steps 20]

Builds the model and augmentation `params.yaml` describes, as `benchmarks/precision.py` does,
and times each layer alone on the inputs it gets in training (random images passed through
the layers before it): its forward pass in training mode, then its forward and backward pass
(the gradients training needs: of its weights, and of its input where a layer before it has
weights). Each round times every layer and then whole training steps (`fit`, loss and
optimizer included), so a slow spell of the machine hits them alike. The table gives each
layer's medians and its share of the layers' sum; the sum against the whole step shows what
timing layers one by one leaves out (the loss, the optimizer, operations run side by side).

Writes `benchmarks/layers.md` (or `--output`) and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.precision import (
    WARMUP_STEPS,
    default_trainer,
    fit_ms_per_step,
    load_lines,
    machine_line,
)
from benchmarks.run import cpu_seconds, machine, other_load
from devtools.workspace import PROJECT

if TYPE_CHECKING:  # TensorFlow is imported only where a measurement runs
    from stages.tf_setup import keras, tf


def flat_layers(model: keras.Model) -> list[keras.Layer]:
    """The layers of `model`, those of nested models (the CNN behind its augmentation) in turn."""
    layers = []
    for layer in model.layers:
        layers += flat_layers(layer) if hasattr(layer, "layers") else [layer]
    return layers


def layer_passes(trainer: keras.Model, images: tf.Tensor) -> list[dict]:
    """For each layer of `trainer`: its name, type, output shape, and its forward and its
    forward-and-backward pass as compiled functions of its training input."""
    from stages.tf_setup import tf

    passes, inputs, weights_before = [], images, False
    for layer in flat_layers(trainer):
        outputs = layer(inputs, training=True)
        # The gradient that reaches the layer from above, random as the images are.
        upstream = tf.cast(tf.random.normal(tf.shape(outputs), seed=0), outputs.dtype)

        def forward_backward(x, layer=layer, upstream=upstream, of_input=weights_before):
            with tf.GradientTape() as tape:
                if of_input:
                    tape.watch(x)
                loss = tf.reduce_sum(tf.cast(layer(x, training=True) * upstream, "float32"))
            # The loss too: a compiled function drops the work its results do not need, and a
            # conv's gradients do not need its output.
            return loss, tape.gradient(loss, [*layer.trainable_weights, *([x] if of_input else [])])

        passes.append(
            {
                "layer": layer.name,
                "type": type(layer).__name__,
                "output": "×".join(str(size) for size in outputs.shape[1:]),
                "input": inputs,
                "forward": tf.function(lambda x, layer=layer: layer(x, training=True)),
                "forward_backward": tf.function(forward_backward),
            }
        )
        weights_before = weights_before or bool(layer.trainable_weights)
        inputs = outputs
    return passes


def ms_per_call(function: Callable, argument: tf.Tensor, calls: int) -> float:
    """Milliseconds per call of `function(argument)`, after warm-up calls (the first traces it)."""
    for _ in range(WARMUP_STEPS):
        function(argument)
    started = time.perf_counter()
    for _ in range(calls):
        function(argument)
    return (time.perf_counter() - started) / calls * 1000


def time_layers(precision: str, batch_size: int, rounds: int, steps: int) -> dict:
    _, trainer, batches = default_trainer(precision, batch_size)
    images, _ = next(iter(batches))
    passes = layer_passes(trainer, images)
    rows = [{"forward_ms": [], "forward_backward_ms": [], **p} for p in passes]
    step_ms = []
    trainer.fit(batches, steps_per_epoch=WARMUP_STEPS, epochs=1, verbose=0)
    for round_ in range(rounds):
        print(f"benchmark: round {round_ + 1} of {rounds}", file=sys.stderr)
        for row in rows:
            row["forward_ms"].append(ms_per_call(row["forward"], row["input"], steps))
            row["forward_backward_ms"].append(
                ms_per_call(row["forward_backward"], row["input"], steps)
            )
        step_ms.append(fit_ms_per_step(trainer, batches, steps))
    layers = [
        {key: row[key] for key in ("layer", "type", "output", "forward_ms", "forward_backward_ms")}
        for row in rows
    ]
    return {"layers": layers, "step_ms": step_ms}


def markdown(results: dict) -> str:
    layers = results["layers"]
    forward = [statistics.median(layer["forward_ms"]) for layer in layers]
    forward_backward = [statistics.median(layer["forward_backward_ms"]) for layer in layers]
    total = sum(forward_backward)
    lines = [
        machine_line(results),
        f"Precision {results['precision']}, batch {results['batch_size']}; each figure is the "
        "median over the rounds, in ms.",
        "",
        "| layer | output | forward | forward + backward | share of the sum |",
        "|---|---|---|---|---|",
    ]
    for layer, ms, both_ms in zip(layers, forward, forward_backward, strict=True):
        lines.append(
            f"| {layer['layer']} ({layer['type']}) | {layer['output']} | {ms:.2f} | "
            f"{both_ms:.2f} | {both_ms / total:.0%} |"
        )
    step = statistics.median(results["step_ms"])
    times = ", ".join(f"{ms:.1f}" for ms in results["step_ms"])
    lines += [
        f"| **sum of the layers** | | {sum(forward):.2f} | {total:.2f} | 100% |",
        f"| **a whole training step** (`fit`: {times}) | | | {step:.2f} | |",
    ]
    return "\n".join(lines + load_lines(results["machine_load"])) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--output", type=Path, default=PROJECT / "benchmarks/layers.md")
    args = parser.parse_args()
    started, cpu_before = time.perf_counter(), cpu_seconds()
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "precision": args.precision,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        **time_layers(args.precision, args.batch_size, args.rounds, args.steps),
    }
    results["machine_load"] = other_load(cpu_before, time.perf_counter() - started)
    table = markdown(results)
    args.output.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
