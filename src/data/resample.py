"""Class rebalancing of the training split (imbalanced-learn); held-out splits stay as they are."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace

from src.data.dataset import Dataset
from src.data.files import DataError

METHODS = ("none", "oversample", "smote")


def resampled(dataset: Dataset, method: str, random_state: int = 0) -> Dataset:
    """The dataset with its training split rebalanced by ``method``.

    Raises:
        DataError: the task is regression, or SMOTE has too few minority samples.
    """
    if method == "none":
        return dataset
    if not dataset.is_classification:
        raise DataError(f"data.resample={method!r} balances classes; {dataset.name} is a regression task")
    from imblearn.over_sampling import SMOTE, RandomOverSampler

    sampler = {"oversample": RandomOverSampler, "smote": SMOTE}[method](random_state=random_state)
    try:
        x, y = sampler.fit_resample(dataset.x_train, dataset.y_train)
    except ValueError as exc:
        raise DataError(f"data.resample={method!r}: {str(exc).splitlines()[0]}") from None
    return replace(dataset, x_train=x, y_train=y)


def resampling(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
    """Gives a loader the ``resample`` setting of its data node (``none`` unless
    set), applied to the training split with the loader's ``random_state``."""

    @functools.wraps(loader)
    def load(*args: object, resample: str = "none", **kwargs: object) -> Dataset:
        return resampled(loader(*args, **kwargs), resample, int(kwargs.get("random_state", 0)))  # type: ignore[arg-type]

    return load
