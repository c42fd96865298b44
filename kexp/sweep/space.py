"""The search space of a ``sweep:`` block: Optuna's suggestions, and the check that every
value it can produce makes a valid config — before any trial starts.

A parameter is a ``--set`` path (``model.layers[0].units``); a trial's values reach its
``kexp train`` process as ``--set PATH=VALUE`` overrides (VALUE as JSON, which is YAML).
Optuna's categorical distributions hold ``None``, booleans, numbers and strings only, so
choices that are lists or mappings (``{type: Adam, learning_rate: 1e-3}``) are given to
Optuna as their JSON text and turned back into values here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kexp.config.schema import CategoricalParam, Config, FloatParam, IntParam
from kexp.errors import ConfigError, Problem

__all__ = ["suggest", "grid_space", "grid_size", "as_set", "check_space", "check_metric",
           "history_columns", "decode"]

Param = FloatParam | IntParam | CategoricalParam


def _encoded(param: CategoricalParam) -> list[Any]:
    """The choices as Optuna may hold them."""
    if all(c is None or isinstance(c, (bool, int, float, str)) for c in param.choices):
        return list(param.choices)
    return [json.dumps(c, sort_keys=True) for c in param.choices]


def decode(param: Param, value: Any) -> Any:
    """A value as Optuna recorded it -> the config value."""
    if isinstance(param, CategoricalParam) and _encoded(param) != list(param.choices):
        return json.loads(value)
    return value


def suggest(trial: Any, params: dict[str, Param]) -> dict[str, Any]:
    """Ask ``trial`` (an ``optuna.Trial``) for one value per parameter: ``{path: value}``."""
    values = {}
    for path, param in params.items():
        if isinstance(param, CategoricalParam):
            value = trial.suggest_categorical(path, _encoded(param))
        elif isinstance(param, IntParam):
            value = trial.suggest_int(path, param.low, param.high, step=param.step or 1,
                                      log=param.log)
        else:
            value = trial.suggest_float(path, param.low, param.high, step=param.step,
                                        log=param.log)
        values[path] = decode(param, value)
    return values


def grid_space(cfg: Config) -> dict[str, list[Any]]:
    """Every value of every parameter, for Optuna's ``GridSampler``; a float needs ``step``.

    Raises:
        ConfigError: a float parameter without ``step`` (a grid needs finitely many values).
    """
    space, problems = {}, []
    for path, param in cfg.sweep.params.items():
        if isinstance(param, CategoricalParam):
            space[path] = _encoded(param)
        elif isinstance(param, FloatParam) and param.step is None:
            problems.append(Problem(
                f"sweep.params[{path!r}]",
                "the grid sampler needs finitely many values: give a float parameter a "
                "`step:` (or use type: categorical, or sampler: tpe / random)",
                _where_param(cfg, path)))
        else:
            step = param.step or 1
            count = int(round((param.high - param.low) / step)) + 1
            values = [param.low + i * step for i in range(count) if param.low + i * step
                      <= param.high + 1e-12]
            space[path] = [int(v) if isinstance(param, IntParam) else float(v) for v in values]
    if problems:
        raise ConfigError(problems)
    return space


def grid_size(space: dict[str, list[Any]]) -> int:
    size = 1
    for values in space.values():
        size *= len(values)
    return size


def as_set(path: str, value: Any) -> str:
    """``--set PATH=VALUE`` for a trial's value (JSON is YAML, and keeps 1e-05 a float)."""
    return f"{path}={json.dumps(value)}"


def _probes(param: Param) -> list[Any]:
    """The values of a parameter the config check is run on: its ends, or every choice."""
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    return [param.low, param.high] if param.low != param.high else [param.low]


def _where_param(cfg: Config, path: str) -> str:
    return cfg.sources.where(("sweep", "params", path)) if cfg.sources else ""


def check_space(cfg: Config, config: Path, sets: list[str], plugins: list[str]) -> None:
    """Run the config check (``load_config`` with the value as an override) on every value
    each parameter can take — its ``low`` and ``high``, or each of its ``choices`` — the others
    as the config has them. Raises one ``ConfigError`` with every refused value, located at
    the parameter's line in the ``sweep:`` block."""
    from kexp.config import load_config

    problems: list[Problem] = []
    for path, param in cfg.sweep.params.items():
        where = _where_param(cfg, path)
        for value in _probes(param):
            override = as_set(path, value)
            try:
                load_config(config, [*sets, override], plugins)
            except ConfigError as exc:
                problems += [_relocate(p, path, value, override, where) for p in exc.problems]
                if any(_unknown_path(p, override) for p in exc.problems):
                    break  # an unknown path: one message, not one per value
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))


def _unknown_path(problem: Problem, override: str) -> bool:
    """The override's path leads nowhere (``kexp.config.load.apply_sets``)."""
    return problem.where == f"--set {override}" and problem.message.startswith(
        "the config has no")


def _relocate(problem: Problem, path: str, value: Any, override: str, where: str) -> Problem:
    """A problem found with a parameter's value, told at the parameter's line."""
    shown = json.dumps(value)
    if _unknown_path(problem, override):
        return Problem(f"sweep.params[{path!r}]",
                       f"{path} is not a path in this config: {problem.message}", where)
    at = f"{problem.path}: " if problem.path and problem.path != path else ""
    return Problem(f"sweep.params[{path!r}]", f"the value {shown} is refused: {at}"
                   f"{problem.message}", where, problem.suggestion)


def _snake(name: str) -> str:
    """Keras's default metric name for a class (``MeanAbsoluteError`` ->
    ``mean_absolute_error``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _metric_names(value: Any) -> set[str]:
    from kexp.config.schema import Component

    if value is None:
        return set()
    if isinstance(value, Component):
        named = value.args.get("name")
        return {str(named)} if named else {value.type, _snake(value.type)}
    if isinstance(value, list):
        return {n for item in value for n in _metric_names(item)}
    return set()


def history_columns(cfg: Config) -> set[str]:
    """The columns ``history.csv`` of this config will have (without building anything): the
    losses and every metric, with ``val_`` twins when there is validation data."""
    from kexp.config.check import model_output_names

    metrics = cfg.compile.metrics
    per_output: dict[str, set[str]] = {}
    if isinstance(metrics, dict):
        per_output = {out: _metric_names(m) for out, m in metrics.items()}
        names = set()
    else:
        names = _metric_names(metrics)
    outputs = set(model_output_names(cfg.model)) | set(per_output)
    if isinstance(cfg.compile.loss, dict):
        outputs |= set(cfg.compile.loss)
    columns = {"loss"} | names
    for out in outputs:
        columns |= {f"{out}_loss"} | {f"{out}_{n}" for n in per_output.get(out, names)}
    if cfg.compile.weighted_metrics is not None:  # named as kexp validate derives them
        from kexp.config.logged import logged_names

        columns |= {n for n in logged_names(cfg, model_output_names(cfg.model)) or ()
                    if not n.startswith("val_") and n != "learning_rate"}
    if cfg.data.validation_split is not None or cfg.data.validation is not None:
        columns |= {f"val_{c}" for c in columns}
    return columns


def check_metric(cfg: Config) -> None:
    """``sweep.metric`` must be a column of the trials' ``history.csv``."""
    from kexp.config.errors import closest

    metric = cfg.sweep.metric
    columns = history_columns(cfg)
    if metric in columns:
        return
    hint = ("" if cfg.data.validation_split is not None or cfg.data.validation is not None
            or not metric.startswith("val_") else
            " (there is no validation data: set data.validation_split or data.validation)")
    raise ConfigError(Problem(
        "sweep.metric",
        f"{metric!r} is not a column of this config's history.csv{hint}; expected one of: "
        f"{', '.join(sorted(columns))}",
        cfg.sources.where(("sweep", "metric")) if cfg.sources else "",
        closest(metric, columns)))
