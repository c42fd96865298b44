"""What a training run writes to its ``run.json`` (a ``kexp.runs.RunRecord``) when it starts
or resumes; the per-epoch and final updates are made by ``RunRecorder`` and
``kexp.training.fit``."""

from __future__ import annotations

import dataclasses
from typing import Any

from kexp.config.schema import Config
from kexp.runs import Run, RunRecord, config_hash, now, versions
from kexp.training.distribute import cluster_info
from kexp.training.setup import Job, TrainOptions, planned_epochs

__all__ = ["record_start", "record_resume"]


def record_start(cfg: Config, options: TrainOptions, run: Run, model: Any, splits: Any,
                 strategy: Any) -> None:
    """A new run's first files, written while its directory is being created (``Run.create``):
    ``config.yaml``, ``summary.txt`` and ``run.json`` (status ``running``)."""
    from kexp.models.inspect import summary_text
    from kexp.training.callbacks import resolve_monitor
    from kexp.training.threads import threads_in_use

    run.write_yaml("config.yaml", cfg.to_yaml_dict())
    run.write_text("summary.txt", summary_text(model) + "\n")
    run.write_record(RunRecord(
        name=cfg.run_name(),
        status="running",
        started=now(),
        command=list(options.command),
        config_file=str(cfg.file) if cfg.file else None,
        config_hash=config_hash(cfg.to_yaml_dict()),
        seed=cfg.seed,
        deterministic=cfg.deterministic,
        threads=threads_in_use(),
        loop=cfg.train.loop,
        smoke=options.smoke,
        epochs=planned_epochs(cfg, options),
        monitor=resolve_monitor(cfg.train.monitor, splits.validation is not None),
        plugins=list(cfg.plugins),
        versions=versions(),
        epochs_completed=0,
        cluster=cluster_info(cfg, strategy) if strategy is not None else None,
        class_names=getattr(splits.train, "class_names", None) or None,
        class_weight=_recorded_class_weight(cfg, model, splits),
    ).with_extra(options.info))


def _recorded_class_weight(cfg: Config, model: Any, splits: Any) -> dict[str, float] | None:
    from kexp.training.weights import class_weights

    weights = class_weights(cfg, model, splits)
    return None if weights is None else {str(k): v for k, v in sorted(weights.items())}


def record_resume(cfg: Config, options: TrainOptions, run: Run, extended: bool,
                  job: Job) -> None:
    """run.json (and, when ``train.epochs`` changed, config.yaml): running again, and when
    from which epoch."""
    record = run.record()
    entry: dict[str, Any] = {"at": now(), "epoch": job.start, "command": list(options.command)}
    if job.dist is not None:
        entry.update(step=job.start * job.steps + job.dist.initial_step,
                     cluster=cluster_info(cfg, job.dist.strategy))
    record = dataclasses.replace(
        record, status="running", epochs=job.epochs, epochs_completed=job.start,
        resumed=[*record.resumed, entry], ended=None, reason=None, final_metrics=None)
    if extended:
        run.write_yaml("config.yaml", cfg.to_yaml_dict())
        record.config_hash = config_hash(cfg.to_yaml_dict())
    run.write_record(record)
