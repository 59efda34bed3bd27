"""The figures a run draws: which ones each kind of model and data gets, what they
show, and that a failing plot never fails the run."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from sklearn.linear_model import LinearRegression, LogisticRegression, Perceptron
from sklearn.neural_network import MLPClassifier

from src import plots
from src.config import compose
from src.data import Dataset
from src.models.baselines import SklearnBaseline
from src.models.numpy_mlp import NumpyMLP
from src.training import run

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
XOR_Y = np.array([0, 1, 1, 0])


def blobs(n_features: int, n_classes: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), 20)
    x = rng.normal(size=(len(y), n_features)) + y[:, None] * 3.0
    names = tuple(f"class_{i}" for i in range(n_classes))
    return Dataset("blobs", "binary" if n_classes == 2 else "multiclass", x, y, x_test=x[::2], y_test=y[::2], class_names=names)


def fitted(model, dataset: Dataset):
    return SklearnBaseline(model).fit(dataset.x_train, dataset.y_train, spec=dataset.spec)


def test_two_feature_classifier_gets_its_boundary_and_confusion_matrix():
    dataset = blobs(2, 2)
    figures = plots.model_figures(fitted(LogisticRegression(), dataset), dataset)
    assert set(figures) == {"decision_boundary.png", "confusion_matrix.png"}
    for draw in figures.values():
        assert draw().axes


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_more_features_get_no_boundary_and_regression_gets_predicted_vs_true():
    dataset = blobs(4, 3)
    classifier = fitted(MLPClassifier(hidden_layer_sizes=(4,), max_iter=30, random_state=0), dataset)
    assert set(plots.model_figures(classifier, dataset)) == {"learning_curves.png", "confusion_matrix.png"}

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    regression = Dataset("line", "regression", x, x @ [1.0, -2.0, 0.5])
    figures = plots.model_figures(fitted(LinearRegression(), regression), regression)
    assert set(figures) == {"predicted_vs_true.png"}
    left, right = figures["predicted_vs_true.png"]().axes
    # An exact fit puts every point on the diagonal and every residual at zero.
    points = left.collections[0].get_offsets()
    np.testing.assert_allclose(points[:, 0], points[:, 1], atol=1e-9)
    np.testing.assert_allclose(right.collections[0].get_offsets()[:, 1], 0, atol=1e-9)


def test_confusion_matrix_counts_the_evaluation_split():
    dataset = blobs(2, 3)
    classifier = fitted(LogisticRegression(), dataset)
    assert plots.evaluation_split(dataset)[0] == "test"
    figure = plots.model_figures(classifier, dataset)["confusion_matrix.png"]()
    cells = [int(t.get_text()) for t in figure.axes[0].texts]
    assert sum(cells) == len(dataset.y_test)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == list(dataset.class_names)


def test_decision_boundary_separates_what_the_model_separates():
    """The shaded probability is high where the model predicts class 1: the XOR
    solution's corners are shaded by their own class."""
    dataset = Dataset("xor", "binary", XOR_X, XOR_Y)
    model = NumpyMLP([4], activation="tanh", learning_rate=0.5, epochs=2000, batch_size=None, seed=1)
    model.fit(XOR_X, XOR_Y)
    assert (model.predict(XOR_X) == XOR_Y).all()
    figure = plots.decision_boundaries({"numpy": model, "perceptron": fitted(Perceptron(), dataset)}, dataset)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["numpy", "perceptron"]
    xx, yy = plots._grid(XOR_X)
    probability = model.predict_proba(np.column_stack([xx.ravel(), yy.ravel()]))[:, 1].reshape(xx.shape)
    for (x1, x2), label in zip(XOR_X, XOR_Y):
        column, row = np.abs(xx[0] - x1).argmin(), np.abs(yy[:, 0] - x2).argmin()
        assert (probability[row, column] > 0.5) == bool(label)
    shaded = [c for c in panels[0].collections if c.get_array() is not None]
    assert shaded, "the probability surface is drawn"


def test_side_by_side_boundaries_have_equal_panels_and_legends_that_hide_nothing():
    dataset = Dataset("xor", "binary", XOR_X, XOR_Y)
    model = NumpyMLP([4], activation="tanh", learning_rate=0.5, epochs=500, batch_size=None, seed=1).fit(XOR_X, XOR_Y)
    figure = plots.decision_boundaries({"mlp": model, "perceptron": fitted(Perceptron(), dataset)}, dataset)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # lays the figure out
    panels = [ax for ax in figure.axes if ax.get_title()]
    widths = [ax.get_position().width for ax in panels]
    assert widths[0] == pytest.approx(widths[1], rel=0.01)  # the Perceptron's panel has a key too
    perceptron_bar = [ax for ax in figure.axes if ax.get_ylabel() == "predicted class"]
    assert perceptron_bar and [t.get_text() for t in perceptron_bar[0].get_yticklabels()] == ["0", "1"]
    renderer = canvas.get_renderer()
    for ax in panels:
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.y1 <= ax.get_window_extent(renderer).y0  # below the panel, over none of it


def test_weight_histograms_show_start_and_end():
    dataset = Dataset("xor", "binary", XOR_X, XOR_Y)
    model = NumpyMLP([3], learning_rate=1.0, epochs=50, batch_size=None, seed=0).fit(XOR_X, XOR_Y)
    snapshots = model.weight_snapshots()
    assert list(snapshots) == ["hidden_1"]
    start, end = snapshots["hidden_1"]
    assert start.shape == end.shape == (2, 3)
    assert not np.allclose(start, end)
    np.testing.assert_array_equal(start, NumpyMLP([3], seed=0).initialize(2).weights_[0])
    ax = plots.model_figures(model, dataset)["weight_histograms.png"]().axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["start", "end"]
    # One filled outline per histogram; its area is its count times the bin width.
    assert len(ax.patches) == 2
    for outline in ax.patches:
        x, y = outline.get_xy().T
        area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
        bins = np.linspace(min(start.min(), end.min()), max(start.max(), end.max()), 41)
        assert area == pytest.approx(start.size * (bins[1] - bins[0]))


def test_a_failing_plot_is_a_warning_and_the_run_finishes(client, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no ink left")

    monkeypatch.setattr(plots, "confusion_matrix", broken)
    overrides = ["+experiment=xor", "trainer.epochs=5", "tracking.log_models=false", "baselines=none"]
    with caplog.at_level(logging.WARNING, logger="mlplab"):
        results = run(compose(overrides)).metrics
    assert "keras_mlp" in results
    assert "plot plots/confusion_matrix.png skipped: no ink left" in caplog.text
    experiment = client.get_experiment_by_name("xor")
    child = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert child.info.run_name == "keras_mlp" and child.info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
    assert logged == {"plots/learning_curves.png", "plots/decision_boundary.png", "plots/weight_histograms.png"}


def test_plots_can_be_turned_off(client):
    run(compose(["+experiment=xor", "trainer.epochs=2", "tracking.log_models=false", "tracking.plots=false"]))
    experiment = client.get_experiment_by_name("xor")
    for found in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[:4]:
        assert not client.list_artifacts(found.info.run_id, "plots")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grid_keeps_a_margin_around_the_points(dtype):
    x = np.array([[0, 10], [4, 10]], dtype=dtype)
    xx, yy = plots._grid(x)
    assert xx.min() < 0 and xx.max() > 4
    assert yy.min() < 10 < yy.max()  # a constant feature still gets a range
