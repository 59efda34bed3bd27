"""The main job trains its baselines in a second process (``src/baseline_worker.py``)
while it imports TensorFlow: through the command a user types, the same results
and output as one process gives, and every run ended when it is interrupted or a
baseline fails."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import threading
import time
import weakref
from pathlib import Path

import pytest

from src.baseline_worker import BaselineWorker
from src.config import compose
from src.errors import MlplabError
from src.training import run
from tests.conftest import cold_env, finish, run_cli, runs_by_name, start_cli

MODELS = ["keras_mlp", "sklearn_perceptron", "sklearn_mlp"]


def _with_the_worker() -> dict[str, str]:
    # A busy machine (this suite's) would train them in one process, and so would a
    # warm process (TensorFlow imported already: nothing left to overlap).
    return cold_env(MLPLAB_BASELINE_WORKER="1")


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def _gone(pids: set[int], within: float = 15) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        alive = set()
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                        alive.add(pid)
            except OSError:
                pass
        if not alive:
            return True
        time.sleep(0.2)
    return False


def test_the_command_gives_what_one_process_gives(tmp_path, client):
    overrides = ["+experiment=iris", "tracking.log_models=false", "tracking.plots=false"]
    result = run_cli("src.train", *overrides, "experiment_name=worker_cli", cwd=tmp_path, env=_with_the_worker())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    in_process = run(compose([*overrides, "experiment_name=worker_in_process"])).metrics

    runs = runs_by_name(client, "worker_cli")
    assert sorted(runs) == sorted(["parent", *MODELS])
    assert all(r.info.status == "FINISHED" for r in runs.values())
    for name in MODELS:
        for key, value in in_process[name].items():
            if key != "fit_seconds":
                assert runs[name].data.metrics[key] == pytest.approx(value, rel=1e-5), (name, key)
    # The baselines trained beside the network's process, not after it ...
    assert runs["sklearn_perceptron"].info.start_time < runs["keras_mlp"].info.start_time
    # ... and their lines still follow the network's, as one process prints them.
    lines = result.stdout.splitlines()

    def at(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert at("keras_mlp: done in") < at("sklearn_perceptron: training on") < at("sklearn_mlp: done in")
    table = lines[at("model "):]
    assert [line.split()[0] for line in table[2:5]] == MODELS


def test_a_failing_baseline_is_one_line_and_ends_its_runs(tmp_path, client):
    result = run_cli("src.train", "+experiment=xor", "baselines.sklearn_mlp.max_iter=-1", "tracking.log_models=false",
                     "experiment_name=worker_bad_baseline", cwd=tmp_path, env=_with_the_worker())
    assert result.returncode == 2
    assert result.stderr_lines == [
        next(line for line in result.stderr_lines if line.startswith("mlplab: error: bad baseline parameter: "))
    ]
    assert "max_iter" in result.stderr_lines[0]
    runs = runs_by_name(client, "worker_bad_baseline")
    assert {name: r.info.status for name, r in runs.items()} == {
        "parent": "FAILED", "keras_mlp": "FINISHED", "sklearn_perceptron": "FINISHED", "sklearn_mlp": "FAILED",
    }
    assert "max_iter" in runs["sklearn_mlp"].data.tags["failure_reason"]


def test_ctrl_c_ends_every_run_and_the_worker(tmp_path, client):
    # An MLP baseline that trains for minutes: Ctrl-C comes while it trains in the worker.
    slow = ["baselines.sklearn_mlp.max_iter=1000000", "+baselines.sklearn_mlp.tol=0",
            "+baselines.sklearn_mlp.n_iter_no_change=1000000"]
    process = start_cli("src.train", "+experiment=iris", *slow, "experiment_name=worker_ctrl_c", cwd=tmp_path,
                        env=_with_the_worker())
    try:
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:
            experiment = client.get_experiment_by_name("worker_ctrl_c")
            if experiment and any(r.info.run_name == "sklearn_mlp" and r.info.status == "RUNNING"
                                  for r in client.search_runs([experiment.experiment_id])):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the MLP baseline never started training")
        workers = _children(process.pid)
        assert workers
        process.send_signal(signal.SIGINT)
        result = finish(process, timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert result.returncode == 130
    assert result.stderr_lines[-1] == "mlplab: interrupted; the MLflow runs were ended as KILLED"
    assert "Traceback" not in result.stderr
    assert _gone(workers)
    runs = runs_by_name(client, "worker_ctrl_c")
    statuses = {name: r.info.status for name, r in runs.items()}
    assert "RUNNING" not in statuses.values()
    assert statuses["parent"] == "KILLED"
    assert runs["parent"].data.tags["failure_reason"] == "interrupted (Ctrl-C)"
    # scikit-learn's MLPClassifier catches Ctrl-C itself and returns early; mlplab
    # raises it again, so the half-trained model is neither logged nor FINISHED.
    assert statuses["sklearn_mlp"] == "KILLED"


def test_ctrl_c_during_tensorflows_import_arrives_once_it_is_done():
    # The command imports TensorFlow while its baselines train, so a Ctrl-C often
    # lands inside the import, which it would leave half done (a model that
    # "cannot be built"); held, it arrives after the block as a KeyboardInterrupt.
    from src.errors import ctrl_c_held

    done = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # a signal handler runs between bytecodes: here, not after the block
            done.append(True)
    assert done == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _StoppedAsItReports(MlplabError):
    """Data that will not load, found by the command at the same moment: its
    stop (SIGTERM) arrives while the worker reports the same error."""

    def __str__(self) -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # a signal handler runs between bytecodes: here, inside the report
        return "data.path='nope.csv': no such file"


def _data_that_will_not_load(plain):
    raise _StoppedAsItReports()


def test_a_stop_while_the_worker_reports_its_error_prints_nothing(capfd):
    # CI once saw the worker's traceback under the command's one error line.
    worker = BaselineWorker(_data_that_will_not_load, {}, multiprocessing.get_context("fork"))
    worker.process.join(30)
    assert worker.process.exitcode == 1
    assert worker.connection.recv() == ("error", ("data.path='nope.csv': no such file", 1))
    assert capfd.readouterr().err == ""


def _exit_code_of_forked_worker(setup, within: float) -> int | None:
    """Runs ``setup`` in a forked baselines' worker; its exit code, or None if it
    was still running after ``within`` seconds (it is killed then)."""
    worker = BaselineWorker(setup, {}, multiprocessing.get_context("fork"))
    worker.process.join(within)
    if worker.process.is_alive():
        worker.process.kill()
        return None
    return worker.process.exitcode


def _stopped_inside_a_weakref_callback(plain):
    class Held:
        pass

    def collected(ref):
        os.kill(os.getpid(), signal.SIGTERM)  # the command's stop, landing inside the callback
        time.sleep(0.2)

    held = Held()
    ref = weakref.ref(held, collected)  # kept alive, so its callback runs
    del held
    time.sleep(30)  # the imports and training the stop must not wait for
    return ref


def test_a_stop_inside_a_garbage_collectors_callback_still_stops_the_worker(capfd):
    # A suite run once saw "Exception ignored in: <function WeakValueDictionary...remove>" and
    # its traceback: the stop had been swallowed there.
    assert _exit_code_of_forked_worker(_stopped_inside_a_weakref_callback, within=10) == 1
    assert capfd.readouterr().err == ""


def _logging_until_stopped(uri: str, stop_after: float):
    def setup(plain):
        from src import tracking

        experiment = tracking.open_experiment("stopped_mid_write", {"uri": uri})
        with tracking.run("writing", experiment=experiment) as tracked:
            threading.Timer(stop_after, os.kill, (os.getpid(), signal.SIGTERM)).start()  # the command's stop
            for step in itertools.count():
                tracked.log_metrics({f"m{i}": float(step) for i in range(50)}, step)

    return setup


def test_a_stop_during_a_store_write_still_ends_the_run(tmp_path, capfd):
    # CI once saw a worker's run left RUNNING under "database is locked" tracebacks:
    # stopped inside SQLite's statement, the worker then waited 20 s for its own lock.
    # Its stop now waits for the statement; most stops land in one while logging.
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for stop_after in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3):
        assert _exit_code_of_forked_worker(_logging_until_stopped(uri, stop_after), within=15) == 1
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("stopped_mid_write").experiment_id])
    assert len(runs) == 6
    assert {r.info.status for r in runs} == {"FAILED"}
    assert {r.data.tags["failure_reason"] for r in runs} == {"stopped: the command failed before this model's training ended"}
    assert capfd.readouterr().err == ""


def _stopped_inside_a_librarys_clean_up(uri: str):
    def setup(plain):
        from src import tracking

        experiment = tracking.open_experiment("stopped_in_clean_up", {"uri": uri})
        with tracking.run("saving", experiment=experiment):
            try:
                os.kill(os.getpid(), signal.SIGTERM)  # the command's stop, landing in a zip member's close
                time.sleep(5)
            finally:
                raise ValueError("Can't close the ZIP file while there is an open writing handle on it.")

    return setup


def test_a_librarys_error_over_a_stop_is_still_a_stop(tmp_path, capfd):
    # CI once saw the worker's traceback of that ValueError (skops saving a model
    # into a zip file) under the command's one error line.
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _exit_code_of_forked_worker(_stopped_inside_a_librarys_clean_up(uri), within=15) == 1
    assert capfd.readouterr().err == ""
    client = MlflowClient(uri)
    (stopped,) = client.search_runs([client.get_experiment_by_name("stopped_in_clean_up").experiment_id])
    assert stopped.info.status == "FAILED"
    assert stopped.data.tags["failure_reason"] == "stopped: the command failed before this model's training ended"
