"""``array_record``: ``tf.train.Example`` records in ArrayRecord files, read by record key
through Grain's ``ArrayRecordDataSource`` (SPEC 1.4).

ArrayRecord files index their records, so any record can be read directly. kexp numbers
the records of every file, in file order (the files sorted, as for ``tfrecord``), from 0 to
``n - 1`` — Grain's record keys — and treats them like the rows of an in-memory array:

- **Order**: epoch ``e``'s order is ``kexp.data.order.permutation(n, seed, e)``, the
  permutation in-memory data uses: a true global shuffle of every record of every file, with
  no shuffle buffer and no file interleaving. Batch ``i`` of the epoch is the keys
  ``order[i * batch_size:(i + 1) * batch_size]``; it is read with one call to the data
  source (which reads each file's records of the batch on a thread of its own) and parsed
  at once with ``tf.io.parse_example``, as ``tfrecord`` batches are. Records stored in the
  rows' order therefore train exactly like the same arrays in an ``npz`` file, shuffled or
  not.
- **Resume**: an epoch's batches depend on ``(seed, epoch)`` alone, and batch ``k`` is a
  slice of the epoch's permutation: a resumed run reads no earlier epoch again.
- **Multi-worker** (``Shard``): worker ``w`` of ``W`` reads records ``w, w + W, ...`` of
  each epoch's permutation, whatever the number of files.
- **validation_split** picks records as in-memory data picks rows (the same seeded choice
  of indices), so it is the same records every epoch.

The batches are a ``tf.data`` pipeline (the reads are a ``tf.numpy_function``), so both
loops, distribution strategies and ``--smoke`` take them as they take other streamed data.
Grain and ``array_record`` are imported only here, when such a dataset is loaded.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kexp.data.files import display_path
from kexp.data.records import _features, _record_problem, parse_examples, record_files
from kexp.data.stream import Shard, Stream
from kexp.errors import DataError, error_line

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

__all__ = ["ArrayRecords", "array_record_stream"]

# Records read (and parsed) at a time when a failed run's files are read again.
_CHUNK = 256
_INSTALL = ("the array_record dataset needs the packages grain and array-record "
            "(pip install grain array-record; wheels exist for Linux and macOS)")


def _reader_class() -> Any:
    try:
        from array_record.python.array_record_module import ArrayRecordReader
    except ImportError as exc:
        raise DataError(f"{_INSTALL}: {exc}.") from None
    return ArrayRecordReader


def _grain() -> Any:
    import logging

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # "Failed to load jax profiler": kexp has no use for JAX
    try:
        import grain
    except ImportError as exc:
        raise DataError(f"{_INSTALL}: {exc}.") from None
    finally:
        absl.setLevel(level)
    return grain


def _open(file: str) -> Any:
    """An ``ArrayRecordReader`` of ``file``, or a data error naming it."""
    reader_class = _reader_class()
    try:
        reader = reader_class(file, "readahead_buffer_size:0")
        if not reader.ok():  # the reader keeps its error: reading says what it is
            reader.read([0])
            raise RuntimeError("the file cannot be opened")
    except (RuntimeError, ValueError, OSError) as exc:
        raise DataError(f"{display_path(file)}: not a readable ArrayRecord file: the file is "
                        f"truncated or corrupt ({error_line(exc)}).") from None
    return reader


class _Source:
    """Grain's ``ArrayRecordDataSource`` over the files, opened on first use in each process
    and shared by the splits of one dataset. Reads are serialised (the data source reads
    each batch's files in parallel itself)."""

    def __init__(self, files: list[str]):
        self.files = files
        self._source: Any = None
        self._lock = threading.Lock()

    def __call__(self, keys: np.ndarray) -> np.ndarray:
        import numpy as np

        with self._lock:
            if self._source is None:
                self._source = _grain().sources.ArrayRecordDataSource(self.files)
            records = self._source.__getitems__([int(k) for k in keys])
        return np.array(records, dtype=object)

    def __getstate__(self) -> dict[str, Any]:  # a copy opens its own files
        return {"files": self.files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["files"])


@dataclass
class ArrayRecords(Stream):
    """The records of ArrayRecord files, read by key.

    Attributes:
        features, targets: the Example keys read (``kexp.data.records``).
        sizes: records in each file, in file order.
        keys: the record keys of this split, ascending (None: every record).
    """

    features: list = field(default_factory=list)
    targets: list | None = None
    sizes: list[int] = field(default_factory=list)
    keys: Any = None
    source_reader: Any = field(default=None, repr=False)

    def count_samples(self) -> int:
        return sum(self.sizes) if self.keys is None else len(self.keys)

    def parse(self, batch: tf.Tensor) -> Any:
        return parse_examples(batch, self.features, self.targets)

    def _order(self, seed: int, epoch: tf.Tensor, repeat: tf.Tensor,
               shuffle: bool | int) -> tf.Tensor:
        """The split's record keys in the order of ``(seed, epoch, repeat)`` (``shuffle``
        false: in file order)."""
        import tensorflow as tf

        from kexp.data.order import permutation

        n = self.count
        order = (permutation(n, seed, tf.cast(epoch, tf.int64), tf.cast(repeat, tf.int64))
                 if shuffle else tf.range(n, dtype=tf.int64))
        return order if self.keys is None else tf.gather(tf.constant(self.keys, tf.int64), order)

    def _read(self, order: tf.Tensor, count: int, size: int) -> tf.data.Dataset:
        """The serialised records of the ``count`` keys ``order``, ``size`` at a time."""
        import tensorflow as tf

        read = self.source_reader

        def load(i: tf.Tensor) -> tf.Tensor:
            keys = order[i * size:(i + 1) * size]
            # Stateless: the records of given keys never change (and op determinism allows
            # a stateless function in a parallel map).
            records = tf.numpy_function(read, [keys], tf.string, stateful=False)
            return tf.ensure_shape(records, [None])

        return tf.data.Dataset.range(math.ceil(count / size)).map(
            load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    # Sharded by record (``elements`` with a ``Shard``), whatever the number of files.
    shardable = True

    def batches(self, seed: int, epoch: tf.Tensor, repeat: tf.Tensor, shuffle: bool | int,
                batch_size: int) -> tf.data.Dataset:
        """One pass of parsed batches: batch ``i`` is the records of keys ``i * batch_size``
        to ``(i + 1) * batch_size`` of the pass's order, read in one call."""
        import tensorflow as tf

        order = self._order(seed, epoch, repeat, shuffle)
        return self._read(order, self.count, batch_size).map(
            self.parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def elements(self, seed: int, epoch: tf.Tensor, repeat: tf.Tensor,
                 shuffle: bool | int, shard: Shard | None = None) -> tf.data.Dataset:
        """One pass of records; with ``shard`` (a multi-worker run), worker ``w`` of ``W``
        reads records ``w, w + W, ...`` of the pass's order."""
        order, count = self._order(seed, epoch, repeat, shuffle), self.count
        if shard is not None:
            order = order[shard.index::shard.count]
            count = len(range(shard.index, count, shard.count))
        return self._read(order, count, _CHUNK).unbatch()

    def shard_notice(self, shard: Shard) -> str:
        return (f"worker {shard.index}: reads record {shard.index} of every {shard.count} of "
                f"each epoch's order of the records")

    def first_batches(self, size: int) -> tf.data.Dataset:
        import tensorflow as tf

        zero = tf.constant(0, tf.int64)
        return self.batches(0, zero, zero, False, size)

    def carve(self, fraction: float, seed: int) -> tuple[Stream, Stream]:
        import numpy as np

        from kexp.data.splits import carve_indices

        keys = np.arange(sum(self.sizes)) if self.keys is None else self.keys
        train, validation = carve_indices(len(keys), fraction, seed, self.source, "records")

        def part(indices: np.ndarray, source: str) -> Stream:
            return replace(self, source=source, keys=keys[indices], _probe=None, _count=None)

        return (part(train, f"{self.source} (train part)"),
                part(validation, f"{self.source} (validation_split {fraction:g})"))

    def locate_error(self) -> str | None:
        """The first record of the files that cannot be read or parsed, read again file by
        file (a chunk at a time, then record by record in a chunk that fails)."""
        import tensorflow as tf

        def parses(records: list[bytes]) -> BaseException | None:
            try:
                self.parse(tf.constant(records, tf.string))
            except (tf.errors.OpError, ValueError) as exc:
                return exc
            return None

        for file, size in zip(self.files, self.sizes, strict=True):
            where = display_path(file)
            try:
                reader = _open(file)
            except DataError as exc:
                return str(exc)
            for start in range(0, size, _CHUNK):
                end = min(size, start + _CHUNK)
                try:
                    records = reader.read(start, end)
                except (RuntimeError, ValueError, IndexError) as exc:
                    bad = _first_unreadable(reader, start, end)
                    return (f"{where}: record {bad + 1}: the file is truncated or corrupt "
                            f"({error_line(exc)})")
                if parses(records) is None:
                    continue
                for j, record in enumerate(records):
                    exc = parses([record])
                    if exc is not None:
                        return f"{where}: record {start + j + 1}: {_record_problem(exc)}"
        return None


def _first_unreadable(reader: Any, start: int, end: int) -> int:
    for index in range(start, end):
        try:
            reader.read([index])
        except (RuntimeError, ValueError, IndexError):
            return index
    return start


def array_record_stream(path: Any, features: Any, targets: Any = None) -> ArrayRecords:
    """An ``ArrayRecords`` stream over the files ``path`` names (a file, a glob or a list);
    each file is opened now to count its records.

    Raises:
        DataError: no file, a file that is not an ArrayRecord file, no records, a bad
            ``features`` / ``targets`` spec, Grain or array-record not installed.
    """
    source = display_path(path[0] if isinstance(path, list) and path else str(path))
    feature_list = _features(features, "features", source)
    target_list = None if targets is None else _features(targets, "targets", source)
    files = record_files(path, source)
    _grain()
    sizes = []
    for file in files:
        reader = _open(file)
        sizes.append(int(reader.num_records()))
        reader.close()
    if not sum(sizes):
        raise DataError(f"{source}: no records in {len(files)} file"
                        f"{'s' if len(files) > 1 else ''}.")
    return ArrayRecords(source=source, files=files, features=feature_list,
                        targets=target_list, sizes=sizes, source_reader=_Source(files))
