"""How long the main job takes, and where the time goes, seen as a user sees it.

Runs ``python -m src.train <overrides>`` several times into a throw-away store and
times each printed line from the process start (the median over the runs, line by
line: the output is the same every run), the exit, and the time from the last
printed line to the exit, with the baselines trained in their own process (as on
an idle machine), in one process, and (``--warm``) handed to a warm process
(``python -m src.warm``, started once beforehand, not timed), its job training the
baselines in a process forked from it (the default) or itself, interleaved. Beside
it, in the same session, the cost of importing TensorFlow and Keras alone in a
fresh process, the floor every command on its own pays.

    python bench/main_job.py [--repeats 5] [--warm] [--config "+experiment=xor" --config "+experiment=iris"]
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
sys.path.insert(0, str(ROOT))

from bench.targets import report  # noqa: E402
from src.baseline_worker import WORKER_ENV  # noqa: E402  (both light: no TensorFlow in the bench)
from src.warm import WARM_ENV, start_in_background, wait_until_ready  # noqa: E402

DEFAULT_CONFIGS = ["+experiment=xor", "+experiment=iris"]
WAYS = {"one process (MLPLAB_BASELINE_WORKER=0)": {WORKER_ENV: "0", WARM_ENV: "off"},
        "baselines in their own process (=1)": {WORKER_ENV: "1", WARM_ENV: "off"}}
WARM_WAY = "through a warm process (python -m src.warm)"
WARM_IN_JOB_WAY = "through a warm process, the baselines in its job (=0)"


def timed_run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[list[tuple[float, str]], float]:
    """Each output line (stdout and stderr) with the seconds since start, and the exit time."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append((time.perf_counter() - started, line.rstrip()))
    process.wait()
    finished = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n" + "\n".join(t for _, t in lines[-20:]))
    return lines, finished


def import_floor(env: dict[str, str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import keras, tensorflow"], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", action="append", help="overrides, space-separated (repeatable)")
    parser.add_argument("--warm", action="store_true", help="also hand each command to a warm process")
    args = parser.parse_args()
    configs = args.config or DEFAULT_CONFIGS
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ways = dict(WAYS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"import keras, tensorflow (fresh process): {import_floor(env, args.repeats):.2f} s median of {args.repeats}")
        warm = None
        if args.warm:
            socket_path = work / "warm.sock"
            started = time.perf_counter()
            warm = start_in_background(socket_path, work / "warm.log", cwd=work, env=env)
            wait_until_ready(warm, work / "warm.log")
            print(f"warm process ready after {time.perf_counter() - started:.2f} s (not counted below)")
            ways[WARM_WAY] = {WARM_ENV: str(socket_path)}  # the baselines in a process forked from the job
            ways[WARM_IN_JOB_WAY] = {WARM_ENV: str(socket_path), WORKER_ENV: "0"}
        try:
            for config in configs:
                command = [sys.executable, "-m", "src.train", *config.split()]
                # Interleaved, so every way sees the same minutes of a noisy machine.
                runs: dict[str, list] = {way: [] for way in ways}
                for _ in range(args.repeats):
                    for way, extra in ways.items():
                        runs[way].append(timed_run(command, work, {**env, **extra}))
                walls = {way: statistics.median(finished for _, finished in done) for way, done in runs.items()}
                for way, done in runs.items():
                    print_timeline(f"python -m src.train {config}, {way}", done)
                one, two = walls[next(iter(WAYS))], walls[list(WAYS)[1]]
                print(f"\n{config}: {two:.2f} s with the baselines' process, {one:.2f} s in one process "
                      f"({(two - one) / one:+.0%})", end="")
                if WARM_WAY in walls:
                    print(f"; {walls[WARM_WAY]:.2f} s through the warm process ({(walls[WARM_WAY] - two) / two:+.0%}), "
                          f"{walls[WARM_IN_JOB_WAY]:.2f} s with its baselines in the job", end="")
                print()
                report_targets(config, runs[list(WAYS)[1]], runs.get(WARM_WAY))
        finally:
            if warm is not None:
                warm.terminate()
                warm.wait(60)


def report_targets(config: str, alone: list, warm: list | None) -> None:
    """Issue 14's targets that ``config``'s runs measure: on its own (the default
    way, its baselines in their own process) and through a warm process."""
    key = {"+experiment=xor": "main_job", "+experiment=iris": "main_job",
           "+experiment=mnist trainer.epochs=2": "quick_look"}.get(config)
    for how, runs in (("", alone), ("(through a warm process)", warm)):
        if runs:
            if key:
                report(key, statistics.median(finished for _, finished in runs), how)
            report("last_line_to_exit", statistics.median(finished - lines[-1][0] for lines, finished in runs), how)


def print_timeline(title: str, runs: list[tuple[list[tuple[float, str]], float]]) -> None:
    """The median time of each printed line over ``runs``, and of the exit."""
    walls = [finished for _, finished in runs]
    tails = [finished - lines[-1][0] for lines, finished in runs if lines]
    print(f"\n{title}: {statistics.median(walls):.2f} s wall "
          f"(median of {len(runs)}; min {min(walls):.2f}, max {max(walls):.2f})")
    counts = {len(lines) for lines, _ in runs}
    if len(counts) == 1:
        print("  at   line")
        for index in range(counts.pop()):
            at = statistics.median(lines[index][0] for lines, _ in runs)
            print(f"  {at:5.2f} {runs[0][0][index][1][:110]}")
    print(f"  {statistics.median(walls):5.2f} exit; last line to exit {statistics.median(tails):.2f} s")


if __name__ == "__main__":
    main()
