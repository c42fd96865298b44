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

A run directory appears whole (``create_dir_atomically``): it is made under a hidden
temporary name beside its final one (``.tmp-<stamp>-<pid>-<random>``), its first files
(``config.yaml``, ``run.json``) are written into it, and it is renamed into place. A kill
before the rename leaves only the temporary directory, which ``find_runs`` (so ``kexp runs``
and ``--resume``) ignores and the next ``Run.create`` in that runs directory removes once
its creator's lock is free; a kill after it leaves a directory ``--resume`` continues.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import functools
import hashlib
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Run",
    "create_dir_atomically",
    "remove_stale_temporaries",
    "TEMP_PREFIX",
    "RunRecord",
    "read_record",
    "config_hash",
    "atomic_write",
    "atomic_path",
    "fsync_dir",
    "clean_temporaries",
    "read_run",
    "read_run_plugins",
    "find_runs",
    "is_temporary",
    "resolve_run_dir",
    "versions",
    "now",
]

STATUSES = ("running", "completed", "failed", "interrupted", "pruned")
# Directories being created (``create_dir_atomically``): not runs, never listed or resumed.
TEMP_PREFIX = ".tmp-"
LOCK = ".lock"
# A temporary directory without a lock its creator holds (killed between mkdir and taking
# the lock, or on an OS without advisory locks) is removed only once it is this old.
_UNLOCKED_GRACE_SECONDS = 600


@dataclass
class RunRecord:
    """What ``run.json`` holds: one typed field per key, so a misspelt key is an error where
    it is written, not a silently missing value where it is read.

    Written when a run starts (``kexp.training.record``), updated after every epoch
    (``epochs_completed``, ``last_metrics``) and when it ends (``status``, ``ended``,
    ``reason``, ``duration_seconds``, ``final_metrics``). Reading is lenient: a missing key
    is its default, and keys this version does not know are kept in ``extra`` and written
    back unchanged. Fields that are ``None`` are left out of the file (``config_file``, which
    is ``null`` for a config given on stdin or built in code, excepted).
    """

    name: str = ""
    status: str = "running"  # one of STATUSES
    started: str = ""
    command: list[str] = field(default_factory=list)
    config_file: str | None = None
    config_hash: str = ""
    seed: int | None = None
    deterministic: bool = False
    threads: int | str | None = None
    loop: str = ""
    smoke: bool = False
    epochs: int | None = None
    monitor: str = ""
    plugins: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    epochs_completed: int | None = None
    cluster: dict[str, Any] | None = None
    last_metrics: dict[str, Any] | None = None
    ended: str | None = None
    reason: str | None = None
    duration_seconds: float | None = None
    final_metrics: dict[str, Any] | None = None
    preempted_step: int | None = None
    resumed: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] | None = None  # a folder dataset's classes, for kexp predict
    class_weight: dict[str, float] | None = None  # train.class_weight as used (balanced: computed)
    # A sweep's trial: the sweep, the epoch the pruner stopped it, its HParams session.
    sweep: dict[str, Any] | None = None
    pruned_epoch: int | None = None
    hparams_logged: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _ALWAYS = ("config_file",)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """The record of a parsed ``run.json`` (unknown keys go to ``extra``)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``run.json``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.name not in self._ALWAYS):
                continue
            if f.name == "resumed" and not value:
                continue
            out[f.name] = value
        return {**out, **self.extra}

    def with_extra(self, data: dict[str, Any]) -> RunRecord:
        """This record with ``data`` (keys of run.json, known or not) set."""
        return RunRecord.from_dict({**self.to_dict(), **data})

    @property
    def finished(self) -> bool:
        """Whether the run ended (completed, failed or interrupted)."""
        return self.status in STATUSES[1:]


def read_record(path: Path) -> RunRecord | None:
    """The ``run.json`` of a run directory as a record (None when missing or unreadable)."""
    data = read_run(path)
    return RunRecord.from_dict(data) if data and isinstance(data, dict) else None


def config_hash(resolved: dict[str, Any]) -> str:
    """A hash of a resolved config (``Config.to_yaml_dict()``), recorded in run.json as
    ``config_hash``; ``--resume`` compares it with the run's config.yaml."""
    import yaml  # here, not at the top: `kexp --help` imports this module

    text = yaml.safe_dump(resolved, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    os.chmod(name, 0o666 & ~_umask())  # mkstemp's 0600: the mode open() would give
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


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    from importlib import metadata

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
    def create(cls, runs_dir: Path, name: str,
               populate: Callable[[Run], None] | None = None) -> Run:
        """Make a new ``<runs_dir>/<name>/<timestamp>`` directory; ``-2``, ``-3``… when taken
        (two processes starting in the same second get different directories).

        The directory appears whole: ``populate(run)`` writes its first files
        (``config.yaml``, ``run.json``) while it still has its temporary name
        (``create_dir_atomically``). The returned run holds its lock (``lock``). Temporary
        directories left in ``runs_dir`` by creators that were killed are removed first.
        """
        runs_dir = Path(runs_dir)
        with contextlib.suppress(OSError):
            for sub in runs_dir.iterdir():
                if sub.is_dir() and not sub.name.startswith("."):
                    remove_stale_temporaries(sub)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path, fd = _create_locked(runs_dir / name, stamp,
                                  None if populate is None else lambda tmp: populate(cls(tmp)))
        run = cls(path)
        run._lock_fd = fd
        return run

    @classmethod
    def at(cls, path: Path, populate: Callable[[Run], None] | None = None) -> Run:
        """Make the run directory ``path`` itself (a sweep's ``trials/0007``), whole, as
        ``create`` does; it must not exist yet (FileExistsError)."""
        path = Path(path)
        made, fd = _create_locked(path.parent, path.name,
                                  None if populate is None else lambda tmp: populate(cls(tmp)),
                                  tries=1)
        run = cls(made)
        run._lock_fd = fd
        return run

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
        import yaml

        atomic_write(self.path / name, yaml.safe_dump(data, sort_keys=False))

    def record(self) -> RunRecord:
        """``run.json`` as a record (an empty record before it exists)."""
        return read_record(self.path) or RunRecord()

    def write_record(self, record: RunRecord) -> None:
        """Write ``run.json`` (atomically)."""
        self.write_json("run.json", record.to_dict())

    def update(self, **fields: Any) -> RunRecord:
        """Set record fields in ``run.json`` (atomically) and return the record.

        Raises:
            TypeError: a name that is not a ``RunRecord`` field.
        """
        record = dataclasses.replace(self.record(), **fields)
        self.write_record(record)
        return record


# --------------------------------------------------------------------------- atomic creation


def create_dir_atomically(parent: Path, name: str,
                          populate: Callable[[Path], None] | None = None) -> Path:
    """Create ``<parent>/<name>`` (``<name>-2``, ``<name>-3``… when taken) so that it appears
    with its content or not at all; return its path.

    The directory is made as ``<parent>/.tmp-<name>-<pid>-<random>`` and locked, filled by
    ``populate(temporary_path)``, fsynced, and renamed into place. The rename never replaces
    an existing directory (``renameat2(RENAME_NOREPLACE)`` on Linux; elsewhere ``os.rename``,
    which refuses a non-empty one), so concurrent creators get different names. If
    ``populate`` raises, the temporary directory is removed and the error propagates. A
    creator killed before the rename leaves a temporary directory, ignored by ``find_runs``
    and removed by the next call for ``parent`` once the creator's lock is free.
    """
    path, fd = _create_locked(Path(parent), name, populate)
    with contextlib.suppress(OSError):
        (path / LOCK).unlink()
    _close(fd)
    return path


def remove_stale_temporaries(parent: Path) -> list[Path]:
    """Remove the temporary directories ``create_dir_atomically`` left in ``parent`` whose
    creator is gone (their lock is free); return what was removed."""
    removed = []
    with contextlib.suppress(OSError):
        for tmp in Path(parent).glob(f"{TEMP_PREFIX}*"):
            if tmp.is_dir() and _remove_if_abandoned(tmp):
                removed.append(tmp)
    return removed


def _create_locked(parent: Path, name: str, populate: Callable[[Path], None] | None,
                   tries: int = 10_000) -> tuple[Path, int | None]:
    """``create_dir_atomically``, returning the final path and the descriptor that holds
    its ``.lock`` (None where the OS has no advisory locks)."""
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(parent)
    tmp, fd = _locked_temporary(parent, name)
    try:
        if populate is not None:
            populate(tmp)
        fsync_dir(tmp)
        for n in range(1, tries + 1):
            path = parent / (name if n == 1 else f"{name}-{n}")
            try:
                _rename_no_replace(tmp, path)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            fsync_dir(parent)
            return path, fd
        if tries == 1:
            raise FileExistsError(errno.EEXIST, "a directory is in the way", str(parent / name))
        raise RuntimeError(f"cannot create a directory named {name} under {parent}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _close(fd)
        raise


def _locked_temporary(parent: Path, name: str) -> tuple[Path, int | None]:
    """A new ``.tmp-<name>-<pid>-<random>`` directory whose ``.lock`` this process holds.

    The lock is taken on a file of another name that is then renamed to ``.lock``: a
    ``.lock`` is locked from the moment it exists until its creator ends, so a cleaner that
    finds it free knows the creator is gone."""
    while True:
        tmp = parent / f"{TEMP_PREFIX}{name}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            break
        except FileExistsError:
            continue
    try:
        staging = tmp / f"{LOCK}-{secrets.token_hex(4)}"
        fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            import fcntl
        except ImportError:  # no advisory locks: cleaners go by age
            os.close(fd)
            fd = None
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: always free
        os.rename(staging, tmp / LOCK)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, fd


def _remove_if_abandoned(tmp: Path) -> bool:
    """Remove ``tmp`` if its creator is gone: its ``.lock`` is free (and held here while
    removing), or, without a lock to tell, it is older than any creation takes."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    try:
        fd = os.open(tmp / LOCK, os.O_RDONLY) if fcntl is not None else None
    except FileNotFoundError:
        fd = None
    except OSError:
        return False
    if fd is None:
        try:
            if time.time() - tmp.stat().st_mtime < _UNLOCKED_GRACE_SECONDS:
                return False
        except OSError:
            return False
        shutil.rmtree(tmp, ignore_errors=True)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # its creator is alive
    try:
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        os.close(fd)
    return True


def _rename_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; OSError (EEXIST or ENOTEMPTY) if ``dst`` exists."""
    rename = _renameat2()
    if rename is not None:
        import ctypes

        at_fdcwd, no_replace = -100, 1
        if rename(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), no_replace) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: the filesystem lacks the flag
            raise OSError(code, os.strerror(code), str(dst))
    os.rename(src, dst)  # replaces only an empty directory: nothing is lost


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """Linux's ``renameat2`` from the C library (None elsewhere, or with an old libc)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


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
    record = read_record(path)
    return list(record.plugins) if record is not None else []


def find_runs(runs_dir: Path) -> list[Path]:
    """Every run directory (one with a run.json) under ``runs_dir``, oldest first; never one
    still being created (``create_dir_atomically``'s temporary directories)."""
    runs_dir = Path(runs_dir)
    if (runs_dir / "run.json").exists():
        return [runs_dir]
    found = [p.parent for p in runs_dir.glob("**/run.json")
             if not is_temporary(p.relative_to(runs_dir))]
    return sorted(found, key=lambda p: ((read_record(p) or RunRecord()).started, str(p)))


def is_temporary(path: Path) -> bool:
    """Whether ``path`` lies in a directory still being created (``.tmp-…``)."""
    return any(part.startswith(TEMP_PREFIX) for part in Path(path).parts)


def resolve_run_dir(path: Path) -> Path | None:
    """A run directory, or the newest run under ``runs/<name>``; None when there is none."""
    path = Path(path)
    if path.name.startswith(TEMP_PREFIX):
        return None  # still being created, or left by a creator that was killed
    if (path / "run.json").exists():
        return path
    runs = find_runs(path) if path.is_dir() else []
    return runs[-1] if runs else None
