"""A stage that fails while writing its outputs, after the first of them is written, leaves
every output as it was: never a new model beside old metrics, or a new train split beside an
old validation split."""

from __future__ import annotations

import csv
import errno
import importlib
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
from helpers import declared_outputs, files_in

from stages.common import run

# Each stage, and the write that fails: the `call`-th call of `owner.name`, which comes after
# at least one of the stage's outputs has been written in full.
FAULTS = {
    "preprocess": (np, "save", 3),  # the validation images, after the train split's two files
    "train": (csv, "writer", 1),  # plots/history.csv, after the model and its summary
    "evaluate": (np, "savez", 1),  # the mistakes gallery, after test_predictions.csv
    "plots": (matplotlib.figure.Figure, "savefig", 2),  # the second PNG, after the first
}


def mark_as_old(outputs: list[Path]) -> dict[Path, bytes]:
    """Overwrite each output file (each file of an output folder) with a recognisable text."""
    marked = {}
    for output in outputs:
        for file in files_in(output) if output.is_dir() else [output]:
            marked[file] = f"old {file}".encode()
            file.write_bytes(marked[file])
    return marked


def fail_on_call(monkeypatch, owner: object, name: str, call: int) -> list[int]:
    """Make the `call`-th call of `owner.name` fail as a full disk would; return its call count."""
    real = getattr(owner, name)
    calls = [0]

    def faulty(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == call:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, faulty)
    return calls


@pytest.mark.parametrize("stage", FAULTS)
def test_a_stage_failing_mid_write_leaves_every_output_as_it_was(repo, monkeypatch, capsys, stage):
    monkeypatch.chdir(repo)  # the stages read params.yaml and their paths from the working folder
    outputs = declared_outputs(stage)
    old = mark_as_old(outputs)
    before = files_in(repo)
    main = importlib.import_module(f"stages.{stage}").main
    calls = fail_on_call(monkeypatch, *FAULTS[stage])
    with pytest.raises(SystemExit) as exit_info:
        run(stage, main)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"{stage}: error: No space left on device"
    assert calls[0] == FAULTS[stage][2]  # the failure came mid-write, as intended
    assert {file: file.read_bytes() for file in old} == old
    assert files_in(repo) == before  # and no temporary file is left behind
