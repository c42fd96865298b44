"""kexp's built-in datasets, registered with ``kexp.registry.DATASETS``.

Each dataset is a function whose keyword-only arguments are its config keys and which returns
``kexp.data.splits.Splits``. ``kexp validate`` imports this module to list the built-ins, so
it imports nothing heavy (NumPy, scikit-learn, Keras) until a dataset is loaded. Relative
``path`` values arrive already resolved against the config file; ``seed`` is the run's seed.

```yaml
data: {type: digits}
data: {type: synthetic_tickets, num_samples: 1280}
data: {type: mnist, flatten: true}                 # path: mnist.npz for an offline copy
data: {type: npz, path: data/train.npz, features: x, targets: y}
data: {type: csv, path: cars.csv, features: [cylinders, weight], targets: mpg}
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kexp.registry import DATASETS

if TYPE_CHECKING:
    from kexp.data.splits import Splits

__all__ = [
    "digits", "synthetic_tickets", "mnist", "fashion_mnist", "cifar10", "imdb", "npz", "csv",
    "image_directory", "text_directory", "tfrecord", "array_record",
]


@DATASETS.register("digits")
def digits(*, flatten: bool = True, normalize: bool = True) -> Splits:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with scikit-learn).

    Args:
        flatten: rows of 64 pixels; false keeps ``(8, 8)`` images.
        normalize: scale pixels from 0..16 to [0, 1].

    Returns:
        A train split only (take validation data with ``validation_split``): x float32, y
        int64 labels 0..9.
    """
    import numpy as np

    from kexp.data.splits import Split, Splits

    pixels, labels = _digits_arrays()
    x = (pixels if flatten else pixels.reshape(-1, 8, 8)).astype(np.float32)
    if normalize:
        x /= 16.0
    return Splits(train=Split(x, labels.astype(np.int64), "digits (scikit-learn)"))


def _digits_arrays() -> tuple[Any, Any]:
    """``load_digits()``'s ``data`` and ``target``, read from the file scikit-learn ships.

    ``load_digits`` reads ``sklearn/datasets/data/digits.csv.gz`` (pixels then the label on
    each row). Reading that file directly skips importing scikit-learn (about 0.6 s, a
    seventh of a ``kexp train --smoke``); ``find_spec`` locates the package without running
    it. Another layout falls back to ``load_digits``.
    """
    import importlib.util
    from pathlib import Path

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    folders = spec.submodule_search_locations if spec else None
    file = Path(next(iter(folders)), "datasets", "data", "digits.csv.gz") if folders else None
    if file is not None and file.is_file():
        rows = np.loadtxt(file, delimiter=",")
        return rows[:, :-1], rows[:, -1].astype(int)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target


@DATASETS.register("synthetic_tickets")
def synthetic_tickets(
    *,
    num_samples: int = 1280,
    vocabulary_size: int = 10000,
    num_tags: int = 100,
    num_departments: int = 4,
    num_difficulties: int = 0,
    seed: int = 0,
) -> Splits:
    """The chapter's random customer-support tickets (Listing 7.10), seeded.

    ``num_difficulties: 3`` adds the one-hot ``difficulty`` target of Listing 7.13.

    Returns:
        A train split with inputs ``title`` and ``text_body`` (binary bag-of-words,
        ``(n, vocabulary_size)``), ``tags`` (binary, ``(n, num_tags)``), and targets
        ``priority`` (uniform in [0, 1], ``(n, 1)``) and ``department`` (one-hot,
        ``(n, num_departments)``), all float32.
    """
    import numpy as np

    from kexp.data.splits import Split, Splits

    rng = np.random.default_rng(seed)

    def binary(width: int) -> np.ndarray:
        return rng.integers(0, 2, size=(num_samples, width)).astype(np.float32)

    x = {"title": binary(vocabulary_size), "text_body": binary(vocabulary_size),
         "tags": binary(num_tags)}
    y = {
        "priority": rng.random((num_samples, 1), dtype=np.float32),
        "department": np.eye(num_departments, dtype=np.float32)[
            rng.integers(0, num_departments, size=num_samples)],
    }
    if num_difficulties:
        y["difficulty"] = np.eye(num_difficulties, dtype=np.float32)[
            rng.integers(0, num_difficulties, size=num_samples)]
    return Splits(train=Split(x, y, f"synthetic_tickets (seed {seed})"))


def _image_dataset(name: str, path: str | None, flatten: bool, normalize: bool) -> Splits:
    from kexp.data.keras_datasets import images_to_splits, load_keras_dataset

    data = load_keras_dataset(name, path)
    return images_to_splits(data, flatten=flatten, normalize=normalize, source=path or name)


@DATASETS.register("mnist")
def mnist(*, path: str | None = None, flatten: bool = False, normalize: bool = True) -> Splits:
    """MNIST digits, 60,000 train and 10,000 test 28x28 images (Keras's ``mnist.npz``).

    Args:
        path: a local ``mnist.npz``; without it, Keras's cache or a download (see
            ``kexp.data.keras_datasets``).
        flatten: rows of 784 pixels instead of ``(28, 28)`` images.
        normalize: scale pixels from 0..255 to [0, 1].
    """
    return _image_dataset("mnist", path, flatten, normalize)


@DATASETS.register("fashion_mnist")
def fashion_mnist(*, path: str | None = None, flatten: bool = False,
                  normalize: bool = True) -> Splits:
    """Fashion-MNIST, 60,000 train and 10,000 test 28x28 images of clothes.

    Args:
        path: a directory holding Keras's four ``*-idx*-ubyte.gz`` files.
        flatten: rows of 784 pixels instead of ``(28, 28)`` images.
        normalize: scale pixels from 0..255 to [0, 1].
    """
    return _image_dataset("fashion_mnist", path, flatten, normalize)


@DATASETS.register("cifar10")
def cifar10(*, path: str | None = None, flatten: bool = False, normalize: bool = True) -> Splits:
    """CIFAR-10, 50,000 train and 10,000 test 32x32 colour images, labels ``(n, 1)``.

    Args:
        path: ``cifar-10-python.tar.gz`` or the ``cifar-10-batches-py`` directory.
        flatten: rows of 3,072 values instead of ``(32, 32, 3)`` images.
        normalize: scale pixels from 0..255 to [0, 1].
    """
    return _image_dataset("cifar10", path, flatten, normalize)


def _check_imdb(args: dict[str, Any]) -> list[tuple[str, str]]:
    """``mode`` is multi_hot or sequences; multi_hot needs ``num_words`` and takes no
    ``maxlen``."""
    mode = args.get("mode", "multi_hot")
    if mode not in ("multi_hot", "sequences"):
        return [("mode", f"expected multi_hot or sequences; received {mode!r}")]
    if mode == "multi_hot" and (args.get("num_words", 10000) is None or
                                args.get("maxlen") is not None):
        return [("mode", "`mode: multi_hot` needs `num_words` (the vector size) and takes no "
                 "`maxlen`; use `mode: sequences` for padded sequences")]
    return []


@DATASETS.register("imdb", check=_check_imdb)
def imdb(
    *,
    path: str | None = None,
    num_words: int | None = 10000,
    mode: str = "multi_hot",
    maxlen: int | None = None,
) -> Splits:
    """IMDB movie reviews (25,000 train, 25,000 test), labels 1 positive / 0 negative.

    Words are indexed as ``keras.datasets.imdb.load_data()`` does (1 starts a review, 2 is a
    word outside the ``num_words`` most frequent, real words from 3).

    Args:
        path: a local ``imdb.npz``.
        num_words: keep the most frequent words; others become 2.
        mode: ``multi_hot``: float32 ``(n, num_words)`` vectors, 1 where a word occurs (about
            1 GB per split at 10,000 words); ``sequences``: int32 word ids ``(n, maxlen)``
            for an ``Embedding`` layer.
        maxlen: ``sequences`` only: keep the last ``maxlen`` ids, zero-pad shorter reviews in
            front (``keras.utils.pad_sequences``; Keras's loader drops longer reviews
            instead). Default: the longest review.
    """
    from kexp.data.keras_datasets import imdb_to_splits, load_keras_dataset

    data = load_keras_dataset("imdb", path)
    return imdb_to_splits(data, num_words=num_words, maxlen=maxlen, mode=mode,
                          source=path or "imdb")


def _check_sample_weight(args: dict[str, Any]) -> list[tuple[str, str]]:
    """``sample_weight`` names one array or column, and weighs the loss against targets."""
    weight = args.get("sample_weight")
    if weight is None:
        return []
    if not isinstance(weight, (str, int)) or isinstance(weight, bool):
        return [("sample_weight", "expected the name of one array (npz) or column (csv); "
                 f"received {weight!r}")]
    if args.get("targets") is None:
        return [("sample_weight", "sample weights weigh each sample's loss: give `targets` too")]
    if args.get("stream"):
        return [("sample_weight", "not yet read from a streamed csv (`stream: true`); "
                 "load the file in memory (leave `stream` out) to weigh its samples")]
    return []


@DATASETS.register("npz", check=_check_sample_weight)
def npz(*, path: str, features: Any, targets: Any = None,
        sample_weight: str | None = None) -> Splits:
    """Arrays of an ``.npz`` file (``np.savez``).

    Args:
        path: the file.
        features: an array name, a list of names (x keyed by them: the model inputs of those
            names), or a mapping ``{input_name: array_name}``.
        targets: the same for targets; none for data to predict on.
        sample_weight: an array of one weight per sample (``(n,)``, each >= 0): each
            sample's loss is weighed by it, as ``model.fit(..., sample_weight=w)`` does.

    ```yaml
    data: {type: npz, path: tickets.npz, features: [title, text_body, tags],
           targets: {priority: y_priority, department: y_department}}
    ```
    """
    from kexp.data.files import load_npz
    from kexp.data.splits import Splits

    return Splits(train=load_npz(path, features, targets, sample_weight))


@DATASETS.register("csv", check=_check_sample_weight)
def csv(
    *,
    path: str,
    features: Any = None,
    targets: Any = None,
    delimiter: str | None = ",",
    header: bool = True,
    drop_missing: bool = False,
    stream: bool = False,
    sample_weight: str | None = None,
) -> Splits:
    """Numeric columns of a delimited text file (see ``kexp.data.files.load_csv``).

    Args:
        path: the file.
        features: a column, a list of columns (x keyed by them), or a mapping
            ``{input_name: column or [columns]}``. Default: every numeric column that is not a
            target, as one ``(n, k)`` array.
        targets: a column, a list, or a mapping, as for features.
        delimiter: the separator; ``null`` or ``" "`` for any run of whitespace.
        header: the first row names the columns; otherwise they are named ``0``, ``1``, ...
        drop_missing: skip rows with a missing cell (empty, ``?``, ``NA``) in a used column
            instead of failing.
        stream: read the file in batches through ``tf.data`` instead of loading it whole
            (``kexp.data.records``; ``path`` may then be a glob or a list of files).
        sample_weight: a column of one weight per row (each >= 0), left out of the default
            features: each sample's loss is weighed by it, as ``model.fit(...,
            sample_weight=w)`` does (in-memory files only).

    ```yaml
    # x: the 7 numeric columns as one (n, 7) array; car names are text, left out
    data: {type: csv, path: auto-mpg.data, delimiter: null, targets: mpg, drop_missing: true}
    # x: {engine: (n, 2), origin: (n, 1)} for a model with inputs `engine` and `origin`
    data: {type: csv, path: auto-mpg.data, delimiter: null, targets: mpg,
           features: {engine: [cylinders, displacement], origin: origin}}
    ```
    """
    from kexp.data.splits import Splits

    if stream:
        from kexp.data.records import csv_stream

        return Splits(train=csv_stream(path, features, targets, delimiter, header, drop_missing))
    from kexp.data.files import load_csv

    return Splits(train=load_csv(path, features, targets, delimiter, header, drop_missing,
                                 sample_weight))


@DATASETS.register("image_directory")
def image_directory(
    *,
    path: str,
    labels: Any = "inferred",
    label_mode: str | None = "int",
    class_names: list[str] | None = None,
    color_mode: str = "rgb",
    image_size: Any = (256, 256),
    interpolation: str = "bilinear",
    follow_links: bool = False,
    crop_to_aspect_ratio: bool = False,
    pad_to_aspect_ratio: bool = False,
) -> Splits:
    """Images in one sub-folder per class, streamed (``keras.utils.image_dataset_from_directory``'s
    arguments and defaults). JPEG, PNG, BMP and GIF (first frame).

    Args:
        path: the folder; its sorted sub-folder names are the classes.
        labels: ``inferred`` (from the sub-folders), null (no labels), or a list of integer
            labels for the files sorted by path.
        label_mode: ``int`` (class indices), ``categorical`` (one-hot), ``binary`` (0/1 of
            two classes, shape ``(n, 1)``), or null.
        class_names: the sub-folders in the order to number them (default: sorted).
        color_mode: ``grayscale``, ``rgb`` or ``rgba`` (1, 3 or 4 channels).
        image_size: ``[height, width]`` every image is resized to.
        interpolation: the resize method (``bilinear``, ``nearest``, ``bicubic``, ...).
        follow_links: follow symbolic links to sub-folders.
        crop_to_aspect_ratio: crop the centre to the target aspect ratio before resizing.
        pad_to_aspect_ratio: pad to the target aspect ratio before resizing.

    Returns:
        A streamed train split: x float32 ``(height, width, channels)`` in [0, 255] (scale in
        the model, with ``Rescaling``), y as ``label_mode`` says. The class names are
        recorded in ``run.json``.

    ```yaml
    data: {type: image_directory, path: images/, image_size: [180, 180], validation_split: 0.2}
    ```
    """
    from kexp.data.folders import image_folder
    from kexp.data.splits import Splits

    return Splits(train=image_folder(
        path, labels=labels, label_mode=label_mode, class_names=class_names,
        color_mode=color_mode, image_size=image_size, interpolation=interpolation,
        follow_links=follow_links, crop_to_aspect_ratio=crop_to_aspect_ratio,
        pad_to_aspect_ratio=pad_to_aspect_ratio))


@DATASETS.register("text_directory")
def text_directory(
    *,
    path: str,
    labels: Any = "inferred",
    label_mode: str | None = "int",
    class_names: list[str] | None = None,
    max_length: int | None = None,
    follow_links: bool = False,
) -> Splits:
    """``.txt`` files in one sub-folder per class, streamed
    (``keras.utils.text_dataset_from_directory``'s arguments and defaults).

    Returns:
        A streamed train split: x strings (one per file, at most ``max_length`` characters),
        y as ``label_mode`` says. A ``TextVectorization`` layer with ``adapt: true`` adapts on
        the training text, streamed.
    """
    from kexp.data.folders import text_folder
    from kexp.data.splits import Splits

    return Splits(train=text_folder(path, labels=labels, label_mode=label_mode,
                                    class_names=class_names, max_length=max_length,
                                    follow_links=follow_links))


@DATASETS.register("tfrecord")
def tfrecord(
    *,
    path: Any,
    features: Any,
    targets: Any = None,
    compression: str | None = None,
) -> Splits:
    """``tf.train.Example`` records of TFRecord files, streamed and parsed in batches.

    Args:
        path: a file, a glob (``shards/train-*.tfrecord``), or a list of them.
        features: ``{name: {shape: [...], dtype: float32}}``: the Example keys (``key:``
            when it differs from the model input name) fed to the model. One feature is a
            single array; several are named inputs. ``varlen: true`` reads a list of any
            length, padded with zeros to the longest in its batch.
        targets: the same for the targets.
        compression: null, ``GZIP`` or ``ZLIB``.
    """
    from kexp.data.records import tfrecord_stream
    from kexp.data.splits import Splits

    return Splits(train=tfrecord_stream(path, features, targets, compression))


@DATASETS.register("array_record")
def array_record(*, path: Any, features: Any, targets: Any = None) -> Splits:
    """``tf.train.Example`` records of ArrayRecord files, read by record key with Grain.

    Random access: each epoch is a global permutation of every record of every file, a
    function of ``(seed, epoch)`` (``shuffle: false`` reads them in file order); no shuffle
    buffer. Batches are parsed at once with ``tf.io.parse_example``.

    Args:
        path: a file, a glob (``shards/train-*.array_record``), or a list of them.
        features: ``{name: {shape: [...], dtype: float32}}``, as for ``tfrecord``.
        targets: the same for the targets.
    """
    from kexp.data.arrayrecord import array_record_stream
    from kexp.data.splits import Splits

    return Splits(train=array_record_stream(path, features, targets))
