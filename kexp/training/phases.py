"""``train.phases``: several training phases in one run, as transfer learning does them.

```yaml
train:
  phases:
    - {epochs: 5}                                          # the head: the backbone is frozen
    - {epochs: 10, unfreeze: {layer: backbone, from: block_13_expand},
       optimizer: {type: Adam, learning_rate: 1.0e-5}}     # fine-tune the top blocks
```

Phases run in order in one run. Each begins by applying its ``unfreeze`` then ``freeze``
(``kexp.models.applications.apply_freezing``) to the model as the phases before left it,
then compiles the model with its ``optimizer`` (a new one; default ``compile.optimizer``) --
the usual two ``compile`` calls of fine-tuning -- and trains with its ``callbacks`` (new ones;
default ``train.callbacks``) from the epoch the previous phase ended at. Epoch numbers run on
across phases (``history.csv`` has a ``phase`` column; TensorBoard and the checkpoints go on).
``train.epochs`` is the phases' total. ``--smoke`` runs every phase for one epoch.

A resumed run rebuilds the model, replays the (un)freezing of every phase up to the one it
resumes in, and continues there; at a phase's first epoch it starts with that phase's new
optimizer and callbacks, as an uninterrupted run does.

This module imports no TensorFlow at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kexp.config.schema import Component, Config, PhaseSpec

__all__ = ["Phase", "Start", "plan_phases", "starting_phase", "next_phase",
           "check_freeze_names", "phase_compile", "phase_callbacks"]


@dataclass(frozen=True)
class Phase:
    """Phase ``index`` trains epochs ``start`` to ``end - 1``."""

    index: int
    start: int
    end: int
    spec: PhaseSpec


def plan_phases(cfg: Config, smoke: bool = False) -> list[Phase]:
    """The phases as planned, back to back (one phase of ``train.epochs`` without
    ``phases:``); under ``--smoke`` one epoch each."""
    specs = cfg.train.phases or [PhaseSpec(epochs=cfg.train.epochs)]
    phases, start = [], 0
    for i, spec in enumerate(specs):
        length = 1 if smoke else spec.epochs
        phases.append(Phase(i, start, start + length, spec))
        start += length
    return phases


@dataclass(frozen=True)
class Start:
    """Where a process starts training: the phase, whether that phase begins at this epoch
    (its optimizer and callbacks are new), and whether nothing is left to train."""

    phase: Phase
    begins: bool
    done: bool = False


def starting_phase(cfg: Config, smoke: bool, start: int, rows: list[dict[str, Any]],
                   stopped: bool = False, extended: bool = False) -> Start:
    """The phase a run resumed at epoch ``start`` is in, from the ``phase`` column of its
    ``history.csv`` (``rows``, the epochs before ``start``) and whether a callback had
    stopped training (``stopped``): that ends its phase. A new run starts phase 0."""
    planned = plan_phases(cfg, smoke)
    if not cfg.train.phases:
        phase = planned[0]
        return Start(phase, start == 0, start >= phase.end or (stopped and not extended))
    rows = [r for r in rows if int(r["epoch"]) < start and "phase" in r]
    if not rows:
        return Start(planned[0], True)
    index = int(rows[-1]["phase"])
    first = min(int(r["epoch"]) for r in rows if int(r["phase"]) == index)
    phase = _at(planned[index], first)
    if (stopped and not extended) or start >= phase.end:
        following = next_phase(cfg, smoke, phase, start)
        if following is None:
            return Start(phase, False, done=True)
        return Start(following, True)
    return Start(phase, start == first)


def next_phase(cfg: Config, smoke: bool, phase: Phase, at: int) -> Phase | None:
    """The phase after ``phase``, starting at epoch ``at`` (None after the last one)."""
    planned = plan_phases(cfg, smoke)
    return _at(planned[phase.index + 1], at) if phase.index + 1 < len(planned) else None


def _at(phase: Phase, start: int) -> Phase:
    return Phase(phase.index, start, start + phase.end - phase.start, phase.spec)


def freeze_for(model: Any, cfg: Config, phase: Phase, replay: bool) -> None:
    """Apply the phase's (un)freezing; ``replay``: the phases' before it first, in order (a
    rebuilt model, resumed in that phase)."""
    from kexp.models.applications import apply_freezing

    for i, spec in enumerate((cfg.train.phases or [])[:phase.index + 1]):
        if replay or i == phase.index:
            apply_freezing(model, spec.freeze, spec.unfreeze, f"train.phases[{i}]",
                           cfg.sources)


def check_freeze_names(model: Any, cfg: Config) -> None:
    """Every phase's freeze/unfreeze names a layer (and sublayer) of the built model.

    Raises:
        ConfigError: at the phase's key, before the run directory exists.
    """
    from kexp.models.applications import apply_freezing

    for i, spec in enumerate(cfg.train.phases or []):
        apply_freezing(model, spec.freeze, spec.unfreeze, f"train.phases[{i}]", cfg.sources,
                       dry_run=True)


def phase_compile(cfg: Config, phase: Phase) -> Any:
    """``compile:`` with the phase's optimizer."""
    if phase.spec.optimizer is None:
        return cfg.compile
    return cfg.compile.model_copy(update={"optimizer": phase.spec.optimizer})


def phase_callbacks(cfg: Config, phase: Phase) -> list[Component]:
    """The phase's callbacks (``train.callbacks`` unless it names its own)."""
    return cfg.train.callbacks if phase.spec.callbacks is None else phase.spec.callbacks
