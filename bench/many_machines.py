"""Load on the many-machines mode: 1,000 tiny XOR trials from 4 sweep commands
(one worker each, as 4 machines would run them) on one study in a real PostgreSQL
server, logging to a real ``mlflow server`` on PostgreSQL, all on loopback.

Prints trials per minute, what the storage and tracking calls add per trial
(p50/p95), and the count of lost and duplicated trials (must be 0):

- *Optuna side*: a trial's span in the study (start to complete) minus the span
  of its MLflow run: asking for the trial, its user attributes, pruning reports
  and telling the result, plus composing its config.
- *MLflow side*: the MLflow run's span minus the training itself
  (``fit_seconds``): creating and ending the run, params, metric batches and
  tags over HTTP, plus evaluating the model.

    python bench/many_machines.py [--trials 1000] [--machines 4] [--epochs 5]
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

from tests.services import MlflowServer, Postgres  # noqa: E402


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    with tempfile.TemporaryDirectory(prefix="mlplab-load-") as tmp:
        root = Path(tmp)
        postgres = Postgres.start(("optuna", "mlflow"))
        server = MlflowServer.start(postgres.url("mlflow"), root / "artifacts", root / "mlflow.log")
        try:
            command = [
                sys.executable, "-m", "src.sweep", str(ROOT / "sweeps" / "xor_lr_activation.yaml"),
                f"storage={postgres.url('optuna')}", "study_name=load", f"n_trials={args.trials}",
                "tracking=server", f"tracking.uri={server.uri}", "baselines=none",
                f"trainer.epochs={args.epochs}", "experiment_name=load",
            ]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            started = time.perf_counter()
            machines = []
            for index in range(args.machines):
                cwd = root / f"machine-{index}"
                cwd.mkdir()
                log = open(cwd / "out.log", "w")  # noqa: SIM115 (closed with the process)
                machines.append((subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=log), log))
            codes = [process.wait() for process, _ in machines]
            wall = time.perf_counter() - started
            for _, log in machines:
                log.close()
            if any(codes):
                sys.exit(f"a sweep command failed: exit codes {codes}; see {root}/machine-*/out.log")

            study = optuna.load_study(study_name="load", storage=postgres.url("optuna"))
            trials = study.get_trials(deepcopy=False)
            finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            client = MlflowClient(server.uri)
            experiment = client.get_experiment_by_name("load").experiment_id
            runs = []
            page = None
            while True:
                batch = client.search_runs([experiment], max_results=1000, page_token=page)
                runs += batch
                page = batch.token
                if not page:
                    break
            trial_runs = [r for r in runs if r.info.run_name.startswith("trial-")]
            by_name: dict[str, list] = {}
            for run in trial_runs:
                by_name.setdefault(run.info.run_name, []).append(run)
            duplicated = sum(len(v) - 1 for v in by_name.values()) + len(trials) - len({t.number for t in trials})
            lost = sum(1 for t in finished if f"trial-{t.number}" not in by_name)
            lost += sum(1 for t in trials if t.state == TrialState.RUNNING)

            optuna_side, mlflow_side = [], []
            for trial in finished:
                (run,) = by_name[f"trial-{trial.number}"][:1]
                trial_span = (trial.datetime_complete - trial.datetime_start).total_seconds()
                run_span = (run.info.end_time - run.info.start_time) / 1000
                fit = run.data.metrics.get("fit_seconds", 0.0)
                optuna_side.append(max(0.0, trial_span - run_span))
                mlflow_side.append(max(0.0, run_span - fit))
            first = min(t.datetime_start for t in finished)
            last = max(t.datetime_complete for t in finished)
            phase = (last - first).total_seconds()
        finally:
            server.stop()
            postgres.stop()

    print(f"{len(finished)} finished trials ({args.trials} asked) from {args.machines} sweep commands, "
          f"XOR {args.epochs} epochs, PostgreSQL + mlflow server on loopback, {os.cpu_count()} cores")
    print(f"{'figure':44} {'value':>10}")
    print(f"{'wall time, imports included (s)':44} {wall:10.1f}")
    print(f"{'trials per minute, whole run':44} {len(finished) / wall * 60:10.1f}")
    print(f"{'trials per minute, first start to last end':44} {len(finished) / phase * 60:10.1f}")
    for name, values in (("Optuna side", optuna_side), ("MLflow side", mlflow_side)):
        print(f"{name + ' per trial, p50 (s)':44} {statistics.median(values):10.3f}")
        print(f"{name + ' per trial, p95 (s)':44} {percentile(values, 0.95):10.3f}")
    print(f"{'lost trials':44} {lost:10d}")
    print(f"{'duplicated trials':44} {duplicated:10d}")


if __name__ == "__main__":
    main()
