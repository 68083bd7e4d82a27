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
def atomic_outputs(*paths: str | Path, dirs: bool = False) -> Iterator[list[Path]]:
    """Yield a temporary sibling for each of `paths` (files, or with `dirs` folders) to write;
    only once the block has written them all are they put in place, together.

    An error or interrupt while writing leaves every output as it was, so a stage never leaves
    a new model beside old metrics, or a new train split beside an old validation split. Each
    old output is kept aside (a hard link for a file, which stays in place meanwhile; a rename
    for a folder, which cannot be renamed over) until every new one is in place, and put back
    if one cannot be. Temporary names keep the suffix, since writers such as Keras and
    matplotlib pick the format from it, and start with a dot so that a crash leaves nothing that
    looks like an output.
    """
    paths = [Path(path) for path in paths]
    token = secrets.token_hex(4)
    temps = [path.with_name(f".{path.stem}.{token}.tmp{path.suffix}") for path in paths]
    for path, tmp in zip(paths, temps, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        if dirs:
            tmp.mkdir()
    try:
        yield temps
        _put_in_place(paths, temps, token, dirs)
    finally:
        for tmp in temps:
            _remove(tmp)


def _put_in_place(paths: list[Path], temps: list[Path], token: str, dirs: bool) -> None:
    placed: list[tuple[Path, Path | None]] = []  # each output now in place, and its old copy
    try:
        for path, tmp in zip(paths, temps, strict=True):
            aside = path.with_name(f".{path.name}.{token}.old.tmp") if path.exists() else None
            if aside and dirs:
                os.replace(path, aside)
            elif aside:
                os.link(path, aside)
            try:
                os.replace(tmp, path)
            except BaseException:
                if aside and dirs:
                    os.replace(aside, path)  # the old folder had been moved out of the way
                elif aside:
                    aside.unlink()  # the old file is still in place
                raise
            placed.append((path, aside))
    except BaseException:
        for path, aside in reversed(placed):
            _remove(path)
            if aside:
                os.replace(aside, path)
        raise
    for _, aside in placed:
        if aside:
            _remove(aside)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """`atomic_outputs` for one file: the file appears whole, or is left as it was."""
    with atomic_outputs(path) as (tmp,):
        yield tmp


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` sorted and indented; `path` is one of `atomic_outputs`' temporary paths."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a header and rows; `path` is one of `atomic_outputs`' temporary paths."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows(rows)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


_noted_interrupts: list[int] = []


def _note_interrupt(signum: int, frame: object) -> None:
    _noted_interrupts.append(signum)


def check_interrupt() -> None:
    """Raise `KeyboardInterrupt` if Ctrl-C or SIGTERM came inside `interrupts_deferred`."""
    if _noted_interrupts:
        raise KeyboardInterrupt


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM are noted instead of raised wherever they land;
    `check_interrupt` raises them where the code calls it, and so does the block's end.

    For TensorFlow's work. A `KeyboardInterrupt` raised in the middle of it can crash the
    process: Ctrl-C as training's second epoch began ended the train stage with a segmentation
    fault or `free(): invalid next size` in 9 of 25 tries, instead of its one line and exit
    130; deferred, in none of 25. A signal that the process ignores (a
    background job's Ctrl-C) stays ignored.
    """
    signums = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) != signal.SIG_IGN]
    previous = {signum: signal.signal(signum, _note_interrupt) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        interrupted = bool(_noted_interrupts)
        _noted_interrupts.clear()
    if interrupted:
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
