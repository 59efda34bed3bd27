"""Progress on long work: a training's epochs on a terminal (one redrawn line) and in
a pipe (plain lines), scikit-learn's own progress, slow steps announced, and short
runs as quiet as ever."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from src.listeners import EpochListener
from src.progress import LINE_EVERY, OutputProgress, TrainingProgress, announced
from tests.conftest import cold_env, finish, start_cli


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def epochs(progress: TrainingProgress, clock: Clock, count: int, seconds_each: float) -> None:
    for epoch in range(1, count + 1):
        clock.now += seconds_each
        progress.on_epoch_end(epoch, {"loss": 1.0 / epoch, "accuracy": 0.5})
    progress.on_train_end()


def test_a_long_training_redraws_one_line_on_a_terminal(monkeypatch):
    monkeypatch.delenv("MLPLAB_PROGRESS_AFTER", raising=False)
    clock, terminal = Clock(), Terminal()
    epochs(TrainingProgress("keras_mlp", 10, terminal=terminal, clock=clock), clock, 10, seconds_each=1.0)
    out = terminal.getvalue()
    assert out.endswith("\n") and out.count("\n") == 1  # one line, ended once training ends
    shown = re.findall(r"\r(keras_mlp: epoch +\d+/10[^\r\x1b]*)\x1b\[K", out)
    assert shown[0].startswith("keras_mlp: epoch  3/10 - loss 0.3333 - accuracy 0.5000 - 1.00 s/epoch")
    assert shown[-1].startswith("keras_mlp: epoch 10/10")  # quiet for the first 3 s, then every epoch


def test_in_a_pipe_lines_come_every_few_seconds_and_at_the_end(caplog, monkeypatch):
    monkeypatch.delenv("MLPLAB_PROGRESS_AFTER", raising=False)
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="mlplab"):
        epochs(TrainingProgress("keras_mlp", 40, terminal=io.StringIO(), clock=clock), clock, 40, seconds_each=0.5)
    shown = [int(re.search(r"epoch +(\d+)/40", r.message).group(1)) for r in caplog.records]
    assert shown[0] == 6 and shown[-1] == 40  # from 3 s on
    assert all(b - a >= LINE_EVERY / 0.5 for a, b in zip(shown, shown[1:-1]))  # throttled


def test_a_short_training_shows_nothing_unless_forced(caplog, monkeypatch):
    monkeypatch.delenv("MLPLAB_PROGRESS_AFTER", raising=False)
    with caplog.at_level(logging.INFO, logger="mlplab"):
        clock = Clock()
        epochs(TrainingProgress("keras_mlp", 100, terminal=io.StringIO(), clock=clock), clock, 100, 0.01)
        assert not caplog.records  # XOR: 1 s in all
        clock = Clock()
        epochs(TrainingProgress("keras_mlp", 4, verbose=2, terminal=Terminal(), clock=clock), clock, 4, 0.01)
        assert [r.message[:20] for r in caplog.records] == [f"keras_mlp: epoch {i}/4" for i in range(1, 5)]


def test_scikit_learn_progress_becomes_epochs_and_joblib_lines_go():
    heard = []

    class Listener(EpochListener):
        def on_progress(self, epoch, logs):
            heard.append((epoch, dict(logs)))

    from src.models.baselines import _MLP_ITERATION, _SGD_EPOCH

    mlp = OutputProgress([_MLP_ITERATION], [Listener()])
    mlp.write("Iteration 1, loss = 0.91590000\nIteration 2, lo")
    mlp.write("ss = 0.50000000\nValidation score: 0.9\n")
    assert heard == [(1, {"loss": 0.9159}), (2, {"loss": 0.5})]
    heard.clear()
    sgd = OutputProgress([_SGD_EPOCH], [Listener()])
    sgd.write("-- Epoch 1\nNorm: 1.0, NNZs: 3\n-- Epoch 1\n-- Epoch 2\n")  # one-vs-rest: each class counts
    assert heard == [(1, {}), (2, {})]
    passed = io.StringIO()
    stderr = OutputProgress([], [], passing=passed, dropping=("[Parallel(",))
    stderr.write("[Parallel(n_jobs=-1)]: Using backend ThreadingBackend\na real warning\n")
    assert passed.getvalue() == "a real warning\n"


def test_the_numpy_mlp_shows_its_epochs_too(caplog):
    from src.models.numpy_mlp import NumpyMLP

    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])
    model = NumpyMLP([4], epochs=3, batch_size=None, seed=0)
    with caplog.at_level(logging.INFO, logger="mlplab"):
        model.fit(x, y, listeners=[TrainingProgress("numpy_mlp", model.progress_epochs(), verbose=2)])
    assert [r.message[:20] for r in caplog.records] == [f"numpy_mlp: epoch {i}/3" for i in (1, 2, 3)]


def test_a_slow_step_says_what_it_does_and_a_quick_one_says_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="mlplab"):
        with announced("quick", after=5):
            pass
        with announced("loading mnist", after=0.05):
            time.sleep(0.2)
        with pytest.raises(ValueError), announced("failing", after=0.05):
            time.sleep(0.2)
            raise ValueError
    messages = [r.message for r in caplog.records]
    assert messages[0] == "loading mnist ..."
    assert re.fullmatch(r"loading mnist: done in 0\.\d s", messages[1])
    assert messages[2:] == ["failing ..."]  # no "done" for a step that failed


# --------------------------------------------------- through the command a user types
MNIST = ["+experiment=mnist", "data.train_limit=3000", "trainer.epochs=3", "baselines=sklearn_images",
         "~baselines.sklearn_logistic", "tracking.log_models=false", "tracking.plots=false",
         "experiment_name=progress"]


def _env() -> dict[str, str]:
    # A short MNIST run shows its progress as a long one would after 3 s, and its
    # baselines train in their own process, as on an idle machine without a warm process.
    return cold_env(MLPLAB_PROGRESS_AFTER="0", MLPLAB_BASELINE_WORKER="1")


@pytest.fixture(scope="module")
def in_a_pipe(tmp_path_factory):
    """The MNIST run in a pipe, started in the background while the terminal's runs."""
    process = start_cli("src.train", *MNIST, cwd=tmp_path_factory.mktemp("pipe"), env=_env())
    yield process
    if process.poll() is None:
        process.kill()


def test_mnist_progress_in_a_pipe_is_plain_lines(in_a_pipe, mnist_on_a_terminal):
    result = finish(in_a_pipe)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "\r" not in out
    for model, values in (("keras_mlp", r" - accuracy [\d.]+ - loss [\d.]+ - val_accuracy [\d.]+ - val_loss [\d.]+"),
                          ("sklearn_mlp", r" - loss [\d.]+"), ("sklearn_perceptron", "")):
        assert re.search(rf"^\[[\d:]+\] {model}: epoch 1/3{values} - [\d.]+ s/epoch$", out, re.M), model
        assert re.search(rf"^\[[\d:]+\] {model}: epoch 3/3{values} - [\d.]+ s/epoch$", out, re.M), model
    assert "[Parallel(" not in out  # the one-vs-rest Perceptron's joblib lines


@pytest.fixture(scope="module")
def mnist_on_a_terminal(tmp_path_factory, in_a_pipe):
    tmp_path = tmp_path_factory.mktemp("terminal")
    primary, replica = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "src.train", *MNIST], cwd=tmp_path, env=_env(),
                               stdin=replica, stdout=replica, stderr=replica)
    os.close(replica)
    out = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the command ended and closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(primary)
    return process.wait(timeout=300), out.decode(errors="replace")


def test_mnist_progress_on_a_terminal_redraws_one_line(mnist_on_a_terminal):
    code, text = mnist_on_a_terminal
    assert code == 0, text[-2000:]
    line = re.search(r"(\rkeras_mlp: epoch [^\n]*)\r?\n", text).group(1)
    redraws = [part for part in line.split("\r") if part]
    assert redraws[0].startswith("keras_mlp: epoch 1/3") and redraws[-1].startswith("keras_mlp: epoch 3/3")
    assert all(part.endswith("\x1b[K") for part in redraws)  # each clears what the last left
    # The baselines trained beside it in a process of their own (src/baseline_worker.py):
    # one line redraws, and theirs are plain lines, printed once the network is done.
    after = text[text.index("keras_mlp: done in"):]
    for model in ("sklearn_mlp", "sklearn_perceptron"):
        assert re.search(rf"^\[[\d:]+\] {model}: epoch 3/3 .*s/epoch\r$", after, re.M), model
        assert f"\r{model}" not in text
