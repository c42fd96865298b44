"""``tfrecord`` and ``csv`` with ``stream: true``: record files read through ``tf.data`` in
batches, never loaded whole.

- TFRecord files hold ``tf.train.Example``s; ``features`` / ``targets`` map model names to
  Example keys with ``shape`` and ``dtype`` (``varlen: true`` for lists of any length,
  padded with zeros to the longest in each batch). A batch of records is parsed at once
  with ``tf.io.parse_example``.
- A streamed csv file is read as lines, a batch at a time decoded with
  ``tf.io.decode_csv``; its columns follow the in-memory csv rules
  (``kexp.data.files``): a list of columns is one matrix, a mapping feeds named inputs.

``validation_split`` on record files is per record: record ``j`` of file ``i`` goes to
validation when a stateless hash of ``(seed, i, j)`` falls under the fraction, so the
split is the same in every epoch, whatever the file order.
"""

from __future__ import annotations

import csv
import glob
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kexp.data.files import (
    _INTEGER,
    MISSING_MARKERS,
    _default_features,
    _groups,
    _is_number,
    _unknown,
    check_line_lengths,
    display_path,
)
from kexp.data.stream import Stream
from kexp.errors import DataError, error_line

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["record_files", "tfrecord_stream", "csv_stream", "TFRecords", "CsvLines",
           "parse_examples"]

_FLOATS = ("float16", "float32", "float64", "bfloat16")
_INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool")
_PROBE_ROWS = 1000
# The read buffer of a TFRecord file, in bytes.
_TFRECORD_BUFFER = 1 << 20


def record_files(path: Any, base_source: str) -> list[str]:
    """The files ``path`` names: a file, a glob, or a list of them (sorted; globs expanded).

    Raises:
        DataError: a file that does not exist, a glob that matches nothing.
    """
    entries = path if isinstance(path, list) else [path]
    files: list[str] = []
    for entry in entries:
        entry = str(entry)
        if any(c in entry for c in "*?["):
            matched = sorted(glob.glob(entry))
            if not matched:
                raise DataError(f"{display_path(entry)}: no file matches this pattern.")
            files += matched
        elif not Path(entry).is_file():
            raise DataError(f"{display_path(entry)}: file not found.")
        else:
            files.append(entry)
    if not files:
        raise DataError(f"{base_source}: `path` names no file.")
    return files


@dataclass
class _Part:
    """Which records of each file belong to a split carved by ``validation_split``."""

    seed: int
    fraction: float
    validation: bool

    def keep(self, file_index: tf.Tensor, record_index: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        full = {"minval": None, "maxval": None, "dtype": tf.int64, "alg": "philox"}
        key = tf.random.stateless_uniform(
            [], seed=tf.stack([tf.constant(self.seed, tf.int64),
                               tf.cast(file_index, tf.int64)]), **full)
        u = tf.random.stateless_uniform([], seed=tf.stack([key, record_index]), alg="philox")
        return (u < self.fraction) if self.validation else (u >= self.fraction)

    def count(self, counts: list[int]) -> int:
        """The records of this part in files of ``counts`` records (no file is read)."""
        import tensorflow as tf

        files = tf.data.Dataset.from_tensor_slices(
            (tf.range(len(counts), dtype=tf.int64), tf.constant(counts, tf.int64)))
        kept = files.flat_map(lambda i, n: tf.data.Dataset.range(n).map(
            lambda j: tf.cast(self.keep(i, j), tf.int64)))
        return int(kept.reduce(tf.constant(0, tf.int64), lambda total, k: total + k))


@dataclass
class _Records(Stream):
    """Record files: interleaved (deterministically) when shuffled, read in order when not."""

    part: _Part | None = None

    def open(self, file: tf.Tensor) -> tf.data.Dataset:
        raise NotImplementedError

    def file_counts(self) -> list[int]:
        """The records of each file (one read pass, without parsing)."""
        import tensorflow as tf

        return [int(self.open(tf.constant(file)).reduce(tf.constant(0, tf.int64),
                                                        lambda n, _: n + 1))
                for file in self.files]

    def count_samples(self) -> int:
        counts = self.file_counts()
        return sum(counts) if self.part is None else self.part.count(counts)

    def read(self, order: tf.Tensor, sequential: bool) -> tf.data.Dataset:
        import tensorflow as tf

        files = tf.constant(self.files)

        def one(i: tf.Tensor) -> tf.data.Dataset:
            records = self.open(tf.gather(files, i))
            if self.part is None:
                return records
            part = self.part
            return (records.enumerate().filter(lambda j, _: part.keep(i, j))
                    .map(lambda _, r: r))

        indices = tf.data.Dataset.from_tensor_slices(order)
        if sequential or len(self.files) == 1:
            return indices.flat_map(one)
        return indices.interleave(one, cycle_length=min(4, len(self.files)), block_length=1,
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def carve(self, fraction: float, seed: int) -> tuple[Stream, Stream]:
        def part(validation: bool, source: str) -> Stream:
            return type(self)(**{**self.__dict__, "source": source, "_probe": None,
                                 "_count": None, "part": _Part(seed, fraction, validation)})

        return (part(False, f"{self.source} (train part)"),
                part(True, f"{self.source} (validation_split {fraction:g})"))


# --------------------------------------------------------------------------- tfrecord


@dataclass(frozen=True)
class _Feature:
    name: str  # the model input / output name
    key: str  # the Example key
    shape: tuple[int, ...]
    dtype: str
    varlen: bool


def _features(spec: Any, role: str, source: str) -> list[_Feature]:
    if not isinstance(spec, dict) or not spec:
        raise DataError(f"{source}: `{role}` must map Example keys to {{shape, dtype}}, e.g. "
                        f"{{pixels: {{shape: [784], dtype: float32}}}}; received {spec!r}.")
    out = []
    for name, item in spec.items():
        item = {} if item is None else item
        if not isinstance(item, dict):
            raise DataError(f"{source}: {role}.{name}: expected {{shape, dtype}}; received "
                            f"{item!r}.")
        unknown = set(item) - {"shape", "dtype", "varlen", "key"}
        if unknown:
            raise DataError(f"{source}: {role}.{name}: unknown option "
                            f"{', '.join(sorted(unknown))} (known: key, shape, dtype, varlen).")
        shape = item.get("shape", [])
        dtype = item.get("dtype", "float32")
        varlen = item.get("varlen", False)
        if varlen not in (True, False):
            raise DataError(f"{source}: {role}.{name}.varlen: expected true or false; "
                            f"received {varlen!r}.")
        dims_ok = all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                      or varlen and d is None for d in shape) if isinstance(shape, list) else False
        if not dims_ok:  # a varlen list's shape is its length: [null] (or omitted)
            hint = (" (a list of any length is `varlen: true`)"
                    if isinstance(shape, list) and None in shape else "")
            raise DataError(f"{source}: {role}.{name}.shape: expected a list of positive "
                            f"integers{hint}; received {shape!r}.")
        if dtype not in (*_FLOATS, *_INTS, "string"):
            raise DataError(f"{source}: {role}.{name}.dtype: expected a float, integer or "
                            f"string type; received {dtype!r}.")
        out.append(_Feature(str(name), str(item.get("key", name)), tuple(shape), dtype,
                            varlen))
    return out


def parse_examples(batch: tf.Tensor, features: list[_Feature],
                   targets: list[_Feature] | None) -> Any:
    """A batch of serialised ``tf.train.Example``s -> ``(x, y)`` (or ``x``), parsed at once
    with ``tf.io.parse_example``: one feature is a single tensor, several a mapping by model
    name; ``varlen`` lists are padded with zeros to the longest in the batch."""
    import tensorflow as tf

    spec = {}
    for f in [*features, *(targets or [])]:
        kind = (tf.string if f.dtype == "string" else
                tf.float32 if f.dtype in _FLOATS else tf.int64)
        spec[f.key] = (tf.io.VarLenFeature(kind) if f.varlen
                       else tf.io.FixedLenFeature(f.shape, kind))
    parsed = tf.io.parse_example(batch, spec)

    def value(f: _Feature) -> tf.Tensor:
        v = parsed[f.key]
        if f.varlen:
            v = tf.sparse.to_dense(v)
        return v if f.dtype == "string" else tf.cast(v, f.dtype)

    def group(named: list[_Feature]) -> Any:
        if len(named) == 1:
            return value(named[0])
        return {f.name: value(f) for f in named}

    x = group(features)
    return x if not targets else (x, group(targets))


@dataclass
class TFRecords(_Records):
    compression: str | None = None
    features: list[_Feature] = field(default_factory=list)
    targets: list[_Feature] | None = None
    # Files found to end inside a record when counted: file -> its complete records.
    truncated: dict[str, int] = field(default_factory=dict, repr=False)

    def file_counts(self) -> list[int]:
        """Uncompressed files are counted from their records' length headers alone (no
        record is read), and a file that ends inside a record counts its complete ones:
        training reads them, then stops at the truncated one (``locate_error``)."""
        if self.compression:
            return super().file_counts()
        counts = []
        for file in self.files:
            count, truncated = _scan_tfrecord(file)
            if truncated and _starts_like_gzip(file):
                raise DataError(f"{display_path(file)}: the file starts like a GZIP file and "
                                f"does not read as uncompressed TFRecords: set "
                                f"`compression: GZIP`.")
            counts.append(count)
            if truncated:
                self.truncated[file] = count
        return counts

    def open(self, file: tf.Tensor) -> tf.data.Dataset:
        """The records of ``file`` (or of a vector of files, one after another)."""
        import tensorflow as tf

        return tf.data.TFRecordDataset(file, compression_type=self.compression or "",
                                       buffer_size=_TFRECORD_BUFFER)

    def read(self, order: tf.Tensor, sequential: bool) -> tf.data.Dataset:
        """Read in order: one ``TFRecordDataset`` over the files' names in ``order`` (it reads
        them one after another), as a hand-written pipeline does, not a dataset per file."""
        import tensorflow as tf

        if not sequential or self.part is not None:
            return super().read(order, sequential)
        return self.open(tf.gather(tf.constant(self.files), order))

    def parse(self, batch: tf.Tensor) -> Any:
        return parse_examples(batch, self.features, self.targets)

    def locate_error(self) -> str | None:
        import tensorflow as tf

        for file in self.files:
            if file in self.truncated:
                record = self.truncated[file] + 1
                return (f"{display_path(file)}: record {record}: the file is truncated (it "
                        f"ends inside record {record})")
        for file in self.files:
            position = 0  # the record being read, counted from 1
            try:
                for record in self.open(tf.constant(file)):
                    position += 1
                    self.parse(tf.expand_dims(record, 0))
            except (tf.errors.OpError, ValueError) as exc:
                failed = position + (1 if isinstance(exc, tf.errors.DataLossError) else 0)
                return f"{display_path(file)}: record {failed}: {_record_problem(exc)}"
        return None


def _starts_like_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _scan_tfrecord(path: str) -> tuple[int, bool]:
    """``(complete records, whether the file ends inside a record)`` of a TFRecord file, from
    each record's 8-byte length header: a record is the length, its 4-byte CRC, the data and
    the data's 4-byte CRC. Nothing else is read."""
    size = os.path.getsize(path)
    count = position = 0
    with open(path, "rb") as f:
        while position < size:
            f.seek(position)
            head = f.read(8)
            if len(head) < 8:
                return count, True
            position += 16 + struct.unpack("<Q", head)[0]
            if position > size:
                return count, True
            count += 1
    return count, False


def _record_problem(exc: BaseException) -> str:
    text = error_line(exc)
    lowered = text.lower()
    if "truncated" in lowered or "corrupted" in lowered or "data loss" in lowered:
        return f"the file is truncated or corrupt ({text})"
    if "required but could not be found" in lowered:
        return f"a key is missing from the Example ({text})"
    return f"cannot parse the record ({text})"


def tfrecord_stream(path: Any, features: Any, targets: Any = None,
                    compression: str | None = None) -> TFRecords:
    source = display_path(path[0] if isinstance(path, list) and path else str(path))
    if compression not in (None, "", "GZIP", "ZLIB"):
        raise DataError(f"{source}: compression must be null, GZIP or ZLIB; received "
                        f"{compression!r}.")
    files = record_files(path, source)
    return TFRecords(source=source, files=files, compression=compression or None,
                     features=_features(features, "features", source),
                     targets=None if targets is None else _features(targets, "targets", source))


# --------------------------------------------------------------------------- csv


@dataclass
class CsvLines(_Records):
    header: bool = True
    delimiter: str = ","
    columns: list[str] = field(default_factory=list)
    feature_groups: list = field(default_factory=list)
    target_groups: list | None = None
    integer: set = field(default_factory=set)  # target columns read as integers

    def open(self, file: tf.Tensor) -> tf.data.Dataset:
        import tensorflow as tf

        lines = tf.data.TextLineDataset(file, buffer_size=1 << 20)
        if self.header:
            lines = lines.skip(1)
        return lines.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0)

    def _used(self) -> list[str]:
        groups = self.feature_groups + (self.target_groups or [])
        return list(dict.fromkeys(n for _, names in groups for n in names))

    def parse(self, batch: tf.Tensor) -> Any:
        import tensorflow as tf

        used = self._used()
        select = sorted(self.columns.index(n) for n in used)
        cells = tf.io.decode_csv(batch, record_defaults=[tf.constant("", tf.string)] * len(select),
                                 field_delim=self.delimiter, select_cols=select)
        by_name = {self.columns[i]: c for i, c in zip(select, cells, strict=True)}
        values = {n: tf.strings.to_number(tf.strings.strip(by_name[n]), tf.float64)
                  for n in used}

        def group(groups: list, targets: bool) -> Any:
            arrays = {}
            for name, names in groups:
                if targets and len(names) == 1:
                    kind = tf.int64 if names[0] in self.integer else tf.float32
                    arrays[name] = tf.cast(values[names[0]], kind)
                else:
                    arrays[name] = tf.cast(tf.stack([values[n] for n in names], axis=1),
                                           tf.float32)
            return arrays[None] if len(groups) == 1 and groups[0][0] is None else arrays

        x = group(self.feature_groups, False)
        return x if self.target_groups is None else (x, group(self.target_groups, True))

    def file_counts(self) -> list[int]:
        counts = []
        for file in self.files:
            with open(file, encoding="utf-8-sig") as f:
                counts.append(sum(1 for line in f if line.strip()) - (1 if self.header else 0))
        return counts

    def locate_error(self) -> str | None:
        used = self._used()
        for file in self.files:
            for line, cells in _rows(file, self.delimiter):
                if self.header and line == 1:
                    continue
                if len(cells) != len(self.columns):
                    return (f"{display_path(file)}: row {line} has {len(cells)} cells; "
                            f"expected {len(self.columns)}.")
                for name in used:
                    cell = cells[self.columns.index(name)].strip()
                    if cell in MISSING_MARKERS:
                        return (f"{display_path(file)}: row {line}, column {name!r}: missing "
                                f"value {cell!r}.")
                    if not _is_number(cell):
                        return (f"{display_path(file)}: row {line}, column {name!r}: {cell!r} "
                                f"is not a number.")
                    if name in self.integer and not _is_int(cell):
                        return (f"{display_path(file)}: row {line}, column {name!r}: {cell!r} "
                                f"is not an integer (the first rows were).")
        return None


def _is_int(cell: str) -> bool:
    return bool(_INTEGER.match(cell))  # the in-memory csv's rule for integer labels


def _rows(file: str, delimiter: str):
    """``(line number, cells)`` of a csv file, read line by line; blank lines skipped."""
    with open(file, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        for cells in reader:
            if any(c.strip() for c in cells):
                yield reader.line_num, cells


def csv_stream(path: Any, features: Any = None, targets: Any = None, delimiter: str | None = ",",
               header: bool = True, drop_missing: bool = False) -> CsvLines:
    """A ``CsvLines`` stream; the first rows decide the default features and which target
    columns are integers (class labels)."""
    source = display_path(path[0] if isinstance(path, list) and path else str(path))
    if delimiter is None or delimiter == " " or len(delimiter) != 1:
        raise DataError(f"{source}: a streamed csv file needs a one-character delimiter; "
                        f"received {delimiter!r} (whitespace-separated files: leave "
                        f"`stream` out).")
    if drop_missing:
        raise DataError(f"{source}: drop_missing is not supported with stream: true (every "
                        f"batch keeps its size); clean the file or leave `stream` out.")
    files = record_files(path, source)
    for file in files:  # a "line" of hundreds of MB: refused before it is read whole
        check_line_lengths(file, display_path(file))
    first = _head(files[0], delimiter)
    if not first:
        raise DataError(f"{display_path(files[0])}: the file is empty.")
    if header:
        columns, rows = [c.strip() for c in first[0][1]], first[1:]
        if not rows:
            raise DataError(f"{display_path(files[0])}: the file has a header but no data rows.")
    else:
        columns, rows = [str(i) for i in range(len(first[0][1]))], first
    for file in files[1:]:
        _check_same_columns(file, delimiter, header, columns, files[0])
    target_groups = None if targets is None else _groups(targets, "targets", source, True)
    if features is None:  # decided on the first rows
        complete = [(line, cells) for line, cells in rows if len(cells) == len(columns)]
        feature_groups = _default_features(columns, complete, target_groups, source)
    else:
        feature_groups = _groups(features, "features", source, True)
    for _, names in feature_groups + (target_groups or []):
        for name in names:
            if name not in columns:
                role = "features" if any(name in g[1] for g in feature_groups) else "targets"
                raise _unknown(name, columns, "column", role, source)
    integer = {names[0] for _, names in target_groups or [] if len(names) == 1 and all(
        _is_int(cells[columns.index(names[0])].strip()) for _, cells in rows
        if len(cells) == len(columns))}
    return CsvLines(source=source, files=files, header=header, delimiter=delimiter,
                    columns=columns, feature_groups=feature_groups,
                    target_groups=target_groups, integer=integer)


def _check_same_columns(file: str, delimiter: str, header: bool, columns: list[str],
                        first: str) -> None:
    """Every file of a streamed csv has the first file's columns: checked at start-up from
    each file's first row (a file with other columns would fail the run hours in)."""
    rows = _rows(file, delimiter)
    try:
        row = next(rows, None)
    except UnicodeDecodeError as exc:
        raise DataError(f"{display_path(file)}: not a UTF-8 text file ({exc.reason}).") from None
    finally:
        rows.close()
    if row is None:
        return  # an empty file adds no rows
    line, cells = row
    if header and [c.strip() for c in cells] != columns:
        raise DataError(f"{display_path(file)}: the header names {[c.strip() for c in cells]}; "
                        f"{display_path(first)}'s names {columns}: every file of a streamed "
                        f"csv must have the same columns, in the same order.")
    if not header and len(cells) != len(columns):
        raise DataError(f"{display_path(file)}: row {line} has {len(cells)} cells; expected "
                        f"{len(columns)} (as in the first row of {display_path(first)}).")


def _head(file: str, delimiter: str) -> list[tuple[int, list[str]]]:
    rows = []
    try:
        for row in _rows(file, delimiter):
            rows.append(row)
            if len(rows) > _PROBE_ROWS:
                break
    except UnicodeDecodeError as exc:
        raise DataError(f"{display_path(file)}: not a UTF-8 text file ({exc.reason}).") from None
    return rows

