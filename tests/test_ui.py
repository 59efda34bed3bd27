"""The MLflow UI and the sweep dashboard, started by the project's commands and
checked in a real browser: Debian's Chromium driven by Playwright.

These tests need ``/usr/bin/chromium`` (or ``MLPLAB_CHROMIUM``) and fail without
it rather than skip: ``bash .ci/run`` installs it. Set ``MLPLAB_SCREENSHOTS`` to
a folder to keep the screenshots (the README's come from here).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.config import compose
from src.local_server import free_port
from src.training import run
from tests.conftest import ROOT, command_env, interrupt

CHROMIUM = os.environ.get("MLPLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As root and on a closed network: no sandbox, and none of Chromium's calls home.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
MODELS = ("keras_mlp", "sklearn_perceptron", "sklearn_mlp")


def open_artifact(page, name: str, shown_as: str, attempts: int = 3) -> None:
    """Clicks an artifact in the run's tree until its view opens, at most
    ``attempts`` times, 20 s each. Once, in a CI run on a loaded machine (its tests
    took twice their usual time), the view did not open within 60 s of one click;
    what the UI did with that click is not known."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    for attempt in range(1, attempts + 1):
        page.get_by_text(name, exact=True).click()
        try:
            page.get_by_text(shown_as, exact=True).wait_for(timeout=20_000)
            return
        except PlaywrightTimeoutError:
            if attempt == attempts:
                raise


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: install Debian's chromium (bash .ci/run does)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(60_000)
    yield context.new_page()
    context.close()


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    keep = os.environ.get("MLPLAB_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    return path


def start_command(module: str, *args: str, cwd: Path, banner: str, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """Starts ``python -m module args`` and returns it with the address its banner prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if line.startswith(banner):
            return process, line.split()[len(banner.split())]
        assert time.monotonic() < deadline, f"{module} printed no address in {timeout} s"
    pytest.fail(f"{module} exited ({process.wait()}): {process.stderr.read()[-2000:]}")


@pytest.fixture(scope="module")
def xor_runs(tracking_uri):
    """An XOR run with its three child runs, as the UI should show them."""
    from mlflow.tracking import MlflowClient

    run(compose(["+experiment=xor", "trainer.epochs=30", "tracking.register=true",
                 "tracking.champion={metric: train_loss, direction: minimize}"]))
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("xor")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=4)
    children = {r.info.run_name: r.info.run_id for r in runs[:3]}
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert sorted(children) == sorted(MODELS)
    return experiment.experiment_id, parent, children


def test_mlflow_ui_shows_the_runs_their_metrics_and_plots(xor_runs, page, tmp_path):
    experiment_id, parent, children = xor_runs
    parent_name = parent.info.run_name
    port = free_port()
    ui, address = start_command("src.ui", f"port={port}", cwd=tmp_path, banner="MLflow UI:")
    try:
        assert address == f"http://127.0.0.1:{port}"

        page.goto(f"{address}/#/experiments")
        page.get_by_text("Model training", exact=True).click()  # MLflow 3 opens on its GenAI views
        page.get_by_role("link").first.wait_for()  # the list of experiments, a page of the suite's many
        page.goto(f"{address}/#/experiments/{experiment_id}")
        parent_row = page.get_by_role("row").filter(has_text=parent_name)
        parent_row.wait_for()
        child_rows = page.get_by_role("row").filter(has_text="sklearn_perceptron")
        assert child_rows.count() == 0  # nested under their parent until it is expanded
        parent_row.get_by_role("button").first.click()
        for name in MODELS:
            page.get_by_role("row").filter(has_text=name).first.wait_for()
        screenshot(page, tmp_path, "mlflow_ui_runs.png")

        page.goto(f"{address}/#/experiments/{experiment_id}/runs/{children['keras_mlp']}")
        page.get_by_role("heading", name=re.compile(r"^Metrics \(")).wait_for()
        for metric in ("train_accuracy", "train_loss", "fit_seconds"):
            page.get_by_text(metric, exact=True).first.wait_for()
        # its description says why the last epoch's loss is not train_loss
        page.get_by_text("so the last epoch's", exact=False).first.wait_for()
        # the data it trained on: a dataset input named xor, its digest the data fingerprint
        page.get_by_text(f"{parent.data.tags['data_fingerprint']}-train", exact=False).first.wait_for()
        screenshot(page, tmp_path, "mlflow_ui_run.png")

        page.goto(f"{address}/#/experiments/{experiment_id}/runs/{children['keras_mlp']}/artifacts")
        page.get_by_text("plots", exact=True).click()
        for plot in ("learning_curves.png", "decision_boundary.png", "confusion_matrix.png", "weight_histograms.png"):
            page.get_by_text(plot, exact=True).wait_for()
        open_artifact(page, "decision_boundary.png", "plots/decision_boundary.png")
        # The PNG itself is shown (500 px wide as logged), not only its name.
        page.wait_for_function("() => [...document.images].some(image => image.naturalWidth >= 400)")
        screenshot(page, tmp_path, "mlflow_ui_artifacts.png")

        # The registered model: version 1, tagged with its config, the champion.
        page.goto(f"{address}/#/models/xor")
        page.get_by_text("config_fingerprint", exact=False).first.wait_for()
        page.get_by_text(re.compile(r"^@\s*champion$")).first.wait_for()  # the alias, on version 1
        screenshot(page, tmp_path, "mlflow_ui_registry.png")
    finally:
        code = interrupt(ui)
    assert code == 0
    with pytest.raises(OSError):  # the server went with the command, workers included
        urllib.request.urlopen(f"{address}/health", timeout=5)


def test_dashboard_shows_the_sweep_study(page, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "study.journal"
    study = optuna.create_study(
        study_name="xor_lr_activation", storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    study.optimize(lambda t: (t.suggest_float("optimizer.learning_rate", 1e-3, 1.0, log=True) - 0.1) ** 2, n_trials=8)

    sweep = str(ROOT / "sweeps" / "xor_lr_activation.yaml")
    port = free_port()
    dashboard, address = start_command(
        "src.dashboard", sweep, f"port={port}", f"storage={journal}", cwd=tmp_path, banner="Optuna dashboard:"
    )
    try:
        assert address == f"http://127.0.0.1:{port}/dashboard"
        page.goto(address)
        page.get_by_text("xor_lr_activation").first.click()
        page.get_by_text("optimizer.learning_rate").first.wait_for()
        screenshot(page, tmp_path, "optuna_dashboard.png")
    finally:
        assert interrupt(dashboard) == 0


def test_commands_refuse_a_busy_port_in_one_line(tmp_path):
    import socket

    from tests.conftest import run_cli

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run_cli("src.ui", f"port={port}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr_lines == [(
        f"mlplab: error: cannot listen on 127.0.0.1:{port} (Address already in use); "
        f"choose another port: python -m src.ui port={port + 1}"
    )]


def test_dashboard_names_a_missing_study(tmp_path):
    from tests.conftest import run_cli

    sweep = str(ROOT / "sweeps" / "xor_lr_activation.yaml")
    result = run_cli("src.dashboard", sweep, f"storage={tmp_path / 'none.journal'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr_lines == [(
        f"mlplab: error: no study xor_lr_activation at {tmp_path / 'none.journal'} yet: "
        f"start it with python -m src.sweep {sweep}"
    )]
