"""dvc.yaml declares what each stage's code really reads, and light stages stay light."""

from __future__ import annotations

import ast
import json
import subprocess

import pytest
import yaml
from helpers import BIN, PROJECT, command_env

PIPELINE = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
STAGES = list(PIPELINE["stages"])
LIGHT_STAGES = ["download", "preprocess", "plots"]


def project_imports(module: str) -> set[str]:
    """Files of the `stages` package that `module` imports, directly or through others."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        path = f"stages/{name.removeprefix('stages.')}.py"
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse((PROJECT / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
                pending.append(node.module)
            elif isinstance(node, ast.Import):
                pending += [alias.name for alias in node.names if alias.name.startswith("stages.")]
    return seen


def test_stage_names_are_the_contract():
    assert STAGES == ["download", "preprocess", "train", "evaluate", "plots"]


@pytest.mark.parametrize("stage", STAGES)
def test_command_runs_its_own_module(stage):
    assert PIPELINE["stages"][stage]["cmd"] == f"python -m stages.{stage}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_module_a_stage_imports_is_a_dependency(stage):
    """Editing any code a stage runs must make DVC run that stage again."""
    code_deps = {dep for dep in PIPELINE["stages"][stage]["deps"] if dep.startswith("stages/")}
    assert code_deps == project_imports(f"stages.{stage}")


@pytest.mark.parametrize("stage", STAGES)
def test_stage_reads_the_params_of_its_own_name(stage):
    """`load_params` gives each stage the sections declared under its own name."""
    source = (PROJECT / "stages" / f"{stage}.py").read_text()
    assert f'load_params("{stage}")' in source


def test_test_split_is_read_only_by_evaluate():
    readers = [
        stage
        for stage, spec in PIPELINE["stages"].items()
        if "data/processed/test" in spec.get("deps", [])
    ]
    assert readers == ["evaluate"]
    for stage in STAGES:
        if stage not in ("evaluate", "preprocess"):
            assert '"test"' not in (PROJECT / "stages" / f"{stage}.py").read_text()


def test_metrics_are_in_git_and_everything_else_keeps_the_run_cache():
    """cache: false only on metrics and plots entries, which leave DVC's run-cache on."""
    for stage, spec in PIPELINE["stages"].items():
        for out in spec.get("outs", []):
            assert isinstance(out, str) or out[next(iter(out))].get("cache", True), stage
    metric_files = [
        next(iter(entry))
        for spec in PIPELINE["stages"].values()
        for entry in spec.get("metrics", [])
    ]
    assert metric_files == ["metrics/train.json", "metrics/evaluate.json"]
    assert PIPELINE["metrics"] == metric_files


@pytest.mark.parametrize("stage", LIGHT_STAGES)
def test_light_stages_do_not_import_tensorflow(stage):
    probe = (
        "import json, runpy, sys\n"
        f"runpy.run_module('stages.{stage}', run_name='not_main')\n"
        "print(json.dumps([m for m in ('tensorflow', 'keras') if m in sys.modules]))"
    )
    result = subprocess.run(
        [str(BIN / "python"), "-c", probe],
        cwd=PROJECT,
        env=command_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == []
