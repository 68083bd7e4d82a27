"""A throw-away copy of this project, shared by the tests and the benchmarks: make one, edit its
params, run commands in it with this interpreter, and read which stages `dvc repro` ran."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a fresh clone holds that the pipeline needs: no data, no outputs, no tests.
PIPELINE_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore")
PIPELINE_FOLDERS = ("stages", "ci")
STAGE_STARTED = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)


def copy_project(destination: Path, extra_folders: tuple[str, ...] = ()) -> None:
    """The pipeline's own files (and `extra_folders` of the project) into `destination`."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        shutil.copy2(PROJECT / name, destination / name)
    for folder in (*PIPELINE_FOLDERS, *extra_folders):
        shutil.copytree(
            PROJECT / folder, destination / folder, ignore=shutil.ignore_patterns("__pycache__")
        )


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def edit_params(repo: Path, section: str, **values: object) -> dict:
    """Set `values` in one section of `repo`'s params.yaml; return all its params."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section].update(values)
    write_params(repo, params)
    return params


def command_env() -> dict[str, str]:
    """The environment for `dvc`, `git` and stage commands: this interpreter's `python` first on
    PATH (dvc.yaml runs `python -m stages.<name>`), no analytics, a fixed git identity."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    return env


def stages_run(output: str) -> set[str]:
    """Names of the stages whose command `dvc repro` (or `dvc exp run`) output says it ran."""
    return set(STAGE_STARTED.findall(output))
