"""Test helpers: small MNIST-format data sets, a local HTTP server, and a throw-away DVC repo."""

from __future__ import annotations

import hashlib
import http.server
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

from devtools.workspace import BIN, PROJECT, command_env, copy_project, write_params


def make_mnist_arrays(n_train: int = 600, n_test: int = 200, seed: int = 0) -> dict:
    """Arrays in the layout of Keras' mnist.npz. Each digit d gets a bright bar in row 2d + 4 on
    top of noise, so that the tiny model of `tiny_params` learns them in one epoch (about 85 %
    of the test images right, against 10 % by chance)."""
    rng = np.random.default_rng(seed)

    def split(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        images = rng.integers(0, 60, size=(count, 28, 28)).astype(np.uint8)
        images[np.arange(count), 2 * labels + 4, 4:24] = 255
        return images, labels

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def write_npz(path: Path, **arrays: np.ndarray) -> str:
    """Write arrays to `path` (uncompressed .npz, like Keras' file); return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        np.savez(file, **arrays)
    return sha256_of(path)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files from the server's directory, plus failure modes for the download tests:
    /status/<code>, /truncated/<file> (short body), /slow (no answer in time), /loop (redirects
    to itself), /drip/<file> (the file, one small chunk at a time, slowly)."""

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        parts = self.path.strip("/").split("/")
        if parts[0] == "status":
            self.send_error(int(parts[1]))
        elif parts[0] == "loop":
            self.send_response(302)
            self.send_header("Location", self.path)
            self.end_headers()
        elif parts[0] == "slow":
            time.sleep(self.server.slow_seconds)
            self.send_error(503)
        elif parts[0] == "truncated":
            body = (Path(self.directory) / parts[1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif parts[0] == "drip":
            body = (Path(self.directory) / parts[1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for start in range(0, len(body), 4096):
                    self.wfile.write(body[start : start + 4096])
                    self.wfile.flush()
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up: what the interruption tests do
        else:
            super().do_GET()


@contextmanager
def serve(directory: Path, slow_seconds: float = 3.0) -> Iterator[http.server.HTTPServer]:
    """An HTTP server on 127.0.0.1 (a free port) serving `directory` in a background thread.
    `server.url` is its base URL and `server.hits` counts requests per path."""

    def handler(*args: object, **kwargs: object) -> _Handler:
        return _Handler(*args, directory=str(directory), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.hits = Counter()
    server.slow_seconds = slow_seconds
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def tiny_params(url: str, sha256: str) -> dict:
    """The project's params.yaml with data from `url` and a model and run small enough for tests."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["data"].update(url=url, sha256=sha256, timeout=5, retries=0)
    params["preprocess"]["validation_size"] = 100
    params["model"] = {
        "conv_blocks": [{"filters": 4, "kernel_size": 3, "pool": True}],
        "dense": [{"units": 16, "dropout": 0.1}],
        "batch_norm": False,
        "tta": "none",
    }
    params["train"].update(
        epochs=1,
        batch_size=64,
        # Eight steps of a tiny model: a high rate makes them learn the synthetic digits well.
        learning_rate=0.01,
        lr_schedule="constant",
        warmup_epochs=0,
        augment_shift=0.0,
        augment_rotation=0.0,
        augment_zoom=0.0,
        early_stopping_patience=0,
    )
    params["evaluate"]["batch_size"] = 256
    params["plots"].update(dpi=30, width=3, height=2)
    return params


def local_project(repo: Path, n_train: int, n_test: int) -> Path:
    """The pipeline in `repo`, run with `tiny_params` from a small synthetic MNIST at
    data/raw/mnist.npz (a local path, so download only checks it); return that path."""
    copy_project(repo)
    raw = repo / "data/raw/mnist.npz"
    write_params(repo, tiny_params(str(raw), write_npz(raw, **make_mnist_arrays(n_train, n_test))))
    return raw


def declared_outputs(
    stage: str, kinds: tuple[str, ...] = ("outs", "metrics", "plots")
) -> list[Path]:
    """The paths `dvc.yaml` lists as the stage's outputs of these kinds."""
    spec = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"][stage]
    entries = [entry for kind in kinds for entry in spec.get(kind, [])]
    return [Path(entry if isinstance(entry, str) else next(iter(entry))) for entry in entries]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def run_command(
    args: list[str], cwd: Path, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, cwd=cwd, env=command_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_command([str(BIN / "dvc"), *args], repo, check=check)


def run_stage(repo: Path, stage: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one stage's command directly, as `dvc repro` would."""
    return run_command([str(BIN / "python"), "-m", f"stages.{stage}"], repo, check=check)


def start_stage(repo: Path, stage: str) -> subprocess.Popen:
    """Start one stage's command in the background, its output unbuffered and piped.

    Ctrl-C (SIGINT) is left at its default for the stage, as in a terminal, even where the tests
    themselves run with it ignored (a background job of a non-interactive shell): a Python
    started with SIGINT ignored rightly keeps ignoring it.
    """
    return subprocess.Popen(
        [str(BIN / "python"), "-m", f"stages.{stage}"],
        cwd=repo,
        env={**command_env(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run_command(["git", *args], repo)


def commit(repo: Path, message: str) -> None:
    """Commit everything in the work tree, as a user's `git add -A && git commit` would."""
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def files_in(folder: Path) -> list[Path]:
    """Every file and folder under `folder`, but Python's bytecode caches."""
    return sorted(path for path in folder.rglob("*") if "__pycache__" not in path.parts)


def init_repo(repo: Path, params: dict) -> None:
    """A git + DVC repo holding the pipeline with `params`, everything committed."""
    copy_project(repo)
    write_params(repo, params)
    git(repo, "init", "-q", "-b", "main")
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    commit(repo, "pipeline")
