"""CIFAR-10/100 and MNIST-on-CIFAR-10 readers, on tiny files written in torchvision's exact
on-disk formats (no network, no real data)."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from headsweep.config import DataConfig
from headsweep.data.torchvision_formats import cifar10, cifar100, mnist_on_cifar10

TRAIN_BATCH, N_TEST = 3, 4  # CIFAR-10: 5 train batches of 3 rows, a test batch of 4
N_TRAIN = 5 * TRAIN_BATCH
MNIST_TRAIN, MNIST_TEST = 12, 5


# --------------------------------------------------------------------------- file writers


def _rows(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, 32, 32) -> (N, 3072), CIFAR's layout: R plane, G plane, B plane, row-major,
    spelled out index by index so the test does not just mirror the reader's reshape."""
    n = images.shape[0]
    rows = np.zeros((n, 3072), np.uint8)
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    rows[:, (c * 1024 + y * 32 + x).ravel()] = images.reshape(n, -1)
    return rows


def _dump(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry))


def write_cifar10(
    root: Path, seed: int = 0, per_batch: int = TRAIN_BATCH, n_test: int = N_TEST
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All six CIFAR-10 batch files; returns split -> (images (N, 3, 32, 32), labels (N,))."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, names, n in (
        ("train", [f"data_batch_{i}" for i in range(1, 6)], per_batch),
        ("test", ["test_batch"], n_test),
    ):
        images = rng.integers(0, 256, (len(names) * n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, len(names) * n)
        for i, name in enumerate(names):
            part = slice(i * n, (i + 1) * n)
            _dump(
                root / "cifar-10-batches-py" / name,
                {
                    b"batch_label": name.encode(),
                    b"labels": labels[part].tolist(),
                    b"data": _rows(images[part]),
                    b"filenames": [f"{name}_{j}.png".encode() for j in range(n)],
                },
            )
        out[split] = (images, labels)
    return out


def write_cifar100(
    root: Path, n_train: int = 6, n_test: int = 4
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        fine, coarse = rng.integers(0, 100, n), rng.integers(0, 20, n)
        _dump(
            root / "cifar-100-python" / split,
            {
                b"filenames": [b"x.png"] * n,
                b"batch_label": split.encode(),
                b"fine_labels": fine.tolist(),
                b"coarse_labels": coarse.tolist(),
                b"data": _rows(images),
            },
        )
        out[split] = (images, fine, coarse)
    _dump(
        root / "cifar-100-python" / "meta",
        {
            b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)],
        },
    )
    return out


def _idx(values: np.ndarray) -> bytes:
    magic = 0x0800 + values.ndim  # 0x08: uint8 data
    return struct.pack(f">{1 + values.ndim}I", magic, *values.shape) + values.tobytes()


def write_mnist(
    root: Path, gz_test: bool = True, n_train: int = MNIST_TRAIN, n_test: int = MNIST_TEST
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each digit is a constant 28x28 image with its own value (train 10, 20, ...; test 200, 210,
    ...), so its resized copy in the overlay says which digit, and from which split, was drawn.
    The test files are written gzipped only, as torchvision's downloads arrive."""
    rng = np.random.default_rng(2)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n, first in (
        ("train", "train", n_train, 10),
        ("test", "t10k", n_test, 200),
    ):
        values = first + 10 * np.arange(n)
        digits = np.broadcast_to(values[:, None, None], (n, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        for kind, data in (("images-idx3", digits), ("labels-idx1", labels)):
            path = raw / f"{prefix}-{kind}-ubyte"
            if split == "test" and gz_test:
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(_idx(data)))
            else:
                path.write_bytes(_idx(data))
        out[split] = (values, labels)
    return out


def _py2_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A {'data': array, 'labels': list} pickle as Python 2 with numpy 1 wrote the published CIFAR
    files: str keys and the array bytes as BINSTRING, `numpy.core.multiarray._reconstruct`."""

    def i4(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + i4(0)
        + b"\x85"
        + s(b"b")
        + b"\x87R("
        + i4(1)
        + b"("
        + b"".join(i4(d) for d in data.shape)
        + b"t"
        + b"cnumpy\ndtype\n"
        + s(b"u1")
        + i4(0)
        + i4(1)
        + b"\x87R("
        + i4(3)
        + s(b"|")
        + b"NNN"
        + i4(-1)
        + i4(-1)
        + i4(0)
        + b"tb"
        + b"\x89"
        + s(data.tobytes())
        + b"tb"
    )
    items = b"](" + b"".join(i4(v) for v in labels) + b"e"
    return b"\x80\x02}(" + s(b"data") + array + s(b"labels") + items + b"u."


def _cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(**{"root": str(root), "n_train": 0, "n_test": 0, **kw})


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_round_trips_pixels_and_labels(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    ds = cifar10(_cfg(tmp_path, name="cifar10"))
    assert (ds.name, ds.kind, ds.classes, ds.channels) == ("cifar10", "image", {"object": 10}, 3)
    for split, part in (("train", ds.train), ("test", ds.test)):
        images, labels = written[split]
        assert part.inputs.dtype == torch.uint8 and part.inputs.device.type == "cpu"
        assert part.inputs.shape == images.shape  # (N, 3, 32, 32)
        assert torch.equal(part.inputs, torch.from_numpy(images))
        assert set(part.labels) == {"object"} and part.labels["object"].dtype == torch.int64
        assert part.labels["object"].tolist() == labels.tolist()
        assert part.overlay is None
    assert len(ds.train) == N_TRAIN and len(ds.test) == N_TEST


def test_cifar_channel_order_is_rgb_planes(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    row = np.zeros((1, 3072), np.uint8)
    row[0, :1024] = 200  # the whole red plane
    row[0, 1024 + 1 * 32 + 5] = 77  # green at y=1, x=5
    row[0, 2048 + 31 * 32 + 0] = 9  # blue at y=31, x=0
    _dump(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": row, b"labels": [4]})
    image = cifar10(_cfg(tmp_path)).test.inputs[0]
    assert (image[0] == 200).all()
    assert image[1].nonzero().tolist() == [[1, 5]] and image[1, 1, 5] == 77
    assert image[2].nonzero().tolist() == [[31, 0]] and image[2, 31, 0] == 9


def test_cifar10_caps_to_the_first_rows(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    ds = cifar10(_cfg(tmp_path, n_train=TRAIN_BATCH + 1, n_test=2))  # spans two batch files
    assert len(ds.train) == TRAIN_BATCH + 1 and len(ds.test) == 2
    assert torch.equal(ds.train.inputs, torch.from_numpy(written["train"][0][: TRAIN_BATCH + 1]))
    assert ds.test.labels["object"].tolist() == written["test"][1][:2].tolist()
    # more than the split holds: everything
    assert len(cifar10(_cfg(tmp_path, n_train=1000)).train) == N_TRAIN


def test_reads_python2_pickles_like_the_published_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(_py2_pickle(data, [3, 8]))
    test = cifar10(_cfg(tmp_path)).test
    assert torch.equal(test.inputs.reshape(2, -1), torch.from_numpy(data))
    assert test.labels["object"].tolist() == [3, 8]


def test_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    missing = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    missing.unlink()
    with pytest.raises(FileNotFoundError) as err:
        cifar10(_cfg(tmp_path))
    assert str(missing) in str(err.value)
    assert "data.download: true" in str(err.value) and "data.root" in str(err.value)


def test_download_calls_torchvision_then_reads(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_cifar10(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        write_cifar10(Path(root))

    # A stand-in torchvision: no network, and no 2 s import of the real one.
    datasets = types.SimpleNamespace(CIFAR10=fake_cifar10)
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(datasets=datasets))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    ds = cifar10(_cfg(tmp_path / "fresh", download=True))
    assert calls == [(str(tmp_path / "fresh"), True, True)]
    assert len(ds.train) == N_TRAIN


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda good: good[: len(good) // 2], "not a readable CIFAR pickle"),  # truncated
        (lambda good: b"not a pickle at all", "not a readable CIFAR pickle"),
        (lambda good: pickle.dumps([1, 2]), "expected a pickled dict"),
        (
            lambda good: pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}),
            "shape (N, 3072)",
        ),
        (
            lambda good: pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}),
            "4 integer labels",
        ),
        (
            lambda good: pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}),
            "out of range",
        ),
        (lambda good: pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}), "no 'labels'"),
    ],
)
def test_corrupt_cifar_file_raises_value_error_naming_it(tmp_path: Path, content, message) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(content(path.read_bytes()))
    with pytest.raises(ValueError, match="test_batch") as err:
        cifar10(_cfg(tmp_path))
    assert message in str(err.value)


def test_pickle_cannot_run_code(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    _dump(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": Evil(), b"labels": []})
    with pytest.raises(ValueError, match="refusing to load global"):
        cifar10(_cfg(tmp_path))
    assert not marker.exists()


# --------------------------------------------------------------------------- CIFAR-100


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path)
    ds = cifar100(_cfg(tmp_path, n_test=3))
    assert (ds.name, ds.classes) == ("cifar100", {"fine": 100, "coarse": 20})
    images, fine, coarse = written["train"]
    assert torch.equal(ds.train.inputs, torch.from_numpy(images))
    assert ds.train.labels["fine"].tolist() == fine.tolist()
    assert ds.train.labels["coarse"].tolist() == coarse.tolist()
    assert ds.train.labels["fine"].dtype == ds.train.labels["coarse"].dtype == torch.int64
    assert len(ds.test) == 3
    assert ds.test.labels["coarse"].tolist() == written["test"][2][:3].tolist()


def test_cifar100_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cifar-100-python" / "train")):
        cifar100(_cfg(tmp_path))


# --------------------------------------------------------------------------- MNIST-on-CIFAR-10


def test_mnist_on_cifar10_shapes_and_pairing(tmp_path: Path) -> None:
    objects = write_cifar10(tmp_path)
    digits = write_mnist(tmp_path)  # train raw, test gzipped
    ds = mnist_on_cifar10(_cfg(tmp_path, digit_size=16, n_test=3))
    assert (ds.name, ds.classes) == ("mnist_on_cifar10", {"object": 10, "digit": 10})
    assert len(ds.train) == N_TRAIN and len(ds.test) == 3
    for split, part in (("train", ds.train), ("test", ds.test)):
        n = len(part)
        assert torch.equal(part.inputs, torch.from_numpy(objects[split][0][:n]))
        assert part.labels["object"].tolist() == objects[split][1][:n].tolist()
        assert part.overlay.dtype == torch.uint8 and part.overlay.shape == (n, 1, 32, 32)
        # a 16 px digit centred in 32 px: non-zero exactly in rows and columns 8..23
        inside = part.overlay[:, :, 8:24, 8:24]
        outside = part.overlay.clone()
        outside[:, :, 8:24, 8:24] = 0
        assert (inside > 0).all() and (outside == 0).all()
        # each overlay is one whole digit of this split's MNIST file, with that digit's label
        values, labels = digits[split]
        drawn = inside.flatten(1)
        assert (drawn == drawn[:, :1]).all()
        which = [values.tolist().index(v) for v in drawn[:, 0].tolist()]
        assert part.labels["digit"].tolist() == labels[which].tolist()
        assert part.labels["digit"].dtype == torch.int64


def test_full_frame_digits(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    write_mnist(tmp_path, gz_test=False)
    overlay = mnist_on_cifar10(_cfg(tmp_path, digit_size=32)).train.overlay
    assert (overlay > 0).all()


def test_pairing_is_fixed_by_the_seed(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    write_mnist(tmp_path)
    a, b = (mnist_on_cifar10(_cfg(tmp_path, seed=0)) for _ in range(2))
    c = mnist_on_cifar10(_cfg(tmp_path, seed=1))
    assert torch.equal(a.train.overlay, b.train.overlay) and torch.equal(
        a.test.overlay, b.test.overlay
    )
    assert torch.equal(a.train.labels["digit"], b.train.labels["digit"])
    assert not torch.equal(a.train.overlay, c.train.overlay)
    assert torch.equal(a.train.inputs, c.train.inputs)  # the seed moves digits, not objects


def test_mnist_missing_file_names_the_path(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    write_mnist(tmp_path)
    missing = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=r"data\.download") as err:
        mnist_on_cifar10(_cfg(tmp_path))
    assert str(missing) in str(err.value)


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "train-images-idx3-ubyte",
            struct.pack(">IIII", 0x0801, 1, 28, 28) + bytes(784),
            "wrong magic number 0x00000801, expected 0x00000803",
        ),
        (
            "train-images-idx3-ubyte",
            struct.pack(">IIII", 0x0803, 2, 28, 28) + bytes(784),
            "but the file holds 784",
        ),
        ("train-labels-idx1-ubyte", b"\x00\x00", "shorter than"),
        ("train-labels-idx1-ubyte", struct.pack(">II", 0x0801, 3) + bytes(3), "12 digits but"),
        ("t10k-images-idx3-ubyte.gz", b"\x1f\x8b garbage", "not a valid gzip file"),
    ],
)
def test_corrupt_mnist_file_raises_value_error(tmp_path: Path, name, content, message) -> None:
    write_cifar10(tmp_path)
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / name).write_bytes(content)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")) as err:
        mnist_on_cifar10(_cfg(tmp_path))
    assert "ubyte" in str(err.value)


# --------------------------------------------------------------------------- registry


def test_registry_loads_cifar10(tmp_path: Path) -> None:
    from headsweep.data import load_dataset  # here, so a broken sibling module fails only this

    written = write_cifar10(tmp_path)
    ds = load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    assert ds.name == "cifar10" and len(ds.train) == N_TRAIN  # default n_train 5000 > 15 rows
    assert torch.equal(ds.test.inputs, torch.from_numpy(written["test"][0]))
