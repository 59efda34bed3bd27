"""What drawing a run's figures costs, figure by figure, saved as mlplab saves them
and cropped to their content (``bbox_inches="tight"``, as until 2026-12-03).

Trains a config in one process into a throw-away store (models not logged), keeps the
figure makers its runs logged, then saves each figure to PNG in memory both ways,
interleaved, and prints per-figure medians and the totals. Building a figure (a
decision boundary predicts on a 200 x 200 grid) is timed apart from saving it.

    python bench/figures.py [--config "+experiment=xor"] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="+experiment=xor", help="overrides, space-separated")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    os.environ["MLPLAB_BASELINE_WORKER"] = "0"  # every run's figures in this process
    from src import tracking
    from src.config import compose
    from src.training import run

    made: list[tuple[str, object]] = []
    log_figures = tracking.TrackedRun.log_figures

    def keep(self, figures, folder="plots"):
        made.extend((f"{self.run_name}/{name}", make) for name, make in figures.items())
        return log_figures(self, figures, folder)

    tracking.TrackedRun.log_figures = keep
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        run(compose([*args.config.split(), "tracking.log_models=false", f"tracking.uri={uri}"]))

    ways = {"as saved": tracking._save_kwargs, "cropped": lambda figure: {"dpi": 100, "bbox_inches": "tight"}}
    print(f"{args.config}: {len(made)} figures, median of {args.repeats} (ms)")
    print(f"{'run/figure':44} {'build':>7} " + " ".join(f"{w:>9}" for w in ways))
    totals = {w: 0.0 for w in ["build", *ways]}
    for name, make in made:
        times: dict[str, list[float]] = {w: [] for w in ["build", *ways]}
        for _ in range(args.repeats):
            for way, save_kwargs in ways.items():
                start = time.perf_counter()
                figure = make()
                built = time.perf_counter()
                figure.savefig(io.BytesIO(), format="png", **save_kwargs(figure))
                times["build"].append(built - start)
                times[way].append(time.perf_counter() - built)
        medians = {w: statistics.median(t) for w, t in times.items()}
        for way, value in medians.items():
            totals[way] += value
        print(f"{name:44} {medians['build'] * 1e3:7.0f} " + " ".join(f"{medians[w] * 1e3:9.0f}" for w in ways))
    print(f"{'total':44} {totals['build'] * 1e3:7.0f} " + " ".join(f"{totals[w] * 1e3:9.0f}" for w in ways))
    print(f"saving as laid out: {1 - totals['as saved'] / totals['cropped']:.0%} less than cropped")


if __name__ == "__main__":
    main()
