"""Download MNIST (`mnist.npz`) from `data.url`, verify its sha256, and put it in `data/raw/`.

`data.url` may be an https://, http:// or file:// URL, or a plain local path (a mirror). The file is
streamed to a temporary name and renamed into place only once its checksum matches, so a failed
or interrupted download never leaves a file that DVC or the next stage could take for good data.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from stages.common import StageError, atomic_path, run
from stages.params import load_params
from stages.paths import RAW_MNIST

CHUNK_BYTES = 1 << 16
BACKOFF_SECONDS = 1.0


class TransientError(Exception):
    """A failure worth retrying: timeouts, resets, server errors, truncated bodies."""


def download(url: str, destination: Path, sha256: str, timeout: float, retries: int) -> int:
    """Fetch `url` to `destination` if its sha256 matches; return its size in bytes.

    Transient failures are retried `retries` times with exponential backoff; anything else
    (HTTP 4xx, a missing file, a checksum mismatch) fails at once.
    """
    for attempt in range(retries + 1):
        try:
            return _fetch_verified(url, destination, sha256, timeout)
        except TransientError as error:
            if attempt == retries:
                tries = f" (after {retries + 1} attempts)" if retries else ""
                raise StageError(f"cannot download {url}: {error}{tries}") from None
            delay = BACKOFF_SECONDS * 2**attempt
            print(f"download: {error}; retrying in {delay:.0f} s", file=sys.stderr)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _fetch_verified(url: str, destination: Path, sha256: str, timeout: float) -> int:
    with atomic_path(destination) as tmp:
        with _open(url, timeout) as (source, size), tmp.open("wb") as target:
            actual = _copy(source, target, size)
        if actual != sha256:
            raise StageError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}")
        return tmp.stat().st_size


@contextmanager
def _open(url: str, timeout: float) -> Iterator[tuple[BinaryIO, int | None]]:
    """Open `url` for reading; yield the stream and its size in bytes when known."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    # A one-letter scheme is a Windows drive ("C:\\mnist.npz").
    if scheme == "" or len(scheme) == 1:
        stream, size = _open_local(url, Path(url))
    elif scheme == "file":
        stream, size = _open_local(url, Path(urllib.request.url2pathname(parts.path)))
    elif scheme in ("http", "https"):
        stream = _open_http(url, timeout)
        length = stream.headers.get("Content-Length", "")
        size = int(length) if length.isdigit() else None
    else:
        raise StageError(
            f"cannot download {url}: unsupported URL scheme '{scheme}' "
            "(use https://, http://, file:// or a local path)"
        )
    with stream:
        yield stream, size


def _open_local(url: str, path: Path) -> tuple[BinaryIO, int]:
    try:
        stream = path.open("rb")
    except OSError as error:
        raise StageError(f"cannot read {url}: {error.strerror}") from None
    return stream, path.stat().st_size


def _open_http(url: str, timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": "mnist-dvc-pipeline"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        cause = f"HTTP {error.code} {error.reason}"
        if error.code >= 500 or error.code == 429:
            raise TransientError(cause) from None
        raise StageError(f"cannot download {url}: {cause}") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise TransientError(f"no answer within {timeout:g} s") from None
        raise TransientError(getattr(error.reason, "strerror", None) or str(error.reason)) from None
    except TimeoutError:
        raise TransientError(f"no answer within {timeout:g} s") from None
    except (ConnectionError, http.client.HTTPException) as error:
        raise TransientError(str(error) or type(error).__name__) from None


def _copy(source: BinaryIO, target: BinaryIO, size: int | None) -> str:
    """Copy with a progress bar; return the sha256 hex digest of what was copied."""
    digest = hashlib.sha256()
    received = 0
    with tqdm(
        total=size, unit="B", unit_scale=True, desc="download", file=sys.stderr, disable=None
    ) as progress:
        while True:
            try:
                chunk = source.read(CHUNK_BYTES)
            except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
                raise TransientError(
                    f"connection lost after {received} bytes ({error or type(error).__name__})"
                ) from None
            if not chunk:
                break
            digest.update(chunk)
            target.write(chunk)
            received += len(chunk)
            progress.update(len(chunk))
    if size is not None and received != size:
        raise TransientError(f"connection closed after {received} of {size} bytes")
    return digest.hexdigest()


def main() -> None:
    params = load_params("download").data
    started = time.perf_counter()
    size = download(params.url, RAW_MNIST, params.sha256, params.timeout, params.retries)
    seconds = time.perf_counter() - started
    print(f"download: {RAW_MNIST} ({size / 1e6:.1f} MB, sha256 verified) in {seconds:.1f} s")


if __name__ == "__main__":
    run("download", main)
