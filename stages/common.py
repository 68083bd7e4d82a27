"""What every stage shares: one-line failures, atomic writes and the command-line wrapper."""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Set to 1 to see the traceback of an unexpected error instead of its one line.
TRACEBACK_VARIABLE = "STAGES_TRACEBACK"
MAX_CAUSE = 400


class StageError(Exception):
    """An expected failure: its message is the one line the user sees."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write, renamed onto `path` only if the block succeeds.

    The temporary name keeps the suffix because writers such as Keras and matplotlib pick the
    format from it, and starts with a dot so that a crash leaves nothing that looks like an output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Like `atomic_path`, for a directory of outputs: all of it appears, or none of it.

    A directory cannot be renamed over another, so the old one is first renamed aside, and
    deleted only once the new one is in place (put back if that rename fails): the old outputs
    are never half-deleted, and `path` is missing only between two renames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    tmp = path.with_name(f".{path.name}.{token}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        aside = path.with_name(f".{path.name}.{token}.old.tmp") if path.exists() else None
        if aside:
            os.replace(path, aside)
        try:
            os.replace(tmp, path)
        except BaseException:
            if aside:
                os.replace(aside, path)
            raise
        if aside:
            shutil.rmtree(aside)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows(rows)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(stage: str, main: Callable[[], int | None], error_status: int = 1) -> None:
    """Run a stage's `main`, turning expected failures into one line on stderr and a non-zero exit.

    `main` may return an exit status (a command such as the gate does); a failure exits with
    `error_status`. An unexpected error from a library (Keras, TensorFlow, numpy, which bad
    input can cause) is one line too, naming its type, unless `STAGES_TRACEBACK=1` asks for the
    traceback. SIGTERM is handled like Ctrl-C so that the `finally` blocks of the atomic writers
    remove their temporary files on either.
    """
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        status = main()
    except (StageError, OSError) as error:
        print(f"{stage}: error: {_one_line(error)}", file=sys.stderr)
        sys.exit(error_status)
    except KeyboardInterrupt:
        print(f"{stage}: interrupted, no output written", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if os.environ.get(TRACEBACK_VARIABLE) == "1":
            raise
        cause = _one_line(error)
        if len(cause) > MAX_CAUSE:
            cause = cause[:MAX_CAUSE] + "…"
        print(
            f"{stage}: error: {type(error).__name__}: {cause} "
            f"(set {TRACEBACK_VARIABLE}=1 to see the traceback)",
            file=sys.stderr,
        )
        sys.exit(error_status)
    sys.exit(status or 0)


def _one_line(error: Exception) -> str:
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    # Causes quoted from libraries can span lines (urllib's redirect loop does).
    return " ".join(str(error).split())
