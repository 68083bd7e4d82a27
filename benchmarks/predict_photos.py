"""How `python -m stages.predict` does on photographed MNIST test digits, and how long it takes.

    python benchmarks/predict_photos.py MODEL MNIST_NPZ [--count 500] [--repeats 3]

Photographs the first COUNT test digits of MNIST_NPZ as the predict tests do (enlarged, turned a
few degrees, coloured ink on tinted paper, noise, off-centre, JPEG; saved as PNG, JPEG, BMP, GIF
and WebP in turn), predicts them with MODEL through the real command, and compares with the
same digits given as a 28×28 `.npy`. Then times the command on 100 of the photos against the
time to import TensorFlow alone, alternating the two REPEATS times. Run from the project root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT), str(PROJECT / "tests")]
from digits import PHOTO_FORMATS, photograph, save_photo  # noqa: E402


def run(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *args], cwd=PROJECT, capture_output=True, text=True, check=False
    )
    if result.returncode not in (0, 1):
        sys.exit(f"{' '.join(args)} failed:\n{result.stderr}")
    return time.perf_counter() - started, result.stdout


def predicted(output: str) -> list[int]:
    return [entry.get("digit", -1) for entry in json.loads(output)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("mnist", type=Path)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with np.load(args.mnist) as mnist:
        images, labels = mnist["x_test"][: args.count], mnist["y_test"][: args.count]
    model = str(args.model.resolve())
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for index, image in enumerate(images):
            image_format = PHOTO_FORMATS[index % len(PHOTO_FORMATS)]
            save_photo(photograph(image, rng), folder / f"{index:05d}", image_format)
        np.save(Path(scratch) / "originals.npy", images)
        _, photo_output = run("-m", "stages.predict", str(folder), "--json", "--model", model)
        _, original_output = run(
            "-m", "stages.predict", f"{scratch}/originals.npy", "--json", "--model", model
        )
        hundred = sorted(folder.iterdir())[:100]
        command_times, import_times = [], []
        for _ in range(args.repeats):
            command_times.append(
                run("-m", "stages.predict", *map(str, hundred), "--model", model)[0]
            )
            import_times.append(run("-c", "import stages.tf_setup")[0])
    photo_accuracy = np.mean(np.array(predicted(photo_output)) == labels)
    original_accuracy = np.mean(np.array(predicted(original_output)) == labels)
    command, tf_import = statistics.median(command_times), statistics.median(import_times)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(f"machine: {cpu}, {len(os.sched_getaffinity(0))} cores")
    print(f"photographed test digits right: {photo_accuracy:.4f} of {len(labels)}")
    print(f"the same digits as 28x28 arrays: {original_accuracy:.4f}")
    print(
        f"predict on 100 photos: {command:.2f} s (median of {args.repeats}); "
        f"importing TensorFlow alone: {tf_import:.2f} s; the rest: {command - tf_import:.2f} s"
    )


if __name__ == "__main__":
    main()
