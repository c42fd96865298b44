"""From a config's ``data:`` section to the run's in-memory splits."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kexp.components import build
from kexp.config.schema import DATA_OPTIONS, Component, Config
from kexp.data.splits import Splits, assemble
from kexp.errors import DataError
from kexp.registry import DATASETS

__all__ = ["load_data"]



def load_data(cfg: Config) -> Splits:
    """Load the dataset and its ``validation:``/``test:`` datasets, and carve
    ``validation_split`` out of train (seeded with the config's seed).

    Raises:
        DataError: a file that is missing, empty, ragged or not numeric.
        ConfigError: a dataset argument its function refuses.
    """
    data = cfg.data
    train = _load(data, cfg.seed, DATA_OPTIONS)
    validation = _load(data.validation, cfg.seed) if data.validation else None
    test = _load(data.test, cfg.seed) if data.test else None
    splits = assemble(train, validation=validation, test=test,
                      validation_split=data.validation_split, seed=cfg.seed)
    _stream_options(splits, data)
    return splits


def _stream_options(splits: Splits, data: Any) -> None:
    """``cache`` and ``prefetch`` for streamed splits (in-memory data is always prefetched
    and has nothing to cache). A cache file is for the training split; ``memory`` caches
    every split. Each stream's first batch is read and its samples counted now: a file that
    cannot be read is a data error before training, located in the config."""
    from kexp.data.stream import check_cache, is_stream, use_streams

    cache = check_cache(data.cache)
    if cache not in (None, "memory") and any(is_stream(getattr(splits, role))
                                             for role in ("train", "validation", "test")):
        _cache_folder(cache, data)
    streams = []
    for role, comp in (("train", data), ("validation", data.validation or data),
                       ("test", data.test or data)):
        split = getattr(splits, role)
        if is_stream(split):
            split.cache = cache if role == "train" or cache == "memory" else None
            split.prefetch = data.prefetch
            with _located(comp):
                split.probe  # noqa: B018
                split.count  # noqa: B018
            streams.append(split)
    use_streams(streams)


def _cache_folder(cache: str, data: Any) -> None:
    """A cache file's folder is made (``tf.data`` would fail on the first batch without it);
    a cache that names a folder is a config error: it is a file-name prefix."""
    target = Path(cache)
    if target.is_dir() or cache.endswith(("/", os.sep)):
        with _located(data):
            raise DataError(f"cache: {cache} is a folder; name a file in it (a prefix of "
                            f"tf.data's cache files), e.g. {target / 'train'}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    from kexp.data.stream import cache_lock_problem

    problem = cache_lock_problem(cache)
    if problem:
        with _located(data):
            raise DataError(problem)


def _load(comp: Component, seed: int, skip: tuple[str, ...] = ()) -> Splits:
    entry = DATASETS.get(comp.type)
    runtime = {"seed": seed} if entry and "seed" in entry.params and "seed" not in comp.args else {}
    with _located(comp):
        return build(comp, DATASETS, skip=skip, **runtime)


@contextmanager
def _located(comp: Component) -> Iterator[None]:
    """A data error names the config's ``path:`` (file:line) before the file's own words."""
    try:
        yield
    except DataError as exc:
        # The file names the row; the config says which section named the file.
        where = comp.where_of("path") if "path" in comp.args else comp.where
        head = ": ".join(part for part in (where, comp.path) if part)
        raise DataError(f"{head}: {exc}" if head else str(exc)) from None
