"""`train.distribute`: training under a `tf.distribute` strategy, through the real train stage."""

from __future__ import annotations

import pytest
from helpers import local_project, read_json, run_command, run_stage

from devtools.workspace import BIN, edit_params

# The train stage on a machine whose CPU TensorFlow splits into two logical devices, which is
# how MirroredStrategy gets two replicas without two GPUs.
TWO_CPU_DEVICES = """
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from stages import train
from stages.common import run

run("train", train.main)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    """Tiny processed data, and a run with augmentation (the elastic layer's own included), a
    warm-up and cosine schedule and an ensemble of two: what a strategy must keep working. Five
    epochs, where the validation accuracy has levelled off: after three, a mere change of the
    order of the batches moved a member's by up to 15 of the 100 images, one device or two."""
    repo = tmp_path_factory.mktemp("distribute") / "repo"
    local_project(repo, 600, 200)
    edit_params(
        repo,
        "train",
        epochs=5,
        lr_schedule="cosine",
        warmup_epochs=1,
        augment_rotation=5,
        augment_shift=0.05,
        augment_elastic=10,
        ensemble_size=2,
    )
    run_stage(repo, "preprocess")
    return repo


def train_on_two_cpu_devices(repo) -> str:
    return run_command([str(BIN / "python"), "-c", TWO_CPU_DEVICES], repo).stdout


def test_mirrored_over_two_devices_learns_as_one_device_does(project):
    edit_params(project, "train", distribute="none")
    run_stage(project, "train")
    alone = read_json(project / "metrics/train.json")
    edit_params(project, "train", distribute="mirrored")
    output = train_on_two_cpu_devices(project)
    assert "train: mirrored, 2 replicas" in output
    mirrored = read_json(project / "metrics/train.json")
    assert mirrored["val_accuracy"] > 0.8 and alone["val_accuracy"] > 0.8
    assert abs(mirrored["val_accuracy"] - alone["val_accuracy"]) <= 0.05  # 5 of 100 images
    # Not the same run: two replicas draw their own dropout and sum gradients in another order.
    assert mirrored["val_loss"] != alone["val_loss"]
    for member in ("1", "2"):
        assert mirrored["members"][member]["epochs_run"] == 5
    run_stage(project, "evaluate")  # the saved model is an ordinary one
    assert read_json(project / "metrics/evaluate.json")["test_accuracy"] > 0.8


def test_mirrored_training_is_deterministic(project):
    edit_params(project, "train", distribute="mirrored")
    train_on_two_cpu_devices(project)
    first = read_json(project / "metrics/train.json")
    train_on_two_cpu_devices(project)
    again = read_json(project / "metrics/train.json")
    first.pop("training_seconds"), again.pop("training_seconds")
    assert again == first


def test_multi_worker_is_refused_with_one_line(project):
    edit_params(project, "train", distribute="multi_worker")
    result = run_stage(project, "train", check=False)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("train: error: train.distribute: multi_worker cannot train with Keras 3")
    assert "keras-team/keras#20585" in line
