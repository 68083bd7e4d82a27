"""End to end through the real `dvc` CLI: a throw-away git repo, data from a local HTTP server,
and tiny params. Asserts which stages each `dvc repro` ran."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time

import numpy as np
import pytest
import yaml
from helpers import commit, dvc, files_in, git, read_json, run_command, sha256_of

from devtools.workspace import BIN, PROJECT, command_env, edit_params, stages_run

ALL_STAGES = {"download", "preprocess", "train", "evaluate", "plots"}
PICTURES = (
    "sample_digits",
    "label_distribution",
    "accuracy",
    "loss",
    "validation_error",
    "confusion_matrix",
    "confident_mistakes",
)


def failure(result) -> str:
    return result.stdout + result.stderr


def test_first_repro_runs_every_stage_and_writes_every_output(built):
    repo, output = built
    assert stages_run(output) == ALL_STAGES
    assert (repo / "data/raw/mnist.npz").is_file()
    for split in ("train", "val", "test"):
        assert (repo / f"data/processed/{split}/x.npy").is_file()
        assert (repo / f"data/processed/{split}/y.npy").is_file()
    assert (repo / "models/model.keras").is_file()
    train = read_json(repo / "metrics/train.json")
    assert set(train) == {
        "train_accuracy",
        "train_loss",
        "val_accuracy",
        "val_loss",
        "best_epoch",
        "epochs_run",
        "training_seconds",
        "precision",
        "device",
    }
    assert train["epochs_run"] == 1
    assert train["precision"] in {"float32", "mixed_bfloat16"}
    assert train["device"].startswith(("cpu: ", "gpu: "))
    evaluate = read_json(repo / "metrics/evaluate.json")
    # The tiny data is learnable: one epoch gets far above the 10 % of chance.
    assert isinstance(evaluate["test_accuracy"], float) and evaluate["test_accuracy"] > 0.6
    assert isinstance(evaluate["test_loss"], float) and evaluate["test_loss"] > 0
    assert set(evaluate["per_class_accuracy"]) <= {str(digit) for digit in range(10)}
    history = (repo / "plots/history.csv").read_text().splitlines()
    assert history[0] == "member,epoch,accuracy,loss,val_accuracy,val_loss" and len(history) == 2
    predictions = (repo / "plots/test_predictions.csv").read_text().splitlines()
    assert predictions[0] == "actual,predicted,probability" and len(predictions) == 201
    summary = (repo / "models/summary.txt").read_text()
    assert "conv2d (Conv2D)" in summary and "(None, 26, 26, 4)" in summary
    assert "Trainable params: 11,042" in summary
    mistakes = np.load(repo / "data/evaluated/confident_mistakes.npz")
    assert mistakes["images"].shape[1:] == (28, 28) and 0 < len(mistakes["images"]) <= 24
    assert (mistakes["actual"] != mistakes["predicted"]).all()
    assert list(mistakes["probability"]) == sorted(mistakes["probability"], reverse=True)
    for png in PICTURES:
        assert (repo / f"plots/{png}.png").stat().st_size > 0
    # No temporary file of an atomic write survives a successful run.
    assert not [path for path in files_in(repo) if ".tmp" in path.name]


def test_metrics_and_plots_render(repo):
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    (workspace,) = shown.values()
    metrics = workspace["data"]
    assert "test_accuracy" in metrics["metrics/evaluate.json"]["data"]
    assert "val_accuracy" in metrics["metrics/train.json"]["data"]
    dvc(repo, "plots", "show")
    page = (repo / "dvc_plots/index.html").read_text()
    for plot in ("Accuracy", "Loss", "plots_test_predictions_csv", "plots_confusion_matrix_png"):
        assert plot in page
    # The page DVC writes by default is ignored, not left for `git add -A` to commit.
    assert git(repo, "status", "--porcelain").stdout == ""


def test_plots_of_two_commits_render_on_a_fresh_clone_without_the_cache(repo, tmp_path):
    """Everything behind every declared plot is in git: `dvc plots diff` needs no DVC cache."""
    edit_params(repo, "train", epochs=2)
    dvc(repo, "repro")
    commit(repo, "2 epochs")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert not (clone / ".dvc/cache").exists()
    rendered = json.loads(dvc(clone, "plots", "diff", "HEAD~1", "--json").stdout)
    assert rendered.get("errors") is None
    expected = ["Accuracy", "Loss", "plots/history.csv", "plots/test_predictions.csv"]
    expected += [f"plots/{png}.png" for png in PICTURES]
    assert sorted(rendered["data"]) == sorted(expected)
    for name in ("Accuracy", "plots/history.csv"):
        (plot,) = rendered["data"][name]
        assert {row["rev"] for row in plot["content"]["data"]["values"]} == {"HEAD~1", "workspace"}
    for png in PICTURES:
        images = rendered["data"][f"plots/{png}.png"]
        assert sorted(image["revisions"][0] for image in images) == ["HEAD~1", "workspace"]
        assert all(image["url"] for image in images)


README_COMMIT = (
    "git add dvc.lock data/*/.gitignore models/.gitignore metrics plots"
    ' && git commit -m "First run"'
)


def test_the_readme_says_what_to_commit_after_the_first_run(repo):
    assert f"```bash\n{README_COMMIT}\n```" in (PROJECT / "README.md").read_text()
    # Untrack what the first run made, as it was before its commit; then the README's line.
    made = ["dvc.lock", "metrics", "plots", "models/.gitignore"]
    made += [str(path.relative_to(repo)) for path in repo.glob("data/*/.gitignore")]
    git(repo, "rm", "-rq", "--cached", *made)
    git(repo, "commit", "-qm", "before the first run")
    assert git(repo, "status", "--porcelain", "-uall").stdout != ""
    run_command(["bash", "-c", README_COMMIT], repo)
    assert git(repo, "status", "--porcelain", "-uall").stdout == ""


def test_second_repro_runs_nothing(repo):
    output = dvc(repo, "repro").stdout
    assert stages_run(output) == set()
    assert "Data and pipelines are up to date." in output


def test_plots_param_change_runs_only_plots(repo):
    edit_params(repo, "plots", dpi=40)
    assert stages_run(dvc(repo, "repro").stdout) == {"plots"}


def test_preprocess_param_change_does_not_download_again(repo):
    edit_params(repo, "preprocess", seed=7)
    assert stages_run(dvc(repo, "repro").stdout) == ALL_STAGES - {"download"}


def test_epochs_change_retrains_and_metrics_diff_shows_it(repo):
    edit_params(repo, "train", epochs=2)
    assert stages_run(dvc(repo, "repro").stdout) == {"train", "evaluate", "plots"}
    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    assert diff["metrics/train.json"]["epochs_run"] == {"old": 1, "new": 2, "diff": 1}
    params_diff = json.loads(dvc(repo, "params", "diff", "--json").stdout)
    epochs = params_diff["params.yaml"]["train.epochs"]
    assert (epochs["old"], epochs["new"]) == (1, 2)


def test_experiment_run_and_show(repo):
    output = dvc(repo, "exp", "run", "-n", "two-epochs", "-S", "train.epochs=2").stdout
    assert stages_run(output) == {"train", "evaluate", "plots"}
    table = csv.DictReader(io.StringIO(dvc(repo, "exp", "show", "--csv").stdout))
    experiment = next(row for row in table if row["Experiment"] == "two-epochs")
    assert experiment["train.epochs"] == "2"
    assert float(experiment["test_accuracy"]) > 0.6


def test_wrong_sha256_fails_download_with_one_clear_line(repo, server):
    edit_params(repo, "data", sha256="0" * 64)
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0
    assert (
        f"download: error: checksum mismatch for {server.url}/mnist.npz: "
        f"expected sha256 {'0' * 64}, got" in failure(result)
    )
    assert list((repo / "data/raw").iterdir()) == [repo / "data/raw/.gitignore"]


def test_unreachable_url_fails_with_one_clear_line(repo, server):
    edit_params(repo, "data", url=f"{server.url}/status/404")
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0
    assert f"download: error: cannot download {server.url}/status/404: HTTP 404" in failure(result)
    assert not (repo / "data/raw/mnist.npz").exists()


def test_corrupt_npz_fails_preprocess_and_writes_nothing(repo, mnist_dir, server):
    corrupt = mnist_dir / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated archive")
    edit_params(repo, "data", url=f"{server.url}/corrupt.npz", sha256=sha256_of(corrupt))
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0
    assert "preprocess: error: data/raw/mnist.npz is not a valid MNIST .npz file" in failure(result)
    assert not [path for path in (repo / "data/processed").iterdir() if path.is_dir()]


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("train", {"epochs": -1}, "train.epochs: Input should be greater than or equal to 1"),
        ("train", {"optimizer": "foo"}, "train.optimizer: Input should be 'adam', 'adadelta'"),
        (
            "train",
            {"precision": "float16"},
            "train.precision: Input should be 'auto', 'float32' or 'mixed_bfloat16'",
        ),
    ],
)
def test_invalid_train_param_stops_before_training(repo, section, values, message):
    edit_params(repo, section, **values)
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0
    assert stages_run(result.stdout) == {"train"}
    assert f"train: error: params.yaml: {message}" in failure(result)
    assert not (repo / "models/model.keras").exists()


def test_second_concurrent_repro_fails_fast_and_the_first_completes(repo):
    """The first repro's train stage waits for a file the test creates, so the second repro
    starts while the first one surely holds the lock, however fast the machine."""
    release = repo / "release-train"
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    pipeline["stages"]["train"]["cmd"] = (
        f"until [ -e {release.name} ]; do sleep 0.05; done && python -m stages.train"
    )
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    first = subprocess.Popen(
        [str(BIN / "dvc"), "repro"],
        cwd=repo,
        env={**command_env(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = [first.stdout.readline()]
        while "Running stage 'train'" not in lines[-1]:
            assert lines[-1], "".join(lines)
            lines.append(first.stdout.readline())
        started = time.monotonic()
        second = dvc(repo, "repro", check=False)
        assert second.returncode != 0
        assert "is busy, it is being blocked by" in failure(second)
        assert time.monotonic() - started < 30
        assert first.poll() is None  # the first is still waiting: the lock was surely held
    finally:
        release.touch()
    rest, _ = first.communicate(timeout=300)
    assert first.returncode == 0, "".join(lines) + rest
    assert {"train", "evaluate"} <= stages_run("".join(lines) + rest)
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout
