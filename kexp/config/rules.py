"""Rules between keys of a typed config: values that are each fine alone but not together
(a strategy's options under another strategy, ``validation:`` with ``validation_split:``).

They run in the config check, without TensorFlow, so ``kexp validate`` refuses what
``kexp train`` would refuse; nothing downstream checks them again. What depends on the machine
(does ``/gpu:1`` exist here?) is checked where the strategy starts.
"""

from __future__ import annotations

from kexp.config.schema import Config
from kexp.errors import Problem

__all__ = ["rule_problems"]


def rule_problems(cfg: Config, sections: set[str]) -> list[Problem]:
    """Every rule between keys whose sections passed the schema (``sections``)."""
    problems: list[Problem] = []
    if "distribute" in sections:
        problems += _distribute_options(cfg)
        if "train" in sections:
            problems += _loop_under_strategy(cfg)
        if {"train", "compile"} <= sections:
            problems += _steps_per_execution_under_strategy(cfg)
    if "data" in sections and cfg.data is not None:
        problems += _validation_given_twice(cfg) + _cache_named(cfg)
    return problems


def _distribute_options(cfg: Config) -> list[Problem]:
    """``devices`` belong to ``mirrored``, ``communication`` to ``multi_worker``."""
    spec = cfg.distribute
    problems = []
    if spec.devices and spec.strategy != "mirrored":
        problems.append(Problem(
            "distribute.devices", "only the mirrored strategy takes devices; received "
            f"strategy: {spec.strategy} with devices: {spec.devices}"))
    if spec.communication != "auto" and spec.strategy != "multi_worker":
        problems.append(Problem(
            "distribute.communication", "only the multi_worker strategy takes "
            f"communication; received strategy: {spec.strategy} with communication: "
            f"{spec.communication}"))
    return problems


def _loop_under_strategy(cfg: Config) -> list[Problem]:
    """Keras 3's ``model.fit`` fails under ``MultiWorkerMirroredStrategy``."""
    if cfg.distribute.strategy != "multi_worker" or cfg.train.loop != "fit":
        return []
    return [Problem(
        "train.loop",
        "multi_worker training needs `train.loop: custom`: Keras 3's model.fit fails under "
        "MultiWorkerMirroredStrategy (keras-team/keras#20585, 'Attempt to convert a value "
        "(PerReplica...)'); kexp's custom loop runs it with strategy.run")]


def _steps_per_execution_under_strategy(cfg: Config) -> list[Problem]:
    """Keras 3.15's ``model.fit`` fails under a strategy with more than one step per call."""
    spe = cfg.compile.steps_per_execution
    if cfg.distribute.strategy == "default" or cfg.train.loop != "fit" or spe == "auto" \
            or spe <= 1:
        return []
    return [Problem(
        "compile.steps_per_execution",
        "Keras 3.15's model.fit fails under a distribution strategy with more than one step "
        f"per execution; received {spe} with distribute.strategy: {cfg.distribute.strategy}. "
        "Expected: 1 or auto, or train.loop: custom")]


def _validation_given_twice(cfg: Config) -> list[Problem]:
    data = cfg.data
    if data.validation is None or not data.validation_split:
        return []
    return [Problem("data.validation_split", "give either `validation:` (a dataset) or "
                    "`validation_split:` (a fraction of train), not both")]


def _cache_named(cfg: Config) -> list[Problem]:
    """``cache:`` is true, false, ``memory`` or a file path: not an empty name."""
    if cfg.data.cache != "":
        return []
    return [Problem("data.cache", "expected memory, a file path, true or false; received ''")]
