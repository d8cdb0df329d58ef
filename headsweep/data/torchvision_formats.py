"""CIFAR-10, CIFAR-100 and MNIST-on-CIFAR-10 read from torchvision's on-disk formats
(docs/science.md §4.2-4.3).

Layout under `data.root` (what `torchvision.datasets` writes when it downloads):

    cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch   pickled dicts
    cifar-100-python/train, test                                     pickled dicts
    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]      idx files

The files are parsed here rather than through `torchvision.datasets`, which checks md5 sums (so
it rejects small hand-made files) and converts every image to PIL on access. torchvision is used
only to download the files when they are missing and `data.download` is true.
"""

from __future__ import annotations

import gzip
import logging
import math
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from headsweep.config import DataConfig
from headsweep.data.base import Dataset, Split, pair_at_random, place_digits

log = logging.getLogger(__name__)

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
MNIST_DIR = "MNIST/raw"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_PIXELS = 3 * 32 * 32  # one CIFAR row: the R, G and B planes of a 32x32 image, each row-major
_CHUNK = 8192  # digits resized per call: a float copy of 50k digits at once is ~200 MB

# Target name -> (key in the pickled dict, number of classes).
_CIFAR10_TARGETS = {"object": ("labels", 10)}
_CIFAR100_TARGETS = {"fine": ("fine_labels", 100), "coarse": ("coarse_labels", 20)}

# Every global a pickled numpy array needs, from Python 2 / numpy 1 (the published CIFAR files)
# to numpy 2 with protocol 5. Nothing else is resolved, so a pickle under data.root cannot run
# code on load.
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
    }
)


def cifar10(cfg: DataConfig) -> Dataset:
    """CIFAR-10: inputs uint8 (N, 3, 32, 32) RGB, target `object` int64 (N,) in [0, 10).
    N = 50,000 train / 10,000 test, or the first `data.n_train` / `data.n_test` rows."""
    root = _root(cfg)
    train = [root / CIFAR10_DIR / name for name in CIFAR10_TRAIN]
    test = [root / CIFAR10_DIR / name for name in CIFAR10_TEST]
    _ensure([(p,) for p in train + test], cfg, "CIFAR-10")
    return Dataset(
        "cifar10",
        "image",
        _cifar_split(train, _CIFAR10_TARGETS, cfg.n_train),
        _cifar_split(test, _CIFAR10_TARGETS, cfg.n_test),
        {"object": 10},
    )


def cifar100(cfg: DataConfig) -> Dataset:
    """CIFAR-100: inputs uint8 (N, 3, 32, 32) RGB, targets `fine` int64 (N,) in [0, 100) and
    `coarse` int64 (N,) in [0, 20) (the superclasses of §4.3)."""
    root = _root(cfg)
    train, test = root / CIFAR100_DIR / "train", root / CIFAR100_DIR / "test"
    _ensure([(train,), (test,)], cfg, "CIFAR-100")
    return Dataset(
        "cifar100",
        "image",
        _cifar_split([train], _CIFAR100_TARGETS, cfg.n_train),
        _cifar_split([test], _CIFAR100_TARGETS, cfg.n_test),
        {"fine": 100, "coarse": 20},
    )


def mnist_on_cifar10(cfg: DataConfig) -> Dataset:
    """CIFAR-10 objects with an MNIST digit each ([X] Fig. 3, docs/science.md §4.2).

    inputs uint8 (N, 3, 32, 32), overlay uint8 (N, 1, 32, 32): the digit resized to
    `data.digit_size` px and centred, composed with the object per view. Digits are drawn at random
    (seeded by `data.seed`, independent of both labels) from MNIST's train set for the train split
    and from its test set for the test split. Targets `object` and `digit`, 10 classes each.
    """
    root = _root(cfg)
    mnist = {
        split: [(root / MNIST_DIR / name, root / MNIST_DIR / f"{name}.gz") for name in names]
        for split, names in MNIST_FILES.items()
    }
    # Checked before CIFAR is read, so a missing digit file fails at once.
    _ensure(mnist["train"] + mnist["test"], cfg, "MNIST")
    objects = cifar10(cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    splits = []
    for split, part in (("train", objects.train), ("test", objects.test)):
        digits, digit_labels = _read_mnist(*(_existing(c) for c in mnist[split]))
        splits.append(_with_digits(part, digits, digit_labels, cfg.digit_size, generator))
    return Dataset("mnist_on_cifar10", "image", splits[0], splits[1], {"object": 10, "digit": 10})


# --------------------------------------------------------------------------- files


def _root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser()


def _existing(candidates: Sequence[Path]) -> Path | None:
    """The first candidate that exists (e.g. the raw idx file before its .gz)."""
    return next((p for p in candidates if p.is_file()), None)


def _ensure(files: Sequence[Sequence[Path]], cfg: DataConfig, dataset: str) -> None:
    """Each entry lists acceptable paths for one file; download (if allowed) when one is missing,
    else raise FileNotFoundError naming it."""
    missing = [c for c in files if _existing(c) is None]
    if missing and cfg.download:
        _download(dataset, _root(cfg))
        missing = [c for c in files if _existing(c) is None]
        if missing:
            raise FileNotFoundError(
                f"{dataset}: torchvision's download finished but {missing[0][0]} is still missing"
            )
    if missing:
        expected = " or ".join(str(p) for p in missing[0])
        raise FileNotFoundError(
            f"{dataset} file not found: {expected} ({len(missing)} of {len(files)} {dataset} files "
            f"missing under data.root = {cfg.root!r}). Set data.download: true to fetch them with "
            f"torchvision, or place torchvision's {dataset} files under data.root."
        )


def _download(dataset: str, root: Path) -> None:
    import torchvision.datasets as tvd  # local: heavy import, needed only to fetch files

    # Our dataset label -> torchvision's class, which also names its folder under data.root.
    builder = getattr(
        tvd, {"CIFAR-10": "CIFAR10", "CIFAR-100": "CIFAR100", "MNIST": "MNIST"}[dataset]
    )
    log.info("downloading %s to %s with torchvision", dataset, root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        # One call is enough: torchvision fetches the whole archive (both splits) either way.
        builder(str(root), train=True, download=True)
    except Exception as err:
        raise RuntimeError(
            f"downloading {dataset} to {root} with torchvision failed ({err}); without internet, "
            f"copy torchvision's {dataset} files under data.root instead"
        ) from err


# --------------------------------------------------------------------------- CIFAR pickles


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _unpickle(path: Path) -> dict[Any, Any]:
    with path.open("rb") as f:
        try:
            # encoding="bytes": the published files are Python 2 pickles of str keys and arrays.
            entry = _ArraysOnly(f, encoding="bytes").load()
        except Exception as err:  # any failure to unpickle means the file itself is bad
            raise ValueError(
                f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err}); "
                "the file is corrupt or truncated, delete it and fetch it again"
            ) from err
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(entry).__name__}")
    return entry


def _field(entry: dict[Any, Any], key: str, path: Path) -> Any:
    # bytes keys from Python 2 pickles read with encoding="bytes"; str keys from Python 3 writers.
    for k in (key.encode(), key):
        if k in entry:
            return entry[k]
    raise ValueError(f"{path}: no '{key}' entry (keys: {sorted(map(str, entry))})")


def _read_cifar(
    path: Path, targets: dict[str, tuple[str, int]]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One pickled batch -> uint8 (N, 3072) rows and target -> int64 (N,) labels."""
    entry = _unpickle(path)
    data = _field(entry, "data", path)
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == _PIXELS
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, {_PIXELS}), got {got}")
    labels = {}
    for target, (key, classes) in targets.items():
        values = np.asarray(_field(entry, key, path))
        if values.shape != (data.shape[0],) or (
            values.size and not np.issubdtype(values.dtype, np.integer)
        ):
            raise ValueError(
                f"{path}: '{key}' must hold {data.shape[0]} integer labels (one per image), "
                f"got {values.dtype} {values.shape}"
            )
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise ValueError(
                f"{path}: '{key}' out of range [0, {classes}): min {values.min()}, "
                f"max {values.max()}"
            )
        labels[target] = values.astype(np.int64)
    return data, labels


def _cifar_split(paths: Sequence[Path], targets: dict[str, tuple[str, int]], n: int) -> Split:
    """Batches in order, concatenated, cut to the first n rows (n = 0: all)."""
    rows: list[np.ndarray] = []
    labels: dict[str, list[np.ndarray]] = {t: [] for t in targets}
    for path in paths:
        data, batch_labels = _read_cifar(path, targets)
        rows.append(data)
        for target, values in batch_labels.items():
            labels[target].append(values)
        if 0 < n <= sum(len(r) for r in rows):
            break  # the first n rows are in hand; later batches need not be parsed
    keep = slice(n or None)
    # concatenate copies, so the tensors own writable memory (an unpickled array may be read-only)
    images = np.concatenate(rows)[keep].reshape(-1, 3, 32, 32)
    return Split(
        torch.from_numpy(images),
        {t: torch.from_numpy(np.concatenate(v)[keep]) for t, v in labels.items()},
    )


# --------------------------------------------------------------------------- MNIST idx files


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: not a valid gzip file ({err}); corrupt or truncated") from err


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of uint8 values with `ndim` dimensions -> uint8 array of those dims."""
    raw = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: {len(raw)} bytes, shorter than the {header}-byte idx header")
    magic, expected = int.from_bytes(raw[:4], "big"), 0x0800 + ndim  # 0x08: uint8 values
    if magic != expected:
        raise ValueError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected:08x} "
            f"(uint8 idx with {ndim} dimensions)"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    if len(raw) - header != math.prod(dims):
        raise ValueError(
            f"{path}: header gives shape {dims} = {math.prod(dims)} bytes of data, "
            f"but the file holds {len(raw) - header}"
        )
    # copy: frombuffer over bytes is read-only, and tensors made from it would warn
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


def _read_mnist(images: Path | None, labels: Path | None) -> tuple[Tensor, Tensor]:
    """uint8 (N, 28, 28) digits and int64 (N,) labels."""
    assert images is not None and labels is not None  # _ensure has checked both exist
    digits, values = _read_idx(images, 3), _read_idx(labels, 1)
    if len(digits) != len(values):
        raise ValueError(f"{images} holds {len(digits)} digits but {labels} {len(values)} labels")
    if values.size and values.max() > 9:
        raise ValueError(f"{labels}: label {values.max()} out of range [0, 10)")
    return torch.from_numpy(digits), torch.from_numpy(values.astype(np.int64))


def _with_digits(
    objects: Split, digits: Tensor, digit_labels: Tensor, size: int, generator: torch.Generator
) -> Split:
    pairing = pair_at_random(len(objects), digits.shape[0], generator)
    # Only the digits drawn are resized, in chunks, so memory follows N, not the MNIST pool.
    overlay = torch.cat([place_digits(digits[c], size) for c in pairing.split(_CHUNK)])
    return Split(objects.inputs, {**objects.labels, "digit": digit_labels[pairing]}, overlay)
