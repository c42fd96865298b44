"""``make soak``: ``kexp train`` killed with SIGKILL at random moments, then resumed.

Each trial starts ``kexp train`` on a small deterministic job (digits, dropout, shuffling)
in its own runs directory and kills it with SIGKILL at a moment drawn uniformly from the
process's life: from its start (importing TensorFlow, reading data, creating the run
directory) to its exit (training, saving, finishing). The trials cycle through four variants:
``train.loop`` ``fit`` and ``custom``, each with and without ``--smoke``. After the kill:

- every directory under the run's name is a run (``run.json`` and ``config.yaml``) — a kill
  must never leave one that ``--resume`` refuses — and every file in it parses;
- a run that is not ``completed`` is resumed with ``kexp train --resume`` (exit 0);
- it is then ``completed`` with every epoch once in ``history.csv``, every file parses, and
  its final weights equal those of an uninterrupted run of the same variant (computed once
  per variant; ``deterministic: true``), bit for bit.

A kill that lands before the run directory is renamed into place leaves no run: the trial
passes if nothing but hidden temporaries is there. ``python -m kexp.tools.soak --trials N``
prints one line per trial and ``N passed, M failed`` with the failing directories (kept;
everything is removed when all pass), exit code 1 on any failure.

It lives in the package beside ``kexp.tools.smoke`` rather than under ``tests/``: ``make
soak`` runs it on an installed kexp without pytest, and the test suite runs a short version
of it (``run_soak(4, in_process=True)``) and reuses its file checks (``file_problems``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CONFIG", "VARIANTS", "SoakResult", "run_soak", "file_problems", "main"]

NAME = "soak"
OVERSHOOT = 1.25  # kill moments go this far past a process's expected life
EPOCHS = 3
CONFIG = f"""
name: {NAME}
seed: 11
deterministic: true
data: {{type: digits, batch_size: 64, validation_split: 0.2, shuffle: true}}
model:
  type: sequential
  input_shape: [64]
  layers:
    - {{type: Dense, units: 16, activation: relu}}
    - {{type: Dropout, rate: 0.3}}
    - {{type: Dense, units: 10, activation: softmax}}
compile:
  optimizer: {{type: Adam, learning_rate: 1e-3}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
train:
  epochs: {EPOCHS}
  progress: false
"""


@dataclass(frozen=True)
class Variant:
    loop: str
    smoke: bool

    @property
    def label(self) -> str:
        return self.loop + (" --smoke" if self.smoke else "")

    @property
    def epochs(self) -> int:
        return 1 if self.smoke else EPOCHS

    def train_args(self, config: Path, runs: Path) -> list[str]:
        return (["train", str(config), "--runs-dir", str(runs), "--set",
                 f"train.loop={self.loop}"] + (["--smoke"] if self.smoke else []))

    def name_dir(self, runs: Path) -> Path:
        return runs / ("_smoke" if self.smoke else "") / NAME


VARIANTS = tuple(Variant(loop, smoke) for loop in ("fit", "custom") for smoke in (False, True))


@dataclass
class SoakResult:
    passed: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    # What the kills left, passed or not: "no run directory", "running, resumed", ...
    outcomes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{self.passed} passed, {len(self.failed)} failed"]
        lines += [f"  FAILED {path}: {why}" for path, why in self.failed]
        tally = ", ".join(f"{n} {what}" for what, n in sorted(self.outcomes.items()))
        return "\n".join(lines + [f"what the kills left: {tally}"])


# --------------------------------------------------------------------------- running kexp


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "kexp.cli.app", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(args: list[str], log: Path, in_process: bool) -> int:
    """``kexp ARGS`` to completion (in this process or a new one); its exit code."""
    if in_process:
        from typer.testing import CliRunner

        from kexp.cli.app import app

        result = CliRunner().invoke(app, args)
        log.write_text(f"{result.stdout}\n{result.stderr}\n{result.exception!r}\n")
        return result.exit_code
    with open(log, "w") as out:
        return subprocess.run(_command(args), stdout=out, stderr=subprocess.STDOUT,
                              env=_env(), timeout=900).returncode


def _kill_after(args: list[str], delay: float, log: Path) -> float | None:
    """Start ``kexp ARGS`` and SIGKILL it ``delay`` seconds later; the seconds it lived when
    it ended by itself first (None when it was killed)."""
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(_command(args), stdout=out, stderr=subprocess.STDOUT,
                                env=_env(), start_new_session=True)
        try:
            proc.wait(timeout=delay)
            return time.monotonic() - start
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


# --------------------------------------------------------------------------- checks


def file_problems(run: Path) -> list[str]:
    """Every file of a run directory that does not read back with its format's reader.
    Hidden files (the lock, temporaries of writes a kill interrupted, which the next
    ``--resume`` removes) are not part of the run."""
    problems = []
    for path in sorted(run.rglob("*")):
        if path.is_dir() or any(part.startswith(".") for part in path.relative_to(run).parts):
            continue
        try:
            with _READING:
                _parse(path)
        except Exception as exc:  # any reader's failure is the finding
            problems.append(f"{path} does not parse: {exc!r}")
    return problems


def _parse(path: Path) -> None:
    import numpy as np
    import yaml

    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".yaml":
        yaml.safe_load(path.read_text())
    elif path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or any(len(row) != len(rows[0]) for row in rows):
            raise ValueError("empty, or ragged rows")
    elif path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None or "config.json" not in archive.namelist():
                raise ValueError("a damaged archive, or no config.json in it")
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            [data[key] for key in data.files]
    elif path.suffix == ".txt":
        path.read_text()
    elif path.suffix == ".png":
        _check_png(path.read_bytes())
    elif ".tfevents." in path.name:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        # A kill just after TensorBoard's writer created the file leaves it empty: an empty
        # record file, which TensorBoard reads as no events. Bytes that give none are damage.
        if path.stat().st_size and not list(EventFileLoader(str(path)).Load()):
            raise ValueError("no events")
    else:
        raise ValueError("a file kexp does not write")


_READING = threading.RLock()  # Keras and TensorBoard readers, one thread at a time


def _check_png(data: bytes) -> None:
    """A whole PNG: the signature, then chunks whose CRCs match, up to ``IEND``."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("no PNG signature")
    at = 8
    while at + 12 <= len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        crc = data[at + 8 + length:at + 12 + length]
        if len(body) != length or zlib.crc32(kind + body).to_bytes(4, "big") != crc:
            raise ValueError(f"a damaged {kind!r} chunk at byte {at}")
        if kind == b"IEND":
            return
        at += 12 + length
    raise ValueError("truncated (no IEND chunk)")


def _weights(path: Path) -> list:
    import keras

    with _READING:
        return keras.saving.load_model(path, compile=False).get_weights()


def _weights_differ(model: Path, reference: list) -> str:
    """'' when ``model``'s weights equal ``reference`` bit for bit, else how they differ."""
    import numpy as np

    weights = _weights(model)
    if len(weights) != len(reference):
        return f"{len(weights)} weight arrays, the reference has {len(reference)}"
    for i, (a, b) in enumerate(zip(weights, reference, strict=True)):
        if a.shape != b.shape or not np.array_equal(a, b):
            diff = np.max(np.abs(a - b)) if a.shape == b.shape else "shape"
            return f"weight array {i} differs from the uninterrupted run's (max diff {diff})"
    return ""


def _epochs_in(history: Path) -> list[int]:
    with open(history, newline="") as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f)]


def _status(run: Path) -> str:
    try:
        return str(json.loads((run / "run.json").read_text()).get("status"))
    except (OSError, ValueError):
        return "unreadable run.json"


# --------------------------------------------------------------------------- one trial


@dataclass
class _Trial:
    failure: str  # '' when it passed
    where: Path  # the directory to look at
    left: str  # what the kill left
    lived: float | None = None  # seconds the process lived, when it ended before the kill


def _trial(variant: Variant, config: Path, runs: Path, delay: float, reference: list,
           in_process: bool) -> _Trial:
    """Kill, check, resume, check."""
    lived = _kill_after(variant.train_args(config, runs), delay, runs.with_suffix(".log"))
    failure, where, left = _after_kill(variant, runs, reference, in_process)
    return _Trial(failure, where, "exited by itself" if lived is not None else left, lived)


def _after_kill(variant: Variant, runs: Path, reference: list,
                in_process: bool) -> tuple[str, Path, str]:
    named = variant.name_dir(runs)
    entries = sorted(named.iterdir()) if named.is_dir() else []
    dirs = [p for p in entries if not p.name.startswith(".")]
    stray = [p for p in entries if p.name.startswith(".") and not p.name.startswith(".tmp-")]
    if stray:
        return f"unexpected hidden entries {[p.name for p in stray]}", named, "stray files"
    if not dirs:  # killed before the directory was renamed into place: no run
        temporaries = [p for p in entries if p.name.startswith(".tmp-")]
        return "", runs, "no run directory" + (", a temporary one" if temporaries else "")
    if len(dirs) > 1:
        return f"{len(dirs)} run directories for one start", named, "several runs"
    run = dirs[0]
    if not (run / "run.json").is_file() or not (run / "config.yaml").is_file():
        return ("a run directory without run.json and config.yaml (--resume refuses it)",
                run, "an unresumable directory")
    status = _status(run)
    left = f"a {status} run" + (", resumed" if status != "completed" else "")
    problems = file_problems(run)
    if problems:
        return "after the kill: " + problems[0], run, left
    if status != "completed":
        code = _run(["train", "--resume", str(run)], runs.with_suffix(".resume.log"),
                    in_process)
        if code != 0:
            return f"kexp train --resume exited {code} (see {runs}.resume.log)", run, left
    return _check_completed(variant, run, reference), run, left


def _check_completed(variant: Variant, run: Path, reference: list) -> str:
    if _status(run) != "completed":
        return f"status {_status(run)} after --resume"
    problems = file_problems(run)
    if problems:
        return problems[0]
    if _epochs_in(run / "history.csv") != list(range(variant.epochs)):
        return f"history.csv epochs {_epochs_in(run / 'history.csv')}"
    return _weights_differ(run / "model.keras", reference)


# --------------------------------------------------------------------------- the soak


def run_soak(trials: int, work: Path, *, seed: int | None = None, in_process: bool = False,
             jobs: int = 1, report: Callable[[str], None] = print) -> SoakResult:
    """``trials`` kill-and-resume trials under ``work``, cycling through ``VARIANTS``,
    ``jobs`` at a time.

    ``in_process``: the uninterrupted reference runs (but the first, which is timed) and the
    resumes run in this process, one trial at a time (faster: TensorFlow is imported once;
    the killed runs are always their own processes).

    The kill moments are uniform over the life of a ``kexp train`` process of the variant:
    from 0 to ``OVERSHOOT`` times its latest lifetime — that of its uninterrupted reference
    run (in-process: the one timed) until a trial's process ends before its kill and gives
    a newer one (on a shared machine lifetimes move with the load). The overshoot puts
    about one kill in five after the process's end, which keeps measuring it.
    """
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    rng = random.Random(seed)
    jobs = 1 if in_process else max(1, jobs)
    work.mkdir(parents=True, exist_ok=True)
    config = work / "soak.yaml"
    config.write_text(CONFIG)
    report(f"soak: {trials} trials in {work}, {jobs} at a time (seed {seed})")
    variants = VARIANTS[:trials] if trials < len(VARIANTS) else VARIANTS
    measured = _map(jobs, lambda iv: _reference(iv[1], config, work / f"reference-{iv[0]}",
                                                in_process and iv[0] > 0), enumerate(variants))
    references = {v: weights for v, (weights, _) in zip(variants, measured, strict=True)}
    lifetimes = {v: lived for v, (_, lived) in zip(variants, measured, strict=True) if lived}
    longest = max(lifetimes.values())
    plan = [(t, VARIANTS[t % len(VARIANTS)]) for t in range(trials)]

    result = SoakResult()
    lock = threading.Lock()

    def one(t: int, variant: Variant) -> None:
        runs = work / f"trial-{t + 1:03d}"
        with lock:
            delay = rng.uniform(0.0, OVERSHOOT * lifetimes.get(variant, longest))
        try:
            trial = _trial(variant, config, runs, delay, references[variant], in_process)
        except Exception as exc:  # a crash of the checks is a failed trial, not the end
            trial = _Trial(f"{type(exc).__name__}: {exc}", runs, "a crash of the soak")
        with lock:
            if trial.lived is not None:
                lifetimes[variant] = trial.lived
            if trial.failure:
                result.failed.append((trial.where, trial.failure))
            else:
                result.passed += 1
            result.outcomes[trial.left] = result.outcomes.get(trial.left, 0) + 1
            report(f"trial {t + 1}/{trials} {variant.label:14} kill at {delay:5.2f} s: "
                   f"{trial.left}: "
                   f"{'FAILED ' + trial.failure if trial.failure else 'passed'}")

    _map(jobs, lambda tv: one(*tv), plan)
    return result


def _map(jobs: int, function: Callable, items: Iterable) -> list:
    """``function`` over ``items``, ``jobs`` threads at a time; one job runs in this thread
    (an in-process ``kexp train`` installs signal handlers: main thread only)."""
    if jobs == 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(function, items))


def _reference(variant: Variant, config: Path, runs: Path,
               in_process: bool) -> tuple[list, float | None]:
    """An uninterrupted run of ``variant``: its final weights, and how long its process
    lived (None in-process)."""
    start = time.monotonic()
    code = _run(variant.train_args(config, runs), runs.with_suffix(".log"), in_process)
    lived = None if in_process else time.monotonic() - start
    models = list(variant.name_dir(runs).glob("*/model.keras")) if code == 0 else []
    if len(models) != 1:
        raise RuntimeError(f"the uninterrupted {variant.label} run failed (exit {code}); "
                           f"see {runs}.log")
    return _weights(models[0]), lived


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kexp.tools.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int,
                        default=int(os.environ.get("SOAK_TRIALS") or 100),
                        help="number of trials (default: $SOAK_TRIALS or 100)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="work directory (default: a new temporary one)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the kill moments (the same moments with --jobs 1)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("SOAK_JOBS") or 2),
                        help="trials run at a time (default: $SOAK_JOBS or 2)")
    parser.add_argument("--in-process", action="store_true",
                        help="reference runs and resumes in this process (faster)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    work = args.dir or Path(tempfile.mkdtemp(prefix="kexp-soak-"))
    start = time.monotonic()
    result = run_soak(args.trials, work, seed=args.seed, in_process=args.in_process,
                      jobs=args.jobs, report=lambda line: print(line, flush=True))
    print(result.summary())
    print(f"({(time.monotonic() - start) / 60:.1f} minutes)")
    if result.failed:
        print(f"kept {work} for inspection")
        return 1
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
