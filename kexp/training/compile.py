"""``model.compile`` from a config's ``compile:`` section."""

from __future__ import annotations

from typing import Any

from kexp.components import build
from kexp.config.schema import CompileSpec, Component
from kexp.registry import LOSSES, METRICS, OPTIMIZERS

__all__ = ["compile_model", "AUTO_STEPS_PER_EXECUTION"]

# What `steps_per_execution: auto` means when no callback needs every batch: enough steps per
# call to amortise the per-call overhead (measured by `make bench`), few enough that the
# progress bar still moves several times per epoch.
AUTO_STEPS_PER_EXECUTION = 32


def compile_model(model: Any, spec: CompileSpec, *, steps_per_epoch: int,
                  every_batch: bool, aligned: bool = True) -> None:
    """Compile ``model`` as the config says.

    ``every_batch`` is true when a callback needs to see each batch (a per-batch loss
    plotter): ``steps_per_execution: auto`` is then 1. ``aligned`` is true when one
    iterator runs through every epoch, so executions must not cross an epoch's end.

    Example:
        ```yaml
        compile:
          optimizer: {type: RMSprop, learning_rate: 1e-3}
          loss: {priority: mean_squared_error, department: categorical_crossentropy}
          metrics: {priority: [mean_absolute_error], department: [accuracy]}
        ```
    """
    model.compile(
        optimizer=build(spec.optimizer, OPTIMIZERS),
        loss=_per_output(spec.loss, LOSSES),
        loss_weights=spec.loss_weights,
        metrics=_per_output(spec.metrics, METRICS),
        weighted_metrics=_per_output(spec.weighted_metrics, METRICS),
        steps_per_execution=steps_per_execution(spec, steps_per_epoch, every_batch, aligned),
        jit_compile=spec.jit_compile,
    )


def steps_per_execution(spec: CompileSpec, steps_per_epoch: int, every_batch: bool,
                        aligned: bool = True) -> int:
    """The configured value, or what ``auto`` picks."""
    if spec.steps_per_execution != "auto":
        return spec.steps_per_execution
    if every_batch:
        return 1
    if not aligned:  # a new iterator each epoch: the last call just stops at the data's end
        return max(1, min(AUTO_STEPS_PER_EXECUTION, steps_per_epoch))
    # A divisor of the epoch's steps: with one iterator through every epoch, Keras runs
    # whole executions, so any other value would carry an epoch into the next one's batches.
    return max(d for d in range(1, min(AUTO_STEPS_PER_EXECUTION, steps_per_epoch) + 1)
               if steps_per_epoch % d == 0)


def _per_output(value: Any, registry: Any) -> Any:
    """One component, a list (output order) or a mapping (output names), built alike."""
    if value is None:
        return None
    if isinstance(value, Component):
        return build(value, registry)
    if isinstance(value, list):
        return [_per_output(v, registry) for v in value]
    return {k: _per_output(v, registry) for k, v in value.items()}
