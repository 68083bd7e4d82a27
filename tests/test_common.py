"""Atomic writes and the one-line failure wrapper that every stage shares."""

from __future__ import annotations

import errno
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import files_in, local_project, run_stage

from stages.common import (
    StageError,
    atomic_outputs,
    atomic_path,
    check_interrupt,
    interrupts_deferred,
    run,
    write_json,
)


def disk_full(*args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device", "metrics/out.json")


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_text("half")
        disk_full()
    assert target.read_text() == "old"
    assert files_in(tmp_path) == [target]
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json" and tmp.name.startswith(".")
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert files_in(tmp_path) == [target]


def test_atomic_dir_is_all_or_nothing(tmp_path):
    target = tmp_path / "split"
    with atomic_outputs(target, dirs=True) as (folder,):
        (folder / "x.npy").write_text("first")
    with pytest.raises(KeyboardInterrupt), atomic_outputs(target, dirs=True) as (folder,):
        (folder / "x.npy").write_text("second")
        raise KeyboardInterrupt
    assert (target / "x.npy").read_text() == "first"
    assert files_in(tmp_path) == [target, target / "x.npy"]


def test_atomic_dir_deletes_the_old_folder_only_once_the_new_one_is_in_place(tmp_path, monkeypatch):
    target = tmp_path / "split"
    with atomic_outputs(target, dirs=True) as (folder,):
        (folder / "x.npy").write_text("first")
    seen_at_delete = []
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if Path(path).name != target.name and (target / "x.npy").exists():
            seen_at_delete.append((target / "x.npy").read_text())
        elif Path(path) == target:
            seen_at_delete.append("the target itself")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    with atomic_outputs(target, dirs=True) as (folder,):
        (folder / "x.npy").write_text("second")
    assert seen_at_delete[0] == "second"  # the old folder went when the new one was in place
    assert (target / "x.npy").read_text() == "second"
    assert files_in(tmp_path) == [target, target / "x.npy"]


def fail_to_put_in_place(monkeypatch, name: str) -> None:
    """Make the rename of the new `name` (a temporary output) onto its place fail."""
    real_replace = os.replace

    def replace(source, destination):
        if Path(destination).name == name and ".old." not in Path(source).name:
            raise OSError(errno.EIO, "Input/output error", str(destination))
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("dirs", [False, True], ids=["files", "folders"])
def test_outputs_are_put_in_place_together_or_not_at_all(tmp_path, monkeypatch, dirs):
    """A stage's outputs change together: an error while writing the second leaves the first as
    it was, and so does a failure to put the second in place once the first already is."""
    outputs = [tmp_path / "model", tmp_path / "metrics"]

    def write_all(text: str) -> None:
        with atomic_outputs(*outputs, dirs=dirs) as temps:
            for tmp in temps:
                (tmp / "x" if dirs else tmp).write_text(text)
                if text == "half":
                    disk_full()

    def contents() -> list[str]:
        return [(path / "x" if dirs else path).read_text() for path in outputs]

    write_all("old")
    with pytest.raises(OSError, match="No space"):
        write_all("half")
    assert contents() == ["old", "old"]
    fail_to_put_in_place(monkeypatch, "metrics")
    with pytest.raises(OSError, match="Input/output error"):
        write_all("new")
    assert contents() == ["old", "old"]
    assert [path for path in files_in(tmp_path) if ".tmp" in path.name] == []
    monkeypatch.undo()
    write_all("new")
    assert contents() == ["new", "new"]
    assert [path for path in files_in(tmp_path) if ".tmp" in path.name] == []


def test_a_new_output_is_removed_again_if_another_cannot_take_its_place(tmp_path):
    """The first output did not exist before; the second's place is taken by a folder."""
    (tmp_path / "metrics.json").mkdir()
    with (
        pytest.raises(OSError),
        atomic_outputs(tmp_path / "model", tmp_path / "metrics.json") as (
            model,
            metrics,
        ),
    ):
        model.write_text("new")
        metrics.write_text("new")
    assert files_in(tmp_path) == [tmp_path / "metrics.json"]


def test_write_json_is_sorted_and_newline_terminated(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": 0.5})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 0.5,\n  "b": 1\n}\n'


@pytest.mark.parametrize(
    ("failure", "code", "line"),
    [
        (StageError("bad input"), 1, "demo: error: bad input"),
        (StageError("quoted cause\nover two lines"), 1, "demo: error: quoted cause over two lines"),
        (
            OSError(errno.ENOSPC, "No space left on device", "metrics/out.json"),
            1,
            "demo: error: metrics/out.json: No space left on device",
        ),
        (KeyboardInterrupt(), 130, "demo: interrupted, no output written"),
    ],
)
def test_run_turns_failures_into_one_line(capsys, failure, code, line):
    def main() -> None:
        raise failure

    with pytest.raises(SystemExit) as exit_info:
        run("demo", main)
    assert (exit_info.value.code, capsys.readouterr().err.strip()) == (code, line)


@pytest.mark.parametrize(("returned", "code"), [(None, 0), (0, 0), (1, 1)])
def test_run_exits_with_the_status_main_returns(returned, code):
    with pytest.raises(SystemExit) as exit_info:
        run("demo", lambda: returned)
    assert exit_info.value.code == code


def test_a_library_error_is_one_line_naming_its_type(capsys, monkeypatch):
    def main() -> None:
        raise ValueError("Input 0 of layer 'conv2d' is incompatible:\nexpected shape (None, 28)")

    monkeypatch.delenv("STAGES_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run("evaluate", main)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        "evaluate: error: ValueError: Input 0 of layer 'conv2d' is incompatible: expected shape "
        "(None, 28) (set STAGES_TRACEBACK=1 to see the traceback)\n"
    )
    monkeypatch.setenv("STAGES_TRACEBACK", "1")
    with pytest.raises(ValueError, match="incompatible"):
        run("evaluate", main)


def test_run_can_give_expected_failures_another_status(capsys):
    """The gate keeps 1 for a failed check and exits 2 for a usage error."""

    def main() -> None:
        raise StageError("unknown revision 'nope'")

    with pytest.raises(SystemExit) as exit_info:
        run("gate", main, error_status=2)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "gate: error: unknown revision 'nope'\n"


def test_unwritable_output_is_one_line_and_nothing_partial(tmp_path):
    raw = local_project(tmp_path, 300, 20)
    (tmp_path / "data/processed").write_text("a file where the output folder should be")
    result = run_stage(tmp_path, "preprocess", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["preprocess: error: data/processed: File exists"]
    assert [path for path in files_in(tmp_path / "data") if ".tmp" in path.name] == []
    assert np.load(raw)["x_train"].shape == (300, 28, 28)  # the input is untouched


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_deferred_interrupt_is_raised_where_checked_and_at_the_blocks_end(signum):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    reached_the_check = False
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        check_interrupt()  # nothing noted yet
        os.kill(os.getpid(), signum)  # the handler runs before the next line
        reached_the_check = True
        with pytest.raises(KeyboardInterrupt):
            check_interrupt()
    assert reached_the_check
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_block_without_interrupts_ends_quietly_and_forgets_earlier_ones():
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
    with interrupts_deferred():
        check_interrupt()  # the earlier block's signal is not raised again


def test_an_ignored_ctrl_c_stays_ignored_while_deferred():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            check_interrupt()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
