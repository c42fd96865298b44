"""``kexp export RUN_DIR``: the run's model for serving (SavedModel or TFLite), checked
against ``kexp predict`` before it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from kexp.cli.evaluate import CheckpointOpt
from kexp.cli.options import RunDirArg, chosen_run


def export(
    run_dir: Path = RunDirArg,
    checkpoint: Literal["final", "best", "last"] = CheckpointOpt,
    fmt: Literal["saved_model", "tflite"] = typer.Option(
        "saved_model", "--format", "-f",
        help="saved_model: a TensorFlow SavedModel with a 'serve' signature (inputs and "
        "outputs named like the model's); tflite: a TensorFlow Lite file."),
    output: Path = typer.Option(
        None, "--output", "-o", show_default=False,
        help="Where to write it (replaced if present). Default: "
        "<run>/export/<checkpoint>/saved_model or .../model.tflite."),
) -> None:
    """Export a run's model; load it back with plain TensorFlow, compare its predictions on
    a batch of validation data with kexp predict's, and fail (exit 1) when they differ."""
    from kexp.serving import export_run

    result = export_run(chosen_run(run_dir, checkpoint), checkpoint, fmt, output)
    typer.echo(f"wrote {result.path} ({result.format}, checkpoint {result.checkpoint}; "
               f"inputs {', '.join(result.inputs)}; outputs {', '.join(result.outputs)})")
    typer.echo(f"check: max abs difference from kexp predict {result.max_abs_diff:.3g} on "
               f"{result.samples} validation samples (allowed {result.tolerance:g}): ok")
