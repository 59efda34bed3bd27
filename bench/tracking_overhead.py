"""How much MLflow tracking adds to training time.

Trains the same Keras model several times with and without the per-epoch MLflow
logging that ``src.training.run`` attaches, and prints the medians and their ratio.
Also prints what a whole tracked run costs beyond training (runs, params,
artifacts, logged models).

    python bench/tracking_overhead.py [--repeats 7] [experiment=xor] [key=value ...]
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
from src.config import compose, resolve_loss, validate  # noqa: E402
from src.training import NonFiniteGuard, build_models, load_dataset, run, seed_everything  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("overrides", nargs="*", default=["+experiment=xor"])
    args = parser.parse_args()
    overrides = [o if o.startswith(("+", "~")) or "experiment=" not in o else f"+{o}" for o in args.overrides]

    store = tempfile.mkdtemp(prefix="mlplab-bench-")
    uri = f"sqlite:///{store}/mlflow.db"
    cfg = compose([*overrides, f"tracking.uri={uri}"])
    plain = validate(cfg)
    dataset = load_dataset(plain["data"])
    loss = resolve_loss(plain["trainer"]["loss"], dataset.task)
    tracking.connect(uri)
    experiment = tracking.experiment_id("bench", uri)

    def fit_seconds(tracked: bool) -> float:
        seed_everything(plain["seed"])
        estimator = build_models(plain, dataset, loss)["keras_mlp"].estimator
        if not tracked:
            started = time.perf_counter()
            estimator.fit(dataset.x_train, dataset.y_train, listeners=[NonFiniteGuard()])
            return time.perf_counter() - started
        with tracking.run("keras_mlp", experiment=experiment) as child:
            logger = child.epoch_logger()
            started = time.perf_counter()
            estimator.fit(dataset.x_train, dataset.y_train, listeners=[logger, NonFiniteGuard()])
            return time.perf_counter() - started

    fit_seconds(False)  # warm-up: first traces and the store's first writes
    fit_seconds(True)
    plain_times, tracked_times = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        plain_times.append(fit_seconds(False))
        tracked_times.append(fit_seconds(True))
    untracked, tracked = statistics.median(plain_times), statistics.median(tracked_times)

    whole = []
    for _ in range(max(3, args.repeats // 2)):
        started = time.perf_counter()
        results = run(cfg)
        whole.append((time.perf_counter() - started, sum(m["fit_seconds"] for m in results.values())))
    total, fitting = (statistics.median(x) for x in zip(*whole))

    epochs = plain["trainer"]["epochs"]
    print(f"\n{' '.join(overrides)}: {epochs} epochs, {len(dataset.x_train)} samples, "
          f"median of {args.repeats}")
    print(f"{'what':<44}{'seconds':>10}")
    print(f"{'keras fit, no tracking':<44}{untracked:>10.3f}")
    print(f"{'keras fit, per-epoch metrics to MLflow':<44}{tracked:>10.3f}")
    print(f"{'tracking overhead on training':<44}{(tracked / untracked - 1) * 100:>9.1f}%")
    print(f"{'whole tracked run (all models)':<44}{total:>10.3f}")
    print(f"{'  of which fitting':<44}{fitting:>10.3f}")
    print(f"{'  runs, params, artifacts, models, eval':<44}{total - fitting:>10.3f}")


if __name__ == "__main__":
    main()
