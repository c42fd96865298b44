"""Data streamed from files, batch by batch, never loaded whole (SPEC 1.4, "Data larger than
memory").

A file dataset (``image_directory``, ``text_directory``, ``tfrecord``, ``csv`` with
``stream: true``) returns a ``Stream`` in place of an in-memory ``Split``. A ``Stream`` holds
the list of its samples' files and how to read them; ``kexp.data.pipeline`` asks it for one
pass of batches at a time:

- **Order** is a function of ``(seed, epoch)``: folder datasets permute their file list with
  the same stateless permutation as in-memory data (a true global shuffle, no buffer); record
  datasets permute their file order and run a shuffle buffer seeded by ``(seed, epoch)``.
  So epoch ``e``'s batches never depend on what ran before, and ``--resume`` restarting at an
  epoch reads exactly what an uninterrupted run read.
- A **probe** (the first batch, read once when the dataset is made) stands in for the data
  wherever kexp needs arrays before training: the shape and name checks against the model,
  building a model without input shapes, ``threads: auto``. Reading it is also where a
  missing Example key or an unreadable first file is found: a data error, exit 2.
- A file that fails while training (a corrupt image, a truncated record, a non-numeric row)
  stops TensorFlow with an error that does not name it; ``explain_failure`` then reads the
  streams again in Python, file by file, to name the file and record or row.

TensorFlow is imported inside the functions: dataset modules import this one to register.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kexp.errors import DataError, error_line

if TYPE_CHECKING:
    import tensorflow as tf

    from kexp.data.splits import Split

__all__ = ["Stream", "Shard", "stream_batches", "explain_failure", "adapt_source",
           "DEFAULT_BUFFER", "is_stream", "use_streams", "check_cache"]

# Records held by a shuffle buffer for `shuffle: true` (an int sets it).
DEFAULT_BUFFER = 10_000
# The streams of the run being trained (their files are read again to name a file that
# failed).
_ACTIVE: list[Stream] = []


@dataclass(frozen=True)
class Shard:
    """One worker's part of a multi-worker run's training data: worker ``index`` of
    ``count``.

    Record files (``tfrecord``, streamed ``csv``) are sharded **by file** when there are at
    least as many files as workers: each epoch's file order (a function of ``(seed, epoch)``)
    is dealt out round-robin, worker ``w`` reading files ``w, w + count, ...`` of it. With
    fewer files than workers they are sharded **by data**: every worker reads every file and
    keeps records ``w, w + count, ...`` of the epoch's record order. Folder datasets (one
    sample per file) deal out the epoch's shuffled files (slots) round-robin, which is both.
    """

    index: int
    count: int

    def by_file(self, files: int) -> bool:
        return files >= self.count


@dataclass
class Stream:
    """One split read from files. Subclasses say how a list of files becomes elements.

    Attributes:
        source: what the data came from, for messages.
        files: the files, in their canonical (sorted) order.
        cache: ``None``, ``"memory"`` or a cache file path (``tf.data``'s cache).
        class_names: the classes of a folder dataset, in label order.
    """

    source: str
    files: list[str]
    cache: str | None = None
    class_names: list[str] | None = None
    prefetch: bool | int = True
    _probe: Any = field(default=None, repr=False)
    _count: int | None = field(default=None, repr=False)

    # ---------------------------------------------------------------- subclass API

    # Folder datasets: one sample per file, so permuting the files shuffles the samples.
    sample_per_file = False

    def read(self, order: tf.Tensor, sequential: bool) -> tf.data.Dataset:
        """The elements (unbatched) of the files at indices ``order``; ``sequential``: read
        the files one after another (no interleaving)."""
        raise NotImplementedError

    def parse(self, batch: Any) -> Any:
        """A batch of ``read``'s elements -> ``(x, y)`` (or ``x``); vectorised."""
        return batch

    def count_samples(self) -> int:
        """Number of samples (one pass over the data unless the subclass knows better)."""
        import tensorflow as tf

        raw = self.read(tf.range(len(self.files), dtype=tf.int64), True)
        return int(raw.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))

    def locate_error(self) -> str | None:
        """Read the files again, in Python, and say which file (and record or row) cannot be
        read; None if all can."""
        return None

    # ---------------------------------------------------------------- common

    def __len__(self) -> int:
        return len(self.probe)

    @property
    def x(self) -> Any:
        return self.probe.x

    @property
    def y(self) -> Any:
        return self.probe.y

    @property
    def count(self) -> int:
        """The number of samples in one pass."""
        if self._count is None:
            import tensorflow as tf

            try:
                self._count = self.count_samples()
            except tf.errors.OpError as exc:
                raise DataError(self.locate_error() or f"{self.source}: {error_line(exc)}"
                                ) from None
            if self._count == 0:
                raise DataError(f"{self.source}: no samples.")
        return self._count

    @property
    def probe(self) -> Split:
        """The first samples (up to 4), in memory."""
        if self._probe is None:
            self._probe = self._read_probe(4)
        return self._probe

    def _read_probe(self, size: int) -> Split:
        import numpy as np
        import tensorflow as tf

        from kexp.data.splits import Split

        dataset = self.first_batches(size).take(1)
        try:
            batch = next(iter(dataset.as_numpy_iterator()), None)
        except tf.errors.OpError as exc:
            raise DataError(self.locate_error() or f"{self.source}: {error_line(exc)}") from None
        if batch is None:
            raise DataError(f"{self.source}: no samples.")

        def arrays(part: Any) -> Any:
            return ({k: np.asarray(v) for k, v in part.items()} if isinstance(part, dict)
                    else np.asarray(part))

        if isinstance(batch, tuple):
            return Split(arrays(batch[0]), arrays(batch[1]), self.source)
        return Split(arrays(batch), None, self.source)

    def first_batches(self, size: int) -> tf.data.Dataset:
        """Batches of ``size`` in file order, uncached (the probe reads the first)."""
        import tensorflow as tf

        order = tf.range(len(self.files), dtype=tf.int64)
        return self.read(order, True).batch(size).map(self._parse_parts)

    def elements(self, seed: int, epoch: tf.Tensor, repeat: tf.Tensor,
                 shuffle: bool | int, shard: Shard | None = None) -> tf.data.Dataset:
        """One pass of read elements in the order of ``(seed, epoch, repeat)``; with
        ``shard``, this worker's part of it (see ``Shard``)."""
        import tensorflow as tf

        from kexp.data.order import permutation

        n = len(self.files)
        by_data = shard is not None and (self.cache is not None or not shard.by_file(n))
        if self.cache is not None:  # cached in file order, shuffled by a seeded buffer
            dataset = self._cached()
            if by_data:
                dataset = dataset.shard(shard.count, shard.index)
            buffer = shuffle if not isinstance(shuffle, bool) else max(self.count, 1)
            return _shuffle(dataset, buffer, seed, epoch, repeat) if shuffle else dataset
        order = (permutation(n, seed, epoch, repeat) if shuffle
                 else tf.range(n, dtype=tf.int64))
        if shard is not None and not by_data:
            order = order[shard.index::shard.count]
        dataset = self.read(order, not shuffle)
        if by_data:
            dataset = dataset.shard(shard.count, shard.index)
        if not shuffle or self.sample_per_file:
            return dataset
        buffer = DEFAULT_BUFFER if isinstance(shuffle, bool) else shuffle
        return _shuffle(dataset, buffer, seed, epoch, repeat)

    def shard_notice(self, shard: Shard) -> str:
        """What worker ``shard.index`` reads of the training data (said at start-up)."""
        n = len(self.files)
        if shard.by_file(n):
            return (f"worker {shard.index}: reads {len(range(shard.index, n, shard.count))} "
                    f"of the {n} training files each epoch")
        return (f"worker {shard.index}: reads record {shard.index} of every {shard.count} "
                f"(fewer training files than workers)")

    def _cached(self) -> tf.data.Dataset:
        import tensorflow as tf

        dataset = self.read(tf.range(len(self.files), dtype=tf.int64), True)
        if self.cache == "memory":
            return dataset.cache("")
        claim_cache_file(self.cache)
        return dataset.cache(self.cache)

    def batches(self, seed: int, epoch: tf.Tensor, repeat: tf.Tensor, shuffle: bool | int,
                batch_size: int) -> tf.data.Dataset:
        """One pass of ``(x, y)`` batches (the last may be partial)."""
        import tensorflow as tf

        dataset = self.elements(seed, epoch, repeat, shuffle).batch(batch_size)
        return dataset.map(self._parse_parts, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True)

    @property
    def shardable(self) -> bool:
        """Whether ``elements`` gives one worker's part of an epoch (``Shard``): streams that
        read a list of files through ``read`` (sharded by file), and those that shard
        themselves (``array_record``, by record)."""
        return type(self).read is not Stream.read

    def _parse_parts(self, *parts: Any) -> Any:
        return self.parse(parts[0] if len(parts) == 1 else parts)

    def subset(self, indices: Any, source: str) -> Stream:
        """The same stream over some of its files (``indices`` into ``files``)."""
        raise DataError(f"{self.source}: validation_split is not supported for this dataset; "
                        f"give `validation:` a dataset instead.")

    def carve(self, fraction: float, seed: int) -> tuple[Stream, Stream]:
        """``(train, validation)``: a seeded random ``fraction`` of the samples for
        validation (folder datasets: of the files)."""
        from kexp.data.splits import carve_indices

        train_idx, val_idx = carve_indices(len(self.files), fraction, seed, self.source,
                                           "files")
        return (self.subset(train_idx, f"{self.source} (train part)"),
                self.subset(val_idx, f"{self.source} (validation_split {fraction:g})"))


def is_stream(split: Any) -> bool:
    return isinstance(split, Stream)


# The graph seed a shuffle buffer is made under when the run's seed is 0 (see `_shuffle`).
_GRAPH_SEED_FOR_0 = 0x5EED


def _shuffle(dataset: tf.data.Dataset, buffer: int, seed: int, epoch: tf.Tensor,
             repeat: tf.Tensor) -> tf.data.Dataset:
    """``dataset`` through a shuffle buffer seeded by ``(seed, epoch, repeat)``.

    TensorFlow checks an op seed against 0 when the global seed is 0 (``seed: 0``, set by
    ``keras.utils.set_random_seed``), which fails for a tensor seed inside a ``tf.data``
    function ("Using a symbolic tf.Tensor as a Python bool"); so the buffer is made under
    another graph seed then, as fixed as the first."""
    import tensorflow as tf

    graph = tf.compat.v1.get_default_graph()
    if tf.executing_eagerly() or graph.seed != 0:
        return dataset.shuffle(buffer, seed=_seed_of(seed, epoch, repeat))
    graph.seed = _GRAPH_SEED_FOR_0
    try:
        return dataset.shuffle(buffer, seed=_seed_of(seed, epoch, repeat))
    finally:
        graph.seed = 0


def _seed_of(seed: int, epoch: tf.Tensor, repeat: tf.Tensor) -> tf.Tensor:
    """An int64 seed for a shuffle buffer, from ``(seed, epoch, repeat)``."""
    import tensorflow as tf

    from kexp.data.order import epoch_key, philox_ints

    return philox_ints(tf.stack([epoch_key(seed, epoch), tf.cast(repeat, tf.int64)]), [])


def stream_batches(stream: Stream, *, batch_size: int, seed: int, shuffle: bool | int,
                   epochs: range | None = None, epoch: Any = None,
                   steps_per_epoch: int | None = None, steps: int | None = None,
                   shard: Shard | None = None) -> tuple[tf.data.Dataset, int]:
    """Batches of ``stream`` for ``kexp.data.pipeline``, and the batches per epoch.

    - ``epochs`` (a range): every epoch in it, one after the other (``train_dataset``);
    - ``epoch`` (a variable): one epoch, the variable's at the time an iterator starts
      (``epoch_dataset``);
    - neither: one pass in file order (``eval_dataset``), at most ``steps`` batches.

    ``steps_per_epoch``: exactly that many batches per epoch, continuing with further passes
    seeded ``(seed, epoch, r)`` when one pass has fewer.

    ``shard`` (a multi-worker run's training data, with ``steps_per_epoch``: every worker
    must run the same number of steps): this worker's part of each epoch (see ``Shard``), in
    full batches, its next pass starting where its part of one runs out.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1; received {batch_size}.")
    if shard is not None and (steps_per_epoch is None or epochs is None):
        raise ValueError("a sharded stream needs `epochs` and `steps_per_epoch`")
    if stream.sample_per_file and stream.cache is None:
        return _slot_batches(stream, batch_size=batch_size, seed=seed, shuffle=shuffle,
                             epochs=epochs, epoch=epoch, steps_per_epoch=steps_per_epoch,
                             steps=steps, shard=shard)
    def per_pass() -> int:
        return math.ceil(stream.count / batch_size)

    zero = tf.constant(0, tf.int64)

    def one_epoch(e: tf.Tensor) -> tf.data.Dataset:
        if shard is not None:  # (each pass not empty gives a record: enough passes)
            passes = tf.data.Dataset.range(steps_per_epoch * batch_size + 1)
            records = passes.flat_map(lambda r: stream.elements(seed, e, r, shuffle, shard))
            return records.batch(batch_size, drop_remainder=True).map(
                stream._parse_parts, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True).take(steps_per_epoch)
        if steps_per_epoch is None:
            return stream.batches(seed, e, zero, shuffle, batch_size)
        passes = tf.data.Dataset.range(1 << 30)
        return passes.flat_map(
            lambda r: stream.batches(seed, e, r, shuffle, batch_size)).take(steps_per_epoch)

    def finish(dataset: tf.data.Dataset, count: int) -> tf.data.Dataset:
        return _finish(dataset.apply(tf.data.experimental.assert_cardinality(count)),
                       stream.prefetch)

    if epochs is None and epoch is None:
        dataset = stream.batches(seed, zero, zero, False, batch_size)
        if steps is not None:
            dataset = dataset.take(steps)
        count = min(per_pass(), steps) if steps is not None else per_pass()
        return finish(dataset, count), count
    per_epoch = steps_per_epoch or per_pass()
    if not shuffle and shard is None and steps_per_epoch is None:
        # Every epoch reads the same batches: one pass, repeated, and no dataset per epoch.
        count = 1 if epochs is None else len(epochs)
        dataset = stream.batches(seed, zero, zero, False, batch_size)
        return finish(dataset.repeat(count) if count != 1 else dataset,
                      per_epoch * count), per_epoch
    if epoch is not None:
        dataset = tf.data.Dataset.range(1).flat_map(lambda _: one_epoch(epoch.read_value()))
        total = per_epoch
    else:
        dataset = tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(one_epoch)
        total = per_epoch * len(epochs)
    return finish(dataset, total), per_epoch


def _slot_batches(stream: Any, *, batch_size: int, seed: int, shuffle: bool | int,
                  epochs: range | None, epoch: Any, steps_per_epoch: int | None,
                  steps: int | None, shard: Shard | None = None
                  ) -> tuple[tf.data.Dataset, int]:
    """Batches of a folder dataset (one sample per file) without nested datasets.

    Every epoch has ``steps * batch_size`` slots; slot ``k`` of epoch ``e`` reads file
    ``index_shuffle(k % n)`` of the permutation keyed by ``(seed, e, k // n)``. The slots'
    paths and labels are gathered a whole epoch at a time, so the one parallel map reading
    the files gets them as Keras's loader does: nothing is looked up per image. Without
    ``steps_per_epoch`` an epoch has ``n`` samples and ends with its partial batch, as for
    in-memory data: when one dataset runs several such epochs, each is padded to whole
    batches and the padding dropped after batching (a mask rides along); a single epoch needs
    no padding.
    With ``shard``, worker ``w`` of ``W`` reads the epoch's slots ``w, w + W, ...``: within
    each pass over the files, the workers read different files.
    """
    import tensorflow as tf

    n = len(stream.files)
    per_epoch = steps_per_epoch or math.ceil(n / batch_size)
    if epochs is None and epoch is None:  # evaluation: one pass in file order
        per_epoch = min(per_epoch, steps) if steps is not None else per_epoch
        first, count, shuffle = 0, 1, False
    elif epoch is not None:
        first, count = None, 1
    else:
        first, count = epochs.start, len(epochs)
    slots = per_epoch * batch_size
    if steps_per_epoch is None and count == 1:
        slots = min(slots, n)  # one epoch: its last batch is partial by itself
    index, workers = (shard.index, shard.count) if shard is not None else (0, 1)
    plan = _Slots(columns=stream.columns(), n=n, slots=slots, seed=seed, shuffle=bool(shuffle),
                  padded=steps_per_epoch is None and slots > n, index=index, workers=workers,
                  first=first, count=count, epoch=epoch)
    dataset = _read_slots(plan.dataset(), stream, batch_size, plan.padded)
    total = per_epoch * count
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(total))
    return _finish(dataset, stream.prefetch), per_epoch


@dataclass
class _Slots:
    """The slots of ``count`` epochs of a folder dataset (see ``_slot_batches``): epochs
    ``first ..`` (``first`` None: the one epoch in the variable ``epoch``)."""

    columns: tuple
    n: int
    slots: int
    seed: int
    shuffle: bool
    padded: bool
    index: int
    workers: int
    first: int | None
    count: int
    epoch: Any
    table: Any = None

    def __post_init__(self) -> None:
        import tensorflow as tf

        self.passes = math.ceil((self.index + self.workers * (self.slots - 1) + 1) / self.n)
        # A range of epochs known here: their keys computed now, not each time an iterator
        # starts.
        if (self.shuffle and self.first is not None and self.count <= 1000
                and tf.executing_eagerly()):
            self.table = tf.stack([self.keys_of(tf.constant(self.first + j, tf.int64))
                                   for j in range(self.count)])

    def keys_of(self, e: tf.Tensor) -> tf.Tensor:
        """The index_shuffle keys of each pass of epoch ``e``: ``(passes, 2)``."""
        import tensorflow as tf

        from kexp.data.order import epoch_key, philox_ints

        key = epoch_key(self.seed, e)
        return tf.stack([philox_ints(tf.stack([key, tf.constant(r, tf.int64)]), [2])
                         for r in range(self.passes)])

    def epoch_keys(self, j: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        if self.table is not None:
            return tf.gather(self.table, j)
        return self.keys_of(self.epoch.read_value() if self.first is None else self.first + j)

    def epoch_slots(self, j: tf.Tensor) -> tuple:
        """The j-th epoch's slots: each one's path and label (and with padding, whether it
        is a real sample)."""
        import tensorflow as tf

        n, passes = self.n, self.passes
        # The slots' numbers in the epoch's global order.
        k = self.index + self.workers * tf.range(self.slots, dtype=tf.int64)
        i = k % n if passes > 1 else k
        if self.shuffle:
            keys = self.epoch_keys(j)
            if passes == 1:
                i = tf.random.experimental.index_shuffle(i, keys[0], n - 1)
            else:
                rounds, shuffled = k // n, i
                for r in range(passes):
                    shuffled = tf.where(tf.equal(rounds, r), tf.random.experimental.index_shuffle(
                        i, keys[r], n - 1), shuffled)
                i = shuffled
        parts = tuple(tf.gather(column, i) for column in self.columns)
        return (*parts, k < n) if self.padded else parts

    def dataset(self) -> tf.data.Dataset:
        """The slots of every epoch, one element each.

        A range of epochs known here has its slots computed now (at most _EAGER_SLOTS of
        them): no function to instantiate each time an iterator starts (a flat_map of the
        epochs made the start of each iterator about 15 ms slower)."""
        import tensorflow as tf

        count = self.count
        if (self.first is not None and tf.executing_eagerly()
                and count * self.slots <= _EAGER_SLOTS):
            epochs_parts = [self.epoch_slots(tf.constant(j, tf.int64)) for j in range(count)]
            return tf.data.Dataset.from_tensor_slices(
                epochs_parts[0] if count == 1 else
                tuple(tf.concat(column, 0) for column in zip(*epochs_parts, strict=True)))
        return tf.data.Dataset.range(count).flat_map(
            lambda j: tf.data.Dataset.from_tensor_slices(self.epoch_slots(j)))


def _read_slots(dataset: tf.data.Dataset, stream: Any, batch_size: int,
                padded: bool) -> tf.data.Dataset:
    """Slots -> batches of samples: the map reading the files runs at the top of the
    pipeline (inside a per-epoch dataset it ran 3-4x slower); padding slots are dropped
    after batching."""
    import tensorflow as tf

    if not padded:
        return dataset.map(stream.sample, num_parallel_calls=stream.parallel_reads(),
                           deterministic=True).batch(batch_size)

    def drop_padding(data: Any, valid: tf.Tensor) -> Any:
        kept = tuple(tf.boolean_mask(a, valid)
                     for a in (data if isinstance(data, tuple) else (data,)))
        return kept if len(kept) > 1 else kept[0]

    dataset = dataset.map(lambda *parts: (stream.sample(*parts[:-1]), parts[-1]),
                          num_parallel_calls=stream.parallel_reads(), deterministic=True)
    return dataset.batch(batch_size).map(drop_padding, num_parallel_calls=tf.data.AUTOTUNE,
                                         deterministic=True)


# Batches prefetched for `prefetch: true` where tf.data's autotuning is off (streams):
# 1, 2 and 4 read as fast as an autotuned buffer, which without autotuning's RAM budget could
# keep doubling.
_UNTUNED_PREFETCH = 2
# The most slots (samples of all epochs) `_slot_batches` computes when the dataset is made.
_EAGER_SLOTS = 1 << 18


def _finish(dataset: tf.data.Dataset, prefetch: bool | int) -> tf.data.Dataset:
    """A stream's pipeline runs with its parallelism and buffers set, not tuned
    (``prefetch: true`` is two batches): ``tf.data``'s autotuning made some passes over a
    folder of images or a TFRecord set run on one CPU, at half the rate (README,
    Performance)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    if prefetch is False:
        return dataset
    # Without autotuning, a fixed buffer: its memory stays bounded.
    return dataset.prefetch(_UNTUNED_PREFETCH if prefetch is True else prefetch)


def adapt_source(split: Any) -> Any:
    """What ``adapt: true`` layers adapt on: the features of an in-memory split, or one pass
    of a stream's feature batches (streamed, not loaded whole)."""
    if not isinstance(split, Stream):
        return split.x
    import tensorflow as tf

    zero = tf.constant(0, tf.int64)
    batches = split.batches(0, zero, zero, False, 256)
    return batches.map(lambda *parts: parts[0]).prefetch(tf.data.AUTOTUNE)


def use_streams(streams: list[Stream]) -> None:
    """The streams the current run reads (``explain_failure`` reads them again)."""
    _ACTIVE[:] = streams


def explain_failure(exc: BaseException) -> str | None:
    """A clean reason for a TensorFlow error raised while reading a stream: the file and
    record or row that cannot be read (None when the error is not the data's)."""
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(exc, tf.errors.OpError) or not _ACTIVE:
        return None
    for stream in list(_ACTIVE):
        try:
            where = stream.locate_error()
        except Exception:  # noqa: BLE001 - explaining must not fail in turn
            where = None
        if where:
            return where
    return None


def cache_lock_problem(cache: str) -> str | None:
    """Why ``tf.data`` could not fill the cache file ``cache`` now, or None.

    ``tf.data`` holds ``{cache}_N.lockfile`` while it writes a cache and removes it when the
    cache is complete; a run killed meanwhile leaves it, and every later run (its
    ``--resume`` too) would fail with ``AlreadyExistsError``. kexp notes the writing process
    in ``{cache}.kexp-writer`` (``pid@host``): a lock whose writer has ended is no problem
    (``claim_cache_file`` removes it); one held by a live process, or by a writer kexp
    cannot check, is.
    """
    import os
    import socket
    from pathlib import Path

    locks = _cache_locks(cache)
    if not locks:
        return None
    writer = Path(f"{cache}.kexp-writer")
    pid, _, host = (writer.read_text().strip() if writer.exists() else "").partition("@")
    if not pid.isdigit() or host != socket.gethostname():
        return (f"cache: {locks[0]} exists: another run is writing this cache, or a run "
                f"that was killed left it; delete it if no run uses {cache}.")
    if _alive(int(pid)) and int(pid) != os.getpid():
        return (f"cache: {cache} is being written by process {pid} (another run); give "
                f"this run its own cache file.")
    return None


def claim_cache_file(cache: str) -> None:
    """Make way for ``tf.data`` to fill the cache file ``cache``: a lock left by a writer
    that has ended is removed, and this process is noted as the writer.

    Raises:
        DataError: the cache is being written by another process (``cache_lock_problem``).
    """
    import os
    import socket
    from pathlib import Path

    from kexp.output import notice

    problem = cache_lock_problem(cache)
    if problem:
        raise DataError(problem)
    locks = _cache_locks(cache)
    for lock in locks:
        lock.unlink(missing_ok=True)
    if locks:
        notice(f"cache: removed {locks[0].name}, left by a run that ended while writing "
               f"{cache}; the cache is written again")
    if not Path(f"{cache}.index").exists():
        Path(f"{cache}.kexp-writer").write_text(f"{os.getpid()}@{socket.gethostname()}\n")


def _cache_locks(cache: str) -> list:
    """The lock files ``tf.data`` holds while it fills the cache file ``cache``."""
    from pathlib import Path

    target = Path(cache)
    return sorted(target.parent.glob(f"{target.name}_*.lockfile"))


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_cache(cache: Any) -> str | None:
    """``data.cache`` for a stream: ``memory``, a file path, or nothing (``false``; ``true``
    means ``memory``)."""
    if cache is True:
        return "memory"
    if cache is False or cache is None:
        return None
    return cache or None  # the config check refuses an empty name
