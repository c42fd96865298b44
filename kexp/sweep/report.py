"""The callback a trial's ``kexp train`` process runs: it reports the sweep's metric to the
study every epoch and stops training when the pruner says so (``kexp.sweep.trial``)."""

from __future__ import annotations

import json
import math
import sys
from typing import TYPE_CHECKING

import keras

from kexp.runs import Run
from kexp.sweep.study import redact

if TYPE_CHECKING:
    from kexp.sweep.trial import TrialContext

__all__ = ["TrialReporter"]


class TrialReporter(keras.callbacks.Callback):
    """Reports ``metric`` to the study each epoch and stops training when the pruner says
    so (within the epoch of the decision). Writes the HParams session once, at the start."""

    def __init__(self, trial: TrialContext, tensorboard: bool = True):
        super().__init__()
        import optuna

        from kexp.config.schema import Component
        from kexp.sweep.study import make_pruner, open_storage

        self.context = trial
        self.tensorboard = tensorboard
        study = optuna.load_study(study_name=trial.study, storage=open_storage(trial.storage),
                                  pruner=make_pruner(Component(**trial.pruner)))
        self.trial = optuna.trial.Trial(study, trial.trial_id)

    def on_train_begin(self, logs=None):
        if self.tensorboard:
            self._write_hparams()

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.context.metric)
        try:
            value = float(value)
        except (TypeError, ValueError):
            return
        if not math.isfinite(value):
            return
        try:
            self.trial.report(value, epoch)
            prune = self.trial.should_prune()
        except Exception as exc:  # the study's database is away: train on, unpruned
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"warning: epoch {epoch} not reported to the study: "
                  f"{redact(first)}", file=sys.stderr)
            return
        if prune:
            self.model.stop_training = True
            Run(self.context.run_dir).update(pruned_epoch=epoch)

    def _write_hparams(self) -> None:
        """One HParams session per trial, beside the epoch scalars of the sweep's metric
        (``logs/validation`` for a ``val_`` metric, else ``logs/train``), where the
        dashboard finds the session's metrics."""
        run = Run(self.context.run_dir)
        if run.record().hparams_logged:
            return  # a resumed trial: written by its first process
        split = "validation" if self.context.metric.startswith("val_") else "train"
        logs = self.context.run_dir / "logs" / split
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        values = {path: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
                  for path, v in self.context.params.items()}
        writer = tf.summary.create_file_writer(str(logs))
        with writer.as_default():
            hp.hparams(values, trial_id=f"{self.context.number:04d}")
        writer.close()
        run.update(hparams_logged=True)
