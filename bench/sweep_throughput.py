"""Wall time of a whole sweep with 1 and with 2 worker processes, of the same
search as plain Optuna over ``keras.Model.fit``, and of the same search run as
separate ``python -m src.train`` invocations.

Besides the whole wall time, each sweep row shows how much of it the trials took
(first trial's start to last trial's end), which is what more workers divide.

Each sweep starts from an empty study in a fresh directory (TensorFlow import
included) and tracks into a throw-away MLflow store. The separate-process figure
re-runs the trials of the 1-worker sweep (the same sampled values, the same
trial overrides: no baselines, no logged models) one ``src.train`` process after
another, as a user without the sweep runner would. The plain-Optuna figure is the
script a user would write without mlplab, in a fresh process (TensorFlow import
included): ``optuna.create_study`` with the sweep's TPE seed, and an objective that
builds the experiment's Keras MLP (``build_models``, the same layers, optimizer and
loss), trains it with ``model.fit`` for the trainer's epochs and returns the final
loss, with no tracking. Prints a table of medians and the ratios measured in the
same run.

    python bench/sweep_throughput.py [--sweep bench/hparams_search/xor_20_trials.yaml]
        [--workers 1 2] [--repeats 1] [--no-separate] [--no-plain] [--warm] [key=value ...]
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
from src.sweeps.definition import SweepSpec  # noqa: E402
from src.sweeps.spec import load_spec  # noqa: E402
from src.sweeps.trial import TRIAL_OVERRIDES  # noqa: E402
from src.warm import WARM_ENV, start_in_background, wait_until_ready  # noqa: E402


WARM: dict[str, str] = {WARM_ENV: "off"}
"""How the commands run: on their own, or (``--warm``) handed to a warm process."""


def _env(tmp: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", **WARM}


def sweep_seconds(spec: SweepSpec, sweep: Path, workers: int, extra: list[str]) -> tuple[float, str, list[dict]]:
    """Seconds of one sweep from an empty study, its ``Done:`` line, and its trials' sampled values."""
    import optuna

    from src.sweeps.storage import journal_path

    with tempfile.TemporaryDirectory(prefix="mlplab-sweep-bench-") as tmp:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "src.sweep", str(sweep), f"workers={workers}", *extra],
            cwd=tmp, env=_env(tmp), capture_output=True, text=True,
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"sweep failed ({result.returncode}):\n{result.stderr[-2000:]}")
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(Path(tmp) / journal_path(None, spec.study_name)))
        )
        trials = optuna.load_study(study_name=spec.study_name, storage=storage).get_trials(deepcopy=False)
    done = next((line for line in result.stdout.splitlines() if line.startswith("Done:")), "")
    phase = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    return seconds, f"trials {phase.total_seconds():.1f} s of it; {done}", [t.params for t in trials if t.params]


def separate_seconds(spec: SweepSpec, values: list[dict]) -> float:
    """Seconds to train every trial's values with its own ``python -m src.train`` process."""
    with tempfile.TemporaryDirectory(prefix="mlplab-separate-bench-") as tmp:
        started = time.perf_counter()
        for trial_values in values:
            overrides = [*spec.trial_overrides(trial_values), *TRIAL_OVERRIDES]
            result = subprocess.run(
                [sys.executable, "-m", "src.train", *overrides],
                cwd=tmp, env=_env(tmp), capture_output=True, text=True,
            )
            if result.returncode != 0:
                sys.exit(f"src.train failed ({result.returncode}):\n{result.stderr[-2000:]}")
        return time.perf_counter() - started


PLAIN_OPTUNA = """
import sys
from pathlib import Path
import keras, numpy as np, optuna
from src.config import compose, validate
from src.sweeps.spec import load_spec
from src.sweeps.study import suggest

spec = load_spec(Path(sys.argv[1]), sys.argv[2:])
optuna.logging.set_verbosity(optuna.logging.WARNING)
x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
y = np.array([0, 1, 1, 0], np.float32)

def objective(trial):
    values = {param.key: suggest(trial, param) for param in spec.params}
    cfg = validate(compose(spec.trial_overrides(values)))  # the trial's settings, read as a user would set them
    keras.utils.set_random_seed(cfg["seed"])
    model = keras.Sequential([keras.Input(shape=(2,))]
                             + [keras.layers.Dense(n, activation=cfg["model"]["activation"]) for n in cfg["model"]["hidden_units"]]
                             + [keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg["optimizer"]["learning_rate"]), loss="binary_crossentropy")
    history = model.fit(x, y, epochs=cfg["trainer"]["epochs"], batch_size=4, verbose=0)
    return history.history["loss"][-1]

study = optuna.create_study(direction=spec.directions[0], sampler=optuna.samplers.TPESampler(seed=spec.sampler.get("seed")))
study.optimize(objective, n_trials=spec.n_trials)
"""
"""The search as a user would write it without mlplab: XOR sweeps with Adam only."""


def plain_optuna_seconds(sweep: Path, extra: list[str]) -> float:
    """Seconds of the same search as plain Optuna over ``keras.Model.fit`` in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="mlplab-plain-bench-") as tmp:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", PLAIN_OPTUNA, str(sweep), *extra],
                                cwd=tmp, env=_env(tmp), capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"plain Optuna failed ({result.returncode}):\n{result.stderr[-2000:]}")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=ROOT / "bench" / "hparams_search" / "xor_20_trials.yaml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-separate", action="store_true", help="skip the separate-process baseline")
    parser.add_argument("--no-plain", action="store_true", help="skip plain Optuna over keras.Model.fit")
    parser.add_argument("--warm", action="store_true",
                        help="hand the sweeps and src.train commands to a warm process (started once, not timed)")
    parser.add_argument("extra", nargs="*", help="more sweep arguments, e.g. n_trials=30")
    args = parser.parse_args()
    spec = load_spec(args.sweep)
    if args.warm:
        with tempfile.TemporaryDirectory(prefix="mlplab-warm-bench-") as tmp:
            path, log = Path(tmp) / "warm.sock", Path(tmp) / "warm.log"
            warm = start_in_background(path, log, cwd=Path(tmp), env={**os.environ, "PYTHONPATH": str(ROOT)})
            try:
                wait_until_ready(warm, log)
                WARM[WARM_ENV] = str(path)
                print("commands handed to a warm process (python -m src.warm); plain Optuna imports as ever")
                measure(spec, args)
            finally:
                warm.terminate()
                warm.wait(60)
    else:
        measure(spec, args)


def measure(spec: SweepSpec, args: argparse.Namespace) -> None:

    medians: dict[str, float] = {}
    trial_values: list[dict] = []
    print(f"{args.sweep.name} {' '.join(args.extra)}, median of {args.repeats}, {os.cpu_count()} cores")
    print(f"{'how':<28}{'seconds':>9}  result")
    for workers in args.workers:
        runs = [sweep_seconds(spec, args.sweep, workers, args.extra) for _ in range(args.repeats)]
        medians[f"{workers} worker(s)"] = statistics.median(seconds for seconds, _, _ in runs)
        trial_values = trial_values or runs[-1][2]
        print(f"{f'sweep, {workers} worker(s)':<28}{medians[f'{workers} worker(s)']:>9.1f}  {runs[-1][1]}", flush=True)
    if not args.no_plain and spec.experiment == "xor":
        medians["plain"] = statistics.median(plain_optuna_seconds(args.sweep, args.extra) for _ in range(args.repeats))
        print(f"{'plain Optuna over model.fit':<28}{medians['plain']:>9.1f}", flush=True)
    if not args.no_separate and trial_values:
        medians["separate"] = statistics.median(separate_seconds(spec, trial_values) for _ in range(args.repeats))
        print(f"{f'{len(trial_values)} separate src.train':<28}{medians['separate']:>9.1f}", flush=True)
    one = medians.get("1 worker(s)")
    issue_search = args.sweep.name == "xor_20_trials.yaml"  # the issue's search: its targets apply
    how = "(through a warm process)" if args.warm else ""
    if one:
        if issue_search and not args.extra:
            report("sweep", one, how)
        for workers in args.workers:
            if workers != 1:
                print(f"speed-up of {workers} workers over 1: {one / medians[f'{workers} worker(s)']:.2f}x")
                if issue_search and workers == 2 and args.extra == ["n_trials=100"]:
                    report("two_workers", one / medians["2 worker(s)"], how)
        if "plain" in medians:
            print(f"speed-up of the 1-worker sweep over plain Optuna: {medians['plain'] / one:.1f}x")
            if issue_search and not args.extra:
                report("plain_ratio", medians["plain"] / one, how)
        if "separate" in medians:
            print(f"speed-up of the 1-worker sweep over separate processes: {medians['separate'] / one:.1f}x")


if __name__ == "__main__":
    main()
