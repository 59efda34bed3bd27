"""Wall time of a whole sweep with 1 and with 2 worker processes.

Each run starts from an empty study in a fresh directory (TensorFlow import
included) and tracks into a throw-away MLflow store. Prints a table and the
speed-up of 2 workers over 1.

    python bench/sweep_throughput.py [--sweep sweeps/xor_lr_activation.yaml]
        [--workers 1 2] [--repeats 1] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sweep_seconds(sweep: Path, workers: int, extra: list[str]) -> tuple[float, str]:
    with tempfile.TemporaryDirectory(prefix="mlplab-sweep-bench-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "src.sweep", str(sweep), f"workers={workers}", *extra],
            cwd=tmp, env=env, capture_output=True, text=True,
        )
        seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"sweep failed ({result.returncode}):\n{result.stderr[-2000:]}")
    done = next((line for line in result.stdout.splitlines() if line.startswith("Done:")), "")
    return seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=ROOT / "sweeps" / "xor_lr_activation.yaml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="more sweep arguments, e.g. n_trials=30")
    args = parser.parse_args()

    medians = {}
    print(f"{args.sweep.name} {' '.join(args.extra)}, median of {args.repeats}, {os.cpu_count()} cores")
    print(f"{'workers':>8}  {'seconds':>9}  result")
    for workers in args.workers:
        runs = [sweep_seconds(args.sweep, workers, args.extra) for _ in range(args.repeats)]
        medians[workers] = statistics.median(seconds for seconds, _ in runs)
        print(f"{workers:>8}  {medians[workers]:>9.1f}  {runs[-1][1]}", flush=True)
    if 1 in medians:
        for workers, seconds in medians.items():
            if workers != 1:
                print(f"speed-up of {workers} workers over 1: {medians[1] / seconds:.2f}x")


if __name__ == "__main__":
    main()
