"""A trial, from inside its ``kexp train`` process.

``kexp sweep`` starts each trial as ``kexp train CONFIG --set PATH=VALUE...`` (or
``kexp train --resume RUN_DIR``) with ``KEXP_TRIAL`` in the environment: a JSON object
naming the study storage (which may hold a password, so it is passed in the environment,
never on a command line that run.json records), the study, the trial, the metric, the
pruner and the run directory to create. The process then

- trains into exactly that run directory (``<sweep>/trials/NNNN``), whose run.json says
  which sweep and trial it is;
- reports the metric to the study at the end of every epoch, in both loops, and asks the
  pruner (``kexp.sweep.report.TrialReporter``): when it says prune, training stops after
  that epoch and the run is marked ``pruned``;
- writes the trial's parameters as TensorBoard HParams data in ``<run>/logs``.

``kexp sweep`` itself reads the outcome from the run directory and tells the study.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexp.runs import Run

__all__ = ["ENV", "TrialContext", "trial_from_env"]

ENV = "KEXP_TRIAL"


@dataclass(frozen=True)
class TrialContext:
    storage: str
    study: str
    trial_id: int
    number: int
    metric: str
    pruner: dict[str, Any]
    run_dir: Path
    sweep_dir: Path
    params: dict[str, Any]

    def info(self) -> dict[str, Any]:
        """What the trial's run.json says about the sweep."""
        return {"sweep": {"dir": str(self.sweep_dir), "study": self.study,
                          "trial": self.number, "params": self.params,
                          "metric": self.metric}}

    def to_env(self) -> str:
        data = {k: str(v) if isinstance(v, Path) else v for k, v in vars(self).items()}
        return json.dumps(data)

    def reporter(self, tensorboard: bool = True) -> Any:
        """The callback that reports to the study (``kexp.sweep.report``; imports Keras)."""
        from kexp.sweep.report import TrialReporter

        return TrialReporter(self, tensorboard)

    def finish(self, run_dir: Path) -> None:
        """After training returns: a run the pruner stopped is ``pruned``, not completed."""
        run = Run(Path(run_dir))
        record = run.record()
        if record.pruned_epoch is not None and record.status == "completed":
            run.update(status="pruned", reason=f"pruned after epoch {record.pruned_epoch} "
                       f"({self.pruner.get('type')} pruner, {self.metric})")


def trial_from_env() -> TrialContext | None:
    """The trial this process trains, or None outside a sweep."""
    text = os.environ.get(ENV)
    if not text:
        return None
    data = json.loads(text)
    data["run_dir"], data["sweep_dir"] = Path(data["run_dir"]), Path(data["sweep_dir"])
    return TrialContext(**data)
