"""Many machines, played by many processes on this one: sweeps sharing a study in a
real PostgreSQL server and logging to a real ``mlflow server`` on it, under faults.

The servers are Debian's PostgreSQL (a throw-away cluster on a loopback port) and
MLflow's own server. Without PostgreSQL these tests fail rather than skip:
``bash .ci/run`` installs it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from src.local_server import free_port
from tests.conftest import command_env, finish, run_cli, start_cli, write_sweep
from tests.services import PASSWORD, MlflowServer, Postgres



@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("servers")
    postgres = Postgres.start(("optuna", "mlflow"))
    server = MlflowServer.start(postgres.url("mlflow"), root / "artifacts", root / "mlflow.log")
    yield postgres, server
    server.stop()
    postgres.stop()


def sweep_file(tmp_path: Path, **changes) -> Path:
    """The XOR sweep with a heartbeat fit for a test (a dead machine noticed in seconds)."""
    return write_sweep(tmp_path, "xor_shared", heartbeat={"interval": 1, "grace": 6}, **changes)


def start_sweep(spec: Path, cwd: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m src.sweep`` as one machine would run it, in a process group of its own."""
    return start_cli("src.sweep", str(spec), *args, cwd=cwd, env=command_env(**(env or {})))


def study_of(postgres: Postgres, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=postgres.url("optuna"))


def runs_of(server: MlflowServer, experiment: str) -> list:
    client = MlflowClient(server.uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


def test_four_machines_share_one_study_and_one_sweep_run(servers, tmp_path):
    postgres, server = servers
    spec = sweep_file(tmp_path)
    args = [
        "study_name=shared40", "n_trials=40", "tracking=server", f"tracking.uri={server.uri}",
        "baselines=none", "trainer.epochs=30", "experiment_name=many_machines",
    ]
    machines = []
    for index in range(4):
        # Two put the password in the URL; two take it from the environment (PGPASSWORD).
        in_url = index % 2 == 0
        storage = f"storage={postgres.url('optuna', password=in_url)}"
        env = None if in_url else {"PGPASSWORD": PASSWORD}
        # The last two are two commands on one machine (one folder).
        machines.append(start_sweep(spec, tmp_path / f"machine-{min(index, 2)}", storage, *args, env=env))
    results = [finish(m) for m in machines]
    for index, result in enumerate(results):
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr
        assert "mlruns/optuna" not in result.stdout  # the shared study, not a local journal
        counts = [int(n) for n in re.findall(r"^trial (\d+)", result.stdout, re.MULTILINE)]
        assert counts and counts == sorted(counts)  # each terminal counts up, never back
    # Each command on the shared machine wrote its own worker log (named after the host
    # and the process that ran the sweep: the command, or its job in a warm process).
    logs = sorted((tmp_path / "machine-2" / "mlruns" / "sweeps" / "shared40" / "logs").glob("*-worker-0.log"))
    assert len(logs) == 2 and all(log.name.startswith(f"{socket.gethostname()}-") for log in logs), logs

    study = study_of(postgres, "shared40")
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert 40 <= len(finished) <= 43  # workers racing for the last trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.FAIL)]
    assert len({t.user_attrs["worker"] for t in trials}) == 4  # each machine ran trials

    runs = runs_of(server, "many_machines")
    sweep_runs = [r for r in runs if r.info.run_name == "sweep-shared40"]
    assert len(sweep_runs) == 1  # however many machines started it at once
    trial_runs = [r for r in runs if r.info.run_name.startswith("trial-")]
    names = [r.info.run_name for r in trial_runs]
    assert sorted(names) == sorted(f"trial-{t.number}" for t in trials)  # one per trial, none twice
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {sweep_runs[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:  # the password is in no param or tag
        assert PASSWORD not in repr(run.data.params) + repr(run.data.tags)
    config = MlflowClient(server.uri).download_artifacts(trial_runs[0].info.run_id, "config.yaml", str(tmp_path))
    assert PASSWORD not in Path(config).read_text()


def test_a_machine_killed_mid_trial_loses_nothing(servers, tmp_path):
    postgres, server = servers
    spec = sweep_file(tmp_path, pruner="none")
    args = [
        f"storage={postgres.url('optuna')}", "study_name=killed", "n_trials=16", "tracking=server",
        f"tracking.uri={server.uri}", "baselines=none", "experiment_name=killed_machine",
        # About 2 s a trial (per-sample steps, no XLA), so a kill lands mid-trial.
        "trainer.batch_size=1", "trainer.epochs=2000", "trainer.jit_compile=false",
    ]
    # On its own: a warm process would outlive the kill and interrupt the job gracefully.
    doomed = start_sweep(spec, tmp_path / "doomed", *args, env={"MLPLAB_WARM": "off"})

    def doomed_trials_just_started(trials: list) -> list:
        # A trial the doomed machine (its worker is a child of `doomed`) started just now
        # and whose run is open: a worker killed before its run opens leaves no run for
        # the survivor's heartbeat check to close (the sweep's end writes one instead).
        return [
            t for t in trials
            if t.state == TrialState.RUNNING and _is_child_of(t.user_attrs.get("worker", ""), doomed.pid)
            and "mlflow_run_id" in t.user_attrs and time.time() - t.datetime_start.timestamp() < 1.5
        ]

    # The survivor starts once the doomed machine trains: started together, a warm survivor
    # once finished 7 trials while the doomed one (cold) was still importing TensorFlow.
    deadline = time.monotonic() + 240
    while not doomed_trials_just_started(_trials_or_none(postgres, "killed")):
        assert time.monotonic() < deadline and doomed.poll() is None, "the doomed machine never ran a trial"
        time.sleep(0.2)
    survivor = start_sweep(spec, tmp_path / "survivor", *args)

    victim = None
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.2)
        with_study = _trials_or_none(postgres, "killed")
        done = [t for t in with_study if t.state == TrialState.COMPLETE]
        survivor_trains = any(
            not _is_child_of(t.user_attrs.get("worker", ""), doomed.pid) for t in with_study if t.user_attrs.get("worker")
        )
        # With at least 7 trials left for the survivor alone (about 14 s), the grace
        # (6 s) passes before its last trial: a sweep that ends sooner leaves the dead
        # machine's trial to the next command (a run once failed the test this way).
        assert len(done) <= 8, "the doomed machine ran no trial while the survivor trained"
        mine = doomed_trials_just_started(with_study)
        if survivor_trains and mine:
            victim = mine[0]
    assert victim is not None, "the doomed machine ran no trial to kill while the survivor trained"
    finished_before = {t.number for t in study_of(postgres, "killed").get_trials(states=(TrialState.COMPLETE,))}
    os.killpg(doomed.pid, signal.SIGKILL)  # the whole machine, at once
    doomed.wait(30)

    result = finish(survivor)
    assert result.returncode == 0, result.stderr
    study = study_of(postgres, "killed")
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    complete = {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert finished_before <= complete and len(complete) >= 16
    runs = {r.info.run_name: r for r in runs_of(server, "killed_machine")}
    assert runs[f"trial-{victim.number}"].info.status == "FAILED"  # closed by the survivor
    assert "no heartbeat" in runs[f"trial-{victim.number}"].data.tags["failure_reason"]


def _trials_or_none(postgres: Postgres, name: str) -> list:
    try:
        return study_of(postgres, name).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def _is_child_of(worker: str, parent_pid: int) -> bool:
    pid = worker.rpartition(":")[2]
    if not pid.isdigit():
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return int(stat.rsplit(")", 1)[1].split()[1]) == parent_pid


def test_unreachable_tracking_server_stops_before_any_training(servers, tmp_path):
    postgres, _ = servers
    closed = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_cli(
        "src.sweep", str(sweep_file(tmp_path)), f"storage={postgres.url('optuna')}", "study_name=no_server",
        "tracking=server", f"tracking.uri={closed}", cwd=tmp_path,
    )
    assert result.returncode == 1
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    assert line.startswith(f"mlplab: error: cannot open the MLflow tracking store {closed}: ")
    assert time.monotonic() - started < 60
    assert "no_server" not in optuna.get_all_study_names(postgres.url("optuna"))  # nothing created


def test_tracking_server_going_away_keeps_the_results(servers, tmp_path):
    postgres, _ = servers
    doomed = MlflowServer.start(postgres.url("mlflow"), tmp_path / "artifacts", tmp_path / "mlflow.log", workers=1)
    spec = sweep_file(tmp_path, pruner="none")
    sweep = start_sweep(
        spec, tmp_path / "machine", f"storage={postgres.url('optuna')}", "study_name=server_gone", "n_trials=200",
        "tracking=server", f"tracking.uri={doomed.uri}", "baselines=none", "trainer.epochs=200",
        "experiment_name=server_gone",
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if len([t for t in _trials_or_none(postgres, "server_gone") if t.state == TrialState.COMPLETE]) >= 3:
            break
    before = {t.number: t.value for t in study_of(postgres, "server_gone").get_trials(states=(TrialState.COMPLETE,))}
    assert len(before) >= 3
    doomed.stop()
    stopped = time.monotonic()

    result = finish(sweep, timeout=180)
    assert result.returncode != 0
    assert time.monotonic() - stopped < 150  # it says so instead of hanging
    assert f"the MLflow tracking store {doomed.uri} failed" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    after = {t.number: t.value for t in study_of(postgres, "server_gone").get_trials(states=(TrialState.COMPLETE,))}
    assert before.items() <= after.items()  # every result kept
    assert len(after) < 200


def test_after_a_tracking_fault_mlflow_agrees_with_the_study_again(servers, tmp_path):
    """The README's advice, followed: the tracking server stops mid-sweep, comes
    back, and the same commands are run again."""
    postgres, _ = servers
    log = tmp_path / "mlflow.log"
    server = MlflowServer.start(postgres.url("mlflow"), tmp_path / "artifacts", log, workers=1)
    spec = sweep_file(tmp_path, pruner="none")
    args = [
        f"storage={postgres.url('optuna')}", "study_name=fault", "n_trials=16", "tracking=server",
        f"tracking.uri={server.uri}", "baselines=none", "trainer.epochs=100", "experiment_name=fault",
    ]
    machines = [start_sweep(spec, tmp_path / f"machine-{i}", *args) for i in range(2)]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if len([t for t in _trials_or_none(postgres, "fault") if t.state == TrialState.COMPLETE]) >= 4:
            break
    server.stop()
    stopped = time.monotonic()
    exits = {}
    while len(exits) < len(machines) and time.monotonic() - stopped < 180:
        exits.update({i: time.monotonic() - stopped for i, m in enumerate(machines) if m.poll() is not None})
        time.sleep(0.1)
    for machine in machines:
        result = finish(machine, timeout=10)
        assert result.returncode == 1, result.stderr
        assert len(result.stderr_lines) == 1, result.stderr  # the error, once per command
        line = result.stderr_lines[0]
        assert line.startswith(f"mlplab: error: the MLflow tracking store {server.uri} failed: "), line
        assert line.endswith("run the same command again once it answers"), line
        assert len(line) < 250, line
    assert max(exits.values()) < 45, exits  # the README says about 10 s; room for a loaded machine
    fault = study_of(postgres, "fault").get_trials(deepcopy=False)
    lost = [t for t in fault if t.state == TrialState.FAIL and t.user_attrs.get("tracking_failed")]

    server = MlflowServer.start(postgres.url("mlflow"), tmp_path / "artifacts", log, workers=1,
                                port=int(server.uri.rpartition(":")[2]))
    try:
        again = [start_sweep(spec, tmp_path / f"machine-{i}", *args) for i in range(2)]
        results = [finish(m) for m in again]
        for result in results:
            assert result.returncode == 0, result.stderr
        assert any("MLflow brought in line with the study" in r.stdout for r in results)
        trials = study_of(postgres, "fault").get_trials(deepcopy=False)
        runs = [r for r in runs_of(server, "fault") if r.info.run_name.startswith("trial-")]
    finally:
        server.stop()
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    names = [r.info.run_name for r in runs]
    assert len(names) == len(set(names))  # no trial number has two runs
    by_name = {r.info.run_name: r for r in runs}
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            run = by_name[f"trial-{trial.number}"]
            assert run.info.status == "FINISHED"
            assert run.data.tags["optuna.state"] == "COMPLETE"
            assert run.data.metrics["objective.train_loss"] == pytest.approx(trial.value)
        elif trial.state == TrialState.FAIL:
            assert by_name[f"trial-{trial.number}"].info.status in ("FAILED", "KILLED")
    retried = {t.system_attrs.get("failed_trial"): t for t in trials}
    for trial in lost:  # every param set lost to the fault was run again
        retry = retried[trial.number]
        assert retry.params == trial.params and retry.state == TrialState.COMPLETE
    print(f"\nrecovery: {len(trials)} trials, {len(lost)} lost to tracking and retried, "
          f"{sum(t.state == TrialState.FAIL for t in trials)} FAIL; stopped after "
          f"{', '.join(f'{s:.1f} s' for s in sorted(exits.values()))}; "
          f"{sum('reconciled' in r.data.tags for r in runs)} runs reconciled")


def test_unreachable_postgres_is_named_with_the_password_hidden(tmp_path):
    port = free_port()
    url = f"postgresql://mlplab:{PASSWORD}@127.0.0.1:{port}/optuna"
    result = run_cli("src.sweep", str(sweep_file(tmp_path)), f"storage={url}", cwd=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    assert line.startswith(f"mlplab: error: cannot open study storage postgresql://mlplab:***@127.0.0.1:{port}/optuna: ")
    assert "127.0.0.1" in line.partition("/optuna: ")[2]  # the driver's own words name the host too
    assert PASSWORD not in result.stdout + result.stderr
