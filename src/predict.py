"""Predict with a logged model.

    python -m src.predict (--run-id RUN | --experiment NAME [--metric test_accuracy]
                          [--model keras_mlp] | --model models:/NAME@champion)
                          --input X.npy|X.csv [--labels Y.npy|--label-column COL]
                          [--output predictions.csv] [--batch-size 4096] [--uri URI]

The model is the one logged by a child run (``--run-id``), by the best run of an
experiment by a metric, or a registered one (any ``models:/`` URI: a version
``models:/iris/1`` or an alias ``models:/iris@champion``). Inputs are read from a
``.npy`` array or a CSV of numeric columns and predicted in batches; predictions
are written to ``--output`` (``.csv`` or ``.npy``). With labels, the accuracy
(classification) or the mean absolute error (regression) is printed.
"""

from __future__ import annotations

if __name__ == "__main__":  # a warm process, if one serves this checkout, runs the job (src/warm.py)
    from src.warm import hand_off

    hand_off("src.predict")

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.config import DEFAULT_TRACKING_URI
from src.errors import MlplabError, report

LOWER_IS_BETTER = ("mae", "mse", "loss", "seconds")


def find_run(client: Any, args: argparse.Namespace) -> Any:
    """The run whose model to load: by id, or the best of an experiment by a metric."""
    from mlflow.exceptions import MlflowException

    if args.run_id:
        try:
            return client.get_run(args.run_id)
        except MlflowException:
            raise MlplabError(f"no MLflow run with id {args.run_id!r}") from None
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise MlplabError(f"no MLflow experiment named {args.experiment!r}")
    ascending = any(word in args.metric for word in LOWER_IS_BETTER)
    runs = client.search_runs(
        [experiment.experiment_id],
        f"attributes.run_name = '{args.model}' and attributes.status = 'FINISHED'",
        order_by=[f"metrics.{args.metric} {'ASC' if ascending else 'DESC'}"],
        max_results=100,
    )
    runs = [r for r in runs if args.metric in r.data.metrics]
    if not runs:
        raise MlplabError(f"no finished {args.model} run of {args.experiment!r} has the metric {args.metric}")
    return runs[0]


def registered_run(client: Any, uri: str) -> Any:
    """The run that logged the model a ``models:/`` URI names (``models:/NAME/VERSION``,
    ``models:/NAME@ALIAS``, or a logged model's ``models:/m-...``)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        info = mlflow.models.get_model_info(uri)
    except MlflowException:
        name = re.split(r"[/@]", uri.removeprefix("models:/"))[0]
        versions = client.search_model_versions(f"name = '{name}'") if name else []
        known = ", ".join(sorted({str(v.version) for v in versions}, key=int)) if versions else "none"
        raise MlplabError(f"--model {uri}: no such registered model version (versions of {name!r}: {known})") from None
    return client.get_run(info.run_id)


def read_matrix(path: Path, drop: str | None = None) -> tuple[Any, np.ndarray | None]:
    """Features from a .npy file (an array) or a CSV file (a DataFrame of numeric
    columns), and the ``drop`` column as labels, if named."""
    if not path.is_file():
        raise MlplabError(f"input file {path} does not exist")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    import pandas as pd

    frame = pd.read_csv(path)
    labels = None
    if drop:
        if drop not in frame.columns:
            raise MlplabError(f"--label-column {drop!r} is not a column of {path.name}")
        labels = frame.pop(drop).to_numpy()
    try:
        return frame.astype(np.float64), labels
    except ValueError:
        raise MlplabError(f"{path.name} holds non-numeric feature values") from None


def model_input(model: Any, features: Any, source: str, run_id: str) -> Any:
    """The rows as the model takes them: a DataFrame of its named columns (picked
    by name from a CSV, in order from an array), or an array of its dtype."""
    import pandas as pd

    schema = model.metadata.get_input_schema()
    if schema is None:
        return np.asarray(features)
    names = schema.input_names() if schema.has_input_names() else []
    names = names or (model.metadata.metadata or {}).get("feature_names") or []
    width = len(names) if names else schema.inputs[0].shape[-1]
    if isinstance(features, pd.DataFrame) and names and set(names) <= set(map(str, features.columns)):
        features = features[names]
    array = np.asarray(features)
    if array.ndim != 2 or array.shape[1] != width:
        raise MlplabError(
            f"{source} has {array.shape[-1] if array.ndim == 2 else array.shape} features per row; "
            f"the model of run {run_id[:8]} expects {width}"
            + (f" ({', '.join(names)})" if names and len(names) <= 20 else "")
        )
    if schema.is_tensor_spec():
        return array.astype(schema.inputs[0].type)
    return pd.DataFrame(array, columns=names).astype({c.name: c.type.to_numpy() for c in schema.inputs})


def predict(args: argparse.Namespace) -> tuple[np.ndarray, str | None]:
    import mlflow
    from mlflow.tracking import MlflowClient

    from src import tracking
    from src.models.backend import tensorflow_log

    tracking.connect(args.uri)
    client = MlflowClient()
    if args.model.startswith("models:/"):
        uri, run = args.model, registered_run(client, args.model)
    else:
        run = find_run(client, args)
        logged = tracking.logged_model(client, run)
        if logged is None:
            raise MlplabError(f"run {run.info.run_id} ({run.info.run_name}) logged no model (tracking.log_models=false?)")
        uri = logged.model_uri
    features, labels = read_matrix(args.input, args.label_column)
    # Loading a Keras model imports TensorFlow: its C++ lines go where a command's go (backend.py).
    with tensorflow_log():
        model = mlflow.pyfunc.load_model(uri)
        _quiet_keras()
        x = model_input(model, features, args.input.name, run.info.run_id)
        outputs = [np.asarray(model.predict(x[i : i + args.batch_size])) for i in range(0, len(x), args.batch_size)]
    output = np.concatenate(outputs) if outputs else np.empty((0,))
    task = _task(client, run)
    predictions = _decode(output, task)
    if args.labels is not None:
        labels, _ = read_matrix(args.labels)
    return predictions, _score(predictions, labels, task)


def _quiet_keras() -> None:
    """No Keras progress bar in the output: the pyfunc of a Keras model predicts
    with ``verbose="auto"``, which draws one per batch."""
    if "keras" in sys.modules:
        import logging

        import keras

        keras.utils.disable_interactive_logging()  # its messages then go to absl's logger ...
        logging.getLogger("absl").setLevel(logging.WARNING)  # ... at INFO, not shown


def _task(client: Any, run: Any) -> str:
    parent = run.data.tags.get("mlflow.parentRunId")
    tags = client.get_run(parent).data.tags if parent and "task" not in run.data.tags else run.data.tags
    return tags.get("task", "multiclass")


def _decode(output: np.ndarray, task: str) -> np.ndarray:
    """Class labels from probabilities (Keras) or as they are (scikit-learn)."""
    if task == "regression":
        return output.ravel()
    if output.ndim == 2 and output.shape[1] > 1:
        return output.argmax(axis=1)
    flat = output.ravel()
    if task == "binary" and np.issubdtype(flat.dtype, np.floating) and not np.all(np.isin(flat, (0, 1))):
        return (flat >= 0.5).astype(np.int64)
    return flat


def _score(predictions: np.ndarray, labels: np.ndarray | None, task: str) -> str | None:
    if labels is None:
        return None
    labels = np.asarray(labels).ravel()
    if len(labels) != len(predictions):
        raise MlplabError(f"{len(labels)} labels for {len(predictions)} rows")
    if task == "regression":
        return f"MAE {np.mean(np.abs(predictions - labels.astype(float))):.4f} on {len(labels)} rows"
    return f"accuracy {np.mean(predictions == labels.astype(predictions.dtype)):.4f} on {len(labels)} rows"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m src.predict", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run-id", help="the run that logged the model")
    which.add_argument("--experiment", help="use the best run of this experiment")
    parser.add_argument("--metric", default="test_accuracy", help="what 'best' means (default: test_accuracy)")
    parser.add_argument("--model", default="keras_mlp",
                        help="which model's runs to choose from, or a registered model: models:/NAME@champion")
    parser.add_argument("--input", type=Path, required=True)
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--labels", type=Path)
    labels.add_argument("--label-column")
    parser.add_argument("--output", type=Path, default=Path("predictions.csv"))
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    args = parser.parse_args(argv)
    registered = args.model.startswith("models:/")
    if registered and (args.run_id or args.experiment):
        parser.error(f"--model {args.model} names the model: leave out --run-id and --experiment")
    if not registered and not (args.run_id or args.experiment):
        parser.error("one of --run-id, --experiment or --model models:/... is required")
    try:
        predictions, score = predict(args)
        if args.output.suffix == ".npy":
            np.save(args.output, predictions)
        else:
            np.savetxt(args.output, predictions, delimiter=",", header="prediction", comments="", fmt="%s")
        print(f"{len(predictions)} predictions written to {args.output}")
        if score:
            print(score)
    except MlplabError as exc:
        sys.exit(report(exc))


if __name__ == "__main__":
    from src.errors import run_command

    run_command(main)
