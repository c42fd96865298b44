"""Reading features and targets from ``.npz`` and ``.csv`` files, with errors that name the
file, the array or column, and the row.

``features`` / ``targets`` select what to read, in one of three forms:

- a name (``x``): one array; x (or y) is a single array;
- a list of names (``[title, text_body]``): in an npz file, x is a mapping keyed by those
  names, which feed the model inputs (outputs) of the same names; in a csv file, the columns
  are one ``(n, k)`` matrix in that order (what a single-input model takes, SPEC 1.4);
- a mapping ``{model_name: name}``: x is a mapping keyed by the model names. In a csv file a
  mapping value may also be a list of columns, stacked into one ``(n, k)`` array.

Features become ``float32``. Integer targets stay integers (``int64``, class labels for
sparse losses); other targets become ``float32``.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kexp.data.splits import Split
from kexp.errors import DataError

__all__ = ["Selection", "load_npz", "load_csv", "display_path", "check_line_lengths",
           "MISSING_MARKERS", "MAX_LINE_BYTES"]

Selection = str | Sequence[str] | Mapping[str, Any]

# The longest csv line read (a row of 100,000 cells of 100 characters fits).
MAX_LINE_BYTES = 16 * 2**20
# Cells read as "no value" in a csv file (the UCI files write "?").
MISSING_MARKERS = frozenset({"", "?", "NA", "N/A", "NaN", "nan", "null"})
_INTEGER = re.compile(r"^[+-]?\d+$")
# A whitespace-separated cell: a double-quoted string (may contain spaces) or a run of
# non-space characters.
_WHITESPACE_CELL = re.compile(r'"[^"]*"|\S+')


def display_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it is inside it, for messages."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------- selection


def _groups(spec: Selection, role: str, source: str,
            list_is_matrix: bool = False) -> list[tuple[str | None, list[str]]]:
    """``(model_name, [file names])`` pairs; model_name None for the single-array form.
    ``list_is_matrix`` (csv): a list of columns is one array, not one array per name."""
    if isinstance(spec, (str, int)):  # ints name columns of a csv file without a header
        return [(None, [str(spec)])]
    if list_is_matrix and not isinstance(spec, Mapping):
        spec = {None: spec}
    if isinstance(spec, Mapping):
        groups = []
        for model_name, names in spec.items():
            names = [names] if isinstance(names, (str, int)) else list(names)
            groups.append((None if model_name is None else str(model_name),
                           [str(n) for n in names]))
    else:
        groups = [(str(n), [str(n)]) for n in spec]
    if not groups or any(not names for _, names in groups):
        raise DataError(f"{source}: `{role}` selects nothing; name at least one {role[:-1]}.")
    return groups


def _label(spec: Selection | None) -> str | None:
    return str(spec) if isinstance(spec, (str, int)) else None


def _unknown(name: str, available: Sequence[str], kind: str, role: str, source: str) -> DataError:
    lowered = {a.lower(): a for a in available}  # `X` for `x` is a likely slip
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    hint = f" Did you mean {lowered[close[0]]!r}?" if close else ""
    return DataError(
        f"{source}: {role} name an unknown {kind} {name!r}. "
        f"The file has {kind}s: {', '.join(available)}.{hint}"
    )


def _shape(groups, arrays: dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
    """Put read arrays into the single-array or mapping form the selection asked for."""
    if len(groups) == 1 and groups[0][0] is None:
        return arrays[groups[0][1][0]]
    return {model_name: arrays[model_name] for model_name, _ in groups}


# --------------------------------------------------------------------------- npz


def load_npz(path: str | Path, features: Selection, targets: Selection | None = None,
             sample_weight: str | None = None) -> Split:
    """Read the named arrays of an ``.npz`` file (as written by ``np.savez``).

    ```yaml
    data: {type: npz, path: data/train.npz, features: x, targets: y}
    data: {type: npz, path: tickets.npz, features: [title, text_body, tags],
           targets: [priority, department]}
    data: {type: npz, path: data/train.npz, features: x, targets: y, sample_weight: w}
    ```

    Raises:
        DataError: a missing, empty or unreadable file, an unknown array name, arrays with
            different numbers of samples, non-numeric arrays, NaN or infinite values, a
            sample weight that is negative, not finite or not one number per sample.
    """
    source = display_path(path)
    archive = _open_npz(path, source)
    with archive:
        available = list(archive.files)
        if not available:
            raise DataError(f"{source}: the file holds no arrays.")
        x = _read_npz_group(archive, features, "features", available, source)
        y = None if targets is None else _read_npz_group(archive, targets, "targets",
                                                         available, source)
        w = None
        if sample_weight is not None:
            raw = _read_npz_group(archive, str(sample_weight), "sample_weight", available,
                                  source)
            w = sample_weights(raw, f"array {sample_weight!r}", source)
    _check_sample_counts(x, y, source, "array", (_label(features), _label(targets)))
    _check_weight_count(w, x, sample_weight, source)
    return Split(x, y, source, w)


def sample_weights(values: np.ndarray, what: str, source: str,
                   rows: Sequence[int] | None = None) -> np.ndarray:
    """One float32 weight per sample, each finite and at least 0 (``rows``: the file's row
    number of each sample, for messages; default: the 0-based sample index)."""
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise DataError(f"{source}: {what} (sample_weight) has shape {values.shape}; expected "
                        "one weight per sample, shape (n,).")
    weights = values.astype(np.float32)
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        i = int(np.argmax(bad))
        at = f"row {rows[i]}" if rows is not None else f"sample {i}"
        raise DataError(f"{source}: {what} (sample_weight), {at}: {values[i]!r} is not a "
                        "weight; sample weights must be finite numbers >= 0.")
    return weights


def _check_weight_count(w: np.ndarray | None, x: Any, name: Any, source: str) -> None:
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    if w is not None and len(w) != n:
        raise DataError(f"{source}: sample_weight {name!r} has {len(w)} values for {n} "
                        "samples.")


def _open_npz(path: str | Path, source: str) -> Any:
    if not Path(path).is_file():
        raise DataError(f"{source}: file not found.")
    if Path(path).stat().st_size == 0:
        raise DataError(f"{source}: the file is empty.")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{source}: not a readable .npz file ({exc}).") from None


def _check_npz_header(archive: Any, name: str, source: str) -> None:
    """Refuse an array whose header claims more bytes than its file holds (a corrupt or
    hostile header: NumPy would allocate the claimed size first) or than this machine's
    memory, before NumPy reads it."""
    member = name if name.endswith(".npy") else name + ".npy"
    try:
        info = archive.zip.getinfo(member)
        with archive.zip.open(member) as file:
            version = np.lib.format.read_magic(file)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(file)
    except (AttributeError, KeyError, ValueError, OSError, zipfile.BadZipFile):
        return  # not a plain .npy member: NumPy's own reading reports it
    if dtype.hasobject:
        return
    claimed = dtype.itemsize
    for size in shape:
        claimed *= int(size)
    memory = _physical_memory()
    if claimed > info.file_size or (memory and claimed > memory):
        limit = (f"the file holds {info.file_size:,} bytes for it" if claimed > info.file_size
                 else f"this machine has {memory:,} bytes of memory")
        raise DataError(f"{source}: array {name!r} claims shape {tuple(shape)} of {dtype} "
                        f"({claimed:,} bytes) but {limit}; the file is corrupt or not what "
                        "it seems.")


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 0


def _read_npz_group(archive, spec, role, available, source):
    groups = _groups(spec, role, source)
    arrays = {}
    for model_name, names in groups:
        if len(names) != 1:
            raise DataError(
                f"{source}: {role}: {model_name!r} names several arrays {names}; in an npz "
                f"file each model {role[:-1]} reads one array."
            )
        name = names[0]
        if name not in available:
            raise _unknown(name, available, "array", role, source)
        _check_npz_header(archive, name, source)
        try:
            raw = archive[name]
        except ValueError as exc:  # object arrays need pickle, which kexp never enables
            raise DataError(f"{source}: array {name!r} cannot be read without pickle "
                            f"({exc}); save numeric arrays.") from None
        arrays[model_name or name] = _convert(raw, name, role, source)
    return _shape(groups, arrays)


def _convert(array: np.ndarray, name: str, role: str, source: str) -> np.ndarray:
    """Features to float32; integer targets to int64, other targets to float32."""
    if array.ndim == 0:
        raise DataError(f"{source}: array {name!r} is a scalar; expected one row per sample.")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(
            f"{source}: array {name!r} holds {array.dtype} values; {role} must be numbers."
        )
    if role == "targets" and np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64, copy=False)
    out = array.astype(np.float32, copy=False)
    finite = np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if not finite.all():
        # Not refused here: a NaN may be deliberate (a test of the NaN guard) or masked by the
        # model. Training stops at the first non-finite loss and marks the run failed.
        row = int(np.argmin(finite))
        kind = "a NaN" if np.isnan(out[row]).any() else "an infinite"
        sys.stderr.write(
            f"warning: {source}: array {name!r} ({role}) has {kind} value at row {row} "
            f"(0-based sample index); training will fail on it unless the model masks it.\n"
        )
    return out


def _check_sample_counts(x, y, source: str, kind: str, names: tuple = ()) -> None:
    """All arrays have as many samples. ``names`` label single (unnamed) x and y arrays."""
    counts: dict[str, int] = {}
    labels = names or (None, None)
    for role, arrays, name in zip(("features", "targets"), (x, y), labels, strict=True):
        if arrays is None:
            continue
        items = arrays.items() if isinstance(arrays, dict) else [(name or role, arrays)]
        for name, array in items:
            counts[name] = len(array)
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in counts.items())
        raise DataError(f"{source}: {kind}s have different numbers of samples: {listed}.")
    if counts and next(iter(counts.values())) == 0:
        raise DataError(f"{source}: the {kind}s hold no samples.")


# --------------------------------------------------------------------------- csv


def load_csv(
    path: str | Path,
    features: Selection | None = None,
    targets: Selection | None = None,
    delimiter: str | None = ",",
    header: bool = True,
    drop_missing: bool = False,
    sample_weight: str | None = None,
) -> Split:
    """Read columns of a delimited text file (``sample_weight``: a column of per-sample
    weights, left out of the default features).

    ``delimiter: null`` (or ``" "``) splits on any run of whitespace, with double-quoted
    cells kept whole, as in the UCI ``auto-mpg.data`` file. Without a header, columns are
    named by position: ``"0"``, ``"1"``, ... ``features`` defaults to every column that is
    not a target and holds numbers, as one ``(n, k)`` array; text columns (no cell is a
    number, like car names) are left out. A list of columns is one ``(n, k)`` array in that
    order; a mapping ``{model_name: column or [columns]}`` gives one array per model input
    (output). A single feature column is read as shape ``(n, 1)``, a single target column as
    ``(n,)``.

    Missing cells (empty, ``?``, ``NA``, ``nan``...) in a column that is used are an error,
    unless ``drop_missing`` drops their rows.

    ```yaml
    data: {type: csv, path: cars.csv, features: [cylinders, weight], targets: mpg}
    data: {type: csv, path: auto-mpg.data, delimiter: null, targets: mpg, drop_missing: true}
    ```

    Raises:
        DataError: a missing or empty file, an unknown column, a row with the wrong number of
            cells, a non-numeric, missing or infinite cell in a used column (naming its row,
            1-based as a spreadsheet shows it, and column).
    """
    source = display_path(path)
    columns, rows = _read_table(path, delimiter, header, source)
    target_groups = None if targets is None else _groups(targets, "targets", source, True)
    weight_groups = [] if sample_weight is None else [(None, [str(sample_weight)])]
    if features is None:
        feature_groups = _default_features(columns, rows, (target_groups or []) + weight_groups,
                                           source)
    else:
        feature_groups = _groups(features, "features", source, True)

    used = [n for g in feature_groups + (target_groups or []) + weight_groups for n in g[1]]
    for name in used:
        if name not in columns:
            role = ("features" if any(name in g[1] for g in feature_groups) else
                    "sample_weight" if name == str(sample_weight) else "targets")
            raise _unknown(name, columns, "column", role, source)
    values, keep = _parse_columns(columns, rows, dict.fromkeys(used), drop_missing, source)

    x = _stack(feature_groups, values, keep, "features")
    y = None if target_groups is None else _stack(target_groups, values, keep, "targets")
    w = None
    if sample_weight is not None:
        lines = [line for (line, _), kept in zip(rows, keep, strict=True) if kept]
        w = sample_weights(values[str(sample_weight)][0][keep], f"column {str(sample_weight)!r}",
                           source, lines)
    _check_sample_counts(x, y, source, "column", (_label(features), _label(targets)))
    return Split(x, y, source, w)


def _read_table(path, delimiter, header, source) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Column names and ``(line number, cells)`` rows; blank lines are skipped."""
    if not Path(path).is_file():
        raise DataError(f"{source}: file not found.")
    check_line_lengths(path, source)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not a UTF-8 text file ({exc.reason} at byte "
                        f"{exc.start}).") from None
    rows = [(n, cells) for n, cells in _tokenize(text, delimiter) if any(c for c in cells)]
    if not rows:
        raise DataError(f"{source}: the file is empty.")
    if header:
        (_, columns), rows = rows[0], rows[1:]
        columns = [c.strip() for c in columns]
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise DataError(f"{source}: the header names columns more than once: "
                            f"{', '.join(duplicates)}.")
        if not rows:
            raise DataError(f"{source}: the file has a header but no data rows.")
    else:
        columns = [str(i) for i in range(len(rows[0][1]))]
    for line, cells in rows:
        if len(cells) != len(columns):
            raise DataError(
                f"{source}: row {line} has {len(cells)} cells; expected {len(columns)} "
                f"({'as in the header' if header else 'as in the first row'})."
            )
    return columns, rows


def check_line_lengths(path: str | Path, source: str) -> None:
    """Refuse a text file with a line longer than ``MAX_LINE_BYTES``, reading it in chunks
    (a "line" of hundreds of MB would otherwise be held in memory several times over)."""
    line, length = 1, 0
    with open(path, "rb") as file:
        while chunk := file.read(2**20):
            parts = chunk.split(b"\n")
            for i, part in enumerate(parts):
                length += len(part)
                if length > MAX_LINE_BYTES:
                    raise DataError(f"{source}: line {line} is longer than "
                                    f"{MAX_LINE_BYTES // 2**20} MB; a csv file has one row "
                                    "per line.")
                if i < len(parts) - 1:
                    line, length = line + 1, 0


def _tokenize(text: str, delimiter: str | None):
    if delimiter is None or delimiter == " ":
        for n, line in enumerate(text.splitlines(), start=1):
            yield n, [c[1:-1] if c.startswith('"') else c for c in _WHITESPACE_CELL.findall(line)]
        return
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    for cells in reader:
        # line_num is the line the record ends on; records spanning lines are rare.
        yield reader.line_num, [c.strip() for c in cells]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _default_features(columns, rows, target_groups, source) -> list[tuple[None, list[str]]]:
    """Every numeric non-target column, as one stacked array."""
    targets = {n for g in target_groups or [] for n in g[1]}
    numeric = [
        c for i, c in enumerate(columns)
        if c not in targets and any(_is_number(cells[i]) for _, cells in rows
                                    if cells[i] not in MISSING_MARKERS)
    ]
    if not numeric:
        taken = f" besides the targets ({', '.join(sorted(targets))})" if targets else ""
        raise DataError(f"{source}: no numeric column{taken} to use as features.")
    return [(None, numeric)]


def _parse_columns(columns, rows, used, drop_missing, source):
    """Float64 values of the used columns, and which rows to keep (missing cells dropped)."""
    keep = np.ones(len(rows), dtype=bool)
    values: dict[str, tuple[np.ndarray, bool]] = {}
    for name in used:
        i = columns.index(name)
        cells = [cells[i].strip() for _, cells in rows]
        missing = np.array([c in MISSING_MARKERS for c in cells])
        if missing.any() and not drop_missing:
            line = rows[int(np.argmax(missing))][0]
            raise DataError(
                f"{source}: row {line}, column {name!r}: missing value "
                f"{cells[int(np.argmax(missing))]!r}. Fill it in, leave the column out of "
                f"`features`/`targets`, or set `drop_missing: true` to skip such rows."
            )
        keep &= ~missing
        values[name] = _column_values(cells, missing, rows, name, source)
    if not keep.any():
        raise DataError(f"{source}: every row has a missing value in a used column.")
    return values, keep


def _column_values(cells, missing, rows, name, source) -> tuple[np.ndarray, bool]:
    """A column as float64 (NaN where missing), and whether every present cell is an
    integer (class labels stay integers)."""
    filled = ["nan" if m else c for c, m in zip(cells, missing, strict=True)]
    try:
        column = np.array(filled, dtype=np.float64)
    except ValueError:
        row = next(i for i, c in enumerate(filled) if not _is_number(c))
        raise DataError(
            f"{source}: row {rows[row][0]}, column {name!r}: {cells[row]!r} is not a number. "
            f"Only numeric columns can be features or targets."
        ) from None
    infinite = np.isinf(column)
    if infinite.any():
        row = int(np.argmax(infinite))
        raise DataError(f"{source}: row {rows[row][0]}, column {name!r}: infinite value "
                        f"{cells[row]!r}.")
    integer = all(_INTEGER.match(c) for c, m in zip(cells, missing, strict=True) if not m)
    return column, integer


def _stack(groups, values, keep, role):
    """Arrays of the kept rows in the selection's form: one array, or a mapping."""
    arrays = {}
    for model_name, names in groups:
        if role == "targets" and len(names) == 1:
            column, integer = values[names[0]]
            arrays[model_name] = column[keep].astype(np.int64 if integer else np.float32)
        else:
            columns = [values[n][0][keep] for n in names]
            arrays[model_name] = np.stack(columns, axis=1).astype(np.float32)
    if len(groups) == 1 and groups[0][0] is None:
        return arrays[None]
    return arrays
