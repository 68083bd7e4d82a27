"""The metrics gate: its checks, and `python -m stages.gate` in a git repo with history."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import commit, git, run_command

from devtools.workspace import BIN, copy_project, edit_params
from stages.gate import run_checks
from stages.params import GateParams

LIMITS = GateParams(
    min_test_accuracy=0.99,
    max_test_accuracy_drop=0.002,
    max_test_loss=0.03,
    max_test_loss_rise=0.005,
)
BASE = {"test_accuracy": 0.9960, "test_loss": 0.0150}


def failed(checks) -> list[str]:
    return [f"{check.metric} {check.name}" for check in checks if not check.passed]


def test_unchanged_metrics_pass_every_check():
    checks = run_checks(LIMITS, dict(BASE), BASE)
    assert [(c.metric, c.name) for c in checks] == [
        ("test_accuracy", "floor"),
        ("test_accuracy", "max drop 0.002"),
        ("test_loss", "ceiling"),
        ("test_loss", "max rise 0.005"),
    ]
    assert failed(checks) == []


def test_without_a_base_only_the_absolute_limits_are_checked():
    checks = run_checks(LIMITS, dict(BASE), None)
    assert [c.name for c in checks] == ["floor", "ceiling"]
    assert failed(checks) == []


def test_a_drop_larger_than_allowed_fails_naming_the_metric():
    checks = run_checks(LIMITS, {**BASE, "test_accuracy": 0.9935}, BASE)
    assert failed(checks) == ["test_accuracy max drop 0.002"]
    drop = checks[1]
    assert (drop.value, drop.base, drop.limit) == ("0.9935", "0.9960", ">= 0.9940")


def test_a_drop_within_the_allowed_one_passes_even_exactly_at_the_limit():
    assert failed(run_checks(LIMITS, {**BASE, "test_accuracy": 0.9950}, BASE)) == []
    assert failed(run_checks(LIMITS, {**BASE, "test_accuracy": 0.9940}, BASE)) == []
    assert failed(run_checks(LIMITS, {**BASE, "test_loss": 0.0200}, BASE)) == []
    # In floats 0.9905 - 0.0001 > 0.9904 and 0.01 + 0.0045 < 0.0145: still exactly the limit.
    limits = LIMITS.model_copy(
        update={"max_test_accuracy_drop": 0.0001, "max_test_loss_rise": 0.0045}
    )
    base = {"test_accuracy": 0.9905, "test_loss": 0.01}
    assert failed(run_checks(limits, {"test_accuracy": 0.9904, "test_loss": 0.0145}, base)) == []


def test_a_loss_rise_larger_than_allowed_fails():
    assert failed(run_checks(LIMITS, {**BASE, "test_loss": 0.0201}, BASE)) == [
        "test_loss max rise 0.005"
    ]


def test_under_the_floor_or_over_the_ceiling_fails():
    metrics = {"test_accuracy": 0.98, "test_loss": 0.04}
    assert failed(run_checks(LIMITS, metrics, None)) == ["test_accuracy floor", "test_loss ceiling"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "missing"),
        ("0.99", "not a number ('0.99')"),
        (True, "not a number (True)"),
        (math.nan, "not a number (nan)"),
    ],
)
def test_a_missing_or_non_numeric_metric_fails_naming_it(value, shown):
    metrics = {"test_loss": 0.01} if value is None else {"test_accuracy": value, "test_loss": 0.01}
    checks = run_checks(LIMITS, metrics, BASE)
    assert failed(checks) == ["test_accuracy floor", "test_accuracy max drop 0.002"]
    assert checks[0].value == shown


def test_a_metric_missing_at_the_base_fails_its_comparison():
    checks = run_checks(LIMITS, dict(BASE), {"test_loss": 0.015})
    assert failed(checks) == ["test_accuracy max drop 0.002"]
    assert checks[1].base == "missing"


# Through the CLI, in a git repo whose commits hold different metrics.


def gate(repo: Path, *args: str):
    return run_command([str(BIN / "python"), "-m", "stages.gate", *args], repo, check=False)


def commit_metrics(repo: Path, message: str, **metrics: object) -> None:
    write_metrics(repo, **metrics)
    commit(repo, message)


def write_metrics(repo: Path, **metrics: object) -> None:
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/evaluate.json").write_text(json.dumps(metrics))


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """A repo with the project's gate params whose main holds test accuracy 0.9960, loss 0.015."""
    repo = tmp_path / "repo"
    copy_project(repo)
    git(repo, "init", "-q", "-b", "main")
    commit_metrics(repo, "first", **BASE)
    return repo


def test_cli_unchanged_passes(history):
    result = gate(history, "--base", "main")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["metric", "check", "value", "base", "limit", "result"]
    assert lines[2] == "test_accuracy  max drop 0.002  0.9960  0.9960  >= 0.9940  PASS"
    assert lines[-1] == "gate: PASS, all 4 checks against main"
    assert result.stderr == ""


def test_cli_regression_fails_naming_the_metric(history):
    git(history, "checkout", "-qb", "worse")
    commit_metrics(history, "worse", test_accuracy=0.9930, test_loss=0.016)
    result = gate(history, "--base", "main")
    assert result.returncode == 1
    assert "test_accuracy  max drop 0.002  0.9930  0.9960  >= 0.9940  FAIL" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "gate: FAIL, 1 of 4 checks against main: test_accuracy max drop 0.002"
    )


def test_cli_within_the_allowed_drop_passes_against_any_revision(history):
    commit_metrics(history, "slightly worse", test_accuracy=0.9950, test_loss=0.017)
    for base in ("main~1", git(history, "rev-parse", "HEAD~1").stdout.strip()):
        assert gate(history, "--base", base).returncode == 0


def test_cli_under_the_floor_fails_without_a_base(history):
    write_metrics(history, test_accuracy=0.985, test_loss=0.02)
    result = gate(history)
    assert result.returncode == 1
    assert "test_accuracy  floor    0.9850  -     >= 0.9900  FAIL" in result.stdout


def test_cli_missing_metric_fails_naming_it(history):
    write_metrics(history, test_loss=0.015)
    result = gate(history, "--base", "main")
    assert result.returncode == 1
    assert "test_accuracy  floor" in result.stdout and "missing" in result.stdout
    assert "FAIL, 2 of 4 checks against main: test_accuracy floor, test_accuracy max drop" in (
        result.stdout
    )


def test_cli_thresholds_come_from_params(history):
    write_metrics(history, test_accuracy=0.985, test_loss=0.02)
    edit_params(history, "gate", min_test_accuracy=0.98)
    assert gate(history).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base", "nope"], "gate: error: unknown revision 'nope'"),
        (["--base", "main~5"], "gate: error: unknown revision 'main~5'"),
    ],
)
def test_cli_bad_revision_is_a_usage_error_in_one_line(history, args, message):
    result = gate(history, *args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message + "\n")


def test_cli_no_metrics_file_is_a_usage_error(history):
    (history / "metrics/evaluate.json").unlink()
    result = gate(history)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "gate: error: metrics/evaluate.json not found: run `dvc repro` first"
    ]


def test_cli_base_without_metrics_is_a_usage_error(history):
    (history / "README").write_text("no metrics yet")
    git(history, "rm", "-rq", "metrics")
    commit(history, "no metrics")
    write_metrics(history, **BASE)
    result = gate(history, "--base", "HEAD")
    assert result.returncode == 2
    assert result.stderr == "gate: error: metrics/evaluate.json is not committed at 'HEAD'\n"


def test_cli_bad_threshold_is_a_usage_error(history):
    edit_params(history, "gate", max_test_accuracy_drop=-0.1)
    result = gate(history)
    assert result.returncode == 2
    assert result.stderr.startswith("gate: error: params.yaml: gate.max_test_accuracy_drop: ")
    assert len(result.stderr.splitlines()) == 1


def test_cli_markdown_table(history):
    write_metrics(history, test_accuracy=0.9930, test_loss=0.015)
    result = gate(history, "--base", "main", "--md")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "### Metrics gate: FAIL, 1 of 4 checks against main: test_accuracy max drop 0.002"
    )
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| metric | check | value | base (`main`) | limit | result |"
    assert table[1] == "|---|---|---|---|---|---|"
    assert table[3] == "| test_accuracy | max drop 0.002 | 0.9930 | 0.9960 | >= 0.9940 | **FAIL** |"
    assert len(table) == 6
