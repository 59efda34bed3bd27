"""How much MLflow tracking, and the terminal's progress line, add to training time.

For each config (by default the Iris experiment and a 5-epoch MNIST run), trains
the same Keras model several times with and without the per-epoch MLflow logging
that ``src.training.run`` attaches, and with the progress line shown from the first
epoch (``trainer.verbose=1``, redrawn on a terminal that discards it), interleaved,
and prints the medians and their ratios. With ``--whole``, also prints what a whole tracked run of the first config
costs beyond training (runs, params, artifacts, logged models, evaluation).

    python bench/tracking_overhead.py [--repeats 7] [--whole]
        [--config "+experiment=iris" --config "+experiment=mnist trainer.epochs=5"]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from src import tracking  # noqa: E402
from src.config import compose, validate  # noqa: E402
from src.progress import ON, TrainingProgress  # noqa: E402
from src.training import DivergenceGuard, build_models, load_dataset, run, seed_everything  # noqa: E402


class NullTerminal:
    """A terminal that shows nothing: the progress line's cost without the console's."""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

DEFAULT_CONFIGS = ["+experiment=iris", "+experiment=mnist trainer.epochs=5"]


def overhead(overrides: list[str], uri: str, experiment: str, repeats: int) -> tuple[float, float, float, float, str]:
    plain = validate(compose([*overrides, f"tracking.uri={uri}"]))
    dataset = load_dataset(plain["data"])
    waits: list[float] = []

    def fit_seconds(tracked: bool, progress: bool = False) -> float:
        seed_everything(plain["seed"])
        estimator = build_models(plain, only=["keras_mlp"])["keras_mlp"].estimator
        data = dict(validation_data=dataset.validation_data)
        if not tracked:
            listeners = [DivergenceGuard(estimator)]
            if progress:
                listeners.append(TrainingProgress("keras_mlp", estimator.epochs, ON, terminal=NullTerminal()))
            started = time.perf_counter()
            estimator.fit(dataset.x_train, dataset.y_train, spec=dataset.spec, listeners=listeners, **data)
            return time.perf_counter() - started
        with tracking.run("keras_mlp", experiment=experiment) as child:
            logger = child.epoch_logger()
            started = time.perf_counter()
            estimator.fit(dataset.x_train, dataset.y_train, spec=dataset.spec, listeners=[logger, DivergenceGuard(estimator)], **data)
            seconds = time.perf_counter() - started
            started = time.perf_counter()
            logger.flush()  # as src.training does after training: the last batch, written and waited for
            waits.append(time.perf_counter() - started)
            return seconds

    fit_seconds(False)  # warm-up: first traces and the store's first writes
    fit_seconds(True)
    plain_times, tracked_times, progress_times = [], [], []
    for _ in range(repeats):  # interleaved, so drift hits them alike
        plain_times.append(fit_seconds(False))
        tracked_times.append(fit_seconds(True))
        progress_times.append(fit_seconds(False, progress=True))
    what = f"{plain['trainer']['epochs']} epochs x {len(dataset.x_train)} rows"
    medians = (statistics.median(t) for t in (plain_times, tracked_times, progress_times, waits))
    return (*medians, what)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--config", action="append", help="overrides of one config, quoted")
    parser.add_argument("--whole", action="store_true", help="also time a whole tracked run of the first config")
    args = parser.parse_args()
    configs = [c.split() for c in (args.config or DEFAULT_CONFIGS)]

    store = tempfile.mkdtemp(prefix="mlplab-bench-")
    uri = f"sqlite:///{store}/mlflow.db"
    tracking.connect(uri)
    experiment = tracking.experiment_id("bench", uri)

    print(f"Keras training with and without per-epoch MLflow metrics, and with the progress line, median of {args.repeats}")
    print("(training = fit; 'then waits' = writing the last batch of metrics after fit returns,")
    print(" which src.training overlaps with the model's evaluation)")
    print(f"{'config':<38}{'size':<26}{'untracked s':>12}{'tracked s':>11}{'overhead':>10}{'then waits s':>14}"
          f"{'progress s':>12}{'overhead':>10}")
    for overrides in configs:
        untracked, tracked, progress, wait, what = overhead(overrides, uri, experiment, args.repeats)
        print(f"{' '.join(overrides):<38}{what:<26}{untracked:>12.3f}{tracked:>11.3f}"
              f"{(tracked / untracked - 1) * 100:>9.1f}%{wait:>14.3f}"
              f"{progress:>12.3f}{(progress / untracked - 1) * 100:>9.1f}%", flush=True)

    if args.whole:
        cfg = compose([*configs[0], f"tracking.uri={uri}"])
        whole = []
        for _ in range(max(3, args.repeats // 2)):
            started = time.perf_counter()
            results = run(cfg).metrics
            whole.append((time.perf_counter() - started, sum(m["fit_seconds"] for m in results.values())))
        total, fitting = (statistics.median(x) for x in zip(*whole))
        print(f"\nwhole tracked run of {' '.join(configs[0])} (all models): {total:.3f} s, of which fitting "
              f"{fitting:.3f} s and runs, params, artifacts, models, evaluation {total - fitting:.3f} s")


if __name__ == "__main__":
    main()
