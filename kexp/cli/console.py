"""The Rich console kexp's tables print to."""

from __future__ import annotations

from typing import Any

__all__ = ["console"]


def console() -> Any:
    """A console for stdout; when stdout is not a terminal (a pipe, a log, CI), wide enough
    that run names and paths are not folded into narrow columns."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=200)
