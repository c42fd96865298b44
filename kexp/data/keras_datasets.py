"""The Keras datasets (MNIST, Fashion-MNIST, CIFAR-10, IMDB): found in a local file, in
Keras's cache, or downloaded by Keras — and a clear error when none of these works.

Keras's own ``load_data()`` functions only read from Keras's cache directory and hang or
fail with a traceback when offline, so kexp reads Keras's file formats itself:

1. ``path:`` given: that file (or directory); a missing one is an error at once.
2. Otherwise the file in Keras's cache, ``$KERAS_HOME/datasets`` (default
   ``~/.keras/datasets``), where ``keras.datasets.*.load_data()`` leaves it.
3. Otherwise ``keras.utils.get_file`` downloads it into that cache, with a socket timeout
   of ``DOWNLOAD_TIMEOUT`` seconds; any failure becomes a ``DataError`` saying where to get
   the file and where to put it.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import socket
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kexp.data.files import display_path
from kexp.data.splits import Split, Splits
from kexp.errors import DataError

__all__ = ["DOWNLOAD_TIMEOUT", "KERAS_DATASETS", "load_keras_dataset", "keras_home"]

DOWNLOAD_TIMEOUT = 20.0  # seconds without a byte before a download is given up
_GCS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_FASHION_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)
_CIFAR_DIR = "cifar-10-batches-py"


@dataclass(frozen=True)
class _Download:
    """One ``keras.utils.get_file`` call, as the Keras loader makes it."""

    fname: str
    origin: str
    cache_subdir: str = "datasets"
    file_hash: str | None = None
    extract: bool = False


@dataclass(frozen=True)
class KerasDataset:
    """Where a Keras dataset lives: its file in Keras's cache and how Keras downloads it."""

    name: str
    cached: str  # path inside Keras's home directory
    path_hint: str  # what `path:` points at
    downloads: tuple[_Download, ...]


KERAS_DATASETS = {
    "mnist": KerasDataset(
        "mnist", "datasets/mnist.npz", "mnist.npz (a file)",
        (_Download("mnist.npz", _GCS + "mnist.npz", file_hash=(
            "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1")),),
    ),
    "fashion_mnist": KerasDataset(
        "fashion_mnist", "datasets/fashion-mnist",
        f"a directory holding {', '.join(_FASHION_FILES)}",
        tuple(_Download(f, _GCS + f, cache_subdir="datasets/fashion-mnist")
              for f in _FASHION_FILES),
    ),
    "cifar10": KerasDataset(
        "cifar10", f"datasets/cifar-10-batches-py-target/{_CIFAR_DIR}",
        f"cifar-10-python.tar.gz, or the {_CIFAR_DIR} directory extracted from it",
        (_Download("cifar-10-batches-py-target",
                   "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", extract=True,
                   file_hash="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),),
    ),
    "imdb": KerasDataset(
        "imdb", "datasets/imdb.npz", "imdb.npz (a file)",
        (_Download("imdb.npz", _GCS + "imdb.npz", file_hash=(
            "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f")),),
    ),
}


def keras_home() -> Path:
    """Keras's home directory, as ``keras.utils.get_file`` uses it: ``$KERAS_HOME``, else
    ``~/.keras`` (``/tmp/.keras`` when the home directory is not writable)."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]).expanduser()
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def load_keras_dataset(name: str, path: str | None) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """``(x_train, y_train), (x_test, y_test)`` of a Keras dataset, as its ``load_data()``
    returns them (before any preprocessing; IMDB sequences are lists of word indices)."""
    spec = KERAS_DATASETS[name]
    readers = {"mnist": _read_npz_dataset, "fashion_mnist": _read_fashion,
               "cifar10": _read_cifar10, "imdb": _read_npz_dataset}
    return readers[name](_locate(spec, path))


def images_to_splits(data, *, flatten: bool, normalize: bool, source: str) -> Splits:
    """Image arrays as float32 features (scaled to [0, 1] when ``normalize``, one row per
    image when ``flatten``) and int64 labels."""

    def prepare(images: np.ndarray) -> np.ndarray:
        images = images.astype(np.float32)
        if normalize:
            images /= 255.0
        return images.reshape(len(images), -1) if flatten else images

    (x_train, y_train), (x_test, y_test) = data
    return Splits(
        train=Split(prepare(x_train), y_train.astype(np.int64), f"{source} (train)"),
        test=Split(prepare(x_test), y_test.astype(np.int64), f"{source} (test)"),
    )


def imdb_to_splits(data, *, num_words: int | None, maxlen: int | None, mode: str,
                   source: str) -> Splits:
    """IMDB reviews encoded as Keras's ``imdb.load_data()`` encodes them (1 marks the start,
    2 a word outside the ``num_words`` most frequent, words from index 3), then as multi-hot
    vectors or padded sequences. (The config check refuses another ``mode``, and
    ``multi_hot`` without ``num_words`` or with ``maxlen``.)"""
    (x_train, y_train), (x_test, y_test) = data
    encode = _multi_hot if mode == "multi_hot" else _pad_sequences
    if mode == "sequences" and maxlen is None:
        maxlen = 1 + max(len(s) for s in [*x_train, *x_test])
    size = num_words if mode == "multi_hot" else maxlen
    return Splits(
        train=Split(encode(_word_ids(x_train, num_words), size),
                    np.asarray(y_train, np.int64), f"{source} (train)"),
        test=Split(encode(_word_ids(x_test, num_words), size),
                   np.asarray(y_test, np.int64), f"{source} (test)"),
    )


# --------------------------------------------------------------------------- locating


def _locate(spec: KerasDataset, path: str | None) -> Path:
    if path is not None:
        if not Path(path).exists():
            raise DataError(
                f"{display_path(path)}: file not found. `path:` of {spec.name} points at "
                f"{spec.path_hint}, in Keras's own format."
            )
        return Path(path)
    for home in (keras_home(), Path("/tmp/.keras")):
        if (home / spec.cached).exists():
            return home / spec.cached
    return _download(spec)


def _download(spec: KerasDataset) -> Path:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # urllib has no other knob for get_file
    try:
        got = [_get_file(d, keras_home()) for d in spec.downloads]
    except Exception as exc:  # any failure means "no data": explain the way out
        reason = str(exc).strip() or type(exc).__name__
        urls = " and ".join(d.origin for d in spec.downloads[:1]) + (
            f" (and {len(spec.downloads) - 1} more files)" if len(spec.downloads) > 1 else "")
        raise DataError(
            f"{spec.name}: not in Keras's cache ({keras_home() / spec.cached}) and the "
            f"download from {urls} failed: {reason}. Download it where there is network "
            f"access and put it at that cache path (set KERAS_HOME to move the cache), or "
            f"point the config at a copy: `data: {{type: {spec.name}, path: ...}}` with "
            f"`path` naming {spec.path_hint}."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    if spec.name == "cifar10":
        return Path(got[0]) / _CIFAR_DIR
    return Path(got[0]).parent if len(got) > 1 else Path(got[0])


def _get_file(download: _Download, home: Path) -> str:
    import keras

    return keras.utils.get_file(
        download.fname,
        origin=download.origin,
        file_hash=download.file_hash,
        cache_subdir=download.cache_subdir,
        cache_dir=str(home),
        extract=download.extract,
    )


# --------------------------------------------------------------------------- readers


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and plain Python values only: a dataset file cannot run code."""

    _ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _read_npy(raw: io.BytesIO) -> np.ndarray:
    try:
        return np.lib.format.read_array(raw, allow_pickle=False)
    except ValueError:  # an object array (IMDB's ragged sequences): restricted unpickling
        raw.seek(0)
        version = np.lib.format.read_magic(raw)
        if version[0] == 1:
            np.lib.format.read_array_header_1_0(raw)
        else:
            np.lib.format.read_array_header_2_0(raw)
        return _ArrayUnpickler(raw).load()


def _read_npz_dataset(path: Path):
    """MNIST's and IMDB's ``.npz`` files: ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
    source = display_path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            arrays = {m[:-4]: _read_npy(io.BytesIO(archive.read(m)))
                      for m in archive.namelist() if m.endswith(".npy")}
    except (OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        raise DataError(f"{source}: not a readable Keras dataset .npz file ({exc}).") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{source}: lacks the arrays {', '.join(missing)} of Keras's format "
                        f"(it has {', '.join(arrays) or 'none'}).")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _read_fashion(path: Path):
    """Fashion-MNIST's four gzipped IDX files (labels after 8 header bytes, images after 16)."""
    directory = path if path.is_dir() else path.parent
    arrays = []
    for name in _FASHION_FILES:
        file = directory / name
        try:
            with gzip.open(file, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise DataError(f"{display_path(file)}: cannot read a Fashion-MNIST file "
                            f"({exc}).") from None
        offset = 8 if "labels" in name else 16
        arrays.append(np.frombuffer(raw, np.uint8, offset=offset))
    y_train, x_train, y_test, x_test = arrays
    try:
        return ((x_train.reshape(len(y_train), 28, 28), y_train),
                (x_test.reshape(len(y_test), 28, 28), y_test))
    except ValueError:
        raise DataError(f"{display_path(directory)}: the Fashion-MNIST image and label files "
                        f"do not match (truncated download?).") from None


def _read_cifar10(path: Path):
    """CIFAR-10's pickled batches, from ``cifar-10-python.tar.gz`` or its extraction."""
    source = display_path(path)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    try:
        if path.is_dir():
            directory = path / _CIFAR_DIR if (path / _CIFAR_DIR).is_dir() else path
            batches = [(directory / n).read_bytes() for n in names]
        else:
            with tarfile.open(path) as archive:
                batches = [archive.extractfile(f"{_CIFAR_DIR}/{n}").read() for n in names]
        decoded = [_ArrayUnpickler(io.BytesIO(b), encoding="bytes").load() for b in batches]
    except (OSError, KeyError, tarfile.TarError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"{source}: not a readable CIFAR-10 copy ({exc}); expected "
                        f"{KERAS_DATASETS['cifar10'].path_hint}.") from None

    def images(batch: dict) -> np.ndarray:  # stored as channels-first rows of 3072 bytes
        return np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

    def labels(batch: dict) -> np.ndarray:  # (n, 1), as keras.datasets.cifar10 returns them
        return np.asarray(batch[b"labels"], np.uint8).reshape(-1, 1)

    train, test = decoded[:5], decoded[5]
    x_train = np.concatenate([images(b) for b in train])
    y_train = np.concatenate([labels(b) for b in train])
    return (x_train, y_train), (images(test), labels(test))


# --------------------------------------------------------------------------- IMDB encoding

_START, _OOV, _INDEX_FROM = 1, 2, 3  # keras.datasets.imdb.load_data's defaults


def _word_ids(sequences, num_words: int | None) -> list[np.ndarray]:
    encoded = []
    for seq in sequences:
        ids = np.concatenate([[_START], np.asarray(seq, np.int64) + _INDEX_FROM])
        if num_words is not None:
            ids[ids >= num_words] = _OOV
        encoded.append(ids)
    return encoded


def _multi_hot(sequences: list[np.ndarray], num_words: int) -> np.ndarray:
    out = np.zeros((len(sequences), num_words), np.float32)
    rows = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    out[rows, np.concatenate(sequences)] = 1.0
    return out


def _pad_sequences(sequences: list[np.ndarray], maxlen: int) -> np.ndarray:
    """Like ``keras.utils.pad_sequences`` defaults: keep the last ``maxlen`` ids, pad with
    zeros in front."""
    out = np.zeros((len(sequences), maxlen), np.int32)
    for i, seq in enumerate(sequences):
        tail = seq[-maxlen:]
        out[i, maxlen - len(tail):] = tail
    return out
