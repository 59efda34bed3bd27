"""Tabular data: UCI Auto MPG, and a user's own CSV file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from src.data.dataset import Dataset
from src.data.files import DataError, data_dir, local_files, missing_files_error
from src.data.resample import resampling
from src.data.splits import split, standardized

AUTO_MPG_URL = "http://archive.ics.uci.edu/ml/machine-learning-databases/auto-mpg/auto-mpg.data"
AUTO_MPG_COLUMNS = ("mpg", "cylinders", "displacement", "horsepower", "weight", "acceleration", "model_year", "origin")
ORIGINS = {1: "usa", 2: "europe", 3: "japan"}


def keras_get_file(url: str) -> Path:
    from src.models.backend import import_tensorflow

    import_tensorflow()
    import keras

    return Path(keras.utils.get_file(Path(url).name, url))


def load_auto_mpg(
    name: str = "auto_mpg",
    dir: str | None = None,
    test_size: float = 0.2,
    val_size: float = 0.0,
    standardize: bool = False,
    random_state: int = 0,
    download: Callable[[str], Path] | None = None,
) -> Dataset:
    """Auto MPG regression: rows with a missing horsepower dropped, origin one-hot.

    ``standardize`` scales features with training-split statistics; the
    ``auto_mpg`` experiment leaves it off and lets the Keras model's
    Normalization layer (and the baselines' StandardScaler) learn them instead.
    """
    import pandas as pd

    directory = data_dir(dir)
    files = local_files("auto_mpg", directory)
    if files is not None:
        path = files["auto-mpg.data"]
    else:
        try:
            path = (download or keras_get_file)(AUTO_MPG_URL)
        except Exception as exc:
            raise missing_files_error("auto_mpg", directory, exc) from None
    frame = pd.read_csv(
        path, names=list(AUTO_MPG_COLUMNS), na_values="?", comment="\t", sep=" ", skipinitialspace=True
    ).dropna()
    origin = frame.pop("origin").map(ORIGINS)
    frame = frame.join(pd.get_dummies(origin, prefix="origin", dtype=float))
    y = frame.pop("mpg").to_numpy(np.float32)
    x = frame.to_numpy(np.float32)
    x_train, y_train, x_val, y_val, x_test, y_test = split(
        x, y, test_size=test_size, val_size=val_size, random_state=random_state, stratify=False
    )
    dataset = Dataset(
        name=name, task="regression", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
        x_test=x_test, y_test=y_test, feature_names=tuple(frame.columns),
        source=str(Path(path).resolve()) if files is not None else AUTO_MPG_URL,
    )
    return standardized(dataset) if standardize else dataset


@resampling
def load_csv(
    path: str,
    target: str,
    task: str = "classification",
    name: str = "csv",
    features: Sequence[str] | None = None,
    test_size: float = 0.2,
    val_size: float = 0.0,
    standardize: bool = True,
    random_state: int = 0,
) -> Dataset:
    """A user's CSV: ``target`` column predicted from the numeric ``features``
    (default: every other column).

    Raises:
        DataError: the file is missing or empty, a column is missing, a feature
            holds non-numeric values, or a classification target has one class.
    """
    import pandas as pd

    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data.path={path!r}: no such file")
    try:
        frame = pd.read_csv(file)
    except pd.errors.EmptyDataError:
        raise DataError(f"data.path={path!r}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"data.path={path!r}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise DataError(f"data.path={path!r}: the file has a header but no rows")
    columns = [str(c) for c in frame.columns]
    if target not in columns:
        raise DataError(f"data.target={target!r} is not a column of {file.name}; columns: {', '.join(columns)}")
    features = list(features) if features else [c for c in columns if c != target]
    missing = [f for f in features if f not in columns]
    if missing:
        raise DataError(f"data.features names {missing[0]!r}, not a column of {file.name}; columns: {', '.join(columns)}")
    for column in features:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column][values.isna() & frame[column].notna()]
        if len(bad):
            raise DataError(
                f"column {column!r} of {file.name} is not numeric (row {bad.index[0] + 2} holds {bad.iloc[0]!r}); "
                "encode it as numbers or leave it out with data.features"
            )
    frame = frame.dropna(subset=[*features, target])
    x = frame[features].to_numpy(np.float64)
    class_names: tuple[str, ...] = ()
    if task == "classification":
        classes, y = np.unique(frame[target].astype(str).to_numpy(), return_inverse=True)
        if len(classes) < 2:
            raise DataError(f"data.target={target!r} holds a single class ({classes[0]!r}); a classifier needs two or more")
        class_names = tuple(classes)
        kind, y = ("binary" if len(classes) == 2 else "multiclass"), y.astype(np.int64)
    else:
        y = pd.to_numeric(frame[target], errors="coerce")
        if y.isna().any():
            raise DataError(f"data.target={target!r} is not numeric, so it cannot be a regression target")
        kind, y = "regression", y.to_numpy(np.float32)
    x_train, y_train, x_val, y_val, x_test, y_test = split(
        x, y, test_size=test_size, val_size=val_size, random_state=random_state, stratify=kind != "regression"
    )
    dataset = Dataset(
        name=name, task=kind, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
        x_test=x_test, y_test=y_test, feature_names=tuple(features), class_names=class_names,
        source=str(file.resolve()),
    )
    return standardized(dataset) if standardize else dataset
