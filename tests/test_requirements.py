"""The dependency locks: generated from the .in files, complete, hashed, and what is installed."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from devtools.workspace import PROJECT

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def pins(path: Path) -> dict[str, tuple[str, str | None]]:
    """name → (version, environment marker or None) of every `name==version` line."""
    found = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name, pinned, marker = match.groups()
            found[canonicalize_name(name)] = (pinned, marker)
    return found


def locked_requirements(path: Path) -> list[str]:
    """Each requirement of a lock as one line: its pin and the hashes that follow it."""
    text = path.read_text().replace("\\\n", " ")
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("lock", ["requirements.txt", "requirements-dev.txt"])
def test_every_locked_package_has_hashes(lock):
    requirements = locked_requirements(PROJECT / lock)
    assert len(requirements) > 100  # every dependency, not only the ones we import
    assert [line for line in requirements if "--hash=sha256:" not in line] == []


@pytest.mark.parametrize(
    ("source", "lock"),
    [("requirements.in", "requirements.txt"), ("requirements-dev.in", "requirements-dev.txt")],
)
def test_the_lock_keeps_every_pin_of_its_source(source, lock):
    wanted = {name: pinned for name, (pinned, _) in pins(PROJECT / source).items()}
    locked = {name: pinned for name, (pinned, _) in pins(PROJECT / lock).items()}
    assert wanted and {name: locked.get(name) for name in wanted} == wanted


def test_the_dev_lock_has_the_pipeline_at_the_same_versions():
    pipeline, dev = pins(PROJECT / "requirements.txt"), pins(PROJECT / "requirements-dev.txt")
    assert {name: dev.get(name) for name in pipeline} == pipeline


def test_the_installed_packages_are_the_locked_ones():
    """What runs the tests was installed from requirements-dev.txt, nothing newer or older."""
    wrong = {}
    for name, (pinned, marker) in pins(PROJECT / "requirements-dev.txt").items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert wrong == {}
