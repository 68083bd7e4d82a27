from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import make_mnist_arrays, serve, write_npz


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
