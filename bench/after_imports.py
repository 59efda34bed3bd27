"""What the main job costs once everything it imports is already imported: the
ceiling of any design that removes import time (a resident process that commands
hand their jobs to). mlplab has no such process; this measures what one could give.

Imports what ``python -m src.train`` needs (TensorFlow, Keras, MLflow and its SQL
store, scikit-learn, skops, matplotlib and mlplab's modules) once, then forks the
job from that process (its baselines trained in the same process: with TensorFlow
imported there is nothing left to overlap), interleaved with the command as a user
runs it on an idle machine (the baselines in their own process), each into a
throw-away store. Linux and macOS (``os.fork``).

    python bench/after_imports.py [--repeats 5] [--config "+experiment=xor"]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


MAIN_JOB_IMPORTS = (
    "matplotlib.backends.backend_agg", "mlflow.keras", "mlflow.sklearn", "mlflow.store.tracking.sqlalchemy_store",
    "skops.io", "src.models.baselines", "src.models.compiled", "src.models.keras_mlp", "src.plots", "src.train",
    "src.training",
)


def preload() -> float:
    """Imports what the main job imports; the seconds it took."""
    started = time.perf_counter()
    from src.models.backend import import_tensorflow

    import_tensorflow()
    for name in MAIN_JOB_IMPORTS:
        importlib.import_module(name)
    return time.perf_counter() - started


def forked_job(args: list[str], cwd: Path) -> float:
    """Seconds from the fork to the end of ``src.train args`` run in a child."""
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child never returns into the bench's loop
        try:
            os.chdir(cwd)
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            sys.argv = ["src.train", *args]
            from src.errors import run_command
            from src.train import main

            run_command(main)  # exits
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the forked job failed ({os.waitstatus_to_exitcode(status)})")
    return time.perf_counter() - started


def command(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "src.train", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT), "MLPLAB_BASELINE_WORKER": "1"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", default="+experiment=xor", help="overrides, space-separated")
    args = parser.parse_args()
    overrides = args.config.split()
    print(f"imports, once: {preload():.2f} s")
    times: dict[str, list[float]] = {"the command": [], "forked, imports done": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            times["the command"].append(command(overrides, Path(tmp)))
            times["forked, imports done"].append(forked_job(overrides, Path(tmp)))
    print(f"python -m src.train {args.config}, median of {args.repeats} (interleaved)")
    for way, values in times.items():
        print(f"  {way:22} {statistics.median(values):6.2f} s  (min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
