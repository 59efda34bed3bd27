"""Shared fixtures: every test tracks into a throw-away MLflow store, never ``mlruns/``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOISE = ("WARNING: All log messages before absl", "I0000 ", "E0000 ", "W0000 ")


# The files whose tests run fleets of commands, longest first. pytest-xdist hands
# each worker a whole file at a time in collection order (pyproject: --dist loadfile
# --no-loadscope-reorder), so these start at once and the many short files fill in
# behind them, rather than a worker running the many-machines file alone at the end.
LONG_FILES = ("test_many_machines.py", "test_sweeps.py", "test_edges.py", "test_hydra_sweeper.py",
              "test_registry.py", "test_experiments.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: a file keeps its order


@pytest.fixture(scope="session", autouse=True)
def interruptible_commands():
    """Commands the tests start answer Ctrl-C (SIGINT) as in a terminal.

    A shell that starts a job in the background (``bash .ci/run &``, a scheduler's
    job) has it ignore SIGINT, and an ignored signal stays ignored through every
    ``exec`` below it, so the commands under test would never see the Ctrl-C the
    tests send. A handled signal is reset to its default by ``exec``: handling it
    here gives each command Python's own KeyboardInterrupt back.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session", autouse=True)
def offline_data():
    """Datasets come from ../shared/data (or MLPLAB_DATA_DIR); no test downloads anything."""
    from src.data import images, tables

    os.environ.setdefault("MLPLAB_DATA_DIR", str(ROOT.parent / "shared" / "data"))

    def refuse(*args, **kwargs):
        raise OSError("downloads are disabled in the tests")

    saved = images.keras_download, tables.keras_get_file
    images.keras_download = tables.keras_get_file = refuse
    yield
    images.keras_download, tables.keras_get_file = saved


@pytest.fixture(scope="session", autouse=True)
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Points MLflow (in this process and in CLI subprocesses) at a temporary store."""
    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@dataclass(frozen=True)
class Warm:
    """A warm process the tests started: its socket, its log and its process."""

    path: Path
    log: Path
    process: subprocess.Popen


@pytest.fixture(scope="session", autouse=True)
def warm_process(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str, offline_data):
    """A warm process (``src/warm.py``) for the commands this test process starts:
    each hands it its job and skips 6-10 s of imports, as a user's would. It starts
    with the session and is ready some seconds later; a command started before
    then, or with ``MLPLAB_WARM=off`` (:func:`cold_env`), runs on its own."""
    from src.warm import WARM_ENV, start_in_background

    folder = tmp_path_factory.mktemp("warm")
    path, log = folder / "warm.sock", folder / "warm.log"
    warm = Warm(path, log, start_in_background(path, log, cwd=folder, env=command_env()))
    os.environ[WARM_ENV] = str(warm.path)
    yield warm
    os.environ.pop(WARM_ENV, None)
    warm.process.terminate()  # it stops as on Ctrl-C once its running jobs end
    try:
        warm.process.wait(60)
    except subprocess.TimeoutExpired:
        warm.process.kill()
        warm.process.wait()


def cold_env(**extra: str) -> dict[str, str]:
    """:func:`command_env` for a command that runs on its own, without the warm
    process: what a command does at start (TensorFlow's import, the baselines'
    process beside it) is tested this way."""
    return command_env(MLPLAB_WARM="off", **extra)


@pytest.fixture
def client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def runs_by_name(client, experiment_name: str) -> dict[str, object]:
    """The experiment's runs by name, the parent run as ``parent``."""
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    return {("parent" if "mlflow.parentRunId" not in r.data.tags else r.info.run_name): r for r in runs}


def command_env(**extra: str) -> dict[str, str]:
    """The environment a command under test runs in: this process's (tracking into
    the tests' store), with this checkout importable, and ``extra``."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def run_cli(
    module: str, *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Runs ``python -m <module> args`` as a user would, from ``cwd`` (in ``env``,
    by default this process's, tracking into the tests' store)."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env or command_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return _with_user_lines(result)


def start_cli(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts ``python -m <module> args`` as :func:`run_cli` runs it, without
    waiting (commands started together), in a process group of its own."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env or command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 400) -> subprocess.CompletedProcess:
    """Waits for a command started with :func:`start_cli`; its result as :func:`run_cli` gives it."""
    out, err = process.communicate(timeout=timeout)
    return _with_user_lines(subprocess.CompletedProcess(process.args, process.returncode, out, err))


def interrupt(process: subprocess.Popen, timeout: float = 30) -> int:
    """Ctrl-C to a server command; its exit code. One that does not stop in time is
    stopped with SIGTERM (which the commands treat as Ctrl-C) before the test fails,
    so its server does not outlive the test."""
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout)


def _with_user_lines(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """``result`` with ``stderr_lines``: what a user reads, without TensorFlow's C++ log lines."""
    result.stderr_lines = [  # type: ignore[attr-defined]
        line for line in result.stderr.splitlines() if line.strip() and not line.startswith(NOISE)
    ]
    return result


def write_sweep(folder: Path, name: str = "sweep", *, base: str = "xor_lr_activation", top: dict | None = None,
                **sweeper) -> Path:
    """A shipped sweep (``sweeps/<base>.yaml``) with changed ``hydra.sweeper`` settings
    (None removes one) and top-level keys (``top``), written where Hydra finds it:
    ``folder/hparams_search/<name>.yaml``."""
    import yaml

    spec = yaml.safe_load((ROOT / "sweeps" / f"{base}.yaml").read_text())
    settings = spec["hydra"]["sweeper"]
    for key, value in sweeper.items():
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    for key, value in (top or {}).items():
        spec[key] = value
    path = folder / "hparams_search" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# @package _global_\n" + yaml.safe_dump(spec, sort_keys=False))
    return path
