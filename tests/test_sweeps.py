"""Optuna sweeps: bad files, a sweep end to end, parallel workers, resume after
SIGKILL, Ctrl-C, pruning, heartbeats, a Pareto front, and the best config re-run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from mlflow.entities import ViewType
from optuna.trial import TrialState

from src import tracking
from src.errors import ConfigError
from src.sweeps.spec import load_spec
from src.sweeps.storage import journal_path, open_storage
from src.sweeps.study import counted_trials
from src.sweeps.trial_runs import RUN_ID_ATTR
from tests.conftest import ROOT, cold_env, command_env, finish, run_cli, start_cli, write_sweep

SWEEPS = ROOT / "sweeps"


def load_study(cwd: Path, name: str) -> optuna.Study:
    """The study a sweep run from ``cwd`` keeps in its default journal."""
    path = cwd / journal_path(None, name)
    if not path.exists():
        raise FileNotFoundError(path)
    storage = open_storage(str(path), name, heartbeat_interval=10, heartbeat_grace=30)
    return optuna.load_study(study_name=name, storage=storage)


def runs_of(client, experiment_name: str):
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)


# ------------------------------------------------------------------ bad files
LR = "tag(log, interval(0.001, 1.0))"
BAD_FILES = [
    ({"params": {"optimizer.learning_rat": LR}}, "params.optimizer.learning_rat is not a config key"),
    ({"params": {"optimizer.learning_rate": "interval(1.0, 0.1)"}}, "low=1.0 is greater than high=0.1"),
    ({"params": {"optimizer.learning_rate": "tag(log, interval(0.0, 1.0))"}}, "log range needs low > 0"),
    ({"params": {"optimizer.learning_rate": "tag(lg, interval(0.1, 1.0))"}}, "unknown tag lg"),
    ({"params": {"dropout.rate": "interval(0.0, 1.0)"}}, "dropout.rate=1.0"),
    ({"params": {"optimizer": "choice(adam, adamm)"}}, "optimizer='adamm'"),
    ({"params": {"model.activation": "choice(relu"}}, "params.model.activation: cannot parse"),
    ({"params": {}}, "nothing to search: give hydra.sweeper.params"),
    ({"params": {"model.activation": "relu"}}, "nothing to search"),
    ({"sampler": "bogus"}, "unknown sampler 'bogus'"),
    ({"sampler": {"_target_": "optuna.samplers.BogusSampler"}}, "unsupported sampler optuna.samplers.BogusSampler"),
    ({"sampler": {"_target_": "optuna.samplers.TPESampler", "n_startup": 3}}, "sampler tpe"),
    ({"pruner": "bogus"}, "unknown pruner 'bogus'"),
    ({"pruner": {"_target_": "optuna.pruners.MedianPruner", "warmup": 3}}, "pruner median"),
    ({"direction": "down"}, "bad direction 'down'"),
    ({"direction": ["minimize", "minimize"]}, "optimized_metric names 1 metric(s) and hydra.sweeper.direction 2"),
    ({"top": {"optimized_metric": "train_los"}}, "bad objective metric 'train_los'"),
    ({"top": {"optimized_metric": "val_accuracy"}, "direction": "maximize"}, "needs a validation split"),
    ({"top": {"optimized_metric": ["train_loss", "n_params"]}, "direction": ["minimize", "minimize"]},
     "cannot prune"),
    ({"n_trials": 0}, "n_trials=0"),
    ({"n_jobs": 2, "workers": 3}, "workers=3 and n_jobs=2 say the same thing"),
    ({"trials": 5}, "unknown hydra.sweeper key trials"),
    ({"top": {"defaults": [{"/experiment": "nope"}, {"override /hydra/sweeper": "mlplab"}]}},
     "Could not find 'experiment/nope'"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_FILES)
def test_bad_sweep_file_is_rejected_with_a_clear_message(tmp_path, changes, message):
    with pytest.raises(ConfigError) as caught:
        load_spec(write_sweep(tmp_path, **changes))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_shipped_sweeps_are_valid():
    names = {p.stem for p in SWEEPS.glob("*.yaml")}
    assert {"xor_lr_activation", "iris_lr_activation", "iris_optimizer_init", "iris_accuracy_vs_size"} <= names
    for path in SWEEPS.glob("*.yaml"):
        spec = load_spec(path)
        assert spec.n_trials and spec.n_trials >= 30
    assert load_spec(SWEEPS / "iris_accuracy_vs_size.yaml").directions == ["maximize", "minimize"]


def test_bad_sweep_file_on_the_command_line_runs_no_trial(tmp_path):
    path = write_sweep(tmp_path, sampler="bogus")
    result = run_cli("src.sweep", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr_lines == [
        "mlplab: error: sweep sweep.yaml: unknown sampler 'bogus'; choose one of tpe, random, cmaes, qmc, grid, nsgaii"
    ]
    assert not (tmp_path / "mlruns").exists()
    result = run_cli("src.sweep", str(SWEEPS / "xor_lr_activation.yaml"), "workers=0", cwd=tmp_path)
    assert result.stderr_lines == ["mlplab: error: bad value workers=0: expected an integer >= 1"]


@pytest.mark.parametrize(("asked", "expected"), [(None, "1 False"), ("workers=2", "2 True")])
def test_workers_start_before_the_command_imports_mlflow_or_tensorflow(tmp_path, asked, expected):
    # A worker's imports are the longest step before the first trial: they overlap
    # the parent's MLflow import, its set-up and its baselines only if the workers
    # start before those (about 1.5 s earlier than after MLflow's import). A lone
    # worker starts before the sweep file is checked (Hydra's import and the
    # composing, 0.6 s); several, from a fork server that imports TensorFlow at
    # once, after it, so that a bad file leaves nothing in the folder.
    code = (
        "import sys\nimport src.sweeps.workers as workers\n"
        "def start(count, log_paths=None):\n"
        "    print(count, *(name in sys.modules for name in ('hydra', 'mlflow', 'tensorflow')))\n"
        "    raise SystemExit(0)\n"
        "workers.start_workers = start\n"
        "from src.sweep import main\n"
        f"main({[str(SWEEPS / 'xor_lr_activation.yaml'), *([asked] if asked else [])]!r})"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=command_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == [*expected.split(), "False", "False"], result.stderr


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def iris_sweep(tmp_path_factory, tracking_uri):
    """The Iris sweep, shortened: 10 trials of 30 epochs, one worker."""
    cwd = tmp_path_factory.mktemp("iris_sweep")
    result = run_cli(
        "src.sweep", str(SWEEPS / "iris_lr_activation.yaml"), "n_trials=10", "trainer.epochs=30",
        "experiment_name=sweep_iris", cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    return cwd, result, load_study(cwd, "iris_lr_activation")


def test_sweep_reaches_n_trials_and_reports_progress(iris_sweep):
    _, result, study = iris_sweep
    assert len(counted_trials(study)) == 10
    out = result.stdout
    assert re.search(r"^trial 1/10 ", out, re.M) and re.search(r"^trial 10/10 ", out, re.M)
    assert "best " in out and "pruned " in out and "failed " in out
    assert "Top trials:" in out and "Best config:" in out
    assert "Traceback" not in result.stderr


def test_pruning_prunes_and_saves_epochs(iris_sweep, client):
    _, _, study = iris_sweep
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned
    assert all(t.user_attrs["epochs_trained"] < 30 for t in pruned)
    parent = next(r for r in runs_of(client, "sweep_iris") if r.info.run_name == "sweep-iris_lr_activation")
    assert parent.data.metrics["n_pruned"] == len(pruned)
    assert 0 < parent.data.metrics["epochs_saved_share"] < 1


def test_sweep_run_with_one_child_per_trial(iris_sweep, client):
    _, _, study = iris_sweep
    runs = runs_of(client, "sweep_iris")
    parent = next(r for r in runs if r.info.run_name == "sweep-iris_lr_activation")
    trials = {r.info.run_name: r for r in runs if r.info.run_name.startswith("trial-")}
    assert sorted(trials) == sorted(f"trial-{t.number}" for t in study.trials)
    for trial in study.trials:
        run = trials[f"trial-{trial.number}"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.data.tags["optuna.trial"] == str(trial.number)
        assert float(run.data.params["sampled.optimizer.learning_rate"]) == pytest.approx(
            trial.params["optimizer.learning_rate"]
        )
        assert run.data.params["optimizer.learning_rate"] == run.data.params["sampled.optimizer.learning_rate"]
        assert run.data.params["data.val_size"] == "0.2"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        # per epoch, plus the final evaluation at the last epoch's step
        assert sorted({m.step for m in history}) == list(range(1, trial.user_attrs["epochs_trained"] + 1))
    assert all(r.info.status != "RUNNING" for r in runs)
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.tags["best_trial"] == str(study.best_trial.number)
    assert parent.data.metrics["n_complete"] + parent.data.metrics["n_pruned"] == 10
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_config.yaml", "trials.csv", "top_trials.txt", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {f"plots/{p}.png" for p in ("optimization_history", "param_importances", "parallel_coordinate", "slice")} <= plots
    baselines = [r for r in runs if r.info.run_name in ("sklearn_perceptron", "sklearn_mlp")]
    assert len(baselines) == 2  # once per sweep, not per trial
    for trial_run in trials.values():  # trials draw no plots; the sweep run has Optuna's
        assert not client.list_artifacts(trial_run.info.run_id, "plots")
    assert study.metric_names == ["val_accuracy"]  # what the dashboard shows, not "Objective 0"


def test_best_config_reruns_through_train_and_reproduces_the_value(iris_sweep, client):
    cwd, result, study = iris_sweep
    command = re.search(r"^Run it:\s+python -m src\.train (.+)$", result.stdout, re.M).group(1).split()
    rerun = run_cli("src.train", *command, cwd=cwd)
    assert rerun.returncode == 0, rerun.stderr
    keras = [r for r in runs_of(client, "sweep_iris") if r.info.run_name == "keras_mlp"]
    assert len(keras) == 1
    assert keras[0].data.metrics["val_accuracy"] == pytest.approx(study.best_value, abs=1e-9)
    assert "sklearn_mlp" in rerun.stdout  # the baselines come back for the comparison
    # The printed command registers the model, the champion on the sweep's objective.
    assert "Registered model 'sweep_iris' version 1: models:/sweep_iris/1" in rerun.stderr + rerun.stdout
    champion = client.get_model_version_by_alias("sweep_iris", "champion")
    assert int(champion.version) == 1 and champion.run_id == keras[0].info.run_id


@pytest.mark.parametrize("elsewhere, says", [
    ("tracking.uri=sqlite:///elsewhere.db", "is not in the tracking store sqlite:///elsewhere.db: use the tracking.uri"),
    ("experiment_name=sweep_other", "is in experiment 'sweep_iris', not 'sweep_other': use experiment_name=sweep_iris"),
])
def test_resuming_a_study_with_its_mlflow_run_elsewhere_says_so(iris_sweep, client, elsewhere, says):
    cwd, _, study = iris_sweep
    result = run_cli(
        "src.sweep", str(SWEEPS / "iris_lr_activation.yaml"), "n_trials=12", "trainer.epochs=30",
        "experiment_name=sweep_iris", elsewhere, cwd=cwd,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr_lines
    assert line.startswith("mlplab: error: study iris_lr_activation's MLflow run ") and says in line
    assert line.endswith(", or a new study_name")
    assert len(load_study(cwd, "iris_lr_activation").trials) == len(study.trials)  # no trial ran
    assert client.get_experiment_by_name("sweep_other") is None


def test_resuming_a_study_whose_mlflow_run_was_deleted_says_how_to_restore_it(client, tracking_uri):
    from src.sweep import _check_sweep_run

    tracking.connect(tracking_uri)
    deleted = client.create_run(tracking.experiment_id("sweep_deleted", tracking_uri), run_name="sweep-s").info.run_id
    client.set_terminated(deleted, "KILLED")
    client.delete_run(deleted)
    study = optuna.create_study()
    study.set_user_attr(RUN_ID_ATTR, deleted)
    with pytest.raises(ConfigError, match=rf"study s's MLflow run {deleted} was deleted from {re.escape(tracking_uri)}: "
                                          rf"restore it \(mlflow runs restore --run-id {deleted}, "):
        _check_sweep_run(study, "s", "sweep_deleted")


def test_two_workers_share_one_study(tmp_path, client):
    # A temp folder of its own, with a short path: the workers' fork server listens
    # on a Unix socket in it (see the next test for a long one). On its own: a warm
    # process's job forks its workers itself (tests/test_warm.py).
    with tempfile.TemporaryDirectory(prefix="mlplab-") as short:
        temp = Path(short)
        result = run_cli(
            "src.sweep", str(SWEEPS / "xor_lr_activation.yaml"), "n_trials=6", "workers=2",
            "trainer.epochs=10", "experiment_name=sweep_two_workers", cwd=tmp_path, env=cold_env(TMPDIR=short),
        )
        assert result.returncode == 0, result.stderr
        # No worker leaves TensorFlow's AutoGraph files behind (the fork server's socket folder goes too).
        assert not list(temp.iterdir()), list(temp.iterdir())
    # TensorFlow was imported once for both: each import writes oneDNN's notice (with
    # its process id) to the command's TensorFlow log, and the workers were forked after it.
    log = (tmp_path / "mlruns" / "logs" / "tensorflow.log").read_text()
    importers = set(re.findall(r"^I0000 \S+ +(\d+) port\.cc:\d+\] oneDNN custom operations are on", log, re.M))
    assert len(importers) == 1, log
    study = load_study(tmp_path, "xor_lr_activation")
    assert 6 <= len(counted_trials(study)) <= 7  # the two may race at the end
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2
    runs = [r for r in runs_of(client, "sweep_two_workers") if r.info.run_name.startswith("trial-")]
    numbers = [int(r.data.tags["optuna.trial"]) for r in runs]
    assert sorted(numbers) == sorted(t.number for t in study.trials)  # none lost, none twice
    assert all(r.info.status != "RUNNING" for r in runs)


def test_workers_are_spawned_where_the_fork_server_cannot_listen(tmp_path):
    # A temp folder whose path is too long for a Unix socket: the fork server cannot
    # start, and each of the workers is spawned and imports for itself, as one is.
    deep = tmp_path / ("t" * 100)
    deep.mkdir()
    code = (
        "from src.sweeps.workers import start_workers, stop_workers\n"
        "workers = start_workers(2)\n"
        "print(*(f'{type(w.process).__name__}:{w.started}' for w in workers))\n"
        "stop_workers(workers)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=command_env(TMPDIR=str(deep)),
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["SpawnProcess:True", "SpawnProcess:True"], result.stderr


def test_a_sweep_that_fails_before_its_trials_leaves_no_process_behind(tmp_path):
    (tmp_path / "garbage.db").write_text("not a database\n")
    command = start_cli("src.sweep", str(SWEEPS / "xor_lr_activation.yaml"), "workers=2",
                        "tracking.uri=sqlite:///garbage.db", cwd=tmp_path)
    command.wait(120)
    # The workers' fork server goes with the command, not once its imports are done
    # (seconds later, holding the command's output open: a pipe would wait for it).
    deadline = time.monotonic() + 3
    while (left := _processes_in(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left
    result = finish(command)
    assert result.returncode == 1
    assert len(result.stderr_lines) == 1 and "garbage.db" in result.stderr_lines[0], result.stderr


def test_a_worker_that_cannot_import_stops_the_sweep_with_its_reason(tmp_path, client):
    # A broken TensorFlow install, which only the worker imports: it dies on its way
    # to its job. The command says why and where its traceback is, and fails.
    fake = tmp_path / "broken" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("this tensorflow is broken")\n')
    result = run_cli(
        "src.sweep", str(SWEEPS / "xor_lr_activation.yaml"), "n_trials=2", "baselines=none",
        "experiment_name=sweep_broken_worker", cwd=tmp_path,
        env=cold_env(PYTHONPATH=f"{fake.parent}{os.pathsep}{ROOT}"),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    reason = "worker 0 exited with code 1 (ImportError: this tensorflow is broken); see "
    # The warning when it died, the error at the end; no library's warnings about plots without trials.
    assert len(result.stderr_lines) == 2 and reason in result.stderr_lines[0], result.stderr
    error = re.fullmatch(rf"mlplab: error: {re.escape(reason)}(\S+\.log); the study keeps .*", result.stderr_lines[1])
    assert error, result.stderr
    log = (tmp_path / error.group(1)).read_text()
    assert "Traceback" in log and "this tensorflow is broken" in log
    assert all(r.info.status != "RUNNING" for r in runs_of(client, "sweep_broken_worker"))


def _processes_in(folder: Path) -> list[str]:
    """The command lines of the processes whose working folder is ``folder``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == str(folder):
                found.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "))
        except OSError:
            continue
    return found


def _start_sweep(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return start_cli("src.sweep", str(SWEEPS / "xor_lr_activation.yaml"), *args, cwd=cwd, env=env)


def _wait_for(predicate, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except (KeyError, ValueError, FileNotFoundError):
            pass  # the study does not exist yet
        time.sleep(0.5)
    raise AssertionError("timed out waiting for the sweep")


def _training_after_one_complete(cwd: Path, name: str) -> bool:
    """A trial has completed and the next one is training (its MLflow run is open)."""
    trials = load_study(cwd, name).get_trials(deepcopy=False)
    return any(t.state == TrialState.COMPLETE for t in trials) and any(
        t.state == TrialState.RUNNING and RUN_ID_ATTR in t.user_attrs for t in trials
    )


def test_resume_after_sigkill_loses_nothing(tmp_path, client):
    # keras fit's ~25 ms an epoch: a trial lasts ~2 s, long enough to be caught mid-training
    args = ("n_trials=2", "trainer.epochs=80", "trainer.engine=fit", "experiment_name=sweep_sigkill")
    # On its own: a warm process would outlive the kill and interrupt the job gracefully.
    process = _start_sweep(tmp_path, *args, env=cold_env())
    _wait_for(lambda: _training_after_one_complete(tmp_path, "xor_lr_activation"))
    os.killpg(process.pid, signal.SIGKILL)  # the sweep and its worker die mid-trial
    process.wait(30)
    before = load_study(tmp_path, "xor_lr_activation")
    finished = {t.number: t.value for t in before.trials if t.state == TrialState.COMPLETE}
    killed = [t.number for t in before.trials if t.state == TrialState.RUNNING]
    assert finished and killed

    result = run_cli("src.sweep", str(SWEEPS / "xor_lr_activation.yaml"), *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "marked failed and queued again" in result.stdout
    study = load_study(tmp_path, "xor_lr_activation")
    assert len(counted_trials(study)) == 2
    for number, value in finished.items():
        assert study.trials[number].state == TrialState.COMPLETE and study.trials[number].value == value
    for number in killed:
        assert study.trials[number].state == TrialState.FAIL
        retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
        assert retries and retries[0].params == study.trials[number].params
    runs = runs_of(client, "sweep_sigkill")
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    killed_runs = [r for r in runs if r.info.run_name == f"trial-{killed[0]}"]
    assert killed_runs[0].info.status == "FAILED"


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, client):
    process = _start_sweep(tmp_path, "n_trials=3", "trainer.epochs=80", "trainer.engine=fit",
                           "experiment_name=sweep_ctrl_c")
    _wait_for(lambda: _training_after_one_complete(tmp_path, "xor_lr_activation"))
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole group
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert "Resume with: python -m src.sweep" in stderr
    study = load_study(tmp_path, "xor_lr_activation")
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert [t for t in study.trials if t.state == TrialState.COMPLETE]
    runs = runs_of(client, "sweep_ctrl_c")
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    assert next(r for r in runs if r.info.run_name == "sweep-xor_lr_activation").info.status == "KILLED"


def test_stale_heartbeat_fails_the_trial_and_retries_it(tmp_path):
    # The heartbeat is an RDB study's recovery (machines cannot see each other's processes).
    stale = []
    storage = open_storage(
        f"sqlite:///{tmp_path / 'study.db'}", "hb", heartbeat_interval=1, heartbeat_grace=1,
        on_stale=lambda study, trial: stale.append(trial.number),
    )
    study = optuna.create_study(study_name="hb", storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)  # past the grace period, with no beat since
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == TrialState.FAIL
    assert stale == [0]
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert waiting and waiting[0].params == study.trials[0].params


def test_one_recovery_per_storage_kind():
    from src.sweeps.storage import recovers_by_heartbeat

    # a journal's workers are processes on this machine; an RDB study's may be anywhere
    assert not recovers_by_heartbeat("mlruns/optuna/x.journal") and not recovers_by_heartbeat(None)
    assert recovers_by_heartbeat("postgresql://u@host/db") and recovers_by_heartbeat("sqlite:///x.db")


def test_multi_objective_sweep_gives_a_pareto_front(tmp_path, client):
    result = run_cli(
        "src.sweep", str(SWEEPS / "iris_accuracy_vs_size.yaml"), "n_trials=4", "trainer.epochs=5",
        "baselines=none", "experiment_name=sweep_pareto", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Pareto front:" in result.stdout
    study = load_study(tmp_path, "iris_accuracy_vs_size")
    assert len(study.directions) == 2 and study.best_trials
    parent = next(r for r in runs_of(client, "sweep_pareto") if r.info.run_name.startswith("sweep-"))
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/pareto_front.png" in plots


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "qmc", "grid", "nsgaii"])
@pytest.mark.parametrize("pruner", ["median", "hyperband", "successive_halving", "none"])
def test_every_sampler_and_pruner_builds(tmp_path, sampler, pruner):
    from src.sweeps.study import make_pruner, make_sampler

    params = {"trainer.batch_size": "range(1, 5)"}
    if sampler != "grid":
        params["optimizer.learning_rate"] = LR
    spec = load_spec(write_sweep(tmp_path, params=params, sampler={"name": sampler, "seed": 0}, pruner=pruner))
    assert type(make_sampler(spec)).__name__.lower().startswith(sampler[:3])
    assert make_pruner(spec, epochs=50) is not None


def test_a_dead_workers_trial_is_retried_even_when_its_run_cannot_be_closed(tmp_path, monkeypatch):
    from src.sweeps import trial_runs
    from src.sweeps import workers

    storage = open_storage(str(tmp_path / "dead.journal"), "dead", heartbeat_interval=10, heartbeat_grace=30)
    study = optuna.create_study(study_name="dead", storage=storage)
    running = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    running.set_user_attr(trial_runs.WORKER_ATTR, trial_runs.worker_id(999_999))

    def store_down(*args, **kwargs):
        raise OSError("the tracking server is gone")

    monkeypatch.setattr(trial_runs, "close_trial_run", store_down)
    assert workers.fail_trials_of(study, 999_999, "worker died", retry=True) == [running.number]
    trials = study.get_trials(deepcopy=False)
    assert trials[running.number].state == TrialState.FAIL
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert len(queued) == 1 and queued[0].params == running.params


def test_reconcile_makes_mlflow_agree_with_the_study_and_writes_nothing_twice(tmp_path, client, tracking_uri):
    from mlflow.entities import Metric

    from src import tracking
    from src.sweeps import trial_runs
    from src.sweeps.storage import retry_callback

    tracking.connect(tracking_uri)
    experiment = tracking.experiment_id("reconcile", tracking_uri)
    sweep_run = client.create_run(experiment, run_name="sweep-r").info.run_id
    journal = optuna.storages.journal.JournalFileBackend(str(tmp_path / "r.journal"))
    study = optuna.create_study(study_name="r", storage=optuna.storages.JournalStorage(journal))
    space = {"lr": optuna.distributions.FloatDistribution(0, 1)}

    def trial_run(number: int, state: str, status: str | None) -> str:
        run = client.create_run(experiment, run_name=f"trial-{number}", tags={
            "mlflow.parentRunId": sweep_run, "optuna.study": "r", "optuna.trial": str(number), "optuna.state": state})
        if status:
            client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    left_running = study.ask(space)  # #0: training done, then the store failed: COMPLETE, run RUNNING
    left_running.set_user_attr("metrics", {"train_loss": 0.25, "train_accuracy": 1.0})
    left_running.set_user_attr(RUN_ID_ATTR, trial_run(0, "RUNNING", None))
    study.tell(left_running, 0.25)
    lost = study.ask(space)  # #1: its run could not even be created: FAIL, no run
    lost.set_user_attr("fail_reason", "tracking failed: the MLflow tracking store ... failed: Connection refused")
    study.tell(lost, state=TrialState.FAIL)
    fine = study.ask(space)  # #2: already in line
    fine_run = trial_run(2, "COMPLETE", None)
    client.log_batch(fine_run, metrics=[Metric("objective.train_loss", 0.5, 0, 0)])
    client.set_terminated(fine_run, "FINISHED")
    fine.set_user_attr(RUN_ID_ATTR, fine_run)
    study.tell(fine, 0.5)
    killed = study.ask(space)  # #3: pruned in its run, then its worker was killed: FAIL in the study
    trial_run(3, "PRUNED", "FINISHED")
    study.tell(killed, state=TrialState.FAIL)
    twice = study.ask(space)  # #4: two runs (two commands wrote one each)
    first, second = sorted([trial_run(4, "COMPLETE", "FINISHED"), trial_run(4, "COMPLETE", "FINISHED")])
    study.tell(twice, 0.75)
    retry_callback()(study, study.trials[1])  # #5, waiting: not finished, left alone

    done = trial_runs.reconcile(study, experiment, sweep_run, ["train_loss"])
    assert (sorted(done.closed), done.written, done.removed) == ([0, 3, 4], [1], [4])
    runs = {r.info.run_name: r for r in client.search_runs([experiment], "tags.`optuna.study` = 'r'")}
    assert sorted(runs) == ["trial-0", "trial-1", "trial-2", "trial-3", "trial-4"]
    assert runs["trial-0"].info.status == "FINISHED" and runs["trial-0"].data.tags["optuna.state"] == "COMPLETE"
    assert runs["trial-0"].data.metrics == {"train_loss": 0.25, "train_accuracy": 1.0, "objective.train_loss": 0.25}
    assert runs["trial-1"].info.status == "FAILED"
    assert runs["trial-1"].data.tags["mlflow.parentRunId"] == sweep_run
    assert runs["trial-1"].data.params == {"sampled.lr": str(study.trials[1].params["lr"])}
    assert runs["trial-1"].data.tags["failure_reason"].endswith("Connection refused; queued again as #5")
    assert runs["trial-3"].info.status == "FAILED" and runs["trial-3"].data.tags["optuna.state"] == "FAIL"
    assert runs["trial-4"].info.run_id == first  # every process keeps the same one
    assert client.get_run(second).info.lifecycle_stage == "deleted"
    assert "reconciled" not in runs["trial-2"].data.tags  # a run in line is not touched
    assert not trial_runs.reconcile(study, experiment, sweep_run, ["train_loss"])  # nothing written twice
    assert len(client.get_metric_history(runs["trial-0"].info.run_id, "objective.train_loss")) == 1
    client.set_terminated(sweep_run, "FINISHED")


def test_reconcile_leaves_a_trial_to_the_command_that_deleted_its_run(tmp_path, client, tracking_uri, monkeypatch):
    # Two commands reconcile at once and each writes a run for a trial that had none;
    # the one that sees both keeps the smaller id and deletes the other, possibly
    # while this one still writes it. This one then leaves the trial to that one.
    from mlflow.tracking import MlflowClient

    from src import tracking
    from src.sweeps import trial_runs

    tracking.connect(tracking_uri)
    experiment = tracking.experiment_id("reconcile_race", tracking_uri)
    sweep_run = client.create_run(experiment, run_name="sweep-race").info.run_id
    journal = optuna.storages.journal.JournalFileBackend(str(tmp_path / "race.journal"))
    study = optuna.create_study(study_name="race", storage=optuna.storages.JournalStorage(journal))
    lost = study.ask({"lr": optuna.distributions.FloatDistribution(0, 1)})  # its run was never created
    lost.set_user_attr("metrics", {"train_loss": 0.25})
    study.tell(lost, 0.25)

    log_batch = MlflowClient.log_batch

    def deleted_by_the_other_command(self, run_id, *args, **kwargs):
        MlflowClient.delete_run(self, run_id)
        return log_batch(self, run_id, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", deleted_by_the_other_command)
    done = trial_runs.reconcile(study, experiment, sweep_run, ["train_loss"])
    assert not done  # nothing this command could keep
    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    # (here the other command keeps its own run; in this test the next pass writes one)
    assert trial_runs.reconcile(study, experiment, sweep_run, ["train_loss"]).written == [0]
    runs = client.search_runs([experiment], "tags.`optuna.study` = 'race'")
    assert [(r.info.status, r.data.metrics["objective.train_loss"]) for r in runs] == [("FINISHED", 0.25)]
    client.set_terminated(sweep_run, "FINISHED")
    # The run deleted under this command stays RUNNING in the trash (MLflow changes no
    # deleted run). It is the other command's doing, which this test only played, and
    # the store is shared with later tests (test_tracking's test_no_run_is_left_running).
    for deleted in client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY):
        client.restore_run(deleted.info.run_id)
        client.set_terminated(deleted.info.run_id, "KILLED")
        client.delete_run(deleted.info.run_id)


def test_a_sweep_without_a_complete_trial_still_summarizes():
    from src.sweeps.summary import top_trials_table

    spec = load_spec(SWEEPS / "xor_lr_activation.yaml")
    study = optuna.create_study(direction="minimize")
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    table = top_trials_table(study, spec)  # every trial failed: the header, no crash
    assert table.splitlines()[0].split() == ["trial", "train_loss", "optimizer.learning_rate", "model.activation"]
    assert len(table.splitlines()) == 2
