"""The pictures a teacher would draw for a run, as PNG figures.

Each function returns a matplotlib ``Figure`` built without pyplot, so nothing
needs a display and no global figure state is shared between runs or threads.
:func:`model_figures` says which figures a fitted model gets; the training loop
logs them with :meth:`src.tracking.TrackedRun.log_figures`, which turns any
plotting error into a warning: a picture is never worth failing a run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from src.data import Dataset

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from src.models.base import Estimator

GRID_POINTS = 200
"""Grid resolution of a decision boundary, per axis."""
_PANEL = (5.0, 4.0)  # inches per panel; at 100 dpi a figure stays well under 100 kB
_CLASS_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")

FigureMaker = Callable[[], "Figure"]


def prepare_in_background() -> None:
    """Starts importing matplotlib (about 1 s) on a thread, so a run can do it
    while its first model trains (TensorFlow and scikit-learn release the GIL)."""
    import threading

    def load() -> None:
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401
        from sklearn.metrics import ConfusionMatrixDisplay  # noqa: F401

    threading.Thread(target=load, name="mlplab-plots-import", daemon=True).start()


def model_figures(estimator: Estimator, dataset: Dataset) -> dict[str, FigureMaker]:
    """The figures that suit a fitted model on ``dataset``, by artifact file name.

    Drawing is deferred (each value makes its figure when called), so a caller
    can log each one on its own and skip one that fails.
    """
    figures: dict[str, FigureMaker] = {}
    if estimator.history_.get("loss"):
        figures["learning_curves.png"] = lambda: learning_curves(estimator.history_, estimator.history_epochs())
    if dataset.n_features == 2:
        figures["decision_boundary.png"] = lambda: decision_boundaries({"": estimator}, dataset)
    split, (x, y) = evaluation_split(dataset)
    if dataset.is_classification:
        figures["confusion_matrix.png"] = lambda: confusion_matrix(estimator, x, y, dataset.class_names, split)
    else:
        figures["predicted_vs_true.png"] = lambda: predicted_vs_true(estimator, x, y, split)
    snapshots = estimator.weight_snapshots()
    if snapshots:
        figures["weight_histograms.png"] = lambda: weight_histograms(snapshots)
    return figures


def evaluation_split(dataset: Dataset) -> tuple[str, tuple[np.ndarray, np.ndarray]]:
    """The split a model's figures are drawn on: test, or train where there is none."""
    splits = dataset.splits()
    name = "test" if "test" in splits else "train"
    return name, splits[name]


def _figure(rows: int, columns: int) -> tuple[Figure, np.ndarray]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(_PANEL[0] * columns, _PANEL[1] * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


# ----------------------------------------------------------------- learning curves
def learning_curves(history: Mapping[str, Sequence[float]], epochs: Sequence[int]) -> Figure:
    """Loss and each metric per epoch, training and validation on one panel each.

    Args:
        history: Per-epoch values by Keras name (``loss``, ``val_loss``, ``accuracy`` ...).
        epochs: The epoch (from 1) of each recorded value.
    """
    names = [k for k in history if not k.startswith("val_")]
    names.sort(key=lambda k: k != "loss")
    figure, axes = _figure(1, len(names))
    for ax, name in zip(axes.flat, names):
        ax.plot(epochs[: len(history[name])], history[name], label="train")
        validation = history.get(f"val_{name}")
        if validation:
            ax.plot(epochs[: len(validation)], validation, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name.replace("_", " "))
        if name == "loss" and min(history[name]) > 0 and _spans_decades(history[name]):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    return figure


def _spans_decades(values: Sequence[float]) -> bool:
    finite = [v for v in values if np.isfinite(v)]
    return bool(finite) and max(finite) / min(finite) > 100


# ---------------------------------------------------------------- decision boundary
def decision_boundaries(estimators: Mapping[str, Estimator], dataset: Dataset) -> Figure:
    """Each model's decision regions over its two input features, with the training
    points, side by side (one panel per model, titled by its name)."""
    if dataset.n_features != 2:
        raise ValueError(f"a decision boundary needs 2 input features; {dataset.name} has {dataset.n_features}")
    figure, axes = _figure(1, len(estimators))
    grid = _grid(dataset.x_train)
    for ax, (name, estimator) in zip(axes.flat, estimators.items()):
        draw_decision_boundary(ax, estimator, dataset, grid)
        if name:
            ax.set_title(name)
    return figure


def _grid(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A square mesh over the points' range with a margin of 15% on each side."""
    low, high = x.min(axis=0), x.max(axis=0)
    margin = np.where(high > low, (high - low) * 0.15, 0.5)
    axes = [np.linspace(low[i] - margin[i], high[i] + margin[i], GRID_POINTS) for i in range(2)]
    return np.meshgrid(*axes)


def draw_decision_boundary(
    ax: Axes, estimator: Estimator, dataset: Dataset, grid: tuple[np.ndarray, np.ndarray]
) -> None:
    """Shades what the model predicts at each grid point and scatters the training set.

    Binary models with probabilities shade P(class 1) with the 0.5 contour drawn;
    other classifiers shade the predicted class; regressors shade the predicted value.
    """
    xx, yy = grid
    points = np.column_stack([xx.ravel(), yy.ravel()]).astype(dataset.x_train.dtype)
    x, y = dataset.x_train, dataset.y_train
    probabilities = estimator.predict_proba(points) if dataset.task == "binary" else None
    if probabilities is not None:
        surface = np.asarray(probabilities)[:, 1].reshape(xx.shape)
        shaded = ax.contourf(xx, yy, surface, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.75)
        ax.contour(xx, yy, surface, levels=[0.5], colors="k", linewidths=1.5)
        ax.figure.colorbar(shaded, ax=ax, label=f"P({_class_name(dataset, 1)})")
    elif dataset.is_classification:
        from matplotlib.colors import ListedColormap

        n = dataset.n_classes
        surface = np.asarray(estimator.predict(points)).reshape(xx.shape)
        colors = ListedColormap([_CLASS_COLORS[i % len(_CLASS_COLORS)] for i in range(n)])
        shaded = ax.contourf(xx, yy, surface, levels=np.arange(n + 1) - 0.5, cmap=colors, alpha=0.35)
        if n > 1:
            ax.contour(xx, yy, surface, levels=np.arange(n - 1) + 0.5, colors="k", linewidths=1)
        # A key to the shading, as the models with probabilities have: it also gives
        # every panel of a side-by-side figure the same width.
        bar = ax.figure.colorbar(shaded, ax=ax, ticks=np.arange(n), label="predicted class")
        bar.ax.set_yticklabels([_class_name(dataset, i) for i in range(n)])
    else:
        surface = np.asarray(estimator.predict(points)).reshape(xx.shape)
        shaded = ax.contourf(xx, yy, surface, levels=20, cmap="viridis", alpha=0.75)
        ax.figure.colorbar(shaded, ax=ax, label="prediction")
        ax.scatter(x[:, 0], x[:, 1], c=y, cmap="viridis", edgecolors="k", s=30)
    if dataset.is_classification:
        for label in np.unique(y):
            rows = y == label
            ax.scatter(
                x[rows, 0],
                x[rows, 1],
                color=_CLASS_COLORS[int(label) % len(_CLASS_COLORS)],
                edgecolors="k",
                s=60 if len(x) <= 50 else 20,
                label=_class_name(dataset, int(label)),
            )
        # Below the panel, where it hides neither the points nor the boundary.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=min(len(np.unique(y)), 5),
                  fontsize="small", frameon=False)
    names = dataset.feature_names or ("x1", "x2")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])


def _class_name(dataset: Dataset, label: int) -> str:
    return dataset.class_names[label] if label < len(dataset.class_names) else str(label)


# ------------------------------------------------------------ classification/regression
def confusion_matrix(
    estimator: Estimator, x: np.ndarray, y: np.ndarray, class_names: Sequence[str], split: str
) -> Figure:
    """Counts of true against predicted class on one split."""
    from sklearn.metrics import ConfusionMatrixDisplay

    labels = np.arange(max(len(class_names), int(y.max()) + 1))
    names = list(class_names) or [str(label) for label in labels]
    figure, axes = _figure(1, 1)
    if len(labels) > 6:
        figure.set_size_inches(8, 7)
    ConfusionMatrixDisplay.from_predictions(
        y, estimator.predict(x), labels=labels, display_labels=names, ax=axes[0, 0], colorbar=False
    )
    axes[0, 0].set_title(f"confusion matrix ({split}, {len(y)} samples)")
    if len(labels) > 6:
        axes[0, 0].tick_params(axis="x", labelrotation=45)
    return figure


def predicted_vs_true(estimator: Estimator, x: np.ndarray, y: np.ndarray, split: str) -> Figure:
    """Predicted against true values (on the diagonal when exact), and the residuals."""
    predicted = np.asarray(estimator.predict(x)).ravel()
    y = np.asarray(y).ravel()
    figure, axes = _figure(1, 2)
    left, right = axes[0]
    low, high = float(min(y.min(), predicted.min())), float(max(y.max(), predicted.max()))
    left.scatter(y, predicted, s=15, alpha=0.7)
    left.plot([low, high], [low, high], "k--", linewidth=1, label="predicted = true")
    left.set_xlabel("true")
    left.set_ylabel("predicted")
    left.set_title(f"predicted vs true ({split})")
    left.legend()
    residuals = y - predicted
    right.scatter(predicted, residuals, s=15, alpha=0.7)
    right.axhline(0, color="k", linestyle="--", linewidth=1)
    right.set_xlabel("predicted")
    right.set_ylabel("true - predicted")
    right.set_title(f"residuals ({split})")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return figure


# ------------------------------------------------------------------------- weights
def weight_histograms(snapshots: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Each hidden layer's weights at the start and at the end of training.

    Args:
        snapshots: ``(start, end)`` kernels by layer name.
    """
    figure, axes = _figure(1, len(snapshots))
    for ax, (layer, (start, end)) in zip(axes.flat, snapshots.items()):
        values = np.concatenate([start.ravel(), end.ravel()])
        low, high = float(values.min()), float(values.max())
        bins = np.linspace(low, high, 41) if high > low else 41
        # One filled outline per histogram, not a bar per bin: 40 patches each
        # took most of the time of an XOR run's Keras figures to build and draw.
        ax.hist(start.ravel(), bins=bins, alpha=0.6, label="start", histtype="stepfilled")
        ax.hist(end.ravel(), bins=bins, alpha=0.6, label="end", histtype="stepfilled")
        ax.set_title(f"{layer} ({start.shape[0]}x{start.shape[1]})")
        ax.set_xlabel("weight")
        ax.set_ylabel("count")
        ax.legend()
    return figure


def gradient_descent(
    path: Sequence[float], learning_rate: float, outcome: str, minimum: float, offset: float
) -> Figure:
    """The parabola ``(x - minimum)² + offset`` with the points a descent visited."""
    shown = [x for x in path if np.isfinite(x)][:60]
    span = max(abs(x - minimum) for x in shown) * 1.1 or 1.0
    grid = np.linspace(minimum - span, minimum + span, 400)
    figure, axes = _figure(1, 1)
    axis = axes[0, 0]
    axis.plot(grid, (grid - minimum) ** 2 + offset, color="0.6", label=f"f(x) = (x - {minimum:g})² + {offset:g}")
    points = np.array(shown)
    axis.plot(points, (points - minimum) ** 2 + offset, "o-", markersize=4, label="visited")
    axis.set_title(f"learning rate {learning_rate:g}: {outcome}")
    axis.set_xlabel("x")
    axis.set_ylabel("f(x)")
    axis.legend()
    return figure
