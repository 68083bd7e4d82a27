"""Is `dvc.lock` up to date with the params, code and committed results? CI's consistency check.

    python -m stages.lock_check

A command, not a pipeline stage. It needs no data: a fresh clone has none of the DVC-cached
outputs, so data and outputs that are missing from the workspace or the cache are fine. Anything
else `dvc status` reports (a changed param, code file or stage command, a committed metrics file
edited by hand) means the committed `dvc.lock`, and so the committed metrics, were not produced
from the committed params and code: a pull request that edits `params.yaml` without re-running
`dvc repro` fails here.

Exit status: 0 when up to date (or when there is no `dvc.lock` to check), 1 when a stage is out
of date, 2 when `dvc status` itself fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.common import StageError, run

LOCK_FILE = Path("dvc.lock")
# What `dvc status` says of a file that is merely absent: a clone without data or cache.
ABSENT = {"deleted", "not in cache"}
KINDS = {"changed deps": "dependency", "changed outs": "output"}


def stale_reasons(status: dict[str, list[Any]]) -> Iterator[str]:
    """`stage: what changed` for every change in `dvc status --json` but absent files."""
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):  # "changed command", "always changed"
                yield f"{stage}: {change}"
                continue
            for kind, files in change.items():
                for path, state in files.items():
                    if isinstance(state, dict):  # a params file: {section: "modified"}
                        for key, key_state in state.items():
                            yield f"{stage}: {path} {key} {key_state}"
                    elif state not in ABSENT:
                        yield f"{stage}: {KINDS.get(kind, kind)} {path} {state}"


def dvc_status() -> dict[str, list[Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise StageError(f"dvc status failed: {result.stderr.strip() or result.stdout.strip()}")
    return json.loads(result.stdout or "{}")


def main() -> int:
    if not LOCK_FILE.is_file():
        print(f"lock_check: no {LOCK_FILE} here, nothing to check")
        return 0
    reasons = list(stale_reasons(dvc_status()))
    if not reasons:
        print(f"lock_check: {LOCK_FILE} matches the params, code and committed results")
        return 0
    for reason in reasons:
        print(f"lock_check: {reason}")
    print(
        f"lock_check: FAIL, {LOCK_FILE} is out of date: run `dvc repro` and commit {LOCK_FILE} "
        "with the results"
    )
    return 1


if __name__ == "__main__":
    run("lock_check", main, error_status=2)
