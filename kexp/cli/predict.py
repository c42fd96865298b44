"""``kexp predict RUN_DIR --input FILE``: a run's model applied to new data."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from kexp.cli.evaluate import CheckpointOpt
from kexp.cli.options import RunDirArg, chosen_run


def predict(
    run_dir: Path = RunDirArg,
    input_file: Path = typer.Option(
        ..., "--input", "-i", show_default=False,
        help="Features to predict on. .npz: one array per model input, named like the input "
        "(a single-input model also takes an array named x, or the only one). .csv: the "
        "columns of the run config's data.features, else every numeric column except its "
        "targets. A run trained on image_directory (text_directory): an image (.txt) file "
        "or a folder of them, read as in training; the output names the class of each."),
    output: Path = typer.Option(
        None, "--output", "-o", show_default=False,
        help="Where the predictions go: .npz (one array per model output, 'predictions' for "
        "a single-output model) or .csv (one column per output unit: <output> or "
        "<output>_<i>). Default: <input stem>.predictions.npz in the current directory."),
    checkpoint: Literal["final", "best", "last"] = CheckpointOpt,
) -> None:
    """Predict with a run's model; write one array (or csv columns) per model output."""
    from kexp.data.files import display_path
    from kexp.evaluation import (
        class_names,
        default_output,
        predict_run,
        write_predictions,
    )

    if output is not None and output.suffix not in (".npz", ".csv"):
        raise typer.BadParameter(f"{output}: expected a file name ending in .npz or .csv.",
                                 param_hint="--output")
    run = chosen_run(run_dir, checkpoint)
    predictions = predict_run(run, input_file, checkpoint)
    target = output or default_output(input_file)
    write_predictions(predictions, target, class_names(run))
    shapes = ", ".join(f"{name} {tuple(a.shape)}" for name, a in predictions.items())
    typer.echo(f"wrote {display_path(target)}: {shapes}")
