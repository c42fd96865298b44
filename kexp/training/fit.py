"""Running a prepared ``Job``: the loop (``model.fit`` or kexp's ``fit_custom`` — the one
thing the two loops do not share), then the run's end: the final model, ``metrics.json`` and
the status in ``run.json`` — ``completed``, ``failed`` with the reason, or ``interrupted``
(Ctrl-C, SIGTERM, a pre-emption). Nothing saved is lost on a failure.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from contextlib import contextmanager
from typing import Any

from kexp.config.schema import Config
from kexp.errors import TrainingError, error_line
from kexp.runs import Run, now
from kexp.training.distribute import Preempted, is_chief
from kexp.training.setup import Job

__all__ = ["fit"]


def fit(cfg: Config, run: Run, model: Any, splits: Any, job: Job) -> None:
    """Train ``model`` as ``job`` says and finish the run; ``curves.png`` is drawn at the
    end whatever the outcome (from the epochs that exist).

    Raises:
        TrainingError: non-finite data, an exception in training, a NaN or Inf loss or
            weight (the run is marked ``failed``).
        KeyboardInterrupt, Preempted: the run is marked ``interrupted``.
    """
    from kexp.curves import draw_run_curves_at_end, warm_up
    from kexp.data.checks import first_non_finite

    warm_up()
    try:
        bad = first_non_finite(splits)
        if bad:
            # Some models mask a NaN (relu(NaN) is 0 on some CPUs) and would train on garbage.
            run.update(status="failed", ended=now(), reason=f"non-finite data: {bad}")
            raise TrainingError(f"training failed: non-finite data: {bad}\nrun: {run.path}")
        _fit(cfg, run, model, job)
    finally:  # failed or interrupted: whatever epochs exist (a completed run drew its own)
        if run.record().status != "completed":
            draw_run_curves_at_end(run.path)


def _fit(cfg: Config, run: Run, model: Any, job: Job) -> None:
    started = time.perf_counter()

    def end(status: str, reason: str, **fields: Any) -> None:
        run.update(status=status, ended=now(), reason=reason,
                   duration_seconds=round(time.perf_counter() - started, 3), **fields)

    try:
        with _sigterm_as_interrupt():
            history = _end_only(model, job) if job.finished else _phases(cfg, model, job)
    except Preempted as exc:
        step = getattr(exc, "step", None)
        end("interrupted", f"pre-empted (SIGTERM to a worker) at step {step}",
            preempted_step=step)
        where = run.path if is_chief() else "RUN_DIR (the chief's run directory)"
        raise Preempted(f"pre-empted at step {step}: every worker saved its state; restart "
                        f"every worker with --resume {where}") from None
    except KeyboardInterrupt:
        end("interrupted", "interrupted (Ctrl-C or SIGTERM)")
        raise
    except Exception as exc:
        from kexp.data.stream import explain_failure

        reason = explain_failure(exc) or (
            f"{type(exc).__name__}: {error_line(exc) if str(exc).strip() else ''}")
        end("failed", reason)
        raise TrainingError(f"training failed: {reason}\nrun: {run.path}") from exc
    if job.guard.reason:
        reason = f"non-finite values: {job.guard.reason}"
        end("failed", reason)
        raise TrainingError(f"training failed: {reason}; the last finite checkpoint is kept\n"
                            f"run: {run.path}")
    _finish(run, model, job, history, time.perf_counter() - started)


def _phases(cfg: Config, model: Any, job: Job) -> Any:
    """The job's loop, then each following phase's (``train.phases``), from the epoch after
    the last one trained; one ``History`` of every epoch (the last phase's metrics)."""
    history = _loop(cfg, model, job)
    epochs = list(history.epoch)
    while job.next_phase is not None and not job.guard.reason:
        job = job.next_phase(epochs[-1] + 1 if epochs else job.start)
        if job is None:
            break
        history = _loop(cfg, model, job)
        epochs += history.epoch
    history.epoch = epochs
    return history


def _loop(cfg: Config, model: Any, job: Job) -> Any:
    kwargs = dict(epochs=job.stop or job.epochs, initial_epoch=job.start,
                  steps_per_epoch=job.fit_steps, validation_data=job.val_ds,
                  callbacks=job.callbacks)
    if cfg.train.loop == "custom":
        from kexp.training.custom_loop import fit_custom

        if job.dist is not None:
            kwargs.update(strategy=job.dist.strategy, initial_step=job.dist.initial_step,
                          preemption_dir=job.dist.preemption_dir,
                          restore_preemption=job.dist.restore)
        return fit_custom(model, job.train_ds, compile_mode=cfg.train.compile_mode, **kwargs)
    return model.fit(job.train_ds, verbose=0, shuffle=False, **kwargs)


def _end_only(model: Any, job: Job) -> None:
    """A resumed run with no epoch left: begin and end the callbacks, so the saved state
    is restored and end-of-training work (``EarlyStopping(restore_best_weights)``) is done."""
    import keras

    callbacks = keras.callbacks.CallbackList(job.callbacks, model=model, epochs=job.epochs,
                                             steps=job.steps)
    callbacks.on_train_begin()
    callbacks.on_train_end()


def _finish(run: Run, model: Any, job: Job, history: Any, seconds: float) -> None:
    from kexp.curves import draw_run_curves_at_end
    from kexp.training.callbacks import save_model

    save_model(model, run.file("model.keras"))
    ran = len(history.epoch) if history is not None else 0
    restored = _restored_epoch(job.callbacks)
    metrics = _final_metrics(run, history if ran and restored is None else None,
                             restored[0] if restored else None)
    if restored is not None:
        metrics["restored_by"] = restored[1]
    if job.test_ds is not None:
        metrics["test"] = _evaluate_test(model, job)
    run.write_json("metrics.json", metrics)
    # Before `completed`: a run marked completed is never resumed, so a kill while drawing
    # must find it still running (resume then cleans the half-written image up).
    draw_run_curves_at_end(run.path)
    run.update(status="completed", ended=now(), duration_seconds=round(seconds, 3),
               final_metrics=metrics, epochs_completed=job.start + ran)
    if job.dist is not None and job.dist.preemption_dir is not None:
        # A completed run is not resumed from a pre-emption: its checkpoint is stale.
        shutil.rmtree(run.file("checkpoints/preemption"), ignore_errors=True)


def _final_metrics(run: Run, history: Any, epoch: int | None = None) -> dict[str, Any]:
    """The train and validation metrics of the epoch whose weights the model holds, and that
    epoch (0-based, as in history.csv): the last one, from this process's ``History``; or,
    when nothing trained in this process (``history`` None) or ``epoch`` names an earlier
    epoch whose weights a callback restored, from that row of ``history.csv``."""
    from kexp.training.callbacks import read_history

    if history is not None:
        last = {k: float(v[-1]) for k, v in history.history.items() if v}
        epoch = int(history.epoch[-1])
    else:
        rows = read_history(run.file("history.csv"))
        row = next((r for r in rows if epoch is not None and int(r["epoch"]) == epoch),
                   rows[-1] if rows else {})
        epoch = int(row["epoch"]) if "epoch" in row else None
        last = {k: float(v) for k, v in row.items() if k not in ("epoch", "phase")}
    metrics: dict[str, Any] = {
        "train": {k: v for k, v in last.items() if not k.startswith("val_")},
        "validation": {k[4:]: v for k, v in last.items() if k.startswith("val_")},
    }
    if epoch is not None:
        metrics["epoch"] = epoch
    return metrics


def _restored_epoch(callbacks: list) -> tuple[int, str] | None:
    """The epoch whose weights a callback put back at the end of training
    (``EarlyStopping(restore_best_weights=True)``), and which callback: None when the model
    holds the last epoch's weights."""
    import keras

    for callback in callbacks:
        if (isinstance(callback, keras.callbacks.EarlyStopping)
                and callback.restore_best_weights and callback.best_weights is not None):
            return int(callback.best_epoch), (f"EarlyStopping(monitor={callback.monitor}, "
                                              "restore_best_weights=True)")
    return None


def _evaluate_test(model: Any, job: Job) -> dict[str, float]:
    if job.dist is not None and job.dist.preemption_dir is not None:
        # multi_worker: Keras's evaluate fails there as fit does (keras-team/keras#20585).
        from kexp.training.custom_loop import evaluate_custom

        result = evaluate_custom(model, job.test_ds, strategy=job.dist.strategy)
    else:
        result = model.evaluate(job.test_ds, verbose=0, return_dict=True)
    return {k: float(v) for k, v in result.items()}


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler stopping the job) is handled like Ctrl-C: state is kept and the
    run marked interrupted."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    if sys.platform == "win32":
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
