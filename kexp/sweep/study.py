"""The Optuna side of a sweep: its storage, sampler and pruner, and the one place trials are
claimed from the budget.

The embedded store is SQLite (``<sweep>/study.db``): every change is a transaction, so a
``kill -9`` loses at most the change being made and never corrupts what was committed, and
SQLite's locks are the operating system's, released when a process dies however it dies
(Optuna's journal file guards its appends with a lock *file*, which a killed process leaves
behind until a grace period passes). Writers wait for each other up to a minute.

``--storage URL`` takes any Optuna storage URL; ``postgresql://`` lets processes on several
machines share one study. Passwords never reach a file: ``redact`` hides them.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kexp.config.schema import Component, Config
from kexp.errors import ConfigError, Problem

__all__ = ["EMBEDDED", "embedded_url", "redact", "open_storage", "make_sampler",
           "make_pruner", "check_components", "budget_lock", "quiet_optuna"]

EMBEDDED = "study.db"


def embedded_url(sweep_dir: Path) -> str:
    return f"sqlite:///{(Path(sweep_dir) / EMBEDDED).resolve()}"


def redact(url: str) -> str:
    """``postgresql://kexp:secret@db/x`` -> ``postgresql://kexp:***@db/x``."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def has_password(url: str) -> bool:
    return redact(url) != url


def driver_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 reads a bare
    ``postgresql://`` as psycopg 3, and ``kexp[postgresql]`` installs psycopg2."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO; kexp prints its own progress lines."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``, connected. Raises ``ConfigError`` (on ``--storage``)
    when it cannot be reached."""
    import optuna

    quiet_optuna()
    given, url = url, driver_url(url)
    try:
        if url.startswith("sqlite"):
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}})
        if url.startswith("postgresql"):
            # Optuna creates its tables on first use; two processes doing it at once collide.
            with _pg_lock(url, "kexp-sweep-tables"):
                storage = optuna.storages.RDBStorage(url, engine_kwargs={
                    "connect_args": {"connect_timeout": 10}, "pool_pre_ping": True})
            storage.get_all_studies()
            return storage
        storage = optuna.storages.get_storage(url)
        storage.get_all_studies()
        return storage
    except Exception as exc:  # each driver raises its own kind
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(Problem("", f"cannot use the study storage {redact(given)}: "
                                  f"{redact(first)}", "--storage")) from None


_SAMPLERS = {"grid": "GridSampler", "random": "RandomSampler", "tpe": "TPESampler"}
_PRUNERS = {"none": "NopPruner", "median": "MedianPruner", "hyperband": "HyperbandPruner"}


def _optuna_class(spec: Component, names: dict[str, str], module: str, key: str) -> type:
    import optuna

    name = names.get(spec.type.lower())
    if name is None:
        from kexp.config.errors import closest

        raise ConfigError(Problem(f"sweep.{key}", f"unknown {key} {spec.type!r}; expected one "
                                  f"of {', '.join(names)}", spec.where,
                                  closest(spec.type.lower(), names)))
    return getattr(getattr(optuna, module), name)


def _build(cls: type, spec: Component, key: str, **given: Any) -> Any:
    args = {**given, **spec.args}
    try:
        inspect.signature(cls).bind(**args)
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(Problem(f"sweep.{key}", f"{spec.type}: {exc} (Optuna's {cls.__name__})",
                                  spec.where)) from None


def make_sampler(cfg: Config, seed: int) -> Any:
    """The ``sweep.sampler`` (``tpe``, ``random`` or ``grid``; a mapping adds Optuna's
    arguments: ``{type: tpe, n_startup_trials: 4}``), seeded."""
    spec = cfg.sweep.sampler
    cls = _optuna_class(spec, _SAMPLERS, "samplers", "sampler")
    if spec.type.lower() == "grid":
        from kexp.sweep.space import grid_space

        return _build(cls, spec, "sampler", search_space=grid_space(cfg), seed=seed)
    return _build(cls, spec, "sampler", seed=seed)


def make_pruner(spec: Component) -> Any:
    """The ``sweep.pruner``: ``none``, ``median`` or ``hyperband``, with Optuna's arguments
    (``{type: median, n_startup_trials: 2, n_warmup_steps: 1}``)."""
    return _build(_optuna_class(spec, _PRUNERS, "pruners", "pruner"), spec, "pruner")


def check_components(cfg: Config) -> None:
    """The sampler and pruner can be built (names and arguments), before anything runs."""
    make_sampler(cfg, cfg.seed)
    make_pruner(cfg.sweep.pruner)


@contextlib.contextmanager
def budget_lock(url: str, study_name: str, sweep_dir: Path) -> Iterator[None]:
    """Serialize "count the trials, then ask for one" among every process of a study, so
    that together they never start more than the budget: an OS lock beside a SQLite file, a
    PostgreSQL advisory lock on a shared server (a lock file in the sweep directory for other
    storages, which guards one machine only)."""
    if url.startswith("postgresql"):
        with _pg_lock(url, f"kexp-sweep:{study_name}"):
            yield
        return
    path = (Path(url.removeprefix("sqlite:///")).with_suffix(".lock") if url.startswith(
        "sqlite:///") else Path(sweep_dir) / ".budget.lock")
    with file_lock(path):
        yield


@contextlib.contextmanager
def _pg_lock(url: str, name: str) -> Iterator[None]:
    """A PostgreSQL advisory lock named ``name``, held on its own connection (the server
    releases it if this process dies)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(driver_url(url), connect_args={"connect_timeout": 10},
                                      poolclass=sqlalchemy.pool.NullPool)
    key = zlib.crc32(name.encode())
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive OS lock on ``path``, released when the process dies however it dies."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
