"""The ``mlplab`` console command: ``mlplab COMMAND ...`` is ``python -m src.COMMAND ...``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from src.cli import COMMANDS
from tests.conftest import command_env, run_cli

MLPLAB = Path(sys.executable).parent / "mlplab"


def mlplab(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs the installed ``mlplab`` script as a user types it."""
    assert MLPLAB.exists(), f"no {MLPLAB}: install the project (pip install -e .) to get the mlplab command"
    return subprocess.run([str(MLPLAB), *args], cwd=cwd, env=command_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command(tmp_path):
    result = mlplab("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: mlplab {train,sweep,ui,dashboard,predict,report,warm}")
    for command in COMMANDS:
        assert f"\n  {command} " in result.stdout
    bare = mlplab(cwd=tmp_path)  # no command: the same help, as a usage error
    assert bare.returncode == 2 and bare.stderr.startswith("usage: mlplab")


def test_an_unknown_command_is_one_line(tmp_path):
    result = mlplab("trian", "+experiment=xor", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "mlplab: error: unknown command 'trian': choose one of train, sweep, ui, dashboard, predict, report, "
        "warm (mlplab --help)"
    ]


@pytest.mark.parametrize("args", [
    ("train", "+experiment=xorr"),
    ("train", "+experiment=xor", "trainer.epochz=5"),
    ("sweep", "sweeps/nope.yaml"),
    ("predict", "--experiment", "no_such_experiment", "--input", "x.npy"),
])
def test_a_mistake_gets_the_same_line_as_python_m(args, tmp_path):
    console = mlplab(*args, cwd=tmp_path)
    module = run_cli(f"src.{args[0]}", *args[1:], cwd=tmp_path)
    assert console.returncode == module.returncode != 0
    assert console.stderr == module.stderr
    assert len(console.stderr.splitlines()) == 1 and console.stderr.startswith("mlplab: error: ")
    assert "Traceback" not in console.stderr


def test_mlplab_train_trains_and_logs(tmp_path, client):
    result = mlplab("train", "+experiment=xor", "experiment_name=console_xor", "trainer.epochs=20",
                    "baselines=none", "tracking.plots=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "keras_mlp: done in" in result.stderr + result.stdout
    assert "Logged to MLflow experiment 'console_xor'" in result.stdout
    experiment = client.get_experiment_by_name("console_xor")
    runs = client.search_runs([experiment.experiment_id])
    assert runs and all(run.info.status == "FINISHED" for run in runs)
