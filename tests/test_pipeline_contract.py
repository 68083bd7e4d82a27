"""dvc.yaml declares what each stage's code really reads, and light stages stay light."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from devtools.workspace import BIN, PROJECT, command_env

PIPELINE = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
STAGES = list(PIPELINE["stages"])
LIGHT_STAGES = ["download", "preprocess", "plots"]
# Commands that import no TensorFlow; predict imports it only once it has an image to predict.
LIGHT_COMMANDS = ["gate", "lock_check", "predict"]


def imported_modules(source: str, module: str) -> set[str]:
    """The `stages.*` modules that `source` (the code of `module`) imports, in any form:
    `import stages.x`, `from stages.x import y`, `from stages import x`, and relative imports."""
    package = module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: one dot is this module's own package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("stages.") and module_file(name).is_file()}


def module_file(module: str) -> Path:
    return PROJECT / (module.replace(".", "/") + ".py")


def project_imports(module: str) -> set[str]:
    """Files of the `stages` package that running `module` executes: the module, what it
    imports directly or through others, and the package's `__init__.py` if there is one."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        path = module_file(name).relative_to(PROJECT).as_posix()
        if path in seen:
            continue
        seen.add(path)
        pending += imported_modules(module_file(name).read_text(), name)
    if (PROJECT / "stages/__init__.py").is_file():
        seen.add("stages/__init__.py")
    return seen


@pytest.mark.parametrize(
    "source",
    [
        "import stages.common",
        "from stages.common import run",
        "from stages import common",
        "from . import common",
        "from .common import run",
        "from .. import stages",  # not a module of the package: ignored
    ],
)
def test_every_import_form_is_seen(source):
    expected = set() if ".." in source else {"stages.common"}
    assert imported_modules(source, "stages.download") == expected


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


def calls_and_strings(stage: str) -> tuple[list[ast.Call], set[str]]:
    tree = ast.parse((PROJECT / "stages" / f"{stage}.py").read_text())
    nodes = list(ast.walk(tree))
    calls = [node for node in nodes if isinstance(node, ast.Call)]
    strings = {node.value for node in nodes if isinstance(node, ast.Constant)}
    return calls, {value for value in strings if isinstance(value, str)}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_reads_the_params_of_its_own_name(stage):
    """`load_params` gives each stage the sections declared under its own name."""
    calls, _ = calls_and_strings(stage)
    names = [
        [arg.value for arg in call.args if isinstance(arg, ast.Constant)]
        for call in calls
        if getattr(call.func, "id", getattr(call.func, "attr", None)) == "load_params"
    ]
    assert names == [[stage]]


def test_test_split_is_read_only_by_evaluate():
    readers = [
        stage
        for stage, spec in PIPELINE["stages"].items()
        if "data/processed/test" in spec.get("deps", [])
    ]
    assert readers == ["evaluate"]
    for stage in STAGES:
        if stage not in ("evaluate", "preprocess"):
            assert "test" not in calls_and_strings(stage)[1], stage


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


@pytest.mark.parametrize("stage", LIGHT_STAGES + LIGHT_COMMANDS)
def test_light_stages_do_not_import_tensorflow(stage):
    probe = (
        "import importlib, json, sys\n"
        f"importlib.import_module('stages.{stage}')\n"
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
