"""CI pipeline checks: the commands the workflows call (ci/*, stages.lock_check), run for real on
the tiny pipeline, and the workflow files themselves (schemas, and nothing but those commands)."""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from helpers import commit, dvc, git, read_json, run_command

from devtools.workspace import BIN, PROJECT, edit_params, stages_run

GITHUB_WORKFLOW = PROJECT / ".github/workflows/pipeline.yml"
GITLAB_CI = PROJECT / ".gitlab-ci.yml"
# Thresholds the tiny test pipeline can meet: it learns, but far from 99 %.
TINY_GATE = {
    "min_test_accuracy": 0.3,
    "max_test_accuracy_drop": 0.05,
    "max_test_loss": 2.5,
    "max_test_loss_rise": 0.2,
}


def ci(repo: Path, script: str, *args: str, timeout: float = 300):
    """Run one of the ci/ scripts, as the workflows do."""
    return run_command(["bash", script, *args], repo, check=False, timeout=timeout)


def lock_check(repo: Path):
    return run_command([str(BIN / "python"), "-m", "stages.lock_check"], repo, check=False)


@pytest.fixture
def gated(repo: Path) -> Path:
    """The built tiny repo with gate thresholds it can meet, committed on main."""
    edit_params(repo, "gate", **TINY_GATE)
    commit(repo, "gate thresholds for the tiny data")
    return repo


def test_changing_a_gate_threshold_reruns_nothing(repo):
    edit_params(repo, "gate", min_test_accuracy=0.5)
    assert stages_run(dvc(repo, "repro").stdout) == set()


# The scenario a reviewer sees: a branch changes a param, re-runs, commits; the report against
# main shows the change, and the gate passes or fails on it.


def test_report_on_a_branch_shows_params_metrics_and_gate(gated):
    git(gated, "checkout", "-qb", "more-epochs")
    edit_params(gated, "train", epochs=3)
    assert stages_run(dvc(gated, "repro").stdout) == {"train", "evaluate", "plots"}
    commit(gated, "3 epochs")
    main = json.loads(git(gated, "show", "main:metrics/evaluate.json").stdout)
    now = read_json(gated / "metrics/evaluate.json")
    assert now["test_accuracy"] > main["test_accuracy"]

    result = ci(gated, "ci/report", "main")
    assert result.returncode == 0, result.stdout + result.stderr
    report = result.stdout
    assert report.startswith("## Pipeline report against `main`\n")
    params_table = report.split("### Params changed")[1].split("###")[0]
    assert re.search(r"\| params\.yaml \| train\.epochs \| 1 +\| 3 +\|", params_table)
    metrics_table = report.split("### Metrics changed")[1].split("###")[0]
    accuracy = f"{main['test_accuracy']:.5g}".rstrip("0")
    assert re.search(rf"\| test_accuracy +\| {re.escape(accuracy)}", metrics_table)
    assert "### Metrics gate: PASS, all 4 checks against main" in report


def test_report_fails_on_a_regression_after_printing_everything(gated):
    git(gated, "checkout", "-qb", "more-epochs")
    edit_params(gated, "train", epochs=3)
    dvc(gated, "repro")
    commit(gated, "3 epochs")
    git(gated, "checkout", "-qb", "fewer-epochs")
    edit_params(gated, "train", epochs=1)
    # The run-cache restores the 1-epoch results of main: nothing trains again.
    assert stages_run(dvc(gated, "repro").stdout) == set()
    commit(gated, "back to 1 epoch")

    result = ci(gated, "ci/report", "more-epochs")
    assert result.returncode == 1
    assert "| params.yaml | train.epochs |" in result.stdout
    assert "### Metrics gate: FAIL" in result.stdout
    assert re.search(r"\| test_accuracy \| max drop 0\.05 \|.*\| \*\*FAIL\*\* \|", result.stdout)


def test_report_on_a_push_that_created_its_branch_compares_with_the_previous_commit(gated):
    result = ci(gated, "ci/report", "0" * 40)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("## Pipeline report against `HEAD~1`\n")
    assert "### Params changed\n\n| Path" in result.stdout  # the gate thresholds changed


def test_report_without_changes_says_so(gated):
    result = ci(gated, "ci/report", "HEAD")
    assert result.returncode == 0, result.stderr
    assert "### Params changed\n\nNone.\n\n### Metrics changed\n\nNone.\n" in result.stdout


def test_report_with_a_bad_base_is_one_line_and_exit_2(gated):
    result = ci(gated, "ci/report", "no-such-branch")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "gate: error: unknown revision 'no-such-branch'\n"


# The consistency job: dvc.lock against the committed params, code and results, with no data.


@pytest.fixture
def fresh_clone(built, tmp_path: Path) -> Path:
    """A clone of the built repo, as CI checks it out: no data, no DVC cache."""
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(built[0]), str(clone))
    assert not (clone / "data/raw/mnist.npz").exists()
    return clone


def test_lock_check_passes_on_a_fresh_clone_without_data(fresh_clone):
    result = lock_check(fresh_clone)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "lock_check: dvc.lock matches the params, code and committed results\n"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda repo: edit_params(repo, "train", epochs=2), "train: params.yaml train modified"),
        (
            lambda repo: (repo / "stages/plots.py").write_text("# edited\n"),
            "plots: dependency stages/plots.py modified",
        ),
        (
            lambda repo: (repo / "metrics/evaluate.json").write_text('{"test_accuracy": 1.0}'),
            "evaluate: output metrics/evaluate.json modified",
        ),
    ],
    ids=["param", "code", "metrics edited by hand"],
)
def test_lock_check_fails_when_the_commit_was_not_reproduced(fresh_clone, change, reason):
    change(fresh_clone)
    result = lock_check(fresh_clone)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"lock_check: {reason}" in lines
    assert lines[-1].startswith("lock_check: FAIL, dvc.lock is out of date: run `dvc repro`")


def test_lock_check_has_nothing_to_check_without_a_lock(fresh_clone):
    (fresh_clone / "dvc.lock").unlink()
    result = lock_check(fresh_clone)
    assert (result.returncode, result.stdout) == (
        0,
        "lock_check: no dvc.lock here, nothing to check\n",
    )


# The pipeline job.


def test_smoke_run_trains_one_epoch_and_gates_it(gated):
    # Params never run before, so that the run-cache cannot stand in for training; and a
    # learning rate at which one epoch of the tiny data learns something, far from enough for the
    # smoke run's floor and ceiling (a default rate can reach them or not by the batch order).
    edit_params(gated, "train", epochs=3, warmup_epochs=1, batch_size=32, learning_rate=0.0012)
    commit(gated, "a longer default")
    result = ci(gated, "ci/pipeline", "smoke")
    assert result.returncode == 1
    assert stages_run(result.stdout) == {"train", "evaluate", "plots"}
    assert read_json(gated / "metrics/train.json")["epochs_run"] == 1
    assert re.search(r"test_accuracy +floor +[0-9.]+ +- +>= 0\.9500 ", result.stdout)
    assert re.search(r"test_loss +ceiling +[0-9.]+ +- +<= 0\.2000 +FAIL", result.stdout)

    overrides = [word for key, value in TINY_GATE.items() for word in ("-S", f"gate.{key}={value}")]
    lower = ci(gated, "ci/pipeline", "smoke", *overrides)
    assert lower.returncode == 0, lower.stdout + lower.stderr
    assert stages_run(lower.stdout) == set()  # a gate threshold re-runs nothing
    assert "gate: PASS, all 2 checks" in lower.stdout


def test_full_run_reproduces_and_gates(gated):
    edit_params(gated, "train", epochs=2)
    result = ci(gated, "ci/pipeline", "full")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stages_run(result.stdout) == {"train", "evaluate", "plots"}
    assert "gate: PASS, all 2 checks" in result.stdout


def test_full_run_pulls_from_the_remote_instead_of_running(gated, tmp_path):
    dvc(gated, "remote", "add", "-d", "store", str(tmp_path / "store"))
    commit(gated, "a DVC remote")
    dvc(gated, "push")
    runner = tmp_path / "runner"
    git(tmp_path, "clone", "-q", str(gated), str(runner))
    # A clean CI checkout of an up-to-date commit: nothing to run, nothing to download.
    result = ci(runner, "ci/pipeline", "full")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stages_run(result.stdout) == set()
    assert not (runner / "models/model.keras").exists()
    assert "gate: PASS" in result.stdout
    # A pull request that changes only the plots: their inputs come from the remote.
    edit_params(runner, "plots", dpi=40)
    result = ci(runner, "ci/pipeline", "full")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stages_run(result.stdout) == {"plots"}
    assert (runner / "data/evaluated/confident_mistakes.npz").is_file()
    assert not (runner / "models/model.keras").exists()


def test_pipeline_without_a_mode_is_a_usage_error(gated):
    result = ci(gated, "ci/pipeline")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: ci/pipeline smoke")


# The workflow files: valid, and thin.


@pytest.mark.parametrize(
    ("schema", "path"),
    [("vendor.github-workflows", GITHUB_WORKFLOW), ("vendor.gitlab-ci", GITLAB_CI)],
)
def test_ci_files_validate_against_their_published_schemas(schema, path):
    result = run_command(
        [str(BIN / "check-jsonschema"), "--builtin-schema", schema, str(path)], PROJECT, False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def github_commands() -> dict[str, list[str]]:
    workflow = yaml.safe_load(GITHUB_WORKFLOW.read_text())
    return {
        name: [step["run"] for step in job["steps"] if "run" in step]
        for name, job in workflow["jobs"].items()
    }


def gitlab_commands() -> dict[str, list[str]]:
    config = yaml.safe_load(GITLAB_CI.read_text())
    commands = {}
    for name, job in config.items():
        if isinstance(job, dict) and "script" in job:
            scripts = [job.get("before_script", config["default"]["before_script"])]
            scripts += [job["script"], job.get("after_script", [])]
            commands[name] = [line for script in scripts for line in script]
    return commands


def strings_in_tests() -> set[str]:
    """Every string constant in the test files: the commands the tests run."""
    strings = set()
    for path in (PROJECT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    return strings


def check_command(line: str) -> None:
    """A CI step calls only this repository's commands (each exercised by a test), its linters
    and tests, or an install from its own pinned requirements."""
    words = shlex.split(line)
    program = words[0]
    if program.startswith("ci/"):
        assert (PROJECT / program).is_file(), line
        assert program in strings_in_tests(), f"no test runs {program}"
    elif program == "python":
        assert words[1] == "-m", line
        module = words[2]
        if module != "pytest":
            assert (PROJECT / (module.replace(".", "/") + ".py")).is_file(), line
            assert module in strings_in_tests(), f"no test runs {module}"
    elif program == "pip":
        assert words[1:3] == ["install", "-r"] and (PROJECT / words[3]).is_file(), line
    else:
        assert line in {"ruff check .", "ruff format --check .", "cat report.md"}, line


@pytest.mark.parametrize("system", ["github", "gitlab"])
def test_every_ci_step_calls_a_tested_command_of_this_repository(system):
    commands = github_commands() if system == "github" else gitlab_commands()
    assert commands
    for lines in commands.values():
        for line in lines:
            check_command(line)


def command_name(line: str) -> str:
    """`ci/report "$BASE" >> "$GITHUB_STEP_SUMMARY"` → `ci/report`, `python -m pytest` → itself."""
    words = shlex.split(line)
    return " ".join(words[: {"python": 3, "pip": 4, "ruff": 2}.get(words[0], 1)])


def test_github_and_gitlab_run_the_same_checks():
    def called(commands: dict[str, list[str]]) -> set[str]:
        return {command_name(line) for lines in commands.values() for line in lines}

    assert called(github_commands()) == called(gitlab_commands()) - {"cat"}


def test_local_command_runs_what_ci_runs_but_the_pipeline():
    local = [
        line
        for line in (PROJECT / "ci/local").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd ", "export "))
    ]
    expected = [
        line
        for lines in github_commands().values()
        for line in lines
        if not line.startswith(("pip ", "ci/pipeline", "ci/report"))
    ]
    assert local[:-1] == expected
    assert local[-1] == 'ci/report "${1:-main}"'


def test_dot_ci_run_calls_the_readme_test_command():
    readme = (PROJECT / "README.md").read_text()
    block = readme.split("Run the tests")[1].split("```bash\n")[1].split("```")[0]
    test_command = block.strip().splitlines()[-1]
    assert test_command == "python -m pytest"
    assert test_command in (PROJECT / ".ci/run").read_text().splitlines()
