"""Where dataset files live, and proof that they are the published ones.

Files are looked up under ``data.dir`` (default: ``$MLPLAB_DATA_DIR``, else a
per-user cache folder), in one sub-folder per dataset, and their SHA-256 must
match the published files before a byte of them is used.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from src.errors import MlplabError


class DataError(MlplabError):
    """A dataset file is missing, corrupt or malformed."""


# SHA-256 of the published files (see shared/data/README.md for their provenance).
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    "auto_mpg": {
        "auto-mpg.data": "48b830e11feee5572525f8f1691ddb9d38d3d7b7063edcd8fca672c2a5e17d8d",
    },
}
_verified: set[tuple[Path, float]] = set()


def data_dir(configured: str | os.PathLike | None = None) -> Path:
    """``configured``, else ``$MLPLAB_DATA_DIR``, else ``$XDG_CACHE_HOME/mlplab/data``."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("MLPLAB_DATA_DIR"):
        return Path(os.environ["MLPLAB_DATA_DIR"]).expanduser()
    return user_cache_dir() / "data"


def user_cache_dir() -> Path:
    """mlplab's per-user cache folder, ``$XDG_CACHE_HOME/mlplab`` (``~/.cache/mlplab``):
    downloaded datasets, and the empty MLflow store new stores are copied from."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlplab"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(path: Path, expected: str) -> Path:
    """``path`` once its SHA-256 is ``expected`` (checked once per file and process)."""
    key = (path.resolve(), path.stat().st_mtime)
    if key in _verified:
        return path
    actual = sha256(path)
    if actual != expected:
        raise DataError(
            f"{path} is not the published file: sha256 {actual[:16]}... instead of "
            f"{expected[:16]}...; delete it and put the original there"
        )
    _verified.add(key)
    return path


def local_files(dataset: str, directory: Path) -> dict[str, Path] | None:
    """The dataset's verified files under ``directory/<dataset>``, or None if any is missing."""
    folder = directory / dataset
    paths = {name: folder / name for name in CHECKSUMS[dataset]}
    if not all(p.is_file() for p in paths.values()):
        return None
    return {name: verified(path, CHECKSUMS[dataset][name]) for name, path in paths.items()}


def missing_files_error(dataset: str, directory: Path, why: BaseException) -> DataError:
    names = ", ".join(CHECKSUMS[dataset])
    return DataError(
        f"{dataset} files not found in {directory / dataset} and the download failed "
        f"({str(why).splitlines()[0] if str(why) else type(why).__name__}): put {names} there, "
        "or point data.dir (or MLPLAB_DATA_DIR) at a folder that has them"
    )

