"""The metrics gate: fail CI when the test metrics fall below a floor or regress against a base.

    python -m stages.gate [--base REV] [--md]

A command, not a pipeline stage. Its thresholds are the `gate` section of `params.yaml`, which no
stage declares, so changing one re-runs nothing. Without `--base` it checks the workspace's
`metrics/evaluate.json` against the absolute limits; with `--base REV` it also compares it with
the same file as committed at REV (a branch, tag or commit: metrics are committed to git).

Exit status: 0 when every check passes, 1 when one fails, 2 for a usage error (an unknown
revision, no metrics file, bad thresholds). A missing or non-numeric metric fails its checks.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
from dataclasses import dataclass
from typing import Any

from stages.common import StageError, run
from stages.params import GateParams, load_params
from stages.paths import EVALUATE_METRICS

# A value exactly at its limit passes, whatever the float rounding of `base - allowed drop`.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Rule:
    """One metric's thresholds: the `gate` params holding its absolute limit and the largest
    move in the bad direction allowed against the base."""

    metric: str
    higher_is_better: bool
    limit_param: str
    change_param: str


RULES = (
    Rule("test_accuracy", True, "min_test_accuracy", "max_test_accuracy_drop"),
    Rule("test_loss", False, "max_test_loss", "max_test_loss_rise"),
)


@dataclass(frozen=True)
class Check:
    metric: str
    name: str
    value: str
    base: str
    limit: str
    passed: bool


def number(metrics: dict[str, Any], metric: str) -> tuple[float | None, str]:
    """The metric as a finite float (or None), and how to show it."""
    if metric not in metrics:
        return None, "missing"
    value = metrics[metric]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"not a number ({value!r})"
    return float(value), f"{value:.4f}"


def within(value: float | None, limit: float | None, higher_is_better: bool) -> bool:
    if value is None or limit is None:
        return False
    return value >= limit - TOLERANCE if higher_is_better else value <= limit + TOLERANCE


def run_checks(
    params: GateParams, current: dict[str, Any], base: dict[str, Any] | None
) -> list[Check]:
    """The absolute check of every rule, and its check against `base` when there is one."""
    checks = []
    for rule in RULES:
        value, shown = number(current, rule.metric)
        sign = ">=" if rule.higher_is_better else "<="
        limit = getattr(params, rule.limit_param)
        checks.append(
            Check(
                rule.metric,
                "floor" if rule.higher_is_better else "ceiling",
                shown,
                "-",
                f"{sign} {limit:.4f}",
                within(value, limit, rule.higher_is_better),
            )
        )
        if base is None:
            continue
        base_value, base_shown = number(base, rule.metric)
        allowed = getattr(params, rule.change_param)
        relative = None
        if base_value is not None:
            relative = base_value - allowed if rule.higher_is_better else base_value + allowed
        checks.append(
            Check(
                rule.metric,
                f"max {'drop' if rule.higher_is_better else 'rise'} {allowed:g}",
                shown,
                base_shown,
                f"{sign} {relative:.4f}" if relative is not None else "-",
                within(value, relative, rule.higher_is_better),
            )
        )
    return checks


def parse_metrics(text: str, where: str) -> dict[str, Any]:
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as error:
        raise StageError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(metrics, dict):
        raise StageError(f"{where} holds {type(metrics).__name__}, not a JSON object")
    return metrics


def workspace_metrics() -> dict[str, Any]:
    try:
        text = EVALUATE_METRICS.read_text()
    except FileNotFoundError:
        raise StageError(f"{EVALUATE_METRICS} not found: run `dvc repro` first") from None
    return parse_metrics(text, str(EVALUATE_METRICS))


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True)


def committed_metrics(revision: str) -> dict[str, Any]:
    """`metrics/evaluate.json` as committed at `revision`, read from git."""
    commit = git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}")
    if commit.returncode != 0:
        inside = git("rev-parse", "--git-dir").returncode == 0
        raise StageError(
            f"unknown revision '{revision}'" if inside else "not inside a git repository"
        )
    shown = git("show", f"{commit.stdout.strip()}:./{EVALUATE_METRICS}")
    if shown.returncode != 0:
        raise StageError(f"{EVALUATE_METRICS} is not committed at '{revision}'")
    return parse_metrics(shown.stdout, f"{EVALUATE_METRICS} at '{revision}'")


COLUMNS = ("metric", "check", "value", "base", "limit", "result")


def rows(checks: list[Check]) -> list[tuple[str, ...]]:
    return [
        (c.metric, c.name, c.value, c.base, c.limit, "PASS" if c.passed else "FAIL") for c in checks
    ]


def plain_report(checks: list[Check]) -> str:
    table = [COLUMNS, *rows(checks)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def markdown_report(checks: list[Check], base: str | None, verdict: str) -> str:
    header = [*COLUMNS]
    header[3] = f"base (`{base}`)" if base else "base"
    lines = [
        f"### Metrics gate: {verdict}",
        "",
        f"Thresholds from the `gate` section of `params.yaml`; metrics from `{EVALUATE_METRICS}`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for *cells, result in rows(checks):
        cells.append(result if result == "PASS" else f"**{result}**")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(checks: list[Check], base: str | None) -> str:
    failed = [f"{c.metric} {c.name}" for c in checks if not c.passed]
    against = f" against {base}" if base else ""
    if failed:
        return f"FAIL, {len(failed)} of {len(checks)} checks{against}: {', '.join(failed)}"
    return f"PASS, all {len(checks)} checks{against}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stages.gate",
        description="Check the test metrics against the thresholds in params.yaml (gate).",
    )
    parser.add_argument("--base", metavar="REV", help="also compare with the metrics at REV")
    parser.add_argument("--md", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    params = load_params("gate").gate
    current = workspace_metrics()
    base = committed_metrics(args.base) if args.base else None
    checks = run_checks(params, current, base)
    summary = verdict(checks, args.base)
    if args.md:
        print(markdown_report(checks, args.base, summary))
    else:
        print(plain_report(checks))
        print(f"gate: {summary}")
    return 0 if all(check.passed for check in checks) else 1


if __name__ == "__main__":
    run("gate", main, error_status=2)
