"""``--quiet``: only a command's final lines (the run directory, the metrics) and errors.

The choice is kept in the environment (``KEXP_QUIET=1``) so that the worker processes a
command starts (``--local-workers``, a sweep's trials) are quiet too. Every command with
``-q/--quiet`` (``kexp.cli.options.QuietOpt``) calls ``set_quiet``; progress displays and
notices check ``quiet()``.
"""

from __future__ import annotations

import os
import sys

__all__ = ["set_quiet", "quiet", "notice"]


def set_quiet(on: bool) -> None:
    if on:
        os.environ["KEXP_QUIET"] = "1"


def quiet() -> bool:
    return os.environ.get("KEXP_QUIET", "") not in ("", "0")


def notice(message: str) -> None:
    """A line about what is happening (not a result, not an error), on stderr."""
    if not quiet():
        print(message, file=sys.stderr, flush=True)
