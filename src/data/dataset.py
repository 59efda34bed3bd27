"""The one shape every loader returns, so models and tracking need no special cases."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

TASKS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class InputScaling:
    """Per-feature ``(x - offset) / scale``, fitted on the training split (or fixed,
    as 255 for pixels) and applied by every model to the raw inputs it is given.

    The arrays of a :class:`Dataset` stay in the dataset's own units; each model
    carries this step inside itself (a Keras Normalization layer, the first step
    of a scikit-learn Pipeline, the NumPy MLP's own input), so a logged model
    takes the inputs a user has.
    """

    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def standardizing(cls, x: np.ndarray) -> InputScaling:
        """The training split's mean and deviation (a constant column keeps scale 1)."""
        x = np.asarray(x, dtype=np.float64)
        std = x.std(axis=0)
        return cls(offset=x.mean(axis=0), scale=np.where(std == 0, 1.0, std))

    @classmethod
    def dividing(cls, n_features: int, divisor: float) -> InputScaling:
        """Every feature divided by ``divisor`` (pixels by their largest value)."""
        return cls(offset=np.zeros(n_features), scale=np.full(n_features, float(divisor)))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Scaled inputs, in ``x``'s float dtype (float32 stays float32)."""
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        return ((x - self.offset.astype(dtype)) / self.scale.astype(dtype)).astype(dtype, copy=False)


@dataclass(frozen=True)
class DataSpec:
    """What a model is told about its data besides the arrays, at ``fit`` time.

    A model's constructor takes only its own settings (scikit-learn's contract);
    the task, the classes and the input scaling belong to the data, so ``fit``
    receives them here, or infers the task and classes from ``y`` without them.

    Attributes:
        task: ``binary``, ``multiclass`` or ``regression``.
        n_classes: Number of classes (0 for regression).
        scaling: How the model scales raw inputs (None: it takes them as they are).
        feature_names: The raw columns' names (empty where columns have none).
    """

    task: str
    n_classes: int = 0
    scaling: InputScaling | None = None
    feature_names: tuple[str, ...] = ()

    @classmethod
    def inferred(cls, y: np.ndarray) -> DataSpec:
        """The task and classes ``y`` shows: integer labels classify (as do float
        targets that are all 0 or 1, the textbook XOR's); anything else regresses."""
        y = np.asarray(y)
        if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
            n_classes = int(y.max()) + 1
            return cls("binary" if n_classes <= 2 else "multiclass", n_classes)
        if np.isin(y, (0.0, 1.0)).all():
            return cls("binary", 2)
        return cls("regression")


@dataclass(frozen=True)
class Dataset:
    """Arrays of one dataset, split and preprocessed, ready for any model.

    Attributes:
        name: Short name, also used in run names and tags.
        task: ``binary``, ``multiclass`` or ``regression``.
        x_train, y_train: Training split (float features; int64 labels, or float
            targets for regression).
        x_val, y_val: Optional validation split, seen per epoch but not trained on.
        x_test, y_test: Optional held-out test split. Without one, models are
            scored on the training split (as in the XOR and Perceptron exercises).
        feature_names, class_names: For plots and model signatures (no feature
            names where columns have none, such as pixels).
        scaling: How the models scale these raw inputs (None: they take them as they are).
        source: Where the rows came from: a file, a URL, or the library loader
            (``sklearn.datasets.load_iris``); runs log it with the dataset.
    """

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    scaling: InputScaling | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {', '.join(TASKS)}")

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        if self.task == "regression":
            return 0
        return len(self.class_names) or int(self.y_train.max()) + 1

    @property
    def is_classification(self) -> bool:
        return self.task != "regression"

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The splits that exist, by name: ``train`` and any of ``val``, ``test``."""
        found = {"train": (self.x_train, self.y_train)}
        if self.x_val is not None and self.y_val is not None:
            found["val"] = (self.x_val, self.y_val)
        if self.x_test is not None and self.y_test is not None:
            found["test"] = (self.x_test, self.y_test)
        return found

    @property
    def spec(self) -> DataSpec:
        """What a model is told about this data at ``fit`` time."""
        return DataSpec(self.task, self.n_classes, self.scaling, self.feature_names)

    @property
    def validation_data(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self.splits().get("val")

    @functools.cached_property  # hashes every array (MNIST: ~0.3 s); a dataset is frozen
    def fingerprint(self) -> str:
        """A short hash of every array, dtype and shape: same data, same fingerprint."""
        digest = hashlib.sha256(self.task.encode())
        for split, (x, y) in sorted(self.splits().items()):
            for array in (x, y):
                array = np.ascontiguousarray(array)
                digest.update(f"{split}:{array.dtype}:{array.shape}".encode())
                digest.update(array.tobytes())
        return digest.hexdigest()[:16]
