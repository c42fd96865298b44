"""Learning curves as PNG, drawn with matplotlib's Agg canvas (no display, no ``pyplot``
state): ``curves.png`` in every run directory (``draw_run_curves``), and the figures of
``kexp compare --plot``.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kexp.results import read_result
from kexp.runs import atomic_path

__all__ = ["CURVES_FILE", "draw_run_curves", "draw_run_curves_at_end", "warm_up", "curve_panels",
           "figure", "epoch_axis"]

CURVES_FILE = "curves.png"
# history.csv columns that are not a metric curve.
_NOT_CURVES = ("epoch", "phase", "learning_rate", "lr")


def curve_panels(columns: list[str]) -> list[tuple[str, str | None]]:
    """One ``(train column, validation column)`` pair per metric, loss first; either side
    may be missing (``None``/absent) when only one was logged."""
    names: list[str] = []
    for column in columns:
        base = column.removeprefix("val_")
        if column in _NOT_CURVES or base in _NOT_CURVES or base in names:
            continue
        names.append(base)
    names.sort(key=lambda n: (n != "loss", not n.endswith("loss")))
    return [(n, f"val_{n}" if f"val_{n}" in columns else None) for n in names]


def draw_run_curves(run_dir: Path) -> Path:
    """Draw ``<run_dir>/curves.png`` from its ``history.csv``: loss and every metric per
    epoch, train and validation in one panel per metric, the best epoch of the run's
    monitored metric marked. A run without a completed epoch gets a figure saying so."""
    result = read_result(Path(run_dir))
    history = {k: v for k, v in result.history.items() if v}
    panels = curve_panels(list(history))
    monitor = result.monitor if result.monitor in history else (
        "val_loss" if "val_loss" in history else "loss")
    best = result.best_epoch(monitor) if monitor in history else None
    epochs = history.get("epoch") or list(range(len(next(iter(history.values()), []))))
    file = Path(run_dir) / CURVES_FILE
    with figure(max(len(panels), 1), file) as (fig, axes):
        fig.suptitle(f"{result.name} — {result.status}, {len(epochs)} epoch(s)"
                     + (f"; best {monitor} at epoch {epochs[best]}" if best is not None
                        else ""))
        if not panels:
            axes[0].text(0.5, 0.5, "no completed epoch", ha="center", va="center")
            axes[0].set_axis_off()
        for ax, (train, val) in zip(axes, panels, strict=False):
            for column, label in ((train, "train"), (val, "validation")):
                if column in history:
                    ax.plot(epochs, history[column], marker="o", markersize=3, label=label)
            if best is not None:
                ax.axvline(epochs[best], color="gray", linestyle="--", linewidth=1,
                           label=f"best {monitor} (epoch {epochs[best]})")
                if monitor in (train, val):
                    ax.plot([epochs[best]], [history[monitor][best]], marker="*",
                            markersize=12, color="crimson", linestyle="none")
            ax.set_title(train)
            epoch_axis(ax, epochs[0], epochs[-1])
            ax.legend(fontsize="small")
    return file


def warm_up() -> None:
    """Import matplotlib in a background thread while the run trains, so that drawing at its
    end costs only the drawing (the import is most of the time: ~0.5 s of a 3 s smoke run)."""
    if "matplotlib.backends.backend_agg" in sys.modules:
        return
    threading.Thread(target=_import_matplotlib, name="kexp-curves-import", daemon=True).start()


def _import_matplotlib() -> None:
    with contextlib.suppress(Exception):  # drawing imports it again and reports the error
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401


def draw_run_curves_at_end(run_dir: Path) -> None:
    """``draw_run_curves`` as a run ends (completed, failed or interrupted): a figure that
    cannot be drawn is a warning on stderr, never a failure of the run."""
    try:
        draw_run_curves(run_dir)
    except Exception as exc:  # noqa: BLE001 -- the run's own outcome matters more
        print(f"warning: {Path(run_dir) / CURVES_FILE} not drawn: {type(exc).__name__}: "
              f"{exc}", file=sys.stderr)


@contextlib.contextmanager
def figure(panels: int, file: Path) -> Iterator[tuple[Any, list[Any]]]:
    """A figure of ``panels`` axes, up to three per row, drawn in matplotlib's default style
    (whatever style a plugin or Optuna set in this process) and written to ``file`` as PNG,
    atomically, when the block ends."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(4.8 * cols, 3.6 * rows), layout="constrained")
        FigureCanvasAgg(fig)
        grid = fig.subplots(rows, cols, squeeze=False)
        cells = [ax for row in grid for ax in row]
        for ax in cells[panels:]:
            ax.set_visible(False)
        yield fig, cells[:panels]
        with atomic_path(file) as tmp:
            fig.savefig(tmp, format="png", dpi=100)


def epoch_axis(ax: Any, first: float, last: float) -> None:
    """Label ``ax``'s x axis as whole epochs from ``first`` to ``last`` (half an epoch of
    margin, so that a single epoch is a point in the middle), with a light grid."""
    from matplotlib.ticker import MultipleLocator

    ax.set_xlabel("epoch")
    ax.set_xlim(first - 0.5, last + 0.5)
    ax.xaxis.set_major_locator(MultipleLocator(max(1, math.ceil((last - first) / 8))))
    ax.grid(True, alpha=0.3)
