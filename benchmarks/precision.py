"""Time per training step of the default model in each precision, batch size and width. By hand:

    python -m benchmarks.precision [--precisions float32 mixed_bfloat16] [--batch-sizes 128 256]
                                   [--widths 1 0.5] [--crops 0 2] [--resizes 0 24]
                                   [--conv-blocks params '[{filters: 32, ...}]']
                                   [--dense params '[{units: 256, dropout: 0.5}]']
                                   [--batch-norm off on keras] [--augment-elastic 0 34]
                                   [--onednn default 1] [--pipelines stage keras]
                                   [--rounds 3] [--steps 30]

Each measurement is a fresh process that builds the model and augmentation `params.yaml` describes,
with the train stage's own code, in the given precision (Keras' global dtype policy) and with
`TF_ENABLE_ONEDNN_OPTS` set as given (`default`: unset, TensorFlow decides by the CPU), and fed by
the given input pipeline (`stage`: the train stage's, `stages.tf_setup.batches`; `keras`: the one
Keras builds when `fit` is given arrays, whose tf.data autotuning the stage's turns off). A width
other than 1 scales the filters of every conv block (0.5: half as many), `--crops` sets `model.crop`
and `--resizes` `model.resize` (default: as `params.yaml` has them; the table writes them before the
conv blocks as `crop 2 →` and `resize 24 →`), `--conv-blocks` replaces `model.conv_blocks`
(`params`: as `params.yaml` has them; otherwise a YAML list, written as for `dvc exp run -S
model.conv_blocks=...`), `--dense` replaces `model.dense` the same way, and `--batch-norm` sets
`model.batch_norm` (default: as `params.yaml` has it; `keras`: on, with Keras' own layer in place of
the fused one the train stage trains with) and `--augment-elastic` sets `train.augment_elastic`
(default: as `params.yaml` has it), so the cost of another model or augmentation can be measured
before any training. Every combination of the options given is timed; one whose crop or resize
leaves a conv block no feature map is refused, by name, before any timing. It trains a few warm-up
steps on random images, then times `--steps` more. The variants run in turn, round after round (A B
C A B C ...), so a slow spell of the machine hits them alike; the table gives every time and the
median of each, and names the machine: the CPU, its bfloat16 units, and the CPU time other processes
took meanwhile.

Writes `benchmarks/precision.md` (or `--output`) and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.run import checked_setting, cores, cpu_seconds, machine, other_load, params_with
from devtools.workspace import PROJECT, command_env
from stages.dataset import IMAGE_SHAPE, NUM_CLASSES
from stages.params import ConvBlock, DenseLayer, load_params

if TYPE_CHECKING:  # TensorFlow is imported only where a measurement runs
    from stages.tf_setup import keras, tf

WARMUP_STEPS = 5
# `--pipelines` values, as the table names them.
PIPELINES = {"stage": "train stage's", "keras": "Keras' from arrays (autotuned)"}
# `--conv-blocks` and `--dense` value that keeps `params.yaml`'s layers.
PARAMS_LAYERS = "params"
# `--batch-norm` values, as the table names them: `model.batch_norm` off, or on with the layer
# the train stage trains with, or on with Keras' own layer.
BATCH_NORM_LAYERS = ("off", "on", "keras")


def default_trainer(
    precision: str,
    batch_size: int,
    width: float = 1.0,
    model: dict | None = None,
    batch_norm: str | None = None,
    augment_elastic: float | None = None,
) -> tuple:
    """The model and augmentation `params.yaml` describes, with `model`'s keys in place of its
    `model` section's (as `dvc exp run -S model.<key>=...` would set them) and the `--batch-norm`
    value `batch_norm` (which sets `model.batch_norm` and the layer) and `train.augment_elastic` if
    given, its conv filters scaled by `width`, built and compiled by the train stage's own code in
    `precision`; and random batches to fit it on. Returns (model, trainer, batches). It imports
    TensorFlow, so only a measuring process calls it (TensorFlow reads its options at import)."""
    from stages.model import FusedBatchNormalization, build_model
    from stages.tf_setup import batches, keras, seed_everything
    from stages.train import with_augmentation

    overrides = dict(model or {})
    if batch_norm is not None:
        overrides["batch_norm"] = batch_norm != "off"
    params = params_with("model", overrides)  # checked by the schema, as `main` checked them
    blocks = [
        block.model_copy(update={"filters": max(1, round(block.filters * width))})
        for block in params.model.conv_blocks
    ]
    keras.mixed_precision.set_global_policy(precision)
    seed_everything(params.train.seed, params.train.deterministic)
    layer = keras.layers.BatchNormalization if batch_norm == "keras" else FusedBatchNormalization
    built = build_model(
        params.model.model_copy(update={"conv_blocks": blocks}), batch_norm_layer=layer
    )
    train = params.train
    if augment_elastic is not None:  # checked by the schema when the option was read
        train = train.model_copy(update={"augment_elastic": augment_elastic})
    trainer = with_augmentation(built, train)
    trainer.compile(
        optimizer=keras.optimizers.Adam(params.train.learning_rate),
        loss="sparse_categorical_crossentropy",
    )
    images, labels = random_digits(batch_size * 8, seed=0)
    # The train stage's input pipeline, repeated: the steps are timed as training runs them.
    return built, trainer, batches(images, labels, batch_size=batch_size).repeat()


def random_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random images of MNIST's shape and labels for them: what a step costs does not
    depend on what the pixels show."""
    random = np.random.default_rng(seed)
    images = random.random((count, *IMAGE_SHAPE), dtype=np.float32)
    return images, random.integers(0, NUM_CLASSES, count)


def time_steps(
    precision: str,
    batch_size: int,
    width: float,
    model: dict,
    batch_norm: str,
    augment_elastic: float,
    steps: int,
    pipeline: str,
) -> tuple[float, int]:
    """Milliseconds per training step and the model's parameter count, in this process (the
    measuring child's)."""
    built, trainer, batches = default_trainer(
        precision, batch_size, width, model, batch_norm, augment_elastic
    )
    trainer.fit(batches, steps_per_epoch=WARMUP_STEPS, epochs=1, verbose=0)
    if pipeline == "keras":
        return arrays_fit_ms_per_step(trainer, batch_size, steps), built.count_params()
    return fit_ms_per_step(trainer, batches, steps), built.count_params()


def arrays_fit_ms_per_step(trainer: keras.Model, batch_size: int, steps: int) -> float:
    """Milliseconds per step of `fit` given arrays of `steps` random batches, which it feeds
    through the input pipeline Keras builds for them (shuffled, tf.data autotuned)."""
    images, labels = random_digits(batch_size * steps, seed=1)
    started = time.perf_counter()
    trainer.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0)
    return (time.perf_counter() - started) / steps * 1000


def fit_ms_per_step(trainer: keras.Model, batches: tf.data.Dataset, steps: int) -> float:
    """Milliseconds per step of `fit` over `steps` steps of `batches`: a whole training step."""
    started = time.perf_counter()
    trainer.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - started) / steps * 1000


# What a measuring child is told of a variant, as one JSON argument (`time_steps`'s arguments).
MEASURED = (
    "precision",
    "batch_size",
    "width",
    "model",
    "batch_norm",
    "augment_elastic",
    "pipeline",
)


def measure(variant: dict, steps: int) -> tuple[float, int]:
    """`time_steps` for `variant` in a fresh process, with `TF_ENABLE_ONEDNN_OPTS` set as the
    variant says before TensorFlow loads."""
    env = command_env()
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if variant["onednn"] != "default":
        env["TF_ENABLE_ONEDNN_OPTS"] = variant["onednn"]
    setting = json.dumps({**{key: variant[key] for key in MEASURED}, "steps": steps})
    args = [sys.executable, "-m", "benchmarks.precision", "--time-steps", setting]
    result = subprocess.run(args, cwd=PROJECT, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"benchmark: {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    ms, parameters = result.stdout.split()[-2:]
    return float(ms), int(parameters)


def positive_width(text: str) -> float:
    """`--widths` values: a factor on the filters, so it must be above 0."""
    try:
        width = float(text)
    except ValueError:
        width = 0.0
    if not width > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return width


# A `--crops`, `--resizes` or `--conv-blocks` value is checked alone, beside these: the conv
# blocks on the whole image, the largest any crop or resize leaves, and a crop or resize with no
# blocks. Whether each combination the run times leaves a feature map is checked in `main`, with
# the others given (or `params.yaml`'s), not with `params.yaml`'s alone.
WHOLE_IMAGE = {"crop": 0, "resize": 0}
NO_CONV_BLOCKS = {"conv_blocks": []}


def model_layers(key: str, text: str, beside: dict | None = None) -> list:
    """`model.<key>` as `text` gives it: `params` (params.yaml's) or a YAML list, checked by the
    params schema as if `params.yaml` had it (with the keys of `beside` too)."""
    if text == PARAMS_LAYERS:
        params = load_params("train", PROJECT)
    else:
        _, params = checked_setting("model", key, text, beside)
    return list(getattr(params.model, key))


def model_crop(text: str) -> int:
    """A `--crops` value, within the schema's bounds."""
    crop, _ = checked_setting("model", "crop", text, NO_CONV_BLOCKS)
    return crop


def model_resize(text: str) -> int:
    """A `--resizes` value, within the schema's bounds."""
    resize, _ = checked_setting("model", "resize", text, NO_CONV_BLOCKS)
    return resize


def model_conv_blocks(text: str) -> list[ConvBlock]:
    """A `--conv-blocks` value, the feature-map rule included for the whole image."""
    return model_layers("conv_blocks", text, WHOLE_IMAGE)


def model_dense(text: str) -> list[DenseLayer]:
    """A `--dense` value."""
    return model_layers("dense", text)


def train_augment_elastic(text: str) -> float:
    """An `--augment-elastic` value, within the schema's bounds."""
    alpha, _ = checked_setting("train", "augment_elastic", text)
    return alpha


def describe_conv_blocks(blocks: list[ConvBlock], crop: int = 0, resize: int = 0) -> str:
    """Blocks as the README writes a model: `32 → 32 stride 2 → sep 64 → 64 pool` (full 3×3
    convs and valid padding unless it says otherwise), after `crop 2 →` where the image's border
    is cropped and `resize 24 →` where it is scaled."""
    parts = [f"crop {crop}"] if crop else []
    parts += [f"resize {resize}"] if resize else []
    for block in blocks:
        part = f"sep {block.filters}" if block.separable else f"{block.filters}"
        if block.kernel_size != 3:
            part += f" ({block.kernel_size}×{block.kernel_size})"
        if block.padding != "valid":
            part += f" {block.padding}"
        if block.strides != 1:
            part += f" stride {block.strides}"
        if block.pool:
            part += " pool"
        if block.dropout:
            part += f" dropout {block.dropout:g}"
        parts.append(part)
    return " → ".join(parts)


def describe_dense(layers: list[DenseLayer]) -> str:
    """Dense layers as the README writes them: `128 dropout 0.5`, or `none`."""
    parts = [
        f"{layer.units}" + (f" dropout {layer.dropout:g}" if layer.dropout else "")
        for layer in layers
    ]
    return " → ".join(parts) or "none"


def machine_line(results: dict) -> str:
    """The sentence that opens a benchmark's table: when, on what, and how many steps."""
    m = results["machine"]
    return (
        f"Measured {results['date']} on {m['cpu']} (bfloat16 units: "
        f"{', '.join(m['bf16_units']) or 'none'}), {cores(m)}, {m['system']}; "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}. {results['steps']} steps per "
        f"measurement after {WARMUP_STEPS} warm-up steps, {results['rounds']} rounds alternated."
    )


def load_lines(load: dict | None) -> list[str]:
    """The sentence that closes a benchmark's table: the CPU that was not the benchmark's."""
    if not load:
        return []
    return [
        "",
        f"Over the benchmark's {load['wall_seconds']} s ({load['core_seconds']} core-seconds):"
        f" other processes used {load['other_processes_cpu_seconds']} s of CPU, the "
        f"hypervisor stole {load['stolen_cpu_seconds']} s.",
    ]


def markdown(results: dict) -> str:
    lines = [
        machine_line(results),
        "",
        "| precision | batch | width (parameters) | conv blocks | dense | batch-norm "
        "| elastic α | TF_ENABLE_ONEDNN_OPTS | input pipeline | ms per step | median "
        "| ms per image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["variants"]:
        median = statistics.median(row["ms_per_step"])
        times = ", ".join(f"{ms:.1f}" for ms in row["ms_per_step"])
        lines.append(
            f"| {row['precision']} | {row['batch_size']} | {row['width']:g} "
            f"({row['parameters']:,}) | {row['conv_blocks']} | {row['dense']} | "
            f"{row['batch_norm']} | {row['augment_elastic']:g} | "
            f"{row['onednn']} | {PIPELINES[row['pipeline']]} | {times} | "
            f"{median:.1f} | {median / row['batch_size']:.2f} |"
        )
    return "\n".join(lines + load_lines(results["machine_load"])) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--widths", type=positive_width, nargs="+", default=[1.0])
    parser.add_argument("--crops", type=model_crop, nargs="+")
    parser.add_argument("--resizes", type=model_resize, nargs="+")
    parser.add_argument("--conv-blocks", type=model_conv_blocks, nargs="+")
    parser.add_argument("--dense", type=model_dense, nargs="+")
    parser.add_argument("--batch-norm", nargs="+", choices=BATCH_NORM_LAYERS)
    parser.add_argument("--augment-elastic", type=train_augment_elastic, nargs="+")
    parser.add_argument("--onednn", nargs="+", default=["default"], choices=["default", "0", "1"])
    parser.add_argument("--pipelines", nargs="+", default=["stage"], choices=list(PIPELINES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--output", type=Path, default=PROJECT / "benchmarks/precision.md")
    # The measuring child's entry point: `time_steps`'s arguments, as `measure` writes them.
    parser.add_argument("--time-steps", type=json.loads, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_steps:
        ms, parameters = time_steps(**args.time_steps)
        print(f"{ms:.3f} {parameters}")
        return
    params = load_params("train", PROJECT)  # what the options left out default to
    model = params.model
    conv_blocks = args.conv_blocks or [list(model.conv_blocks)]
    dense = args.dense or [list(model.dense)]
    batch_norms = args.batch_norm or ["on" if model.batch_norm else "off"]
    elastics = args.augment_elastic or [params.train.augment_elastic]
    crops = args.crops or [model.crop]
    resizes = args.resizes or [model.resize]
    for crop, resize, blocks in itertools.product(crops, resizes, conv_blocks):
        input_size = {"crop": crop, "resize": resize}
        try:  # a crop or resize may leave other conv blocks no feature map
            params_with("model", {**input_size, "conv_blocks": [b.model_dump() for b in blocks]})
        except argparse.ArgumentTypeError as error:  # never for the whole image (see above)
            options = " ".join(f"--{name}s {value}" for name, value in input_size.items() if value)
            parser.error(f"{options} with conv blocks {describe_conv_blocks(blocks)}: {error}")

    started, cpu_before = time.perf_counter(), cpu_seconds()
    combinations = itertools.product(
        args.precisions,
        args.batch_sizes,
        args.widths,
        crops,
        resizes,
        conv_blocks,
        dense,
        batch_norms,
        elastics,
        args.onednn,
        args.pipelines,
    )
    variants = [
        {
            "precision": p,
            "batch_size": b,
            "width": w,
            "model": {
                "crop": k,
                "resize": r,
                "conv_blocks": [block.model_dump() for block in c],
                "dense": [layer.model_dump() for layer in d],
            },
            "conv_blocks": describe_conv_blocks(c, k, r),
            "dense": describe_dense(d),
            "batch_norm": n,
            "augment_elastic": e,
            "onednn": o,
            "pipeline": i,
            "ms_per_step": [],
        }
        for p, b, w, k, r, c, d, n, e, o, i in combinations
    ]
    for round_ in range(args.rounds):
        for variant in variants:
            print(
                f"benchmark: round {round_ + 1} of {args.rounds}: {variant['precision']}, batch "
                f"{variant['batch_size']}, width {variant['width']:g}, conv blocks "
                f"{variant['conv_blocks']}, dense {variant['dense']}, batch-norm "
                f"{variant['batch_norm']}, elastic {variant['augment_elastic']:g}, oneDNN "
                f"{variant['onednn']}, input {variant['pipeline']}",
                file=sys.stderr,
            )
            ms, variant["parameters"] = measure(variant, args.steps)
            variant["ms_per_step"].append(ms)
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "steps": args.steps,
        "rounds": args.rounds,
        "variants": variants,
        "machine_load": other_load(cpu_before, time.perf_counter() - started),
    }
    table = markdown(results)
    args.output.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
