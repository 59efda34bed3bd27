"""The warm process (``python -m src.warm``): commands hand it their jobs, and a job
run there is the command run on its own: output, exit code, runs, Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from src.warm import wait_until_ready
from tests.conftest import ROOT, Warm, cold_env, command_env, finish, run_cli, runs_by_name, start_cli

XOR = ["+experiment=xor", "trainer.epochs=60", "tracking.log_models=false", "tracking.plots=false"]
# Long enough to be interrupted mid-training: per-sample steps on Iris.
LONG = ["+experiment=iris", "trainer.epochs=400", "trainer.batch_size=1", "trainer.jit_compile=false",
        "baselines=none", "tracking.log_models=false", "tracking.plots=false"]
# The same, beside an MLP baseline that trains for minutes (in a process forked from the job).
LONG_WITH_A_BASELINE = [
    *(o for o in LONG if o != "baselines=none"), "~baselines.sklearn_perceptron",
    "baselines.sklearn_mlp.max_iter=1000000", "+baselines.sklearn_mlp.tol=0",
    "+baselines.sklearn_mlp.n_iter_no_change=1000000",
]


@pytest.fixture
def warm_log(warm_process: Warm) -> Path:
    """The tests' warm process's log, once it is ready."""
    wait_until_ready(warm_process.process, warm_process.log)
    return warm_process.log


def _jobs_in(log: Path, folder: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.endswith(f"(in {folder})")]


def test_a_warm_job_gives_what_the_command_gives_on_its_own(warm_log, tmp_path, client):
    folders = {way: tmp_path / way for way in ("warm", "cold")}
    started = {
        way: start_cli("src.train", *XOR, f"experiment_name=xor_{way}", cwd=folders[way],
                       env=cold_env() if way == "cold" else None)
        for way in folders
    }
    results = {way: finish(process) for way, process in started.items()}
    for way, result in results.items():
        assert result.returncode == 0, (way, result.stderr)
        assert result.stderr_lines == [], (way, result.stderr)
    assert len(_jobs_in(warm_log, folders["warm"])) == 1
    assert _jobs_in(warm_log, folders["cold"]) == []

    def table(stdout: str) -> list[list[str]]:  # without fit_seconds, a time
        rows = stdout[stdout.index("model "):stdout.index("Logged to")].split("\n")
        return [row.split()[:-1] for row in rows if row.strip()]

    assert table(results["warm"].stdout) == table(results["cold"].stdout)
    # The same seed, the same numbers: every model's metrics, epoch by epoch.
    runs = {way: runs_by_name(client, f"xor_{way}") for way in folders}
    assert runs["warm"].keys() == runs["cold"].keys()
    for name, cold_run in runs["cold"].items():
        warm_run = runs["warm"][name]
        for key in cold_run.data.metrics:
            if "seconds" in key:
                continue
            history = [m.value for m in client.get_metric_history(cold_run.info.run_id, key)]
            assert [m.value for m in client.get_metric_history(warm_run.info.run_id, key)] == history, (name, key)
        assert {k: v for k, v in warm_run.data.params.items() if k != "experiment_name"} == {
            k: v for k, v in cold_run.data.params.items() if k != "experiment_name"}
    # The run happened in the command's folder, as its own would.
    assert (folders["warm"] / "mlruns" / "hydra").is_dir()


def _until_training(client, experiment: str, model: str = "keras_mlp", timeout: float = 120) -> None:
    """Waits until ``model``'s run is open: the network's once it reported an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get_experiment_by_name(experiment)
        if found is not None and any(
            run.data.metrics or model != "keras_mlp"
            for run in client.search_runs([found.experiment_id]) if run.info.run_name == model
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"{experiment}: {model} never started training")


def test_ctrl_c_reaches_a_warm_job_and_its_baselines(warm_log, tmp_path, client):
    process = start_cli("src.train", *LONG_WITH_A_BASELINE, "experiment_name=warm_ctrl_c", cwd=tmp_path)
    _until_training(client, "warm_ctrl_c")
    assert runs_by_name(client, "warm_ctrl_c")["sklearn_mlp"].info.status == "RUNNING"
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the command's group
    result = finish(process, timeout=60)
    assert result.returncode == 130, result.stderr
    assert result.stderr_lines[-1] == "mlplab: interrupted; the MLflow runs were ended as KILLED"
    assert "Traceback" not in result.stderr
    assert len(_jobs_in(warm_log, tmp_path)) == 1
    assert {run.info.status for run in runs_by_name(client, "warm_ctrl_c").values()} == {"KILLED"}


def test_ctrl_c_during_a_baselines_fit_stops_the_command(warm_log, tmp_path, client):
    # In the job's own process, after the network: scikit-learn's MLP catches a Ctrl-C
    # mid-fit and returns; the command must stop, not log that model and go on.
    args = [*LONG_WITH_A_BASELINE, "trainer.epochs=5", "experiment_name=warm_ctrl_c_fit"]
    process = start_cli("src.train", *args, cwd=tmp_path, env=command_env(MLPLAB_BASELINE_WORKER="0"))
    _until_training(client, "warm_ctrl_c_fit", "sklearn_mlp")
    time.sleep(1.0)  # well into its endless fit
    os.killpg(process.pid, signal.SIGINT)
    result = finish(process, timeout=60)
    assert result.returncode == 130, result.stderr
    assert result.stderr_lines[-1] == "mlplab: interrupted; the MLflow runs were ended as KILLED"
    assert "Traceback" not in result.stderr and "Training interrupted by user" not in result.stderr
    statuses = {name: run.info.status for name, run in runs_by_name(client, "warm_ctrl_c_fit").items()}
    assert statuses == {"parent": "KILLED", "keras_mlp": "FINISHED", "sklearn_mlp": "KILLED"}


def test_a_warm_job_whose_command_dies_is_interrupted(warm_log, tmp_path, client):
    process = start_cli("src.train", *LONG_WITH_A_BASELINE, "experiment_name=warm_orphan", cwd=tmp_path)
    _until_training(client, "warm_orphan")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)

    def statuses() -> set[str]:
        return {run.info.status for run in runs_by_name(client, "warm_orphan").values()}

    deadline = time.monotonic() + 60
    while "RUNNING" in statuses() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert statuses() == {"KILLED"}
    assert any("command is gone; interrupting it" in line for line in warm_log.read_text().splitlines())


def test_a_command_whose_environment_differs_at_import_runs_on_its_own(warm_log, tmp_path):
    # KERAS_BACKEND is read when Keras is imported: the warm process's is tensorflow.
    result = run_cli("src.train", cwd=tmp_path, env=command_env(KERAS_BACKEND="jax"))
    assert result.returncode == 2
    assert result.stderr_lines == [
        "mlplab: the warm process did not take this job (KERAS_BACKEND=jax here, tensorflow in the warm process; "
        "it is read at import); it runs on its own",
        result.stderr_lines[1],
    ]
    assert result.stderr_lines[1].startswith("mlplab: error: choose an experiment: ")
    assert _jobs_in(warm_log, tmp_path) == []


def test_a_warm_process_turns_away_changed_code_and_restarts(tmp_path):
    # A checkout of its own (its code is changed below) with its own warm process.
    checkout = tmp_path / "checkout"
    for folder in ("src", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / folder, checkout / folder, ignore=shutil.ignore_patterns("__pycache__"))
    env = command_env(PYTHONPATH=str(checkout), MLPLAB_WARM=str(tmp_path / "w.sock"))
    log = tmp_path / "warm.log"
    with open(log, "w") as out:  # as a user starts it: no --socket, MLPLAB_WARM names it
        warm = subprocess.Popen([sys.executable, "-m", "src.warm"], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(warm, log)
        mistake = ["src.train", "+experiment=xor", "trainer.epochs=-1"]
        served = run_cli(*mistake, cwd=tmp_path, env=env)
        assert served.returncode == 2
        assert served.stderr_lines == [served.stderr_lines[0]] and "trainer.epochs" in served.stderr_lines[0]
        assert "job" in log.read_text()

        (checkout / "src" / "training.py").write_text((checkout / "src" / "training.py").read_text() + "\n# changed\n")
        changed = run_cli(*mistake, cwd=tmp_path, env=env)
        assert changed.returncode == 2
        assert changed.stderr_lines == [
            "mlplab: the warm process did not take this job (its code changed since it started; it restarts "
            "itself); it runs on its own",
            served.stderr_lines[0],
        ]
        wait_until_ready(warm, log, readies=2)  # restarted, with the changed code
        again = run_cli(*mistake, cwd=tmp_path, env=env)
        assert again.stderr_lines == served.stderr_lines
        assert log.read_text().count("started: src.train") == 2
    finally:
        warm.terminate()
        assert warm.wait(60) == 0
    assert not (tmp_path / "w.sock").exists()  # it took its socket with it


def test_a_warm_process_turns_away_changed_libraries_and_restarts(tmp_path):
    # A Python environment of its own, whose site-packages the test changes as
    # `pip install -U` would; it reaches this environment's libraries through a .pth file.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site_packages = Path(subprocess.check_output(
        [python, "-c", "import site; print(site.getsitepackages()[0])"], text=True).strip())
    ours = subprocess.check_output([sys.executable, "-c", "import site; print(*site.getsitepackages(), sep='\\n')"],
                                   text=True).split()
    (site_packages / "libraries_of_the_tests.pth").write_text(
        "".join(f"import site; site.addsitedir({folder!r})\n" for folder in ours))
    env = command_env(MLPLAB_WARM=str(tmp_path / "w.sock"))
    log = tmp_path / "warm.log"
    with open(log, "w") as out:
        warm = subprocess.Popen([python, "-m", "src.warm"], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def command(python: str = python) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-m", "src.train", "+experiment=xor", "trainer.epochs=-1"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    try:
        wait_until_ready(warm, log)
        served = command()
        assert served.returncode == 2
        assert len(served.stderr.splitlines()) == 1 and "trainer.epochs" in served.stderr
        assert log.read_text().count("started: src.train") == 1

        # Another Python environment (this one) is turned away; the warm process stays.
        other = command(sys.executable)
        assert other.stderr.splitlines() == [
            f"mlplab: the warm process did not take this job (it runs the Python environment {venv.resolve()}, "
            f"not {Path(sys.prefix).resolve()}); it runs on its own",
            served.stderr.strip(),
        ]

        (site_packages / "somelib-2.0.dist-info").mkdir()  # a package installed
        changed = command()
        assert changed.returncode == 2
        assert changed.stderr.splitlines() == [
            "mlplab: the warm process did not take this job (the installed libraries changed since it "
            "started; it restarts itself); it runs on its own",
            served.stderr.strip(),
        ]
        # It restarts as for changed code (tested above to come back with the new code);
        # the test stops it there rather than wait for its imports.
        deadline = time.monotonic() + 60
        while "the installed libraries changed; restarting\n" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert log.read_text().count("started: src.train") == 1
    finally:
        warm.kill()
        warm.wait(60)


def test_a_second_warm_process_on_the_same_socket_says_so(warm_log, warm_process, tmp_path):
    result = run_cli("src.warm", "--socket", str(warm_process.path), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr_lines == [
        f"mlplab: error: a warm process already listens on {warm_process.path}: commands use it; stop it first (Ctrl-C)"
    ]


def test_the_warm_process_log_hides_passwords(warm_log, tmp_path):
    uri = "postgresql://mlplab:s3cret-Pa55@db.example:5432/optuna"
    result = run_cli("src.train", "+experiment=xor", "trainer.epochs=-1", f"tracking.uri={uri}", cwd=tmp_path)
    assert result.returncode == 2 and "trainer.epochs" in result.stderr_lines[0]
    [line] = _jobs_in(warm_log, tmp_path)
    assert "tracking.uri=postgresql://mlplab:***@db.example:5432/optuna" in line
    assert "s3cret" not in warm_log.read_text()


def test_a_warm_sweep_forks_its_workers_from_its_job(warm_log, tmp_path):
    from tests.test_sweeps import load_study

    with tempfile.TemporaryDirectory(prefix="mlplab-") as short:
        result = run_cli("src.sweep", str(ROOT / "sweeps" / "xor_lr_activation.yaml"), "n_trials=6", "workers=2",
                         "trainer.epochs=10", "experiment_name=warm_sweep", cwd=tmp_path,
                         env=command_env(TMPDIR=short))
        assert result.returncode == 0, result.stderr
        assert not list(Path(short).iterdir())  # no fork server's socket folder, no AutoGraph files
    assert len(_jobs_in(warm_log, tmp_path)) == 1
    # Nothing imported TensorFlow again (a spawned worker or a fork server writes
    # oneDNN's notice to the command's TensorFlow log, see test_two_workers_share_one_study).
    log = tmp_path / "mlruns" / "logs" / "tensorflow.log"
    assert "oneDNN custom operations" not in (log.read_text() if log.exists() else "")
    study = load_study(tmp_path, "xor_lr_activation")
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2
