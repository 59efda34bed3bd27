"""The NumPy reference MLP: its gradients are right, and it reproduces the
textbook examples to the published digits."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from src.models.numpy_mlp import NumpyMLP
from tests.conftest import run_cli


def numeric_gradients(model: NumpyMLP, x, t, eps=1e-6):
    grads = []
    for w in model.weights_:
        grad = np.zeros_like(w)
        for index in np.ndindex(w.shape):
            saved = w[index]
            w[index] = saved + eps
            up = model.loss_value(model.serving_output(x), t)
            w[index] = saved - eps
            down = model.loss_value(model.serving_output(x), t)
            w[index] = saved
            grad[index] = (up - down) / (2 * eps)
        grads.append(grad)
    return grads


def relative_error(a, b):
    return np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy"])
def test_backprop_matches_finite_differences(activation, loss):
    rng = np.random.default_rng(1)
    x, t = rng.normal(size=(7, 3)), rng.integers(0, 2, size=7).astype(float)
    model = NumpyMLP([5, 4], activation, loss=loss, seed=3).initialize(3)
    analytic, _ = model.gradients(x, t)
    for got, expected in zip(analytic, numeric_gradients(model, x, t)):
        assert relative_error(got, expected) <= 1e-5


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_backprop_matches_tensorflow(activation):
    import tensorflow as tf

    rng = np.random.default_rng(2)
    x, t = rng.normal(size=(6, 2)), rng.integers(0, 2, size=(6, 1)).astype(float)
    model = NumpyMLP([4], activation, seed=5).initialize(2)
    ours, our_bias = model.gradients(x, t)
    variables = [tf.Variable(w) for w in model.weights_] + [tf.Variable(b) for b in model.biases_]
    act = {"sigmoid": tf.sigmoid, "tanh": tf.tanh, "relu": tf.nn.relu}[activation]
    with tf.GradientTape() as tape:
        hidden = act(tf.constant(x) @ variables[0] + variables[2])
        output = tf.sigmoid(hidden @ variables[1] + variables[3])
        loss = tf.reduce_mean(0.5 * tf.reduce_sum((output - t) ** 2, axis=1))
    theirs = [g.numpy() for g in tape.gradient(loss, variables)]
    for got, expected in zip([*ours, *our_bias], theirs):
        assert got.dtype == np.float64
        assert relative_error(got, expected) <= 1e-5


def test_textbook_xor_2_2_1_sigmoid_net():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    t = np.array([0, 1, 1, 0], dtype=float)
    model = NumpyMLP([2], "sigmoid", learning_rate=0.2, epochs=90_000, batch_size=1)
    model.set_weights([[[0.1, 0.2], [0.3, 0.4]], [[0.5], [0.6]]], [[0.1, 0.2], [0.3]])
    model.fit(x, t)
    assert model.serving_output(x).ravel() == pytest.approx([0.008, 0.9915, 0.9915, 0.0104], abs=1e-3)
    assert list(model.predict(x)) == [0, 1, 1, 0]


def test_relu_2_3_1_one_step_example():
    x, t = np.array([[1.0, 1.0]]), np.array([0.0])
    model = NumpyMLP([3], "relu", "linear", learning_rate=0.2, epochs=1, use_bias=False)
    model.set_weights([[[0.8, 0.4, 0.3], [0.2, 0.9, 0.5]], [[0.3], [0.5], [0.9]]])
    assert model.serving_output(x).item() == pytest.approx(1.67)
    model.fit(x, t)
    assert model.weights_[1].ravel() == pytest.approx([-0.034, 0.0658, 0.6328], abs=1e-9)
    # the widely copied answer multiplies by relu'(z1) where the hidden activation belongs
    assert model.weights_[1].ravel() != pytest.approx([-0.034, 0.166, 0.566], abs=1e-3)
    assert model.serving_output(x).item() == pytest.approx(0.1622, abs=1e-4)


def test_numpy_mlp_is_a_model_option_logged_like_the_others(tmp_path, client):
    import mlflow

    # as the README runs it
    result = run_cli("src.train", "+experiment=xor", "model=numpy_mlp", "optimizer=sgd", "optimizer.learning_rate=2.0",
                     "trainer.epochs=3000", "trainer.loss=mse", "baselines=none", "experiment_name=numpy_xor",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^numpy_mlp +1\.0000 ", result.stdout, re.M)  # train accuracy
    # only mlplab's own lines: no notice of MLflow's about how it stores the Python model
    assert [line for line in result.stderr_lines if not line.startswith("[")] == []
    experiment = client.get_experiment_by_name("numpy_xor")
    logged = client.search_logged_models([experiment.experiment_id])
    model = mlflow.pyfunc.load_model(logged[0].model_uri)
    # the signature names XOR's columns, as logged
    x = pd.DataFrame(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32), columns=["x1", "x2"])
    assert list((np.asarray(model.predict(x)).ravel() >= 0.5).astype(int)) == [0, 1, 1, 0]
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert len(client.get_metric_history(runs["numpy_mlp"].info.run_id, "loss")) >= 1000


def test_numpy_mlp_refuses_what_it_cannot_do():
    from src.config import compose
    from src.errors import ConfigError
    from src.training import run

    with pytest.raises(ConfigError, match="plain SGD"):
        run(compose(["+experiment=xor", "model=numpy_mlp", "optimizer=adam"]))
    with pytest.raises(ConfigError, match="one output unit"):
        run(compose(["+experiment=iris", "model=numpy_mlp", "optimizer=sgd"]))
