"""From a config's ``data:`` section to the run's in-memory splits."""

from __future__ import annotations

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
    return assemble(train, validation=validation, test=test,
                    validation_split=data.validation_split, seed=cfg.seed)


def _load(comp: Component, seed: int, skip: tuple[str, ...] = ()) -> Splits:
    entry = DATASETS.get(comp.type)
    runtime = {"seed": seed} if entry and "seed" in entry.params and "seed" not in comp.args else {}
    try:
        return build(comp, DATASETS, skip=skip, **runtime)
    except DataError as exc:
        # The file names the row; the config says which section named the file.
        where = comp.where_of("path") if "path" in comp.args else comp.where
        head = ": ".join(part for part in (where, comp.path) if part)
        raise DataError(f"{head}: {exc}" if head else str(exc)) from None
