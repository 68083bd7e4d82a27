"""Ctrl-C and SIGTERM end a stage cleanly: exit 130, one line, and no partial output."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import files_in, run_stage, sha256_of, start_stage, tiny_params

from devtools.workspace import copy_project, edit_params, write_params


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def temporary_files(repo: Path) -> list[Path]:
    return [path for path in files_in(repo) if ".tmp" in path.name]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_download_leaves_nothing(tmp_path, server, mnist_dir, signum):
    copy_project(tmp_path)
    url = f"{server.url}/drip/mnist.npz"
    write_params(tmp_path, tiny_params(url, sha256_of(mnist_dir / "mnist.npz")))
    process = start_stage(tmp_path, "download")
    wait_for(lambda: temporary_files(tmp_path))  # the download is under way
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == "download: interrupted, no output written"
    assert list((tmp_path / "data/raw").iterdir()) == []


def start_endless_training(repo: Path, mnist_dir: Path) -> subprocess.Popen:
    """A train stage of 1000 epochs on tiny data, the moment its second epoch has begun: while
    Keras sets up that epoch's batches, where a Ctrl-C raised at once crashed the process."""
    copy_project(repo)
    write_params(
        repo, tiny_params(str(mnist_dir / "mnist.npz"), sha256_of(mnist_dir / "mnist.npz"))
    )
    edit_params(repo, "train", epochs=1000)
    run_stage(repo, "download")
    run_stage(repo, "preprocess")
    process = start_stage(repo, "train")
    deadline = time.monotonic() + 60
    for line in process.stdout:  # each line as it comes, so that the signal follows at once
        if "Epoch 2/1000" in line:
            return process
        assert time.monotonic() < deadline, "timed out waiting"
    raise AssertionError(f"training ended before its second epoch: {process.stderr.read()}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_training_leaves_no_model(tmp_path, mnist_dir, signum):
    process = start_endless_training(tmp_path, mnist_dir)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == "train: interrupted, no output written"
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []
    assert not (tmp_path / "metrics").exists()
    assert temporary_files(tmp_path) == []
    # The next run starts cleanly.
    edit_params(tmp_path, "train", epochs=1)
    run_stage(tmp_path, "train")
    assert (tmp_path / "models/model.keras").is_file()


def test_training_whose_parent_is_gone_still_ends_cleanly(tmp_path, mnist_dir):
    # As when dvc is killed: the stage's stdout pipe has no reader any more.
    process = start_endless_training(tmp_path, mnist_dir)
    process.stdout.close()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    # Interrupted (130), or ended first by its next line of output finding the pipe broken (1).
    assert (process.returncode, stderr.strip().splitlines()[-1]) in [
        (130, "train: interrupted, no output written"),
        (1, "train: error: Broken pipe"),
    ]
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []
    assert temporary_files(tmp_path) == []
