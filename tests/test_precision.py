"""train.precision: float32 or mixed bfloat16, `auto` by the hardware, and what the run records."""

from __future__ import annotations

import csv
import io
import platform
import shutil
from pathlib import Path

import pytest
from helpers import dvc, local_project, read_json, run_command, run_stage

from devtools.workspace import BIN, PROJECT, edit_params, stages_run
from stages.hardware import cpu_bf16_units, cpu_model, cpu_name, cpuinfo_field
from stages.tf_setup import load_model, onednn_enabled, tf
from stages.train import bf16_native, choose_precision, device_name

XEON_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
EPYC_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx2 fma sha_ni
"""


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_the_cpu_and_its_bfloat16_units_are_read_from_cpuinfo(tmp_path):
    xeon = cpuinfo(tmp_path, XEON_CPUINFO)
    assert cpu_model(xeon) == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert cpu_name(xeon) == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz (family 6, model 143)"
    assert cpu_bf16_units(xeon) == ["amx_bf16", "avx512_bf16"]
    epyc = cpuinfo(tmp_path, EPYC_CPUINFO)
    assert cpu_model(epyc) == "AMD EPYC 7B13"
    assert cpu_name(epyc) == "AMD EPYC 7B13"  # no family or model to add
    assert cpu_bf16_units(epyc) == []
    missing = tmp_path / "no-such-file"
    assert cpuinfo_field("flags", missing) is None
    assert cpu_bf16_units(missing) == []
    assert cpu_model(missing) == (platform.processor() or platform.machine())


@pytest.mark.parametrize(
    ("cpu_units", "gpus", "native"),
    [
        (["amx_bf16", "avx512_bf16"], [], True),
        (["avx512_bf16"], [], True),
        ([], [], False),
        # A GPU trains when there is one: the CPU's units do not matter then.
        ([], [{"compute_capability": (8, 0)}], True),
        (["amx_bf16"], [{"compute_capability": (7, 5)}], False),
        ([], [{"compute_capability": (9, 0)}, {"compute_capability": (7, 0)}], False),
        ([], [{"device_name": "no capability reported"}], False),
    ],
)
def test_bfloat16_is_native_only_on_the_hardware_that_computes_it(cpu_units, gpus, native):
    assert bf16_native(cpu_units, gpus) is native


@pytest.mark.parametrize(
    ("requested", "native", "chosen"),
    [
        ("auto", True, "mixed_bfloat16"),
        ("auto", False, "float32"),
        ("float32", True, "float32"),
        ("mixed_bfloat16", False, "mixed_bfloat16"),
    ],
)
def test_auto_picks_bfloat16_where_native_and_an_explicit_choice_stands(requested, native, chosen):
    assert choose_precision(requested, native) == chosen


def test_the_device_names_every_training_gpu():
    gpu = {"device_name": "NVIDIA H100 80GB HBM3", "compute_capability": (9, 0)}
    assert device_name([gpu, gpu]) == "gpu: NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3"


# The CPU flags with which TensorFlow turns its oneDNN operations on, unless told otherwise.
ONEDNN_FLAGS = {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}


@pytest.mark.parametrize("setting", ["0", "1", None])
def test_the_cpu_device_names_the_family_and_model_and_whether_onednn_ran(monkeypatch, setting):
    """Runs that differ in these differ in their figures: `dvc exp show` must tell them apart."""
    if setting is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
        on = bool(ONEDNN_FLAGS & set((cpuinfo_field("flags") or "").split()))
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", setting)
        on = setting == "1"
    code = "from stages.train import device_name; print(device_name([]))"
    output = run_command([str(BIN / "python"), "-c", code], PROJECT).stdout
    assert output == f"cpu: {cpu_name()}, oneDNN {'on' if on else 'off'}\n"


def cpu_device() -> str:
    """The device the train stage records here: its subprocesses see this process's environment."""
    return f"cpu: {cpu_name()}, oneDNN {'on' if onednn_enabled() else 'off'}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny data, processed, trained with augmentation on (its layers must take either policy)."""
    repo = tmp_path_factory.mktemp("precision") / "repo"
    local_project(repo, 300, 100)
    edit_params(repo, "train", epochs=5, augment_rotation=10, augment_zoom=0.1, augment_shift=0.1)
    run_stage(repo, "preprocess")
    return repo


def train(project: Path, precision: str) -> tuple[dict, str]:
    edit_params(project, "train", precision=precision)
    output = run_stage(project, "train").stdout
    return read_json(project / "metrics/train.json"), output


def layer_policies(model_file: Path) -> dict[str, str]:
    return {layer.name: layer.dtype_policy.name for layer in load_model(model_file).layers}


def test_mixed_bfloat16_trains_in_bfloat16_reproducibly_with_float32_probabilities(project):
    metrics, output = train(project, "mixed_bfloat16")
    device = cpu_device()
    emulated = "" if cpu_bf16_units() else " (bfloat16 emulated: slower than float32)"
    assert f"train: mixed_bfloat16 on {device}{emulated}\n" in output
    assert metrics["precision"] == "mixed_bfloat16" and metrics["device"] == device
    policies = layer_policies(project / "models/model.keras")
    *hidden, output_layer = policies.values()
    assert set(hidden) == {"mixed_bfloat16"} and output_layer == "float32"

    again, _ = train(project, "mixed_bfloat16")
    metrics.pop("training_seconds"), again.pop("training_seconds")
    assert again == metrics

    run_stage(project, "evaluate")
    assert read_json(project / "metrics/evaluate.json")["test_accuracy"] > 0.5


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="trains on the CPU")
def test_auto_trains_in_float32_unless_the_cpu_has_bfloat16_units(project):
    metrics, output = train(project, "auto")
    expected = "mixed_bfloat16" if cpu_bf16_units() else "float32"
    assert f"train: {expected} on {cpu_device()}\n" in output
    assert metrics["precision"] == expected
    policies = set(layer_policies(project / "models/model.keras").values())
    assert policies == ({"mixed_bfloat16", "float32"} if cpu_bf16_units() else {"float32"})


@pytest.mark.parametrize("precision", ["auto", "mixed_bfloat16", "float32"])
def test_the_plain_keras_baseline_computes_in_the_precision_the_train_stage_does(
    project, precision
):
    # benchmarks/run.py times both per step: on bfloat16 hardware a float32 baseline would
    # compare two different computations.
    shutil.copytree(PROJECT / "benchmarks", project / "benchmarks", dirs_exist_ok=True)
    _, output = train(project, precision)
    resolved = output.split("train: ", 1)[1].split(" on ", 1)[0]
    plain = run_command([str(BIN / "python"), "-m", "benchmarks.plain_keras", "1"], project)
    assert f"plain keras: {resolved}\n" in plain.stdout


def test_dvc_exp_show_tells_the_precisions_and_the_onednn_settings_apart(repo, monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    for precision in ("float32", "mixed_bfloat16"):
        dvc(repo, "exp", "run", "-n", precision, "-S", f"train.precision={precision}")
    # DVC does not see the environment: with params it has run, it would restore that run's
    # outputs, so the README's command forces train and what follows it.
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    forced = ["-f", "--downstream", "train", "-S", "train.precision=float32"]
    ran = dvc(repo, "exp", "run", "-n", "float32-onednn", *forced).stdout
    assert stages_run(ran) == {"train", "evaluate", "plots"}
    shown = dvc(repo, "exp", "show", "--csv").stdout
    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(shown))}
    runs = {"float32": "off", "mixed_bfloat16": "off", "float32-onednn": "on"}
    for name, onednn in runs.items():
        precision = name.removesuffix("-onednn")
        assert rows[name]["train.precision"] == precision
        assert rows[name]["precision"] == precision
        assert rows[name]["device"] == f"cpu: {cpu_name()}, oneDNN {onednn}"
