"""The one path from a composed config to tracked metrics.

``run(cfg)`` validates the config, loads the data, trains the Keras MLP and every
baseline on the same split, logs a parent run with one child run per model, and
returns the metrics. The ``src.train`` CLI and every sweep trial call it.
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from src.config import validate
from src.data import Dataset
from src.errors import ConfigError, DivergenceError, MlplabError, ctrl_c_held, first_line
from src.listeners import EpochListener
from src.progress import OFF, TrainingProgress, announced
from src.models.backend import seed_everything
from src.results import Metrics, RunResult, comparison_table
from src.schema import resolve_loss, wired_keys

if TYPE_CHECKING:
    from src.baseline_worker import BaselineWorker, Job, Trained
    from src.models.base import Estimator
    from src.tracking import TrackedRun

log = logging.getLogger("mlplab")

FIT_WARNINGS_TAG = "fit_warnings"
KERAS_MODEL = "keras_mlp"
NUMPY_MODEL = "numpy_mlp"


@dataclass
class ModelRun:
    """A model to train, and the params its child run records."""

    estimator: Estimator
    params: dict[str, Any] = field(default_factory=dict)


class DivergenceGuard(EpochListener):
    """Stops training at the first epoch whose loss diverges, as Lightning's
    ``EarlyStopping(check_finite=True, divergence_threshold=...)`` does.

    A loss diverges when it is NaN or infinite, more than ``factor`` times the
    first epoch's loss, or above ``threshold``. Weights that end non-finite stop
    it too: a loss averaged during the last epoch can still look finite.

    Args:
        estimator: The model being trained (its weights are checked at the end).
        factor: Limit relative to the first epoch's loss (None: off). A finite loss
            that grows this much has left any training behind: on XOR with SGD at
            learning rate 1e30 it went 0.70, 1.2e28, 2e30, all finite.
        threshold: Absolute limit on the loss (None: off).
    """

    def __init__(self, estimator: Estimator, factor: float | None = None, threshold: float | None = None) -> None:
        self.estimator = estimator
        self.factor = factor
        self.threshold = threshold
        self.first: float | None = None
        self.last_epoch = 0

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None:
        self.last_epoch = epoch
        loss = logs.get("loss")
        if loss is None:
            return
        if not math.isfinite(loss):
            raise DivergenceError(epoch, loss, f"loss became {loss}")
        if self.first is None:
            self.first = loss
        elif self.factor is not None and loss > self.factor * max(self.first, 1e-12):
            raise DivergenceError(
                epoch, loss, f"loss became {loss:.3g}",
                f", over {self.factor:g} times the first epoch's {self.first:.3g} (trainer.divergence_factor)",
            )
        if self.threshold is not None and loss > self.threshold:
            raise DivergenceError(
                epoch, loss, f"loss became {loss:.3g}", f", above trainer.divergence_threshold={self.threshold:g}"
            )

    def on_train_end(self) -> None:
        if not self.estimator.parameters_finite():
            raise DivergenceError(self.last_epoch, None, "the weights became non-finite")


METRICS_NOTE = (
    "**Final metrics** (`train_loss`, `train_accuracy`, `val_*`, `test_*`): the trained model scored "
    "once on each whole split after training, with dropout off.\n\n"
    "**Per-epoch curves** (`loss`, `accuracy`, and `val_loss`, `val_accuracy` with step = epoch; models "
    "trained epoch by epoch): `loss` is the training loss averaged over each epoch's batches while the "
    "weights were still moving, with dropout on, so the last epoch's `loss` is not `train_loss`; "
    "`val_*` are scored at each epoch's end."
)
"""The description of each model's run: the two losses a student sees side by side."""


def run(
    cfg: DictConfig | Mapping[str, Any],
    *,
    parent_run_id: str | None = None,
    into: TrackedRun | None = None,
    listeners: Sequence[EpochListener] = (),
    only: Collection[str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> RunResult:
    """Trains every configured model on one dataset and tracks it all in MLflow.

    Args:
        cfg: A composed run config (see ``conf/config.yaml``).
        parent_run_id: Nest this invocation's run under an existing MLflow run
            (a sweep's study run).
        into: An open run to log this invocation into instead of starting one
            (a sweep trial's run). A single model then logs straight into it;
            several still get a child run each.
        listeners: Extra per-epoch listeners for the iteratively trained models,
            such as a sweep's pruning reporter.
        only: Names of the models to train (default: the Keras MLP and every
            baseline). Without ``keras_mlp``, TensorFlow is not imported.
        params: More params for the invocation's run, logged in the config's
            write (a sweep trial's sampled values).

    Returns:
        The final metrics by model name, and the runs that hold them.

    Raises:
        ConfigError: The config is invalid (before anything heavy is imported),
            or it is a lesson's (see :mod:`src.lessons`).
        DivergenceError: The loss or the weights diverged; the runs end FAILED.
    """
    plain = validate(cfg)
    if plain["lesson"] is not None:
        raise ConfigError(f"{plain['experiment_name']} is a lesson without a dataset: run it with src.lessons.run")
    from src import baseline_worker

    names = model_names(plain, only)
    network = [name for name in names if name == KERAS_MODEL]
    baselines = [name for name in names if name != main_model_name(plain)]
    worker = None
    if into is None and not listeners and network and baselines:
        context = baseline_worker.start_method()
        if context is not None:
            worker = baseline_worker.BaselineWorker(_ready_for_baselines, plain, context)
    try:
        with announced(f"loading {plain['data'].get('name') or 'the data'}"):
            dataset = load_dataset(plain["data"])
        loss = resolve_loss(plain["trainer"]["loss"], dataset.task)  # a loss that misfits fails here, before any run

        from src import tracking  # MLflow is imported only once the config is known good

        if into is not None:
            experiment = into.experiment_id  # the caller's open run: its store is connected
        else:
            with announced(f"opening the tracking store {tracking.redact(plain['tracking']['uri'])}"):
                experiment = tracking.open_experiment(plain["experiment_name"], plain["tracking"])
        if plots_enabled(plain):
            from src.plots import prepare_in_background

            prepare_in_background()
        # With the worker, the network (TensorFlow's import) is built once the baselines are on their way.
        models = build_models(plain, only=baselines if worker else names, loss=loss)
        if into is not None:
            return _run_models(into, plain, dataset, models, experiment, listeners, flat=len(models) == 1, params=params)
        with tracking.invocation_run(plain, experiment, parent_run_id) as parent:
            if worker is not None:
                worker.send(baseline_worker.Job(experiment, parent.run_id, models))
                models = build_models(plain, only=network, loss=loss)
            result = _run_models(
                parent, plain, dataset, models, experiment, listeners, flat=False, worker=worker, params=params
            )
    except BaseException as exc:
        if worker is not None:
            worker.stop(interrupted=isinstance(exc, KeyboardInterrupt))
        raise
    if plain["tracking"].get("register"):
        _register(plain, result)
    return result


def _register(plain: Mapping[str, Any], result: RunResult) -> None:
    """Registers the run's main model (``tracking.register``), tagged with the
    config and data it came from, and moves the alias ``champion`` when it wins."""
    from src import tracking

    settings = plain["tracking"]
    name = settings.get("registered_model") or plain["experiment_name"]
    run_id = result.model_run_ids[main_model_name(plain)]
    tags = {"config_fingerprint": config_fingerprint(plain), "experiment": plain["experiment_name"],
            "invocation_run_id": result.run_id}
    with tracking.store_errors():
        lines = tracking.register_model(run_id, name, tags, settings.get("champion"))
    for line in lines:
        log.info("%s", line)


def _run_models(
    parent: TrackedRun,
    plain: Mapping[str, Any],
    dataset: Dataset,
    models: Mapping[str, ModelRun],
    experiment: str,
    listeners: Sequence[EpochListener],
    *,
    flat: bool,
    worker: BaselineWorker | None = None,
    params: Mapping[str, Any] | None = None,
) -> RunResult:
    """Logs the invocation into ``parent`` and trains each model in a child run,
    or, when ``flat``, the only model straight into ``parent``; then takes the
    results of the models sent to ``worker``, if any."""
    from src import tracking

    data_params = {"data.n_features": dataset.n_features} | {
        f"data.n_{split}": len(x) for split, (x, _) in dataset.splits().items()
    }
    # A flat run's model params go in the same write (the config's values win where both name a key).
    model_params = next(iter(models.values())).params if flat else {}
    more_params = {**(params or {}), **model_params, **data_params}
    tracking.log_config(parent, plain, more_params=more_params, tags=_provenance_tags(plain, dataset))
    log_data(parent, dataset)
    results: Metrics = {}
    run_ids: dict[str, str] = {}
    for name, model in models.items():
        if flat:
            results[name] = _train_and_log(name, model, dataset, parent, {}, listeners, plain)
            run_ids[name] = parent.run_id
        else:
            results[name], run_ids[name] = train_in_child_run(
                parent.run_id, experiment, name, model, dataset, plain, listeners
            )
    if worker is not None:
        trained = worker.result()
        models = {**models, **trained.models}  # fitted there
        results |= trained.metrics
        run_ids |= trained.run_ids
    parent.log_text(comparison_table(results) + "\n", "comparison.txt")
    if not flat and dataset.n_features == 2 and plots_enabled(plain):
        from src.plots import decision_boundaries

        side_by_side = {name: model.estimator for name, model in models.items()}
        parent.log_figures({"decision_boundaries.png": lambda: decision_boundaries(side_by_side, dataset)})
    if not flat:
        parent.log_metrics(
            {f"{name}.{key}": value for name, metrics in results.items() for key, value in metrics.items()}
        )
    return RunResult(results, experiment, parent.run_id, parent.run_name, run_ids)


def _ready_for_baselines(plain: dict[str, Any]) -> Callable[[Job], Trained]:
    """Readies a :class:`~src.baseline_worker.BaselineWorker` (in its process) to
    train a run's baselines: imports what logging them needs, loads the data and
    opens the tracking store, all while the command imports TensorFlow."""
    from src import tracking
    from src.baseline_worker import Trained
    from src.models.baselines import SklearnBaseline  # noqa: F401  (scikit-learn, before the job)

    if plain["tracking"]["log_models"]:
        import skops.io  # noqa: F401  (MLflow saves the baselines with it: ~2 s of imports)
    if plots_enabled(plain):
        from src.plots import prepare_in_background

        prepare_in_background()
    dataset = load_dataset(plain["data"])
    tracking.connect(plain["tracking"]["uri"])

    def train(job: Job) -> Trained:
        metrics, run_ids = {}, {}
        for name, model in job.models.items():
            metrics[name], run_ids[name] = train_in_child_run(
                job.parent_run_id, job.experiment, name, model, dataset, plain
            )
        return Trained(metrics, run_ids, job.models)

    return train


def log_data(tracked: TrackedRun, dataset: Dataset) -> None:
    """Logs ``dataset``'s splits as the run's MLflow datasets."""
    tracked.log_datasets(dataset.name, dataset.fingerprint, dataset.source, dataset.splits())


def train_in_child_run(
    parent_run_id: str,
    experiment: str,
    name: str,
    model: ModelRun,
    dataset: Dataset,
    plain: Mapping[str, Any],
    listeners: Sequence[EpochListener] = (),
) -> tuple[dict[str, float], str]:
    """Trains ``model`` in a child run of ``parent_run_id``, named ``name``, and
    logs it there; returns its metrics and the child run's id."""
    from src import tracking

    with tracking.run(
        name,
        experiment=experiment,
        parent_run_id=parent_run_id,
        tags={"model": name, "flavor": model.estimator.flavor, "data": dataset.name},
        description=METRICS_NOTE,
    ) as child:
        log_data(child, dataset)
        return _train_and_log(name, model, dataset, child, model.params, listeners, plain), child.run_id


def _train_and_log(
    name: str,
    model: ModelRun,
    dataset: Dataset,
    tracked: TrackedRun,
    params: Mapping[str, Any],
    listeners: Sequence[EpochListener],
    plain: Mapping[str, Any],
) -> dict[str, float]:
    from src.tracking import store_errors

    estimator = model.estimator
    with store_errors():
        tracked.log_params(params)
    epoch_logger = tracked.epoch_logger()
    log.info("%s: training on %d samples ...", name, len(dataset.x_train))
    if estimator.flavor == "keras":
        seed_everything(plain["seed"])
    progress = training_progress(name, estimator, plain["trainer"].get("verbose"))
    started = time.perf_counter()
    metrics = None
    try:
        try:
            estimator.fit(
                dataset.x_train,
                dataset.y_train,
                spec=dataset.spec,
                validation_data=dataset.validation_data,
                listeners=[epoch_logger, divergence_guard(estimator, plain["trainer"]), *listeners, *progress],
            )
        finally:
            for shown in progress:
                shown.close()
        fit_seconds = time.perf_counter() - started
        _report_fit_warnings(name, estimator, tracked)
        metrics = {**evaluate(estimator, dataset), "fit_seconds": fit_seconds}
    finally:
        # The run must not end before the per-epoch metrics are stored: with the
        # final metrics in one write, or alone if training or scoring failed. If the
        # store failed, the error carries the metrics, which a sweep trial keeps.
        with store_errors(metrics):
            if metrics is None:
                epoch_logger.flush()
            else:
                epoch_logger.flush(final=metrics, step=(estimator.history_epochs() or [0])[-1])
    with store_errors(metrics):
        if plots_enabled(plain):
            from src.plots import model_figures

            with announced(f"{name}: drawing its plots"):
                tracked.log_figures(model_figures(estimator, dataset))
        if plain["tracking"]["log_models"]:
            with announced(f"{name}: logging the model"):
                tracked.log_model(estimator, dataset.x_train[:5])
    log.info("%s: done in %.2f s", name, fit_seconds)
    return metrics


def _report_fit_warnings(name: str, estimator: Estimator, tracked: TrackedRun) -> None:
    """A fit's warnings (scikit-learn's ConvergenceWarning, repeated per class or
    iteration) as one printed line and the run's ``fit_warnings`` tag."""
    from src.tracking import store_errors

    found = list(dict.fromkeys(estimator.fit_warnings()))
    if not found:
        return
    more = f" (and {len(found) - 1} more; see the run's fit_warnings tag)" if len(found) > 1 else ""
    log.warning("%s: %s%s", name, found[0], more)
    with store_errors():
        tracked.set_tags({FIT_WARNINGS_TAG: "\n".join(found)})


# ------------------------------------------------------------------ the pieces
def load_dataset(data_cfg: Mapping[str, Any]) -> Dataset:
    """The dataset of the ``data`` config node, built by Hydra's ``instantiate``
    (resampling included: every loader takes ``resample``)."""
    return instantiate_node("data", data_cfg)


def instantiate_node(path: str, node: Mapping[str, Any], **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of the config node at ``path``.

    Hydra wraps whatever the target raises in its own exception, whose text is a
    paragraph; the user gets the one line instead: a mlplab error as it is, any
    other as a ConfigError naming the node.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, MlplabError):
            raise cause from None
        raise ConfigError(f"cannot build {path} ({node['_target_']}): {first_line(cause)}") from None


def training_progress(name: str, estimator: Estimator, verbose: int | None) -> list[TrainingProgress]:
    """The listener that shows ``estimator``'s training on the terminal, if any:
    none for ``trainer.verbose=0`` or a model that tells no progress."""
    epochs = estimator.progress_epochs()
    return [] if verbose == OFF or not epochs else [TrainingProgress(name, epochs, verbose)]


def divergence_guard(estimator: Estimator, trainer: Mapping[str, Any]) -> DivergenceGuard:
    """The guard with the limits of the ``trainer`` config node."""
    return DivergenceGuard(estimator, trainer.get("divergence_factor"), trainer.get("divergence_threshold"))


def build_models(
    plain: Mapping[str, Any],
    only: Collection[str] | None = None,
    loss: str | None = None,
) -> dict[str, ModelRun]:
    """The configured network and each baseline, unfitted, by child-run name.

    Each is one ``instantiate`` of its config node: the network's node carries its
    optimizer, initializer, regularizer, dropout and trainer settings (wired from
    their groups); a baseline's node is the scikit-learn estimator, which
    :class:`~src.models.baselines.SklearnBaseline` wraps.

    Args:
        plain: A validated config.
        only: Names of the models to build (default: all).
        loss: The loss resolved for the data's task, recorded with the network's params.

    Raises:
        ConfigError: a model cannot be built from its config, or ``only`` names
            a model that is not configured.
    """
    main = main_model_name(plain)
    wanted = model_names(plain, only)

    models: dict[str, ModelRun] = {}
    if main in wanted:
        with ctrl_c_held():  # the network's node imports TensorFlow
            network = instantiate_node("model", plain["model"])
        models[main] = ModelRun(network, network_params(plain, loss))
    from src.models.baselines import SklearnBaseline

    for name in wanted:
        if name != main:
            estimator = instantiate_node(f"baselines.{name}", plain["baselines"][name])
            models[name] = ModelRun(SklearnBaseline(estimator), estimator.get_params())
    return models


def model_names(plain: Mapping[str, Any], only: Collection[str] | None = None) -> list[str]:
    """The child-run names of the configured network and baselines (of ``only``,
    if given), in training order.

    Raises:
        ConfigError: ``only`` names a model that is not configured.
    """
    names = [main_model_name(plain), *(plain["baselines"] or {})]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ConfigError(f"no model named {unknown[0]}; configured: {', '.join(names)}")
    return [n for n in names if only is None or n in only]


def network_params(plain: Mapping[str, Any], loss: str | None = None) -> dict[str, Any]:
    """The network's child-run params: its own model settings, and each value wired
    into it under the name it is set by (``optimizer.learning_rate``, ``trainer.epochs``).

    The loop's own settings (the divergence limits) are the parent run's params."""
    from src.tracking import flatten

    model = plain["model"]
    wired = wired_keys(model["_target_"])
    own = {key: value for key, value in model.items() if key not in wired}
    return {**flatten({"model": own, **{source: model[key] for key, source in wired.items()}}), "loss": loss}


def plots_enabled(plain: Mapping[str, Any]) -> bool:
    """Whether runs draw their figures (``tracking.plots``, on unless set false)."""
    return bool(plain["tracking"].get("plots", True))


def main_model_name(plain: Mapping[str, Any]) -> str:
    """The child-run name of the configured network: keras_mlp or numpy_mlp."""
    return NUMPY_MODEL if plain["model"]["_target_"].endswith(".NumpyMLP") else KERAS_MODEL


def evaluate(estimator: Estimator, dataset: Dataset) -> dict[str, float]:
    """Final metrics on every split, with the same names for every model family."""
    metrics: dict[str, float] = {}
    for split, (x, y) in dataset.splits().items():
        metrics |= {f"{split}_{name}": value for name, value in estimator.split_metrics(x, y).items()}
    metrics.update(estimator.summary_metrics())
    return metrics


def config_fingerprint(plain: Mapping[str, Any]) -> str:
    """A short hash of the resolved config but where it is tracked: the same
    settings give the same fingerprint, on any store."""
    import hashlib
    import json

    settings = {k: v for k, v in plain.items() if k != "tracking"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _provenance_tags(plain: Mapping[str, Any], dataset: Dataset) -> dict[str, Any]:
    tags = {
        "experiment": plain["experiment_name"],
        "seed": plain["seed"],
        "data": dataset.name,
        "task": dataset.task,
        "data_fingerprint": dataset.fingerprint,
        "config_fingerprint": config_fingerprint(plain),
    }
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def git_commit() -> str | None:
    """The commit of the checkout this code runs from, or None outside git."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None
