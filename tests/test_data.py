"""Dataset loaders on the real files in shared/data: shapes, checksums, splits,
clear errors for bad files, and rebalancing. Nothing is downloaded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from src.config import compose, validate
from src.data.files import DataError, data_dir
from src.data.images import load_images
from src.data.resample import resampled
from src.data.tables import load_auto_mpg, load_csv
from src.data.toy import load_digits
from src.training import load_dataset
from tests.conftest import ROOT

SHARED = Path(os.environ.get("MLPLAB_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the checkout")


def no_download(dataset):
    raise OSError("network is unreachable")


@needs_shared
@pytest.mark.parametrize(("dataset", "mean_pixel"), [("mnist", 0.1307), ("fashion_mnist", 0.2860)])
def test_idx_files_load_verified_raw_with_their_scaling(dataset, mean_pixel):
    data = load_images(dataset, dataset, dir=str(SHARED), val_size=0.1, download=no_download)
    assert data.x_train.shape == (54000, 784) and data.x_val.shape == (6000, 784)
    assert data.x_test.shape == (10000, 784)
    # raw pixels, as a user has them; the models divide by 255 themselves
    assert data.x_train.dtype == np.float32 and data.x_train.min() == 0 and data.x_train.max() == 255
    scaled = data.scaling.apply(np.concatenate([data.x_train, data.x_val]))
    assert scaled.dtype == np.float32 and scaled.max() == 1
    assert scaled.mean() == pytest.approx(mean_pixel, abs=1e-3)
    assert sorted(np.unique(data.y_test)) == list(range(10)) and data.n_classes == 10


@needs_shared
def test_slices_of_the_real_files():
    data = load_images("mnist", "mnist", dir=str(SHARED), val_size=0.2, train_limit=1000, test_limit=200)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (800, 200, 200)


def test_data_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("MLPLAB_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    assert data_dir("/elsewhere") == Path("/elsewhere")
    monkeypatch.delenv("MLPLAB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_dir() == tmp_path / "cache" / "mlplab" / "data"
    monkeypatch.setenv("MLPLAB_DATA_DIR", str(tmp_path))
    assert compose(["data=mnist"]).data.dir == str(tmp_path)


@needs_shared
def test_a_corrupt_file_is_refused(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(SHARED / "mnist", folder)
    (folder / "t10k-labels-idx1-ubyte.gz").chmod(0o644)
    with (folder / "t10k-labels-idx1-ubyte.gz").open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is not the published file"):
        load_images("mnist", "mnist", dir=str(tmp_path), download=no_download)


def test_missing_files_offline_say_what_to_put_where(tmp_path):
    with pytest.raises(DataError) as caught:
        load_images("mnist", "mnist", dir=str(tmp_path), download=no_download)
    message = str(caught.value)
    assert str(tmp_path / "mnist") in message and "train-images-idx3-ubyte.gz" in message
    assert "network is unreachable" in message and "\n" not in message
    with pytest.raises(DataError, match="auto-mpg.data"):
        load_auto_mpg(dir=str(tmp_path), download=lambda url: no_download(url))


@needs_shared
def test_auto_mpg_rows_features_and_split():
    data = load_auto_mpg(dir=str(SHARED))
    assert data.task == "regression"
    assert len(data.x_train) + len(data.x_test) == 392  # 398 rows, 6 without horsepower
    assert (len(data.x_train), len(data.x_test)) == (313, 79)
    assert data.feature_names[-3:] == ("origin_europe", "origin_japan", "origin_usa")
    assert np.all(data.x_train[:, -3:].sum(axis=1) == 1)
    assert 9.0 <= data.y_train.min() and data.y_train.max() <= 46.6
    standardized = load_auto_mpg(dir=str(SHARED), standardize=True)
    np.testing.assert_array_equal(standardized.x_train, data.x_train)  # the arrays stay in their units
    scaling = standardized.scaling  # statistics of the training split only
    assert np.allclose(scaling.apply(standardized.x_train).mean(axis=0), 0, atol=1e-5)
    assert not np.allclose(scaling.apply(standardized.x_test).mean(axis=0), 0, atol=1e-3)


def test_digits_work_offline():
    data = load_digits()
    assert data.x_train.shape == (1437, 64) and data.x_test.shape == (360, 64)
    assert data.x_train.max() == 16 and data.scaling.apply(data.x_train).max() == 1.0


# ------------------------------------------------------------------- CSV files
def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return str(path)


ROWS = "a,b,label\n" + "".join(f"{i},{i % 3},{'yes' if i % 2 else 'no'}\n" for i in range(20))


def test_csv_classification_and_regression(tmp_path):
    data = load_csv(write(tmp_path, ROWS), target="label")
    assert data.task == "binary" and data.class_names == ("no", "yes")
    assert data.n_features == 2 and len(data.x_train) == 16
    data = load_csv(write(tmp_path, ROWS), target="a", task="regression", features=["b"])
    assert data.task == "regression" and data.feature_names == ("b",)


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        (None, {}, "no such file"),
        ("", {}, "the file is empty"),
        ("a,b,label\n", {}, "header but no rows"),
        (ROWS, {"target": "class"}, "data.target='class' is not a column of data.csv; columns: a, b, label"),
        ("a,b,label\n1,x,yes\n2,3,no\n", {}, "column 'b' of data.csv is not numeric (row 2 holds 'x')"),
        ("a,label\n1,yes\n2,yes\n3,yes\n", {}, "holds a single class ('yes')"),
        (ROWS, {"features": ["a", "c"]}, "data.features names 'c'"),
    ],
)
def test_bad_csv_files_get_clear_errors(tmp_path, text, kwargs, message):
    path = str(tmp_path / "missing.csv") if text is None else write(tmp_path, text)
    with pytest.raises(DataError) as caught:
        load_csv(path, **{"target": "label", **kwargs})
    assert message in str(caught.value)


def test_csv_config_needs_path_and_target():
    from src.errors import ConfigError

    with pytest.raises(ConfigError, match="data.path"):
        compose(["data=csv"])


# ------------------------------------------------------------------ resampling
def test_resampling_balances_the_training_split_only(tmp_path):
    text = "x1,x2,label\n" + "".join(f"{i},{i * 0.5},{'rare' if i % 10 == 0 else 'common'}\n" for i in range(100))
    data = load_csv(write(tmp_path, text), target="label")
    for method in ("oversample", "smote"):
        balanced = resampled(data, method, random_state=0)
        assert np.bincount(balanced.y_train).tolist() == [np.bincount(data.y_train).max()] * 2
        assert np.array_equal(balanced.y_test, data.y_test)
    with pytest.raises(DataError, match="regression task"):
        resampled(load_csv(write(tmp_path, text), target="x1", task="regression", features=["x2"]), "smote")


def test_resample_is_a_data_option():
    plain = validate(compose(["+experiment=iris_setosa_2d", "data.resample=oversample"]))
    assert np.bincount(load_dataset(plain["data"]).y_train).tolist() == [100, 100]  # 100 others, 50 setosa
    from src.errors import ConfigError

    with pytest.raises(ConfigError, match="data.resample='smoote'"):
        compose(["+experiment=iris", "data.resample=smoote"])
