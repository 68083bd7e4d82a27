"""The hand-run benchmarks that the suite can afford to run small."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import local_project, read_json, run_command, run_stage

from benchmarks.precision import describe_conv_blocks, describe_dense
from benchmarks.run import copy_results, machine, markdown, param_setting, record_seed
from devtools.workspace import BIN, PROJECT, copy_project, edit_params
from stages.dataset import save_split
from stages.params import ConvBlock, DenseLayer, load_params

ONE_POOLED_CONV = "[{filters: 8, kernel_size: 3, pool: true}]"


def one_pooled_conv_parameters(
    dense_units: list[int], batch_norm: bool = False, crop: int = 0, resize: int = 0
) -> str:
    """The table's parameter count of `ONE_POOLED_CONV` → hidden dense layers of `dense_units`
    → dense 10: a 3x3 conv of 8 filters, 13x13x8 = 1,352 values after the pool (11x11x8 = 968
    with a crop of 2). With batch-norm the conv and hidden dense layers lose their biases and
    each gets 4 weights a channel."""
    per_channel = 4 if batch_norm else 1  # batch-norm's weights, or the bias it replaces
    side = ((resize or 28 - 2 * crop) - 2) // 2
    total, inputs = 3 * 3 * 8 + 8 * per_channel, side * side * 8
    for units in dense_units:
        total, inputs = total + inputs * units + units * per_channel, units
    return f"1 ({total + inputs * 10 + 10:,})"


def params_dense_units() -> list[int]:
    return [layer.units for layer in load_params("train", PROJECT).model.dense]


def test_precision_benchmark_alternates_the_variants_and_tables_each(tmp_path):
    table = tmp_path / "precision.md"
    args = ["--precisions", "float32", "--batch-sizes", "4", "--widths", "1", "0.5"]
    args += ["--rounds", "2", "--steps", "2", "--output", str(table)]
    result = run_command([sys.executable, "-m", "benchmarks.precision", *args], PROJECT)
    order = [line.split(": ", 1)[1] for line in result.stderr.splitlines()]
    model = load_params("train", PROJECT).model
    blocks = describe_conv_blocks(model.conv_blocks, model.crop, model.resize)
    rest = f"dense {describe_dense(model.dense)}, batch-norm off, elastic 0, oneDNN default"
    rest += ", input stage"
    assert order == [
        f"round 1 of 2: float32, batch 4, width 1, conv blocks {blocks}, {rest}",
        f"round 1 of 2: float32, batch 4, width 0.5, conv blocks {blocks}, {rest}",
        f"round 2 of 2: float32, batch 4, width 1, conv blocks {blocks}, {rest}",
        f"round 2 of 2: float32, batch 4, width 0.5, conv blocks {blocks}, {rest}",
    ]
    rows = [line.split(" | ") for line in table.read_text().splitlines() if line.startswith("| f")]
    assert [row[1] for row in rows] == ["4", "4"]
    widths = [row[2].split(" (") for row in rows]
    assert [width for width, _ in widths] == ["1", "0.5"]
    full, half = (int(parameters.strip(")").replace(",", "")) for _, parameters in widths)
    assert half < full  # the narrower model was the one timed
    for row in rows:
        # params.yaml's batch-norm and elastic distortion
        assert (row[5], row[6], row[8]) == ("off", "0", "train stage's")
        times = [float(ms) for ms in row[9].split(", ")]
        assert len(times) == 2 and all(ms > 0 for ms in times)
        assert float(row[10]) == pytest.approx(sum(times) / 2, abs=0.1)  # the median of two
    assert table.read_text() in result.stdout


def test_precision_benchmark_times_other_conv_blocks_beside_the_params_ones(tmp_path):
    table = tmp_path / "precision.md"
    args = ["--precisions", "float32", "--batch-sizes", "4", "--onednn", "default"]
    args += ["--conv-blocks", "params", ONE_POOLED_CONV]
    args += ["--rounds", "1", "--steps", "2", "--output", str(table)]
    run_command([sys.executable, "-m", "benchmarks.precision", *args], PROJECT)
    rows = [line.split(" | ") for line in table.read_text().splitlines() if line.startswith("| f")]
    described = [row[3] for row in rows]
    model = load_params("train", PROJECT).model  # its crop and resize apply to the others too
    one_pooled_conv = [ConvBlock(filters=8, kernel_size=3, pool=True)]
    assert described == [
        describe_conv_blocks(model.conv_blocks, model.crop, model.resize),
        describe_conv_blocks(one_pooled_conv, model.crop, model.resize),
    ]
    assert rows[1][2] == one_pooled_conv_parameters(
        params_dense_units(), crop=model.crop, resize=model.resize
    )


def test_precision_benchmark_times_other_dense_layers_beside_the_params_ones(tmp_path):
    table = tmp_path / "precision.md"
    args = ["--precisions", "float32", "--batch-sizes", "4", "--rounds", "1", "--steps", "2"]
    args += ["--conv-blocks", ONE_POOLED_CONV, "--crops", "0", "--resizes", "0"]
    args += ["--dense", "params", "[]", "[{units: 64}]", "--output", str(table)]
    result = run_command([sys.executable, "-m", "benchmarks.precision", *args], PROJECT)
    dense = describe_dense(load_params("train", PROJECT).model.dense)
    assert [line.split(", ")[-5] for line in result.stderr.splitlines()] == [
        f"dense {dense}",
        "dense none",
        "dense 64",
    ]
    rows = [line.split(" | ") for line in table.read_text().splitlines() if line.startswith("| f")]
    assert [row[4] for row in rows] == [dense, "none", "64"]
    counts = [params_dense_units(), [], [64]]
    assert [row[2] for row in rows] == [one_pooled_conv_parameters(units) for units in counts]
    # conv 80 → dense 64 (1,352 × 64 + 64) → dense 10 (650): the helper's sum, by hand
    assert rows[2][2] == "1 (87,322)"


def test_precision_benchmark_times_cropped_and_scaled_images_beside_the_whole_one(tmp_path):
    table = tmp_path / "precision.md"
    args = ["--precisions", "float32", "--batch-sizes", "4", "--rounds", "1", "--steps", "2"]
    args += ["--conv-blocks", ONE_POOLED_CONV, "--crops", "0", "2", "--resizes", "0", "20"]
    args += ["--output", str(table)]
    result = run_command([sys.executable, "-m", "benchmarks.precision", *args], PROJECT)
    described = ["8 pool", "resize 20 → 8 pool", "crop 2 → 8 pool", "crop 2 → resize 20 → 8 pool"]
    assert [line.split(", ")[3] for line in result.stderr.splitlines()] == [
        f"conv blocks {blocks}" for blocks in described
    ]
    rows = [line.split(" | ") for line in table.read_text().splitlines() if line.startswith("| f")]
    assert [row[3] for row in rows] == described
    inputs = [(0, 0), (0, 20), (2, 0), (2, 20)]  # the side the conv sees: 28, 20, 24, 20
    assert [row[2] for row in rows] == [
        one_pooled_conv_parameters(params_dense_units(), crop=crop, resize=resize)
        for crop, resize in inputs
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crops", "14"], "argument --crops: model.crop: Input should be less than or equal"),
        (["--resizes", "14"], "--resizes 14 with conv blocks 32 → 32 stride 2"),
        # Blocks that fit the whole image are checked with each resize the run times, not with
        # params.yaml's alone: 0 passes, 24 is refused by name.
        (
            ["--resizes", "0", "24", "--conv-blocks", "[{filters: 8, kernel_size: 27}]"],
            "error: --resizes 24 with conv blocks 8 (27×27): model: conv_blocks[0] shrinks the",
        ),
        (["--crops", "7", "--resizes", "0"], "--crops 7 with conv blocks 32 → 32 stride 2"),
        (
            [
                "--crops",
                "6",
                "--resizes",
                "0",
                "--conv-blocks",
                "params",
                "[{filters: 8, kernel_size: 17}]",
            ],
            "--crops 6 with conv blocks 8 (17×17): model: conv_blocks[0] shrinks the feature",
        ),
    ],
)
def test_precision_benchmark_refuses_an_input_that_leaves_no_feature_map(args, message):
    command = [sys.executable, "-m", "benchmarks.precision", *args]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr


def test_precision_benchmark_times_keras_own_input_pipeline_beside_the_stages(tmp_path):
    """The stage's pipeline turns tf.data's autotuning off; the benchmark can time the one Keras
    builds from arrays beside it, in the same child, steps and model."""
    table = tmp_path / "precision.md"
    args = ["--precisions", "float32", "--batch-sizes", "4", "--pipelines", "stage", "keras"]
    args += ["--rounds", "1", "--steps", "3", "--output", str(table)]
    result = run_command([sys.executable, "-m", "benchmarks.precision", *args], PROJECT)
    assert [line.rsplit(", ", 1)[1] for line in result.stderr.splitlines()] == [
        "input stage",
        "input keras",
    ]
    rows = [line.split(" | ") for line in table.read_text().splitlines() if line.startswith("| f")]
    assert [row[8] for row in rows] == ["train stage's", "Keras' from arrays (autotuned)"]
    assert all(float(row[10]) > 0 for row in rows)


def test_precision_benchmark_times_the_model_with_batch_norm_beside_without(tmp_path):
    table = tmp_path / "precision.md"
    args = ["--precisions", "float32", "--batch-sizes", "4", "--conv-blocks", ONE_POOLED_CONV]
    args += ["--crops", "0", "--resizes", "0", "--batch-norm", "off", "on", "keras"]
    args += ["--rounds", "1", "--steps", "2"]
    args += ["--output", str(table)]
    result = run_command([sys.executable, "-m", "benchmarks.precision", *args], PROJECT)
    assert [line.split(", ")[-4] for line in result.stderr.splitlines()] == [
        "batch-norm off",
        "batch-norm on",
        "batch-norm keras",
    ]
    rows = [line.split(" | ") for line in table.read_text().splitlines() if line.startswith("| f")]
    assert [row[5] for row in rows] == ["off", "on", "keras"]
    # On, the batch-norm weights are the same whichever layer computes them.
    off, on = (one_pooled_conv_parameters(params_dense_units(), bn) for bn in (False, True))
    assert [row[2] for row in rows] == [off, on, on]


def test_precision_benchmark_times_the_elastic_distortion_beside_none(tmp_path):
    table = tmp_path / "precision.md"
    args = ["--precisions", "float32", "--batch-sizes", "4", "--conv-blocks", ONE_POOLED_CONV]
    args += ["--augment-elastic", "0", "34", "--rounds", "1", "--steps", "2"]
    args += ["--output", str(table)]
    result = run_command([sys.executable, "-m", "benchmarks.precision", *args], PROJECT)
    assert [line.split(", ")[-3] for line in result.stderr.splitlines()] == [
        "elastic 0",
        "elastic 34",
    ]
    rows = [line.split(" | ") for line in table.read_text().splitlines() if line.startswith("| f")]
    assert [row[6] for row in rows] == ["0", "34"]


def test_precision_benchmark_trains_behind_the_elastic_distortion_it_names():
    from benchmarks.precision import default_trainer
    from stages.tf_setup import keras

    _, trainer, _ = default_trainer("float32", batch_size=4, augment_elastic=34)
    assert type(trainer.layers[0]).__name__ == "RandomElasticDistortion"
    assert trainer.layers[0].alpha == 34
    _, trainer, _ = default_trainer("float32", batch_size=4, augment_elastic=0)
    assert "RandomElasticDistortion" not in {type(layer).__name__ for layer in trainer.layers}
    keras.backend.clear_session()  # layer names start afresh for the tests that read them


def test_precision_benchmark_refuses_an_elastic_strength_the_params_schema_refuses():
    command = [sys.executable, "-m", "benchmarks.precision", "--augment-elastic", "-1"]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "argument --augment-elastic: train.augment_elastic: Input should be greater" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("batch_norm", "kind"), [("on", "FusedBatchNormalization"), ("keras", "BatchNormalization")]
)
def test_precision_benchmark_times_the_batch_norm_layer_it_names(batch_norm, kind):
    """`on` is the layer the train stage trains with; `keras` is Keras' own, for comparison."""
    from benchmarks.precision import default_trainer
    from stages.tf_setup import keras

    model, _, _ = default_trainer("float32", batch_size=4, batch_norm=batch_norm)
    keras_layer = keras.layers.BatchNormalization  # the fused layer is a subclass of it
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras_layer)]
    assert batch_norms and {type(layer).__name__ for layer in batch_norms} == {kind}


def test_arrays_fit_trains_the_steps_it_times():
    from benchmarks.precision import arrays_fit_ms_per_step, default_trainer
    from stages.tf_setup import keras

    _, trainer, _ = default_trainer("float32", batch_size=4)
    before = int(trainer.optimizer.iterations)
    assert arrays_fit_ms_per_step(trainer, batch_size=4, steps=3) > 0
    assert int(trainer.optimizer.iterations) - before == 3
    keras.backend.clear_session()  # layer names start afresh for the tests that read them


def test_conv_blocks_are_described_as_the_readme_writes_a_model():
    blocks = [
        ConvBlock(filters=32, kernel_size=5, padding="same", strides=2, dropout=0.25),
        ConvBlock(filters=64, kernel_size=3, pool=True),
        ConvBlock(filters=64, kernel_size=3, separable=True),
    ]
    assert describe_conv_blocks(blocks) == "32 (5×5) same stride 2 dropout 0.25 → 64 pool → sep 64"


def test_dense_layers_are_described_as_the_readme_writes_them():
    layers = [DenseLayer(units=256, dropout=0.5), DenseLayer(units=64)]
    assert describe_dense(layers) == "256 dropout 0.5 → 64"
    assert describe_dense([]) == "none"


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ("[{filters: 0, kernel_size: 3}]", "model.conv_blocks[0].filters: Input should be greater"),
        ("[{filter: 8, kernel_size: 3}]", "model.conv_blocks[0].filter: unknown key (allowed: "),
        ("[{filters: 8", "not YAML: "),
        ("[{filters: 8, kernel_size: 13, pool: true}] * 2", "not YAML: "),
        (
            "[{filters: 8, kernel_size: 13, pool: true}, {filters: 8, kernel_size: 13}]",
            "conv_blocks[1] shrinks the feature map below 1x1",
        ),
    ],
)
def test_precision_benchmark_refuses_conv_blocks_the_params_schema_refuses(blocks, message):
    command = [sys.executable, "-m", "benchmarks.precision", "--conv-blocks", blocks]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "argument --conv-blocks: " in result.stderr and message in result.stderr


def test_precision_benchmark_refuses_dense_layers_the_params_schema_refuses():
    command = [sys.executable, "-m", "benchmarks.precision", "--dense", "[{units: 0}]"]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "argument --dense: model.dense[0].units: Input should be greater" in result.stderr


@pytest.mark.parametrize("width", ["0", "-0.5", "half", "nan"])
def test_precision_benchmark_refuses_a_width_that_is_not_above_zero(width):
    command = [sys.executable, "-m", "benchmarks.precision", "--widths", "1", width]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 2
    assert f"--widths: expected a number above 0, got '{width}'" in result.stderr.splitlines()[-1]


def test_layers_benchmark_tables_every_layer_of_the_default_and_a_whole_step(tmp_path):
    table = tmp_path / "layers.md"
    args = ["--batch-size", "4", "--rounds", "2", "--steps", "2", "--output", str(table)]
    result = run_command([sys.executable, "-m", "benchmarks.layers", *args], PROJECT)
    assert table.read_text() in result.stdout
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.read_text().splitlines()
        if line.startswith("| ")
    ]
    header, layers, (total, step) = rows[0], rows[1:-2], rows[-2:]
    assert header[0] == "layer"
    types = [row[0].split(" (")[1].rstrip(")") for row in layers]
    conv_blocks = load_params("train", PROJECT).model.conv_blocks
    assert types[:2] == ["RandomRotation", "RandomTranslation"]
    assert types.count("Conv2D") == len(conv_blocks)
    assert (types[-1], layers[-1][1]) == ("Dense", "10")
    forward, both = ([float(row[i]) for row in layers] for i in (2, 3))
    assert all(ms > 0 for ms in forward + both)
    assert float(total[2]) == pytest.approx(sum(forward), abs=0.01 * len(layers))
    assert float(total[3]) == pytest.approx(sum(both), abs=0.01 * len(layers))
    assert sum(int(row[4].rstrip("%")) for row in layers) == pytest.approx(100, abs=len(layers))
    assert step[0].startswith("**a whole training step** (`fit`: ") and float(step[3]) > 0


def test_layer_passes_compute_the_forward_pass_and_the_gradients_training_needs():
    from benchmarks.layers import layer_passes
    from benchmarks.precision import default_trainer

    _, trainer, batches = default_trainer("float32", batch_size=4)
    images, _ = next(iter(batches))
    passes = {p["layer"]: p for p in layer_passes(trainer, images)}
    gradients = {}
    for name, p in passes.items():
        loss, gradients[name] = p["forward_backward"](p["input"])
        # The loss is returned, so the timed function cannot drop the forward pass.
        assert float(loss) != 0, name
    # No gradient before the first weights; after them, the input's too.
    assert [len(gradients[name]) for name in ("random_rotation", "random_translation")] == [0, 0]
    assert [len(gradients[name]) for name in ("conv2d", "re_lu", "conv2d_1")] == [2, 1, 3]
    model = load_params("train", PROJECT).model
    side = (model.resize or 28 - 2 * model.crop) - 2  # the first conv's output
    assert passes["conv2d_1"]["input"].shape == (4, side, side, 32)


def test_update_results_copies_every_output_git_keeps_and_nothing_else(tmp_path):
    tracked = subprocess.run(
        ["git", "ls-files", "metrics", "plots"], cwd=PROJECT, capture_output=True, text=True
    ).stdout.split()
    workspace, project = tmp_path / "workspace", tmp_path / "project"
    (workspace / "models").mkdir(parents=True)
    (workspace / "dvc.yaml").write_bytes((PROJECT / "dvc.yaml").read_bytes())
    (workspace / "models/model.keras").write_text("DVC's cache keeps this")
    for path in tracked:
        (workspace / path).parent.mkdir(exist_ok=True)
        (workspace / path).write_text(f"new {path}")
        (project / path).parent.mkdir(parents=True, exist_ok=True)
    copy_results(workspace, project)
    copied = sorted(str(path.relative_to(project)) for path in project.rglob("*") if path.is_file())
    assert copied == sorted(tracked)
    assert all((project / path).read_text() == f"new {path}" for path in tracked)


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        ("train.precision=float32", ("train", "precision", "float32")),
        ("train.epochs=6", ("train", "epochs", 6)),
        (
            "model.dense=[{units: 64, dropout: 0.25}]",
            ("model", "dense", [{"units": 64, "dropout": 0.25}]),
        ),
    ],
)
def test_benchmark_settings_are_read_as_dvc_exp_run_reads_them(text, setting):
    assert param_setting(text) == setting


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.precision", "'train.precision': expected section.key=value"),
        ("precision=float32", "'precision=float32': expected section.key=value"),
        ("train.precison=float32", "train.precison: unknown key (allowed: "),
        ("train.precision=float16", "train.precision: Input should be 'auto', "),
        ("train.epochs=[6", "not YAML: "),
        ("training.epochs=6", "training: unknown key (allowed: data, "),
        ("data.url=/elsewhere/mnist.npz", "data.* is set from the DATA argument"),
    ],
)
def test_run_benchmark_refuses_a_setting_the_params_schema_refuses(setting, message):
    command = [sys.executable, "-m", "benchmarks.run", "mnist.npz", "--set", setting]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "argument --set: " in result.stderr and message in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--update-results", "--set", "train.epochs=6"], "--update-results copies the run of "),
        (["--output", "no/such/folder/results.md"], "--output: no folder no/such/folder"),
    ],
)
def test_run_benchmark_refuses_before_any_run_what_it_could_not_finish(args, message):
    command = [sys.executable, "-m", "benchmarks.run", "mnist.npz", *args]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr


def benchmark_results() -> dict:
    """What `benchmarks.run.benchmark` returns, with made-up figures."""
    return {
        "date": "2026-11-22",
        "machine": {
            "cpu": "AMD EPYC (family 25, model 17)",
            "bf16_units": ["avx512_bf16"],
            "cores": 2,
            "machine_cpus": 2,
            "memory_gb": 23.5,
            "system": "Linux",
            "device": "cpu: AMD EPYC (family 25, model 17), oneDNN on",
            "precision": "float32",
            "python": "3.11.7",
            "tensorflow": "2.21.0",
            "keras": "3.15.1",
            "dvc": "3.67.1",
        },
        "params_set": {"train.precision": "float32", "train.epochs": 6},
        "stages": {"train": {"seconds": 1.0, "peak_memory_mb": 1}},
        "repro_seconds_without_download": 1.0,
        "noop_repro_seconds": 1.0,
        "plots_param_repro": {"seconds": 1.0, "stages_run": ["plots"]},
        "throughput": {"pipeline_ms_per_step": [1], "plain_keras_ms_per_step": [1], "ratio": 1},
        "test_accuracy": {"42": 0.99, "43": 0.988},
        "test_accuracy_mean": 0.989,
        "val_accuracy": {"42": 0.995, "43": 0.9962},
        "val_loss": {"42": 0.01191, "43": 0.0145},
        "training_seconds": {"42": 166.6, "43": 205},
        "rerun_training_seconds": 170.04,
        "train_metrics": {"epochs_run": 6, "best_epoch": 6},
        "rerun_identical": True,
    }


def test_record_seed_keeps_each_seeds_figures_from_its_metrics_files():
    results = {"test_accuracy": {}, "val_accuracy": {}, "val_loss": {}, "training_seconds": {}}
    train = {"val_accuracy": 0.9964, "val_loss": 0.0119, "training_seconds": 233.9}
    record_seed(results, 42, train, {"test_accuracy": 0.9956, "test_loss": 0.0131})
    record_seed(results, 43, {**train, "val_loss": 0.0145}, {"test_accuracy": 0.9957})
    assert results == {
        "test_accuracy": {"42": 0.9956, "43": 0.9957},
        "val_accuracy": {"42": 0.9964, "43": 0.9964},
        "val_loss": {"42": 0.0119, "43": 0.0145},
        "training_seconds": {"42": 233.9, "43": 233.9},
    }


def test_run_benchmark_table_says_which_params_it_changed():
    results = benchmark_results()
    table = markdown(results)
    changed = "Params changed from `params.yaml` (`--set`): `train.precision=float32`, "
    assert changed + "`train.epochs=6`.\n" in table
    assert "trained in float32 on cpu: AMD EPYC (family 25, model 17), oneDNN on;" in table
    del results["params_set"]
    assert "--set" not in markdown(results)


def test_run_benchmark_table_gives_every_seeds_figures_and_training_time():
    """One run's time says little where the VM's speed changes with the host: every seed's."""
    table = markdown(benchmark_results())
    assert "| test accuracy | 0.9900 (seed 42), 0.9880 (seed 43); mean 0.9890 |" in table
    assert "| validation accuracy | 0.9950 (seed 42), 0.9962 (seed 43) |" in table
    assert "| validation loss | 0.0119 (seed 42), 0.0145 (seed 43) |" in table
    times = "166.6 (seed 42), 205.0 (seed 43); 170.0 (seed 42 again, `dvc repro -f`) |"
    assert f"| training seconds (`training_seconds`) | {times}" in table


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to pin to 1")
def test_benchmark_names_the_cores_it_was_pinned_to_not_the_machines():
    """Two cores of a larger machine (`taskset -c 0,1`) stand in for a 2-core VM: the table must
    say 2 cores, and that the machine has more."""
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})
        pinned = machine()
    finally:
        os.sched_setaffinity(0, allowed)
    assert pinned["cores"] == 1 and pinned["machine_cpus"] == os.cpu_count()
    results = benchmark_results()
    results["machine"].update(cores=1, machine_cpus=16)
    assert (
        "AMD EPYC (family 25, model 17) (bfloat16 units: avx512_bf16), 1 core (pinned to them: "
        "the machine has 16 CPUs), 23.5 GB" in markdown(results)
    )
    results["machine"].update(cores=16)
    assert "avx512_bf16), 16 cores, 23.5 GB" in markdown(results)


def views(cwd, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_command([str(BIN / "python"), "-m", "benchmarks.views", *args], cwd, check=check)


def test_views_benchmark_scores_each_model_again_as_its_training_did(tmp_path):
    """Two runs saved with the `cross` views: the table's `cross` row is each run's validation
    figures, its `none` row the same figures without the views, in the order the models are
    named; `grid` is scored too. With the test split gone, since nothing may read it."""
    repo = tmp_path / "repo"
    local_project(repo, 300, 50)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(PROJECT / "benchmarks", repo / "benchmarks", ignore=ignore)
    edit_params(repo, "model", tta="cross")
    run_stage(repo, "download")
    run_stage(repo, "preprocess")
    metrics = []
    for seed in (1, 2):
        edit_params(repo, "train", seed=seed)
        run_stage(repo, "train")
        shutil.copy(repo / "models/model.keras", repo / f"seed{seed}.keras")
        metrics.append(read_json(repo / "metrics/train.json"))
    shutil.rmtree(repo / "data/processed/test")

    result = views(repo, "seed1.keras", "seed2.keras", "--output", "views.md")
    table = (repo / "views.md").read_text()
    assert result.stdout == table
    assert result.stderr.splitlines() == ["model 1 of 2: seed1.keras", "model 2 of 2: seed2.keras"]
    assert "the models seed1.keras, seed2.keras." in table
    images = len(np.load(repo / "data/processed/val/y.npy"))
    rows = {row[0]: row[1:] for row in table_rows(table)}
    assert list(rows) == ["`none`", "`cross`", "`grid`"]
    for views_name, suffix in (("`cross`", ""), ("`none`", "_without_tta")):
        accuracies = [run[f"val_accuracy{suffix}"] for run in metrics]
        losses = [run[f"val_loss{suffix}"] for run in metrics]
        assert rows[views_name] == [
            ", ".join(f"{accuracy:.4f}" for accuracy in accuracies),
            f"{np.mean(accuracies):.5f}",
            f"{sum(round(accuracy * images) for accuracy in accuracies):,}",
            ", ".join(f"{loss:.4f}" for loss in losses),
            f"{np.mean(losses):.5f}",
        ]
    assert f"right, of {2 * images:,}" in table
    assert len(rows["`grid`"][0].split(", ")) == 2


def table_rows(table: str) -> list[list[str]]:
    """The cells of a markdown table's body rows."""
    rows = [line.strip("|").split(" | ") for line in table.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row] for row in rows]


def test_views_benchmark_refusals_are_one_line_and_write_nothing(tmp_path):
    unknown = views(PROJECT, "model.keras", "--views", "diagonal", check=False)
    assert unknown.returncode == 2 and "invalid choice: 'diagonal'" in unknown.stderr
    copy_project(tmp_path, extra_folders=("benchmarks",))
    before = set(tmp_path.rglob("*"))
    output = tmp_path / "views.md"
    no_split = views(tmp_path, "model.keras", "--output", str(output), check=False)
    assert no_split.returncode == 1
    assert no_split.stderr.startswith("views: error: cannot read the val split in data/processed")
    assert len(no_split.stderr.splitlines()) == 1
    val = tmp_path / "data/processed/val"
    val.mkdir(parents=True)
    save_split(val, np.zeros((3, 28, 28, 1), np.float32), np.zeros(3, np.int64))
    no_model = views(tmp_path, "nowhere.keras", "--output", str(output), check=False)
    assert no_model.returncode == 1
    assert no_model.stderr == "views: error: nowhere.keras not found: run the train stage first\n"
    written = {path for path in set(tmp_path.rglob("*")) - before if "__pycache__" not in str(path)}
    assert written == {val.parent.parent, val.parent, val, val / "x.npy", val / "y.npy"}
