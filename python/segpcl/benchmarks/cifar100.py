"""CIFAR-100 (100 classes, 10 tasks of 10) from torchvision's `cifar-100-python/` folder.

The pickled `train` and `test` dicts (`data` uint8 [N, 3072], `fine_labels`) and `meta`
(`fine_label_names`) are read directly, as torchvision's CIFAR100 reads them, without its md5 check, by an
unpickler that builds only what the format holds (dicts, lists, strings, numbers and numpy arrays of plain
dtypes): a pickle that names any other Python callable is refused before anything of it runs.
With `download`, torchvision fetches the archive into the data root when the folder is missing.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._files import ArrayImageDataset, Locator, make_benchmark, register_locator
from .base import Benchmark, DataConfig, register_benchmark
from .templates import CIFAR100_TEMPLATES

N_CLASSES = 100
FOLDER = "cifar-100-python"
_FILES = ("train", "test", "meta")


def _detect(folder: Path) -> str | None:
    if folder.is_dir() and all((folder / f).is_file() for f in _FILES):
        return "torchvision cifar-100-python"
    return None


def _diagnose(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    present = [f for f in _FILES if (folder / f).is_file()]
    if present and len(present) < len(_FILES):
        missing = [f for f in _FILES if f not in present]
        return (
            f"{folder} looks like torchvision's {FOLDER}/ but lacks {', '.join(missing)}; re-extract "
            "cifar-100-python.tar.gz there, or pass --download to let torchvision fetch it"
        )
    return None


LOCATOR = register_locator(
    Locator(
        bench="cifar100",
        aliases=(FOLDER, "cifar100", "cifar-100", "CIFAR100"),
        detect=_detect,
        expected=f"torchvision's {FOLDER}/ folder with the pickled files train, test and meta "
        "(or run with --download to fetch it)",
        diagnose=_diagnose,
    )
)


def _plain_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("it holds an array of Python objects, which CIFAR-100 never does")
    return dtype


def _reconstruct(cls, shape, dtype):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"it builds a {cls!r}, not a numpy array")
    return np.ndarray.__new__(np.ndarray, shape, _plain_dtype(dtype))


def _from_buffer(buf, dtype, shape, order):
    # protocol-5 pickles of numpy arrays
    return np.frombuffer(buf, dtype=_plain_dtype(dtype)).reshape(shape, order=order)


def _latin1(text, encoding="latin1"):
    # Python 3's protocol-2 pickles write bytes as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("it encodes bytes in a way CIFAR-100 files never do")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy < 2 (the published files)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy >= 2
    ("numpy.core.numeric", "_frombuffer"): _from_buffer,
    ("numpy._core.numeric", "_frombuffer"): _from_buffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1,
}


class _FormatUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-100 python format and nothing else: any other global is refused unrun."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-100 file never holds")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it refers to objects outside the file")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _FormatUnpickler(f, encoding="latin1").load()
    except Exception as err:  # truncated or foreign file: pickle raises many types
        raise DataError(
            f"cifar100: {path} is not a readable CIFAR-100 pickle ({type(err).__name__}: {err}); "
            "re-extract cifar-100-python.tar.gz, or delete the folder and run with --download"
        ) from err
    if not isinstance(data, dict):
        raise DataError(f"cifar100: {path} does not hold a dict as torchvision's CIFAR-100 files do")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in data.items()}


def _split(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    entry = _unpickle(path)
    if "data" not in entry or "fine_labels" not in entry:
        raise DataError(
            f"cifar100: {path} lacks the keys `data` and `fine_labels` of a CIFAR-100 file "
            f"(it has: {', '.join(map(str, entry))}); is this CIFAR-10?"
        )
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry["fine_labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(
            f"cifar100: {path} holds data of shape {data.shape} for {len(labels)} labels; expected "
            "[N, 3072] uint8 rows, one per label"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"cifar100: {path} has labels outside 0..{n_classes - 1}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR100

    try:
        CIFAR100(str(root), train=True, download=True)
    except Exception as err:  # no network, disk full...
        raise DataError(
            f"cifar100: --download could not fetch CIFAR-100 into {root} ({type(err).__name__}: {err}); "
            f"download cifar-100-python.tar.gz yourself and extract it in {root}"
        ) from err


def locate_or_download(cfg: DataConfig) -> tuple[Path, str]:
    if cfg.download and cfg.data_root is not None and LOCATOR.find(cfg.data_root) is None:
        root = Path(cfg.data_root).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        _download(root)
    try:
        return LOCATOR.require(cfg)
    except DataError as err:
        if cfg.download:
            raise
        raise DataError(f"{err} Or pass --download to let torchvision fetch CIFAR-100.") from None


@register_benchmark(
    "cifar100",
    n_classes=N_CLASSES,
    initial=10,
    increment=10,
    description="CIFAR-100, 100 classes in 10 tasks of 10 (torchvision cifar-100-python/; --download)",
    is_present=LOCATOR.is_present,
)
def build_cifar100(cfg: DataConfig) -> Benchmark:
    folder, layout = locate_or_download(cfg)
    meta = _unpickle(folder / "meta")
    names = meta.get("fine_label_names")
    if not isinstance(names, list | tuple) or not names:
        raise DataError(f"cifar100: {folder / 'meta'} lacks `fine_label_names`; is this CIFAR-10?")
    keys = [str(n) for n in names]
    train_x, train_y = _split(folder / "train", len(keys))
    test_x, test_y = _split(folder / "test", len(keys))
    return make_benchmark(
        "cifar100",
        cfg,
        class_names=[k.replace("_", " ") for k in keys],
        class_keys=keys,
        templates=CIFAR100_TEMPLATES,
        train=ArrayImageDataset(train_x, train_y, cfg.image_size),
        test=ArrayImageDataset(test_x, test_y, cfg.image_size),
        train_targets=train_y,
        test_targets=test_y,
        expected_classes=N_CLASSES,
        notes={"layout": layout, "root": str(folder), "names_source": f"{folder / 'meta'} fine_label_names"},
    )
