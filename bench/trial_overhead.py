"""What a sweep trial costs beyond its training arithmetic, measured in one process.

Runs the trials of a sweep definition the way a worker does (one composer, one
:class:`~src.sweeps.trial.TrialObjective`, a journal study, a SQLite MLflow store in a
fresh folder), after a few warm-up trials that trace the model structures, and prints
per-trial medians: wall time, time inside the compiled training calls (the arithmetic,
including their callbacks), the rest (the per-trial overhead: composing, building the
model, evaluating, tracking), and the tracking store's writes and reads: how many, and
the time spent in them (MLflow's SQL store, on either thread: the per-epoch metrics are
written by a background thread, which the trial waits for before its run ends).

Sweeps through ``src.sweep`` add process start-up, the study's set-up and the summary
around these trials; ``bench/sweep_throughput.py`` measures the whole command.

Two of them started at once with the same ``--store`` (and ``--journal``) share
one MLflow store (and one study) as a sweep's two workers do; with none, each has
its own, which tells what the sharing costs.

    python bench/trial_overhead.py [--sweep bench/hparams_search/xor_20_trials.yaml]
        [--trials 30] [--warm-up 5] [--store DIR] [--journal FILE]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STORE_CALLS = ("create_run", "log_batch", "log_inputs", "update_run_info", "get_run", "get_experiment_by_name")


def _counted(cls: type, name: str, counts: collections.Counter, seconds: collections.Counter) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        counts[name] += 1
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - started

    setattr(cls, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=ROOT / "bench" / "hparams_search" / "xor_20_trials.yaml")
    parser.add_argument("--trials", type=int, default=30, help="measured trials")
    parser.add_argument("--warm-up", type=int, default=5, help="trials run first and not measured")
    parser.add_argument("--store", type=Path, help="folder of the MLflow store (default: a fresh temporary one)")
    parser.add_argument("--journal", type=Path, help="the study's journal file (default: one in the store's folder)")
    args = parser.parse_args()

    from bench.targets import report
    from src.models.backend import import_tensorflow

    import_tensorflow()
    import optuna
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient

    from src import tracking
    from src.config import Composer
    from src.models.compiled import CompiledLoop
    from src.sweeps.spec import load_spec
    from src.sweeps.study import make_sampler
    from src.sweeps.trial import TrialObjective

    counts: collections.Counter = collections.Counter()
    store_seconds: collections.Counter = collections.Counter()  # the metric writer's thread's too
    for name in STORE_CALLS:
        _counted(SqlAlchemyStore, name, counts, store_seconds)
    training: list[float] = []
    train = CompiledLoop._train

    def timed_train(self, *a, **k):
        started = time.perf_counter()
        try:
            return train(self, *a, **k)
        finally:
            training.append(time.perf_counter() - started)

    CompiledLoop._train = timed_train
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(args.sweep, n_trials=args.trials + args.warm_up)
    with tempfile.TemporaryDirectory(prefix="mlplab-trial-bench-") as tmp, Composer() as composer:
        folder = args.store or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        journal = args.journal or folder / f"study-{os.getpid()}.log"
        experiment = tracking.open_experiment("trial_overhead", {"uri": f"sqlite:///{folder}/mlflow.db"})
        client = MlflowClient()
        # As a worker holds it: the sweep's run, not active in this process.
        sweep_run_id = client.create_run(experiment, run_name="sweep-trial_overhead").info.run_id
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        study = optuna.create_study(
            storage=storage, study_name="trial_overhead", load_if_exists=True,
            directions=spec.directions, sampler=make_sampler(spec),
        )
        objective = TrialObjective(spec, sweep_run_id, composer)
        walls: list[float] = []

        def measured(trial: optuna.Trial) -> float:
            started = time.perf_counter()
            try:
                return objective(trial)
            finally:
                walls.append(time.perf_counter() - started)

        study.optimize(measured, n_trials=args.warm_up)
        walls.clear()
        training.clear()
        counts.clear()
        store_seconds.clear()
        started = time.perf_counter()
        study.optimize(measured, n_trials=args.trials)
        per_trial_with_optuna = (time.perf_counter() - started) / args.trials
        client.set_terminated(sweep_run_id)

    rest = [wall - arithmetic for wall, arithmetic in zip(walls, training, strict=True)]
    print(f"{args.sweep.name}, {args.trials} trials after {args.warm_up} warm-up, medians per trial")
    print(f"  trial (objective)        {1000 * statistics.median(walls):7.1f} ms")
    print(f"  training calls           {1000 * statistics.median(training):7.1f} ms")
    print(f"  overhead (the rest)      {1000 * statistics.median(rest):7.1f} ms")
    print(f"  with Optuna's ask/tell   {1000 * per_trial_with_optuna:7.1f} ms (mean)")
    print("  store calls per trial    " + ", ".join(f"{n} {counts[n] / args.trials:g}" for n in STORE_CALLS))
    per_trial = {n: 1000 * store_seconds[n] / args.trials for n in STORE_CALLS if counts[n]}
    print(f"  in the store per trial   {sum(per_trial.values()):7.1f} ms (mean; "
          + ", ".join(f"{n} {ms:.1f}" for n, ms in per_trial.items()) + ")")
    report("trial_overhead", 1000 * statistics.median(rest))


if __name__ == "__main__":
    main()
