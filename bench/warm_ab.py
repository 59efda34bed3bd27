"""The main job through a warm process, two checkouts side by side: before and after a change.

Starts one warm process (``python -m src.warm``) per checkout, not timed, then
hands each ``python -m src.train <overrides>`` in turn, alternating which goes
first, each command in a fresh folder with its own store, and prints each
checkout's wall times and their median. A change too small to see across runs
(tens of milliseconds) shows here, since both run in the same minutes.

    git worktree add /tmp/before <commit>
    python bench/warm_ab.py /tmp/before . [--repeats 6] [overrides ...]
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

from src.warm import WARM_ENV, start_in_background, wait_until_ready  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="the checkout before the change")
    parser.add_argument("after", type=Path, help="the checkout after it")
    parser.add_argument("--repeats", type=int, default=6, help="commands per checkout")
    parser.add_argument("overrides", nargs="*", default=["+experiment=xor"])
    args = parser.parse_intermixed_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    with tempfile.TemporaryDirectory(prefix="mlplab-warm-ab-") as tmp:
        base = Path(tmp)
        warm = {}
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree)}
            warm[name] = start_in_background(base / f"{name}.sock", base / f"{name}.log", cwd=tree, env=env)
        try:
            for name in trees:
                wait_until_ready(warm[name], base / f"{name}.log")
            times: dict[str, list[float]] = {name: [] for name in trees}
            for repeat in range(args.repeats):
                order = list(trees) if repeat % 2 == 0 else list(reversed(trees))
                for name in order:
                    folder = base / f"{name}-{repeat}"
                    folder.mkdir()
                    env = {**os.environ, WARM_ENV: str(base / f"{name}.sock"), "PYTHONPATH": str(trees[name])}
                    started = time.perf_counter()
                    result = subprocess.run([sys.executable, "-m", "src.train", *args.overrides],
                                            cwd=folder, env=env, capture_output=True, text=True)
                    times[name].append(time.perf_counter() - started)
                    if result.returncode != 0:
                        sys.exit(f"{name} failed ({result.returncode}):\n{result.stderr[-2000:]}")
                    if "warm process" in result.stderr:  # turned away: it ran on its own
                        sys.exit(f"{name} did not run through its warm process:\n{result.stderr[-2000:]}")
        finally:
            for process in warm.values():
                process.terminate()
                process.wait()
    print(f"python -m src.train {' '.join(args.overrides)}, through a warm process, {args.repeats} interleaved runs each")
    for name, walls in times.items():
        print(f"  {name:<6} median {statistics.median(walls):.2f} s   " + " ".join(f"{w:.2f}" for w in walls))


if __name__ == "__main__":
    main()
