"""``kexp sweep``: claim trials from the study, train each in its own ``kexp train`` process
(``jobs`` at once), and tell the study how each ended.

Nothing is lost:

- a trial is claimed under a lock shared by every process of the study (``budget_lock``),
  so together they start exactly ``trials`` trials; its parameters and run directory are
  recorded in the study before its process starts;
- while a sweep process is responsible for a trial it holds an OS lock on
  ``<sweep>/trials/.NNNN.lock``; a trial left ``RUNNING`` whose lock is free belongs to a
  process that died, and ``kexp sweep --resume`` takes it over: it tells the study the
  outcome its run directory holds, continues it with ``kexp train --resume``, or starts it
  (when its process died before creating the run directory);
- the outcome is read from the trial's run directory (run.json, history.csv), which the
  trial writes atomically, and told to the study only then.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexp.config.schema import Config
from kexp.errors import KexpError
from kexp.monitor import direction as metric_direction
from kexp.output import quiet
from kexp.runs import Run, atomic_write, now, read_run
from kexp.sweep import results
from kexp.sweep.space import as_set, suggest
from kexp.sweep.study import budget_lock, make_sampler, open_storage
from kexp.sweep.trial import ENV, TrialContext

__all__ = ["Sweep", "run_sweep", "trial_dir"]

POLL_SECONDS = 0.2
# Which sweep process ran a trial (trials.csv's `worker`): several may share a study.
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def trial_dir(sweep_dir: Path, number: int) -> Path:
    return Path(sweep_dir) / "trials" / f"{number:04d}"


@dataclass
class Sweep:
    """A sweep directory and how to reach its study."""

    dir: Path
    cfg: Config            # the resolved base config (<sweep>/config.yaml)
    storage: str           # the full URL (with any password): never written to a file
    study: str
    trials: int
    jobs: int
    joined: bool = False   # the study existed before this process opened it

    @property
    def metric(self) -> str:
        return self.cfg.sweep.metric

    @property
    def direction(self) -> str:
        return self.cfg.sweep.direction or metric_direction(self.metric)


@dataclass
class _Child:
    number: int
    trial_id: int
    process: subprocess.Popen
    lock_fd: int
    started: float = field(default_factory=time.monotonic)


def open_study(sweep: Sweep) -> Any:
    """The sweep's study (created when new), with its sampler and pruner. A process that
    joins an existing study seeds its sampler apart (``seed + pid``), so that two processes
    do not propose the same first values."""
    import optuna

    storage = open_storage(sweep.storage)
    try:
        optuna.create_study(storage=storage, study_name=sweep.study, direction=sweep.direction)
    except optuna.exceptions.DuplicatedStudyError:
        sweep.joined = True
    seed = sweep.cfg.seed + (os.getpid() if sweep.joined else 0)
    from kexp.sweep.study import make_pruner

    return optuna.load_study(study_name=sweep.study, storage=storage,
                             sampler=make_sampler(sweep.cfg, seed),
                             pruner=make_pruner(sweep.cfg.sweep.pruner))


def run_sweep(sweep: Sweep) -> Any:
    """Run (or continue) the sweep until the study has ``trials`` trials and this process's
    have all ended; return the study. Ctrl-C / SIGTERM stop every trial process (their runs
    are marked ``interrupted``) and raise ``KeyboardInterrupt``.

    Raises:
        StorageLost: the study's storage stopped answering (a database server went away);
            the trials are stopped as on Ctrl-C, for ``--resume`` to continue.
    """
    study = open_study(sweep)
    runner = _Runner(sweep, study)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        runner.loop()
    except KeyboardInterrupt:
        runner.stop()
        _write_results(sweep, study, status="interrupted")
        raise
    except Exception as exc:
        if not _storage_error(exc):
            raise
        runner.stop()
        info = {**read_sweep(sweep.dir), "status": "interrupted", "updated": now()}
        atomic_write(sweep.dir / "sweep.json", json.dumps(info, indent=2) + "\n")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        from kexp.sweep.study import has_password, redact

        raise StorageLost(
            f"the study storage {redact(sweep.storage)} stopped answering: {redact(first)}\n"
            f"the running trials were stopped and are kept; when it is back: kexp sweep "
            f"--resume {sweep.dir}" + (" --storage URL" if has_password(sweep.storage)
                                       else "")) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    _write_results(sweep, study, final=True)
    results.write_plots(sweep.dir, study)
    return study


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class StorageLost(KexpError):
    """The study's database went away during a sweep (exit code 1)."""

    exit_code = 1


def _storage_error(exc: Exception) -> bool:
    import optuna

    try:
        import sqlalchemy.exc
    except ImportError:
        return isinstance(exc, optuna.exceptions.StorageInternalError)
    return isinstance(exc, (sqlalchemy.exc.SQLAlchemyError,
                            optuna.exceptions.StorageInternalError))


def _count_finished(study: Any) -> int:
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))


class _Runner:
    def __init__(self, sweep: Sweep, study: Any):
        self.sweep, self.study = sweep, study
        self.children: dict[int, _Child] = {}
        # trials this process is responsible for (it holds their locks) that wait for a job
        # slot, or for a `kexp train` that outlived its sweep process to end
        self.pending: dict[int, int] = {}

    # ------------------------------------------------------------------ the loop

    def loop(self) -> None:
        self._adopt()
        while True:
            while len(self.children) < self.sweep.jobs and self._start_next():
                pass
            if not self.children and not self.pending:
                return
            time.sleep(POLL_SECONDS)
            self._reap()

    def stop(self) -> None:
        """Ctrl-C: every trial process stops as ``kexp train`` does on SIGTERM (its run is
        marked ``interrupted`` and continues on ``--resume``); their trials stay running."""
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for child in self.children.values():
            try:
                child.process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
            os.close(child.lock_fd)
        self.children.clear()

    def _start_next(self) -> bool:
        """Start one more trial process: a trial taken over, else a new one from the
        budget. False when there is nothing to start now."""
        for number in sorted(self.pending):
            if Run(trial_dir(self.sweep.dir, number)).is_training():
                continue  # its own kexp train is still at it
            if self._continue(number, self.pending.pop(number)):
                return True
        claimed = self._claim()
        if claimed is None:
            return False
        trial, lock_fd, values = claimed
        self._spawn(trial.number, trial._trial_id, values, lock_fd, resume=False)
        return True

    # ------------------------------------------------------------------ claiming

    def _claim(self) -> tuple[Any, int, dict[str, Any]] | None:
        """A new trial, within the budget; its values and run directory recorded."""
        sweep = self.sweep
        with budget_lock(sweep.storage, sweep.study, sweep.dir):
            if len(self.study.get_trials(deepcopy=False)) >= sweep.trials:
                return None
            trial = self.study.ask()
            values, lock_fd = self._record(trial)
        return trial, lock_fd, values

    def _record(self, trial: Any) -> tuple[dict[str, Any], int]:
        """Give a claimed trial its values and run directory, in the study; take its lock."""
        values = suggest(trial, self.sweep.cfg.sweep.params)
        lock_fd = _hold(self.sweep.dir, trial.number)
        trial.set_user_attr("sweep_dir", str(self.sweep.dir))
        trial.set_user_attr("run_dir", str(trial_dir(self.sweep.dir, trial.number)))
        trial.set_user_attr("values", json.dumps(values))
        trial.set_user_attr("worker", WORKER)
        return values, lock_fd

    def _adopt(self) -> None:
        """Take over this sweep's trials that are running without a live sweep process
        (it was killed, or interrupted): their locks are free. A trial without a sweep
        directory lost its process while being claimed (which happens under the budget
        lock, held here): it is given its values here."""
        import optuna

        sweep = self.sweep
        with budget_lock(sweep.storage, sweep.study, sweep.dir):
            for trial in self.study.get_trials(deepcopy=False,
                                               states=(optuna.trial.TrialState.RUNNING,)):
                if "sweep_dir" not in trial.user_attrs:
                    _, fd = self._record(optuna.trial.Trial(self.study, trial._trial_id))
                    self.pending[trial.number] = fd
                elif trial.user_attrs["sweep_dir"] == str(sweep.dir):
                    fd = _hold(sweep.dir, trial.number, blocking=False)
                    if fd is not None:  # else another process of this sweep has it
                        self.pending[trial.number] = fd

    def _continue(self, number: int, fd: int) -> bool:
        """A taken-over trial: tell the outcome its run directory holds, or continue it
        (``kexp train --resume``), or start it again when its process died before the
        first saved epoch. True when a process was started."""
        import optuna

        frozen = self._frozen(number)
        if frozen.state.is_finished():
            os.close(fd)
            return False
        run_dir = trial_dir(self.sweep.dir, number)
        info = read_run(run_dir)
        if info.get("status") in ("completed", "pruned", "failed"):
            self._tell(number, frozen._trial_id, info)
            os.close(fd)
            return False
        resume = bool(info) and (run_dir / "state").is_dir()
        if not resume and run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)  # nothing saved yet: start it again
        values = json.loads(frozen.user_attrs.get("values", "{}"))
        optuna.trial.Trial(self.study, frozen._trial_id).set_user_attr("worker", WORKER)
        self._spawn(number, frozen._trial_id, values, fd, resume=resume)
        return True

    def _frozen(self, number: int) -> Any:
        return next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)

    # ------------------------------------------------------------------ trial processes

    def _spawn(self, number: int, trial_id: int, params: dict[str, Any], lock_fd: int,
               resume: bool) -> None:
        """Start trial ``number``'s ``kexp train`` (its ``params`` as config values)."""
        sweep = self.sweep
        run_dir = trial_dir(sweep.dir, number)
        context = TrialContext(
            storage=sweep.storage, study=sweep.study, trial_id=trial_id, number=number,
            metric=sweep.metric, pruner=sweep.cfg.sweep.pruner.model_dump(), run_dir=run_dir,
            sweep_dir=sweep.dir, params=params)
        argv = [sys.executable, "-m", "kexp.cli.app", "train"]
        if resume:
            argv += ["--resume", str(run_dir)]
        else:
            argv += [str(sweep.dir / "config.yaml"), "--set", "sweep=null"]
            for path, value in params.items():
                argv += ["--set", as_set(path, value)]
        env = {**os.environ, ENV: context.to_env(),
               "KEXP_CORES": str(max(1, _cores() // sweep.jobs))}
        log = sweep.dir / "output" / f"{number:04d}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.children[number] = _Child(number, trial_id, process, lock_fd)

    def _reap(self) -> None:
        for number, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            del self.children[number]
            info = read_run(trial_dir(self.sweep.dir, number))
            if code == 130 or info.get("status") == "interrupted":
                os.close(child.lock_fd)
                raise KeyboardInterrupt  # the trial was stopped from outside: so is the sweep
            if not info or info.get("status") == "running":
                info = {**info, "status": "failed",
                        "reason": _failure(self.sweep.dir, number, code)}
            self._tell(number, child.trial_id, info)
            os.close(child.lock_fd)

    # ------------------------------------------------------------------ outcomes

    def _tell(self, number: int, trial_id: int, info: dict[str, Any]) -> None:
        import optuna

        state = optuna.trial.TrialState
        run_dir = trial_dir(self.sweep.dir, number)
        value = best_value(run_dir, self.sweep.metric, self.sweep.direction)
        status = info.get("status")
        if status != "failed" and info.get("pruned_epoch") is not None:
            status = "pruned"
        reason = str(info.get("reason") or "")
        if status == "completed" and value is None:
            status, reason = "failed", (f"{self.sweep.metric} is not in the trial's "
                                        "history.csv, or never finite")
        if reason:
            optuna.trial.Trial(self.study, trial_id).set_user_attr("reason", reason)
        if status == "completed":
            _tell(self.study, number, values=value)
        else:
            _tell(self.study, number, state=state.PRUNED if status == "pruned" else state.FAIL)
        _write_results(self.sweep, self.study)
        if not quiet():  # --quiet: the sweep directory and the best trial only
            print(results.progress_line(self.study, number, self.sweep.metric,
                                        self.sweep.trials), flush=True)


def _tell(study: Any, number: int, **outcome: Any) -> None:
    """``study.tell``, once. (Optuna's grid sampler calls ``study.stop()`` when its last
    point is told, which raises outside ``study.optimize``; the outcome is stored by then.)"""
    try:
        study.tell(number, skip_if_finished=True, **outcome)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def best_value(run_dir: Path, metric: str, direction: str) -> float | None:
    """The trial's value: the best ``metric`` over its epochs (history.csv)."""
    from kexp.results import read_history

    values = [v for v in read_history(run_dir / "history.csv").get(metric, [])
              if math.isfinite(v)]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def _failure(sweep_dir: Path, number: int, code: int) -> str:
    """Why a trial process ended without a result: the last line of its output."""
    if code < 0:
        return f"the trial process was killed (signal {-code})"
    try:
        lines = (sweep_dir / "output" / f"{number:04d}.log").read_text(
            errors="replace").strip().splitlines()
    except OSError:
        lines = []
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [f"exit code {code}"])[-1].strip()[:500]


def _hold(sweep_dir: Path, number: int, blocking: bool = True) -> int | None:
    """Take the OS lock that says "a live sweep process is responsible for this trial"."""
    import fcntl

    path = Path(sweep_dir) / "trials" / f".{number:04d}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


def _die_with_parent() -> None:
    """In the trial process: SIGTERM when the sweep process dies (Linux), so a killed
    sweep leaves no trial training on its own; its run is marked ``interrupted``."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _write_results(sweep: Sweep, study: Any, status: str = "running",
                   final: bool = False) -> None:
    """trials.csv and sweep.json (best.yaml once every trial has finished), from the study
    as it is now. Under the budget lock: processes sharing the sweep directory write one
    at a time, and the last write follows the last trial's outcome."""
    with budget_lock(sweep.storage, sweep.study, sweep.dir):
        results.write_trials_csv(sweep.dir, study, sweep.metric)
        if final:
            status = "completed" if _count_finished(study) >= sweep.trials else "running"
        _update_sweep_json(sweep, study, status)


def _update_sweep_json(sweep: Sweep, study: Any, status: str) -> None:
    info = read_sweep(sweep.dir)
    best = results.best_trial(study)
    info.update(status=status, updated=now(), finished_trials=_count_finished(study),
                best=None if best is None else {
                    "trial": best.number, "value": best.value,
                    "run_dir": best.user_attrs.get("run_dir"),
                    "params": json.loads(best.user_attrs.get("values", "{}"))})
    if status == "completed":
        info["ended"] = now()
        results.write_best_yaml(sweep.dir, best)
    atomic_write(sweep.dir / "sweep.json", json.dumps(info, indent=2) + "\n")


def read_sweep(sweep_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(sweep_dir) / "sweep.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
