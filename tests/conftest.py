from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    commit,
    dvc,
    init_repo,
    make_mnist_arrays,
    serve,
    sha256_of,
    tiny_params,
    write_npz,
)


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding `mnist.npz`: a small synthetic data set in Keras' MNIST layout."""
    folder = tmp_path_factory.mktemp("mirror")
    write_npz(folder / "mnist.npz", **make_mnist_arrays())
    return folder


@pytest.fixture(scope="session")
def server(mnist_dir: Path) -> Iterator:
    """A local HTTP server serving `mnist_dir`, with failure modes (see helpers._Handler)."""
    with serve(mnist_dir) as running:
        yield running


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, server, mnist_dir: Path) -> tuple[Path, str]:
    """A repo on branch main after its first `dvc repro`, everything committed (`dvc.lock`
    included); and that run's output."""
    repo = tmp_path_factory.mktemp("built") / "repo"
    init_repo(repo, tiny_params(f"{server.url}/mnist.npz", sha256_of(mnist_dir / "mnist.npz")))
    first = dvc(repo, "repro")
    commit(repo, "first run")
    return repo, first.stdout


@pytest.fixture
def repo(built: tuple[Path, str], tmp_path: Path) -> Path:
    """A private copy of the built repo, for a test that changes things."""
    copy = tmp_path / "repo"
    shutil.copytree(built[0], copy, symlinks=True)
    return copy
