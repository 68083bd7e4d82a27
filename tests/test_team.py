"""Working as a team: two machines, simulated as two clones sharing a bare git repository as
`origin` and a local-folder DVC remote (which DVC treats as it does S3, GCS or SSH), exchange
results, the run-cache and experiments through the real `git` and `dvc` CLIs; a sweep runs in
DVC's experiment queue."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest
from helpers import commit, dvc, git, read_json

from devtools.workspace import edit_params, stages_run

UP_TO_DATE = "Data and pipelines are up to date."
QUEUE_TIMEOUT = 300  # seconds for two tiny queued experiments on two cores
QUEUE_STATES = {"Queued", "Running", "Success", "Failed"}


def clone(origin: Path, destination: Path) -> Path:
    """A second machine: `git clone` of the shared repository (DVC's config comes with it)."""
    git(destination.parent, "clone", "-q", str(origin), destination.name)
    return destination


@pytest.fixture
def team(repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Machine A (a repo after its first run, `dvc.lock` committed) with a DVC remote and a git
    `origin`, both pushed to; and the bare `origin` that machine B clones."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    dvc(repo, "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote"))
    commit(repo, "Share the DVC cache")
    git(repo, "remote", "add", "origin", str(origin))
    dvc(repo, "push")
    git(repo, "push", "-q", "origin", "main")
    return repo, origin


def test_a_clone_pulls_the_results_and_reproduces_nothing(team, tmp_path):
    a, origin = team
    b = clone(origin, tmp_path / "b")
    assert not (b / "models/model.keras").exists()
    dvc(b, "pull")
    assert dvc(b, "status").stdout.strip() == UP_TO_DATE
    assert stages_run(dvc(b, "repro").stdout) == set()
    for name in ("model.keras", "summary.txt"):
        assert (b / "models" / name).read_bytes() == (a / "models" / name).read_bytes()
    assert read_json(b / "metrics/evaluate.json") == read_json(a / "metrics/evaluate.json")


def test_the_run_cache_travels(team, tmp_path):
    """A runs preprocess with another validation size but commits nothing; B sets that size,
    and `dvc repro` restores A's splits from the pushed run-cache instead of running."""
    a, origin = team
    edit_params(a, "preprocess", validation_size=150)
    assert stages_run(dvc(a, "repro", "preprocess").stdout) == {"preprocess"}
    dvc(a, "push", "--run-cache")
    b = clone(origin, tmp_path / "b")
    edit_params(b, "preprocess", validation_size=150)
    dvc(b, "pull", "--run-cache")
    result = dvc(b, "repro", "--pull", "preprocess")
    assert stages_run(result.stdout) == set()
    assert "Stage 'preprocess' is cached - skipping run, checking out outputs" in result.stdout
    for split in ("train", "val"):
        for name in ("x.npy", "y.npy"):
            path = Path("data/processed", split, name)
            assert (b / path).read_bytes() == (a / path).read_bytes()


def test_the_run_cache_does_not_carry_results_kept_in_git(team, tmp_path):
    """What the README says: DVC's run-cache entry of train names metrics/train.json and
    plots/history.csv, which git keeps (cache: false), and `dvc push --run-cache` does not
    upload them; so B trains again. Experiments (below) are how a trained model travels."""
    a, origin = team
    edit_params(a, "train", seed=7)
    dvc(a, "repro")
    dvc(a, "push", "--run-cache")
    b = clone(origin, tmp_path / "b")
    edit_params(b, "train", seed=7)
    dvc(b, "pull", "--run-cache")
    assert "train" in stages_run(dvc(b, "repro", "--pull").stdout)


def exp_table(repo: Path, sort_by: str) -> list[dict[str, str]]:
    """`dvc exp show` as rows (the baseline first, then its experiments), sorted by `sort_by`."""
    shown = dvc(repo, "exp", "show", "--csv", "--sort-by", sort_by, "--sort-order", "desc")
    return list(csv.DictReader(io.StringIO(shown.stdout)))


def test_experiments_travel_and_the_best_is_applied_without_training(team, tmp_path):
    a, origin = team
    for seed in (5, 6):
        dvc(a, "exp", "run", "-n", f"seed-{seed}", "-S", f"train.seed={seed}")
    dvc(a, "exp", "push", "origin")
    b = clone(origin, tmp_path / "b")
    dvc(b, "exp", "pull", "origin")
    rows = exp_table(b, "metrics/train.json:val_accuracy")
    experiments = [row for row in rows if row["Experiment"]]
    assert {row["Experiment"] for row in experiments} == {"seed-5", "seed-6"}
    best = experiments[0]  # the highest validation accuracy: model selection never uses test
    dvc(b, "exp", "apply", best["Experiment"])
    dvc(b, "pull")
    assert stages_run(dvc(b, "repro").stdout) == set()  # its model came from the remote
    assert str(read_json(b / "metrics/train.json")["val_accuracy"]) == best["val_accuracy"]
    assert f"seed: {best['train.seed']}" in (b / "params.yaml").read_text()


def queue_status(repo: Path) -> dict[str, str]:
    """Each queued experiment's name and status (Queued, Running, Success, Failed), from the
    table `dvc queue status` prints (task, name, created, status)."""
    lines = dvc(repo, "queue", "status").stdout.splitlines()
    rows = [line.split() for line in lines[1:] if line.strip()]
    return {row[1]: row[-1] for row in rows if row[-1] in QUEUE_STATES}


def wait_for_queue(repo: Path, names: list[str], timeout: float) -> None:
    """Wait until each named queued experiment has succeeded; fail with the logs of one that
    failed, or when `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        states = queue_status(repo)
        failed = [name for name in names if states.get(name) == "Failed"]
        if failed:
            logs = dvc(repo, "queue", "logs", failed[0], check=False)
            pytest.fail(f"queued experiment {failed[0]} failed:\n{logs.stdout}{logs.stderr}")
        if all(states.get(name) == "Success" for name in names):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"queued experiments still {states} after {timeout} s")
        time.sleep(2)


def test_a_sweep_runs_in_the_queue_two_at_a_time(team):
    a, _ = team
    dvc(a, "exp", "run", "--queue", "-S", "train.learning_rate=0.005,0.02")
    queued = queue_status(a)
    names = list(queued)
    assert len(names) == 2 and set(queued.values()) == {"Queued"}
    try:
        dvc(a, "queue", "start", "-j", "2")
        wait_for_queue(a, names, QUEUE_TIMEOUT)
    finally:
        dvc(a, "queue", "stop", "--kill", check=False)
    rows = exp_table(a, "metrics/train.json:val_accuracy")
    swept = {row["train.learning_rate"]: row for row in rows if row["Experiment"] in names}
    assert set(swept) == {"0.005", "0.02"}
    for row in swept.values():
        assert float(row["val_accuracy"]) > 0.5 and float(row["test_accuracy"]) > 0.5


def cache_files(repo: Path) -> set[str]:
    return {path.name for path in (repo / ".dvc/cache/files/md5").rglob("*") if path.is_file()}


def test_gc_keeps_what_the_workspace_uses_and_drops_the_rest(team):
    a, _ = team
    before = cache_files(a)
    edit_params(a, "train", seed=7)
    dvc(a, "repro")
    added = cache_files(a) - before  # the seed-7 model and summary, among others
    assert added
    git(a, "checkout", "params.yaml", "dvc.lock", "metrics", "plots")
    dvc(a, "checkout")
    dvc(a, "gc", "--workspace", "--force")
    assert not cache_files(a) & added
    (a / "models/model.keras").unlink()
    dvc(a, "checkout")  # what the workspace uses is still in the cache
    assert dvc(a, "status").stdout.strip() == UP_TO_DATE
