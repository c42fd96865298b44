"""``kexp train``: a checked config becomes a trained model and a run directory.

The pipeline, in order: ``setup.seed_everything`` (threads, seeds),
``distribute.start_strategy``, ``setup.data_and_model`` (nothing written yet),
``probe.probe_batch`` (one batch through the losses and metrics; not on ``--resume``), the run
directory, ``setup.prepare`` (datasets, compile, callbacks: a ``Job``), ``record`` (run.json),
``fit.fit`` (the loop, then the run's end). Both loops share every step; only the loop itself
differs (``model.fit`` or ``fit_custom``).

Order matters for "nothing written on a config error": data is read, the model built and
checked against the data, before the run directory exists; the directory then appears whole,
with config.yaml, summary.txt and run.json (``Run.create``: a kill at any moment leaves no
directory or one ``--resume`` continues); what needs the directory (the user's callbacks,
whose relative paths land in it) is set up right after, and the directory is removed again
if that set-up fails.

``resume`` continues a run in its own directory from its newest saved state
(``kexp.training.resume``): the same data, model and compile steps, then ``fit`` /
``fit_custom`` from the saved epoch with the state put back by the ``RunState`` callback.
A process holds the run's lock (``Run.lock``) while it trains it.

Distribution (``distribute.strategy``, ``kexp.training.distribute``): the strategy is created
right after seeding, before any tensor; data, model and compile happen under its scope.
``data.batch_size`` is the global batch. ``fit`` gets undistributed datasets (Keras distributes
them under ``mirrored``); ``fit_custom`` gets the strategy and runs its steps with
``strategy.run``. The default strategy takes none of these paths.

Under ``multi_worker`` every worker runs the same code, callbacks included, because reading
a metric is a cross-worker collective; only the chief (worker 0) writes the run directory.
The other workers write the same files into a private temporary copy, removed when they
finish. A fresh run's directory is created by the chief alone; on ``--resume RUN_DIR`` every
worker is given the same path (a shared filesystem) and the others copy what they need from
it. A SIGTERM to any worker saves every worker's state at the same step into
``<run>/checkpoints/preemption`` (chief only) and stops them all with exit code 130; the run
is marked ``interrupted``, and ``--resume`` continues at that step: the per-epoch state sets
restore the callbacks, the pre-emption checkpoint the weights, optimizer and step.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kexp.config.schema import Config
from kexp.output import notice
from kexp.runs import Run
from kexp.training import distribute as dist
from kexp.training.fit import fit
from kexp.training.probe import probe_batch
from kexp.training.record import record_resume, record_start
from kexp.training.setup import (
    Resumed,
    TrainOptions,
    data_and_model,
    prepare,
    seed_everything,
)

__all__ = ["train", "resume", "TrainOptions"]


def train(cfg: Config, options: TrainOptions | None = None) -> Run:
    """Train as ``cfg`` says; return the run.

    Raises:
        ConfigError, DataError: before anything is written.
        TrainingError: the run failed (marked ``failed`` in run.json, with the reason).
        KeyboardInterrupt: Ctrl-C or SIGTERM (the run is marked ``interrupted``).
    """
    options = options or TrainOptions()
    seed_everything(cfg)
    strategy = dist.start_strategy(cfg)
    with dist.strategy_scope(strategy):
        splits, model = data_and_model(cfg)
        if strategy is None:  # one batch through the losses and metrics: a mistake is exit 2
            probe_batch(cfg, model, splits)
        runs_dir = Path(cfg.runs_dir) / ("_smoke" if options.smoke else "")
        chief = dist.writes_run(cfg)
        # The directory appears with its config and run.json, or not at all: a kill at any
        # moment leaves nothing or a run that `--resume` continues. It comes locked.
        def populate(new: Run) -> None:
            record_start(cfg, options, new, model, splits, strategy)

        run = (Run.at(options.run_dir, populate) if options.run_dir is not None and chief else
               Run.create(runs_dir if chief else dist.private_dir(), cfg.run_name(), populate))
        try:
            try:
                job = prepare(cfg, options, run, model, splits, strategy=strategy)
            except BaseException:  # nothing half-written is left behind
                _remove(run)
                raise
            if cfg.distribute.strategy == "multi_worker" and chief:
                # Where the run goes: the user needs it to resume after a pre-emption.
                print(f"run directory: {run.path}", file=sys.stderr, flush=True)
            fit(cfg, run, model, splits, job)
        finally:
            run.unlock()
            if not chief:
                dist.remove_private(run)
    return run


def resume(path: Path, sets: Sequence[str] = (), command: Sequence[str] = (),
           callbacks: Sequence[Any] = ()) -> Run:
    """Continue an interrupted, killed or failed run from its newest saved state
    (``kexp train --resume RUN_DIR``); return the run.

    The run's own ``config.yaml`` is used (``sets`` may only change ``train.epochs``, e.g. to
    extend a completed run). Training restarts at the first epoch that was not saved, with
    the weights, optimizer, random generators and callback state of the end of the one
    before; with ``deterministic: true`` the result is bit-identical to an uninterrupted run.

    Raises:
        ResumeError: the run cannot be resumed (completed, config changed, still being
            trained by another process, non-finite saved weights); nothing is written.
        TrainingError, KeyboardInterrupt: as ``train``.
    """
    from kexp.training import resume as rs

    plan = rs.plan_resume(Path(path), sets)
    cfg = plan.cfg
    chief = dist.writes_run(cfg)
    # Other workers train a private copy: the same callbacks, state and history, no writes here.
    run = plan.run if chief else dist.private_copy(plan.run)
    if not run.lock():
        raise rs.ResumeError(f"cannot resume {run.path}: another process is training it "
                             f"(it holds {run.file('.lock')})")
    try:
        saved = rs.load_state(run.path)
        start = rs.start_epoch(plan, saved)
        options = TrainOptions(smoke=plan.record.smoke, command=tuple(command),
                               callbacks=tuple(callbacks))
        seed_everything(cfg)
        strategy = dist.start_strategy(cfg)
        with dist.strategy_scope(strategy):
            splits, model = data_and_model(cfg)
            job = prepare(cfg, options, run, model, splits, strategy=strategy,
                          resumed=Resumed(start, saved, plan.extended), source=plan.run)
            record_resume(cfg, options, run, plan.extended, job)
            at_step = (f", step {job.dist.initial_step}"
                       if job.dist is not None and job.dist.initial_step else "")
            notice(f"resuming {plan.run.path} at epoch {start}{at_step} of {job.epochs}"
                   + (f" (from {saved.path.name})" if saved else ""))
            fit(cfg, run, model, splits, job)
    finally:
        run.unlock()
        if not chief:
            dist.remove_private(run)
    return plan.run


def _remove(run: Run) -> None:
    shutil.rmtree(run.path, ignore_errors=True)
    parent = run.path.parent
    if parent.exists() and not any(parent.iterdir()):
        parent.rmdir()
