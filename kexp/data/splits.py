"""Named splits of in-memory data, and how the train / validation / test splits of a run
are put together.

A dataset component returns ``Splits``; each ``Split`` holds features ``x`` and targets ``y``
as NumPy arrays, or as mappings of arrays keyed by model input / output names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Union

from kexp.errors import DataError

if TYPE_CHECKING:  # NumPy is imported lazily: built-in dataset modules import this one
    import numpy as np

__all__ = ["Arrays", "Split", "Splits", "assemble", "carve_indices", "num_samples", "take"]

Arrays = Union["np.ndarray", "dict[str, np.ndarray]"]


@dataclass
class Split:
    """Features and targets of one split.

    Attributes:
        x: one array, or arrays keyed by model input name.
        y: one array, arrays keyed by model output name, or None (data to predict on).
        source: what the data came from, for messages (``"data/train.npz"``).
        w: one weight per sample (``sample_weight:``), or None: every sample weighs 1.
    """

    x: Arrays
    y: Arrays | None = None
    source: str = ""
    w: np.ndarray | None = None

    def __len__(self) -> int:
        return num_samples(self.x)


@dataclass
class Splits:
    """The splits a dataset yields: always ``train``, optionally ``validation`` and ``test``."""

    train: Split
    validation: Split | None = None
    test: Split | None = None


def num_samples(arrays: Arrays) -> int:
    """Number of samples (length of the first axis) of an array or a mapping of arrays."""
    if isinstance(arrays, dict):
        first = next(iter(arrays.values()), None)
        return 0 if first is None else len(first)
    return len(arrays)


def take(split: Split, indices: np.ndarray, source: str | None = None) -> Split:
    """The samples of ``split`` at ``indices`` (every array of x and y alike)."""

    def pick(arrays: Arrays | None) -> Arrays | None:
        if arrays is None:
            return None
        if isinstance(arrays, dict):
            return {name: array[indices] for name, array in arrays.items()}
        return arrays[indices]

    return Split(pick(split.x), pick(split.y), split.source if source is None else source,
                 pick(split.w))


def assemble(
    train: Splits,
    *,
    validation: Splits | None = None,
    test: Splits | None = None,
    validation_split: float | None = None,
    seed: int = 0,
) -> Splits:
    """The train / validation / test splits of a run, from ``data:`` and its ``validation:``
    and ``test:`` datasets.

    - ``validation:`` given: that dataset's own ``validation`` split if it has one, else its
      ``train`` split. ``test:`` given: its own ``test`` split if it has one, else its
      ``train`` split.
    - ``validation_split`` given: that fraction of train becomes the validation split, chosen
      by a permutation seeded with ``seed`` (unlike Keras, which takes the last samples, so
      sorted files do not give a validation set of one class). Both parts keep file order.
    - Otherwise the main dataset's own validation / test splits are kept.

    ```yaml
    data: {type: digits, validation_split: 0.2}
    data: {type: npz, path: train.npz, features: x, targets: y,
           validation: {type: npz, path: val.npz, features: x, targets: y}}
    ```

    The config check refuses ``validation:`` together with ``validation_split:``, and a
    fraction outside (0, 1); ``validation:`` wins if both reach here.

    Raises:
        DataError: the split leaves train or validation empty.
    """
    result = replace(train)
    if validation is not None:
        result.validation = validation.validation or validation.train
    elif validation_split:
        result.train, result.validation = _carve(train.train, validation_split, seed)
    if test is not None:
        result.test = test.test or test.train
    return result


def carve_indices(n: int, fraction: float, seed: int, source: str,
                  what: str = "samples") -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` indices into ``n`` samples (files, records): a seeded random
    ``fraction`` for validation, both in their original order.

    Raises:
        DataError: the fraction leaves one side empty.
    """
    import numpy as np

    n_val = int(round(n * fraction))
    if n_val == 0 or n_val == n:
        raise DataError(
            f"{source}: validation_split={fraction:g} of {n} {what} leaves "
            f"{'no validation' if n_val == 0 else 'no training'} {what}.")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    if hasattr(split, "carve"):  # a stream (kexp.data.stream) carves its own files or records
        return split.carve(fraction, seed)
    source = split.source or "the training data"
    train_idx, val_idx = carve_indices(len(split), fraction, seed, source)
    return (
        take(split, train_idx, f"{source} (train part)"),
        take(split, val_idx, f"{source} (validation_split {fraction:g})"),
    )
