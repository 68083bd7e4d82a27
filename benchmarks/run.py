"""Benchmark the pipeline on full MNIST. Run by hand, not by the test suite:

    python -m benchmarks.run /path/to/mnist.npz [--seeds 43 44] [--update-results]
    python -m benchmarks.run /path/to/mnist.npz --set train.precision=float32 \
        --output benchmarks/results_float32.md

Works on a temporary copy of the project with `data.url` pointed at the given file, and measures:
each stage's wall time and peak memory (run as `python -m stages.<name>`, start-up included);
a no-op `dvc repro`; a `dvc repro` after editing `plots.dpi` (and which stages it ran); the train
stage's time per step against a plain Keras script training the same model on the same arrays
(`benchmarks/plain_keras.py`), both for the same two epochs, alternated three times; the test
accuracy, the validation accuracy and loss and the training seconds, also for each extra seed;
and whether a `dvc repro -f` with the default params again gives the same
`metrics/evaluate.json` (and its training seconds). It names the machine: the CPU, whether it
has bfloat16 matrix units, the precision trained in, and the CPU time that other processes took
meanwhile.

`--set section.key=value` (as `dvc exp run -S` takes it) changes a param of the copy first.
Writes `benchmarks/results.md` (or `--output`) and a `.json` beside it. With `--update-results`,
also copies the default-seed run's `metrics/` and git-kept `plots/` files into the project.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from devtools.workspace import PROJECT, command_env, copy_project, edit_params, stages_run
from stages.common import StageError
from stages.hardware import cpu_bf16_units, cpu_name
from stages.params import PARAMS_FILE, Params, validate_params
from stages.paths import EVALUATE_METRICS, TRAIN_METRICS

STAGES = ("download", "preprocess", "train", "evaluate", "plots")
THROUGHPUT_ROUNDS, THROUGHPUT_EPOCHS = 3, 2
STEP_TIME = re.compile(r"^\d+/\d+ - \d+s - (\d+)ms/step", re.MULTILINE)


def run_measured(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run a command; return its wall seconds, its peak resident memory in MB, and its output."""
    started = time.perf_counter()
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.exit(f"benchmark: {' '.join(args)} exited {process.returncode}:\n{output}")
    return seconds, usage.ru_maxrss / 1024, output


def ms_per_step(keras_output: str) -> float:
    """Median time per training step over all epochs but the first (which includes tracing)."""
    steps = [int(ms) for ms in STEP_TIME.findall(keras_output)]
    if len(steps) < 2:
        sys.exit(f"benchmark: need 2+ epochs to time steps, got:\n{keras_output}")
    return statistics.median(steps[1:])


def cpu_seconds() -> tuple[float, float, float] | None:
    """CPU seconds since boot that the whole machine spent busy, that the hypervisor stole from
    it, and that this process and its finished children used (Linux only: None elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields)
    ticks = os.sysconf("SC_CLK_TCK")
    own = os.times()
    own_seconds = own.user + own.system + own.children_user + own.children_system
    return (user + nice + system + irq + softirq) / ticks, steal / ticks, own_seconds


def available_cores() -> int:
    """The CPUs this process may run on: fewer than the machine has where it is pinned to some
    (`taskset -c 0,1`, so that two cores of a larger machine stand in for a 2-core VM)."""
    return len(os.sched_getaffinity(0))


def other_load(before: tuple[float, float, float] | None, wall_seconds: float) -> dict | None:
    """How much of the machine was not the benchmark's over a run: the CPU seconds that other
    processes used and that the hypervisor stole, against the wall time × cores available."""
    after = cpu_seconds()
    if before is None or after is None:
        return None
    busy, stolen, own = (end - start for start, end in zip(before, after, strict=True))
    return {
        "wall_seconds": round(wall_seconds),
        "core_seconds": round(wall_seconds * available_cores()),
        "other_processes_cpu_seconds": round(max(0.0, busy - own)),
        "stolen_cpu_seconds": round(stolen),
    }


def params_with(section: str, values: dict[str, object]) -> Params:
    """`params.yaml` with `values` set in `section`, checked by the schema. What it refuses is an
    `ArgumentTypeError` in the schema's words, so argparse names the option it came from."""
    raw = yaml.safe_load((PROJECT / PARAMS_FILE).read_text())
    raw.setdefault(section, {}).update(values)  # a new section: the schema names it unknown
    try:
        return validate_params(raw)
    except StageError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"{PARAMS_FILE}: ")) from None


def checked_setting(
    section: str, key: str, value_text: str, beside: dict | None = None
) -> tuple[object, Params]:
    """`params.yaml` with `section.key` set to `value_text`, read as YAML as `dvc exp run -S`
    reads it (and the section's keys in `beside` set too): the value and the params, checked by
    the schema (`params_with`). What YAML refuses is an `ArgumentTypeError` too."""
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error)
        raise argparse.ArgumentTypeError(f"not YAML: {problem}") from None
    return value, params_with(section, {key: value, **(beside or {})})


def param_setting(text: str) -> tuple[str, str, object]:
    """A `--set` value, `section.key=value`, checked as if `params.yaml` had it."""
    name, equals, value_text = text.partition("=")
    section, dot, key = name.partition(".")
    if not (equals and dot and section and key):
        raise argparse.ArgumentTypeError(f"{text!r}: expected section.key=value")
    if section == "data":
        raise argparse.ArgumentTypeError("data.* is set from the DATA argument")
    value, _ = checked_setting(section, key, value_text)
    return section, key, value


def make_workspace(data: Path) -> Path:
    """A fresh copy of the pipeline (and of benchmarks/, for plain_keras) reading `data`."""
    workspace = Path(tempfile.mkdtemp(prefix="mnist-benchmark-")) / "project"
    copy_project(workspace, extra_folders=("benchmarks",))
    sha256 = hashlib.sha256(data.read_bytes()).hexdigest()
    edit_params(workspace, "data", url=str(data.resolve()), sha256=sha256)
    subprocess.run(["git", "init", "-q"], cwd=workspace, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=workspace, check=True)
    return workspace


def tensorflow_version() -> str:
    """TensorFlow's version, read without importing it; where the CPU-only package
    `tensorflow-cpu` (the same TensorFlow without the CUDA kernels) is what is installed, it says
    so."""
    try:
        return importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        return f"{importlib.metadata.version('tensorflow-cpu')} (tensorflow-cpu)"


def machine() -> dict:
    return {
        "cpu": cpu_name(),
        "bf16_units": cpu_bf16_units(),
        "cores": available_cores(),
        "machine_cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "system": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tensorflow_version(),
        "keras": importlib.metadata.version("keras"),
        "dvc": importlib.metadata.version("dvc"),
    }


def git_kept_outputs(dvc_yaml: Path) -> list[str]:
    """The outputs that `dvc_yaml` marks `cache: false`: git keeps them, not DVC's cache."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return [
        path
        for stage in stages.values()
        for section in ("outs", "metrics", "plots")
        for out in stage.get(section, [])
        if isinstance(out, dict)
        for path, options in out.items()
        if options and options.get("cache") is False
    ]


def copy_results(workspace: Path, destination: Path = PROJECT) -> None:
    """The outputs that git keeps, from `workspace` into the project."""
    for path in git_kept_outputs(workspace / "dvc.yaml"):
        shutil.copy2(workspace / path, destination / path)


def throughput(workspace: Path, default_epochs: int) -> dict:
    """Time per training step of the train stage and of the plain Keras script, each run for the
    same epochs on the same arrays, alternated (A B A B ...), the median of each."""
    python = sys.executable
    edit_params(workspace, "train", epochs=THROUGHPUT_EPOCHS)
    pipeline, plain = [], []
    for round_ in range(THROUGHPUT_ROUNDS):
        print(f"benchmark: throughput round {round_ + 1} of {THROUGHPUT_ROUNDS}", file=sys.stderr)
        # From the workspace copy, which reads the same params.yaml and processed arrays.
        _, _, output = run_measured([python, "-m", "stages.train"], workspace)
        pipeline.append(ms_per_step(output))
        plain_keras = [python, "-m", "benchmarks.plain_keras", str(THROUGHPUT_EPOCHS)]
        plain.append(ms_per_step(run_measured(plain_keras, workspace)[2]))
    edit_params(workspace, "train", epochs=default_epochs)
    pipeline_ms, plain_ms = statistics.median(pipeline), statistics.median(plain)
    return {
        "pipeline_ms_per_step": pipeline,
        "plain_keras_ms_per_step": plain,
        "ratio": round(plain_ms / pipeline_ms, 3),
    }


def run_metrics(workspace: Path) -> tuple[dict, dict]:
    """`metrics/train.json` and `metrics/evaluate.json` as `workspace`'s last run wrote them."""
    return tuple(
        json.loads((workspace / path).read_text()) for path in (TRAIN_METRICS, EVALUATE_METRICS)
    )


def record_seed(results: dict, seed: int, train_metrics: dict, evaluate_metrics: dict) -> None:
    """One seed's figures, into the per-seed tables of `results`. The validation loss too, which
    a recipe's rule compares with the accuracy; and the time: one run's training time says little
    on a VM whose speed changes with the host."""
    results["test_accuracy"][str(seed)] = evaluate_metrics["test_accuracy"]
    results["val_accuracy"][str(seed)] = train_metrics["val_accuracy"]
    results["val_loss"][str(seed)] = train_metrics["val_loss"]
    results["training_seconds"][str(seed)] = train_metrics["training_seconds"]


def benchmark(
    data: Path, seeds: list[int], update_results: bool, settings: list[tuple[str, str, object]]
) -> dict:
    started, cpu_before = time.perf_counter(), cpu_seconds()
    workspace = make_workspace(data)
    python = sys.executable
    for section, key, value in settings:
        edit_params(workspace, section, **{key: value})
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    results: dict = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "params_set": {f"{section}.{key}": value for section, key, value in settings},
        "stages": {},
        "test_accuracy": {},
        "val_accuracy": {},
        "val_loss": {},
        "training_seconds": {},
    }

    for stage in STAGES:
        print(f"benchmark: running {stage}", file=sys.stderr)
        seconds, peak_mb, _ = run_measured([python, "-m", f"stages.{stage}"], workspace)
        results["stages"][stage] = {"seconds": round(seconds, 1), "peak_memory_mb": round(peak_mb)}
    results["repro_seconds_without_download"] = round(
        sum(results["stages"][stage]["seconds"] for stage in STAGES[1:]), 1
    )
    results["train_metrics"], first_evaluate = run_metrics(workspace)
    # What the train stage ran on and in (train.precision: auto picks by the hardware).
    results["machine"]["device"] = results["train_metrics"]["device"]
    results["machine"]["precision"] = results["train_metrics"]["precision"]
    record_seed(results, params["train"]["seed"], results["train_metrics"], first_evaluate)
    if update_results:
        copy_results(workspace)

    # Record the outputs in dvc.lock, so that DVC sees everything as up to date.
    run_measured([python, "-m", "dvc", "commit", "--force", "--quiet"], workspace)
    no_op = [run_measured([python, "-m", "dvc", "repro"], workspace) for _ in range(5)]
    if any(stages_run(output) for _, _, output in no_op):
        sys.exit("benchmark: a no-op dvc repro ran a stage")
    results["noop_repro_seconds"] = round(statistics.median(s for s, _, _ in no_op), 2)

    edit_params(workspace, "plots", dpi=params["plots"]["dpi"] + 1)
    seconds, _, output = run_measured([python, "-m", "dvc", "repro"], workspace)
    results["plots_param_repro"] = {
        "seconds": round(seconds, 1),
        "stages_run": sorted(stages_run(output)),
    }

    results["throughput"] = throughput(workspace, params["train"]["epochs"])

    for seed in seeds:
        print(f"benchmark: training with seed {seed}", file=sys.stderr)
        edit_params(workspace, "train", seed=seed)
        for stage in ("train", "evaluate"):
            run_measured([python, "-m", f"stages.{stage}"], workspace)
        record_seed(results, seed, *run_metrics(workspace))
    accuracies = list(results["test_accuracy"].values())
    results["test_accuracy_mean"] = round(statistics.mean(accuracies), 5)

    print("benchmark: dvc repro -f with the default params again", file=sys.stderr)
    edit_params(workspace, "train", seed=params["train"]["seed"])
    edit_params(workspace, "plots", dpi=params["plots"]["dpi"])
    run_measured([python, "-m", "dvc", "repro", "--force"], workspace)
    rerun_train, rerun_evaluate = run_metrics(workspace)
    results["rerun_identical"] = rerun_evaluate == first_evaluate
    results["rerun_training_seconds"] = rerun_train["training_seconds"]
    shutil.rmtree(workspace.parent)
    results["machine_load"] = other_load(cpu_before, time.perf_counter() - started)
    return results


def cores(machine: dict) -> str:
    """How many cores a benchmark ran on, and the machine's CPUs where it was pinned to fewer."""
    text = f"{machine['cores']} core{'s' if machine['cores'] != 1 else ''}"
    if machine["cores"] != machine["machine_cpus"]:
        text += f" (pinned to them: the machine has {machine['machine_cpus']} CPUs)"
    return text


def by_seed(values: dict[str, float], digits: int) -> str:
    return ", ".join(f"{value:.{digits}f} (seed {seed})" for seed, value in values.items())


def milliseconds(times: list[float]) -> str:
    return f"{', '.join(f'{ms:g}' for ms in times)} ms"


def markdown(results: dict) -> str:
    m = results["machine"]
    bf16 = ", ".join(m["bf16_units"]) or "none"
    lines = [
        f"Measured {results['date']} on {m['cpu']} (bfloat16 units: {bf16}), {cores(m)}, "
        f"{m['memory_gb']} GB, {m['system']}; trained in {m['precision']} on {m['device']}; "
        f"Python {m['python']}, TensorFlow "
        f"{m['tensorflow']}, Keras {m['keras']}, DVC {m['dvc']}.",
        "",
    ]
    if results.get("params_set"):
        settings = ", ".join(f"`{name}={value}`" for name, value in results["params_set"].items())
        lines += [f"Params changed from `params.yaml` (`--set`): {settings}.", ""]
    lines += [
        "| stage | seconds | peak memory |",
        "|---|---|---|",
    ]
    for stage, row in results["stages"].items():
        lines.append(f"| {stage} | {row['seconds']} | {row['peak_memory_mb']} MB |")
    throughput = results["throughput"]
    plots = results["plots_param_repro"]
    first_seed = next(iter(results["training_seconds"]))
    # An ensemble's train.json keeps each member's epochs under members.<i>.
    members = results["train_metrics"].get("members", {"1": results["train_metrics"]})
    epochs = "; ".join(
        f"{member['epochs_run']}, {member['best_epoch']}" for member in members.values()
    )
    lines += [
        "",
        "| measure | value |",
        "|---|---|",
        f"| `dvc repro` without download (sum of the stages) | "
        f"{results['repro_seconds_without_download']} s |",
        f"| no-op `dvc repro` (median of 5) | {results['noop_repro_seconds']} s |",
        f"| `dvc repro` after editing `plots.dpi` | {plots['seconds']} s, ran: "
        f"{', '.join(plots['stages_run'])} |",
        f"| train step, pipeline vs plain Keras script, {THROUGHPUT_EPOCHS} epochs each, "
        f"alternated {THROUGHPUT_ROUNDS} times | "
        f"{milliseconds(throughput['pipeline_ms_per_step'])} vs "
        f"{milliseconds(throughput['plain_keras_ms_per_step'])} (ratio of the medians "
        f"{throughput['ratio']}) |",
        f"| test accuracy | {by_seed(results['test_accuracy'], 4)}; "
        f"mean {results['test_accuracy_mean']:.4f} |",
        f"| validation accuracy | {by_seed(results['val_accuracy'], 4)} |",
        f"| validation loss | {by_seed(results['val_loss'], 4)} |",
        f"| training seconds (`training_seconds`) | {by_seed(results['training_seconds'], 1)}; "
        f"{results['rerun_training_seconds']:.1f} (seed {first_seed} again, `dvc repro -f`) |",
        f"| epochs run, kept | {epochs} |",
        f"| `dvc repro -f` with the same params: same `metrics/evaluate.json` | "
        f"{'yes' if results['rerun_identical'] else 'NO'} |",
    ]
    load = results.get("machine_load")
    if load:
        lines.append(
            f"| CPU that was not the benchmark's, over its {load['wall_seconds']} s "
            f"({load['core_seconds']} core-seconds) | other processes "
            f"{load['other_processes_cpu_seconds']} s, stolen by the hypervisor "
            f"{load['stolen_cpu_seconds']} s |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a full MNIST .npz in Keras' layout")
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="extra train.seed runs")
    parser.add_argument(
        "--update-results", action="store_true", help="copy the run's metrics and plots here"
    )
    parser.add_argument(
        "--set",
        type=param_setting,
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change a param of the benchmark's copy, as dvc exp run -S does",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=PROJECT / "benchmarks/results.md",
        help="the Markdown table; the JSON goes beside it (default: benchmarks/results.md)",
    )
    args = parser.parse_args()
    if args.update_results and args.set:
        parser.error("--update-results copies the run of params.yaml as it is: not with --set")
    if not args.output.parent.is_dir():  # found now, not after the runs
        parser.error(f"--output: no folder {args.output.parent}")
    if not args.data.is_file():
        sys.exit(f"benchmark: {args.data} not found")
    results = benchmark(args.data, args.seeds, args.update_results, args.set)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    args.output.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
