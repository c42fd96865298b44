"""Exceptions kexp raises for the person at the keyboard.

The CLI turns ``ConfigError`` and ``DataError`` into exit code 2 and ``TrainingError`` into
exit code 1, in one place (``kexp.cli.app``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["KexpError", "Problem", "ConfigError", "DataError", "TrainingError", "error_line"]


class KexpError(Exception):
    """Base class of every error kexp reports without a traceback."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where it is, and what was expected.

    ``path`` is the config path (``model.layers[2].units``), ``where`` the source
    (``configs/x.yaml:12:7`` or ``--set model.layers[0].units=3``).
    """

    path: str
    message: str
    where: str = ""
    suggestion: str = ""

    def __str__(self) -> str:
        head = f"{self.where}: " if self.where else ""
        at = f"{self.path}: " if self.path else ""
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return f"{head}{at}{self.message}{hint}"


class ConfigError(KexpError):
    """A config (or command-line override) that cannot be run. Holds every problem found."""

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"config error: {self.problems[0]}"
        lines = [f"config error: {len(self.problems)} problems"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class DataError(KexpError):
    """Data that cannot be used: a missing, empty, ragged or non-numeric file, names that do
    not match the model. The message names the file (and row) or the config path."""


class TrainingError(KexpError):
    """A failure only detectable while training (a NaN loss, ...): the run is marked failed."""

    exit_code = 1


def error_line(exc: BaseException) -> str:
    """The line of an exception's message that says what is wrong, for a one-line report.

    Keras wraps a layer's complaint in "Exception encountered when calling X.call()" and bold
    terminal codes, TensorFlow an op's in ``{{function_node ...}}`` and ``[Op:...]``; those
    are dropped. The exception's type name when the message is empty.
    """
    text = str(getattr(exc, "message", None) or exc)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines
             if line and not line.startswith("Exception encountered when calling")]
    line = re.sub(r"\s*\[Op:[^\]]*\].*$", "", lines[0]) if lines else ""
    if line == "Graph execution error:":  # TensorFlow's op message is further down
        line = _op_message(text) or line
    return line or type(exc).__name__


def _op_message(text: str) -> str:
    """From TensorFlow's "Graph execution error:" report, the failing op's own message
    (``Incompatible shapes: [32] vs. [32,2]``) and the node it names, which tells the loss or
    metric (``compile_loss/mean_squared_error/sub``); the Python stack in between is left out.
    """
    node = re.search(r"Detected at node '?([^'\s]+)'?", text)
    message = ""
    for raw in text.splitlines():
        if not raw.strip() or raw.startswith((" ", "\t")) or raw.strip().startswith("[["):
            continue
        if raw.startswith(("Graph execution error", "Detected at node")):
            continue
        message = re.sub(r"\s*\[Op:[^\]]*\].*$", "", raw.strip())
        break
    if not message:
        return ""
    return f"{message} (at TensorFlow node {node.group(1)})" if node else message
