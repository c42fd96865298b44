"""The run directory: ``<runs_dir>/<name>/<YYYYMMDD-HHMMSS>/``, created once, never
overwritten, every file in it written atomically (temp file, fsync, rename), so that after a
crash every file present parses.

| file | content |
|---|---|
| config.yaml | the resolved config, rerunnable as is |
| run.json | status, times, command line, seed, versions, plugins, final metrics |
| history.csv | one row per epoch |
| logs/ | TensorBoard event files |
| checkpoints/last.keras, checkpoints/best.keras | latest and best model |
| model.keras | the final model |
| metrics.json | final train / validation / test metrics |
| summary.txt | the model summary |
| state/epoch-<k>/ | what ``kexp train --resume`` continues from (``kexp.training.resume``) |

A training process holds an exclusive lock on ``<run>/.lock`` (``Run.lock``); the OS releases
it when the process ends, however it ends, so a run whose lock is free is not being trained.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Run",
    "atomic_write",
    "atomic_path",
    "fsync_dir",
    "clean_temporaries",
    "read_run",
    "read_run_plugins",
    "find_runs",
    "resolve_run_dir",
    "versions",
    "now",
]

STATUSES = ("running", "completed", "failed", "interrupted")


def now() -> str:
    """The current local time, ISO 8601 with offset (for run.json)."""
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new, never half."""
    with atomic_path(path) as tmp:
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(tmp, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
            f.write(data)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, for writers that check it, like Keras's
    ``model.save``); on success it is fsynced and renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (a no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def clean_temporaries(run_dir: Path) -> list[Path]:
    """Remove the temporary files ``atomic_path`` leaves behind when its process is killed
    mid-write (``.<stem>.<random>.tmp<suffix>``); returns what was removed."""
    removed = []
    for path in Path(run_dir).rglob(".*.tmp*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def versions() -> dict[str, str]:
    """Versions of Python, TensorFlow, Keras and kexp (without importing TensorFlow)."""
    out = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "kexp"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


@dataclass
class Run:
    """A run directory and the ``run.json`` that tells its state."""

    path: Path
    _lock_fd: int | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def create(cls, runs_dir: Path, name: str) -> Run:
        """Make a new ``<runs_dir>/<name>/<timestamp>`` directory; ``-2``, ``-3``… when taken
        (two processes starting in the same second get different directories)."""
        parent = Path(runs_dir) / name
        parent.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        for n in range(1, 10_000):
            path = parent / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise RuntimeError(f"cannot create a run directory under {parent}")

    def file(self, name: str) -> Path:
        return self.path / name

    def lock(self) -> bool:
        """Take the run's exclusive lock for this process; False when another process holds
        it (that process is training the run). Released by ``unlock`` or when the process
        ends, even by ``kill -9``."""
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; nothing to guard with
            return True
        if self._lock_fd is not None:
            return True
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def is_training(self) -> bool:
        """Whether a live process holds the run's lock (a ``running`` run whose lock is free
        was killed). Probes with a shared lock and releases it at once."""
        try:
            import fcntl
        except ImportError:
            return True
        try:
            fd = os.open(self.path / ".lock", os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    def unlock(self) -> None:
        """Release the lock taken by ``lock`` (closing the descriptor releases it)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def write_text(self, name: str, text: str) -> None:
        atomic_write(self.path / name, text)

    def write_json(self, name: str, data: Any) -> None:
        atomic_write(self.path / name, json.dumps(data, indent=2, default=_jsonable) + "\n")

    def write_yaml(self, name: str, data: Any) -> None:
        atomic_write(self.path / name, yaml.safe_dump(data, sort_keys=False))

    def info(self) -> dict[str, Any]:
        """The contents of ``run.json`` ({} before it exists)."""
        return read_run(self.path)

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``run.json`` (atomically) and return the result."""
        info = self.info()
        info.update(fields)
        self.write_json("run.json", info)
        return info


def _jsonable(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def read_run(path: Path) -> dict[str, Any]:
    """``run.json`` of a run directory ({} when missing or unreadable)."""
    try:
        return json.loads((Path(path) / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_run_plugins(path: Path) -> list[str]:
    """The plugins a run imported, as recorded in its ``run.json``."""
    return list(read_run(path).get("plugins", []))


def find_runs(runs_dir: Path) -> list[Path]:
    """Every run directory (one with a run.json) under ``runs_dir``, oldest first."""
    runs_dir = Path(runs_dir)
    if (runs_dir / "run.json").exists():
        return [runs_dir]
    found = [p.parent for p in runs_dir.glob("**/run.json")]
    return sorted(found, key=lambda p: (read_run(p).get("started", ""), str(p)))


def resolve_run_dir(path: Path) -> Path | None:
    """A run directory, or the newest run under ``runs/<name>``; None when there is none."""
    path = Path(path)
    if (path / "run.json").exists():
        return path
    runs = find_runs(path) if path.is_dir() else []
    return runs[-1] if runs else None
