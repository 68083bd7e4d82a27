"""The download stage's logic, against a local HTTP server and local files."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers import sha256_of

from stages import download as download_stage
from stages.common import StageError
from stages.download import download


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_stage, "BACKOFF_SECONDS", 0.0)


@pytest.fixture
def sha(mnist_dir: Path) -> str:
    return sha256_of(mnist_dir / "mnist.npz")


def assert_nothing_written(folder: Path) -> None:
    assert not folder.exists() or list(folder.iterdir()) == []


def test_http_download_verifies_and_writes(server, sha, mnist_dir, tmp_path):
    target = tmp_path / "raw" / "mnist.npz"
    size = download(f"{server.url}/mnist.npz", target, sha, timeout=5, retries=0)
    assert target.read_bytes() == (mnist_dir / "mnist.npz").read_bytes()
    assert size == target.stat().st_size
    assert list(target.parent.iterdir()) == [target]  # no temporary file left


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_local_mirror(form, sha, mnist_dir, tmp_path):
    source = mnist_dir / "mnist.npz"
    url = str(source) if form == "path" else source.as_uri()
    target = tmp_path / "mnist.npz"
    download(url, target, sha, timeout=5, retries=0)
    assert sha256_of(target) == sha


def test_checksum_mismatch_is_refused_without_retry(server, tmp_path):
    url = f"{server.url}/mnist.npz"
    before = server.hits["/mnist.npz"]
    with pytest.raises(StageError, match=f"checksum mismatch for {url}: expected sha256 0+, got"):
        download(url, tmp_path / "out" / "mnist.npz", "0" * 64, timeout=5, retries=3)
    assert server.hits["/mnist.npz"] == before + 1
    assert_nothing_written(tmp_path / "out")


def test_http_404_fails_at_once(server, sha, tmp_path):
    # The server lives for the whole session and a pipeline test asks it for this path too.
    before = server.hits["/status/404"]
    with pytest.raises(StageError, match=r"cannot download .*/status/404: HTTP 404"):
        download(f"{server.url}/status/404", tmp_path / "x.npz", sha, timeout=5, retries=3)
    assert server.hits["/status/404"] == before + 1
    assert_nothing_written(tmp_path)


def test_http_500_is_retried_then_reported(server, sha, tmp_path):
    before = server.hits["/status/500"]
    with pytest.raises(StageError, match=r"HTTP 500 .* \(after 3 attempts\)"):
        download(f"{server.url}/status/500", tmp_path / "x.npz", sha, timeout=5, retries=2)
    assert server.hits["/status/500"] == before + 3
    assert_nothing_written(tmp_path)


def test_short_body_is_retried_and_reported(server, sha, tmp_path):
    before = server.hits["/truncated/mnist.npz"]
    with pytest.raises(StageError, match=r"connection closed after \d+ of \d+ bytes"):
        download(f"{server.url}/truncated/mnist.npz", tmp_path / "x.npz", sha, timeout=5, retries=1)
    assert server.hits["/truncated/mnist.npz"] == before + 2
    assert_nothing_written(tmp_path)


def test_timeout(server, sha, tmp_path):
    with pytest.raises(StageError, match=r"/slow: no answer within 0\.5 s$"):
        download(f"{server.url}/slow", tmp_path / "x.npz", sha, timeout=0.5, retries=0)
    assert_nothing_written(tmp_path)


def test_redirect_loop(server, sha, tmp_path):
    with pytest.raises(StageError, match=r"/loop: HTTP 302 .*infinite loop"):
        download(f"{server.url}/loop", tmp_path / "x.npz", sha, timeout=5, retries=2)
    assert_nothing_written(tmp_path)


def test_connection_refused(sha, tmp_path):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mnist.npz"
    with pytest.raises(StageError, match=f"cannot download {url}: Connection refused"):
        download(url, tmp_path / "x.npz", sha, timeout=5, retries=1)
    assert_nothing_written(tmp_path)


def test_unknown_scheme(sha, tmp_path):
    with pytest.raises(StageError, match="unsupported URL scheme 'ftp'"):
        download("ftp://example.org/mnist.npz", tmp_path / "x.npz", sha, timeout=5, retries=3)


def test_missing_local_file(sha, tmp_path):
    missing = tmp_path / "nowhere" / "mnist.npz"
    with pytest.raises(StageError, match=f"cannot read {missing}: No such file or directory"):
        download(str(missing), tmp_path / "out" / "x.npz", sha, timeout=5, retries=3)
    assert_nothing_written(tmp_path / "out")
