"""curves.png in every run directory: a fit run (as `make train` makes it), a custom-loop
run, a failed run and an interrupted one; each image opened and looked at."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kexp.cli.app import app
from tests.conftest import CONFIGS

STOPPER = """
import keras
from kexp.registry import CALLBACKS

@CALLBACKS.register()
class Stop_{how}(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 2:  # user callbacks run first: epochs 0 and 1 are recorded
            raise KeyboardInterrupt if "{how}" == "interrupt" else RuntimeError("boom")
"""


def _train(tmp_path: Path, *args: str) -> tuple[int, Path]:
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", str(CONFIGS / "digits_mlp.yaml"),
                                      "--runs-dir", str(runs), *args])
    return result.exit_code, next(runs.glob("*/*"))


def _pixels(png: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def _check_curves(run: Path, panels: int, epochs: int) -> None:
    pixels = _pixels(run / "curves.png")
    height, width, _ = pixels.shape
    assert height >= 300 and width >= 400 * min(panels, 3)
    drawn = (pixels.sum(axis=2) < 600).mean()  # not white
    assert 0.02 < drawn < 0.6
    blue = (np.abs(pixels - (0x1F, 0x77, 0xB4)).sum(axis=2) < 30).sum()  # train curves
    orange = (np.abs(pixels - (0xFF, 0x7F, 0x0E)).sum(axis=2) < 30).sum()  # validation
    assert blue > 40 and orange > 40
    star = (np.abs(pixels - (0xDC, 0x14, 0x3C)).sum(axis=2) < 30).sum()  # best epoch
    assert star > 20
    with open(run / "history.csv") as f:
        assert len(f.readlines()) - 1 == epochs


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_a_completed_run_draws_its_curves(tmp_path, loop):
    code, run = _train(tmp_path, "--set", "train.epochs=3", "--set", f"train.loop={loop}")
    assert code == 0
    _check_curves(run, panels=2, epochs=3)


@pytest.mark.parametrize("how, status, exit_code", [("fail", "failed", 1),
                                                    ("interrupt", "interrupted", 130)])
def test_a_failed_or_interrupted_run_draws_the_epochs_it_has(tmp_path, how, status,
                                                              exit_code):
    (tmp_path / "stopper.py").write_text(STOPPER.format(how=how))
    code, run = _train(tmp_path, "--set", "train.epochs=5", "--plugin",
                       str(tmp_path / "stopper.py"),
                       "--set", f"train.callbacks=[Stop_{how}]")
    assert code == exit_code
    assert json.loads((run / "run.json").read_text())["status"] == status
    _check_curves(run, panels=2, epochs=2)


def test_curves_of_a_multi_output_run_and_of_a_run_without_epochs(tmp_path):
    from kexp.curves import curve_panels, draw_run_curves

    columns = ["epoch", "department_accuracy", "department_loss", "loss",
               "priority_loss", "priority_mean_absolute_error", "learning_rate",
               "val_department_accuracy", "val_department_loss", "val_loss",
               "val_priority_loss", "val_priority_mean_absolute_error"]
    panels = curve_panels(columns)
    assert panels[0] == ("loss", "val_loss")
    assert len(panels) == 5 and ("learning_rate", None) not in panels
    assert ("priority_mean_absolute_error", "val_priority_mean_absolute_error") in panels

    empty = tmp_path / "r"
    empty.mkdir()
    (empty / "run.json").write_text('{"status": "failed", "name": "x"}')
    draw_run_curves(empty)
    pixels = _pixels(empty / "curves.png")
    assert pixels.shape[1] >= 400 and (pixels.sum(axis=2) < 600).any()


def test_curves_are_drawn_in_the_default_style_whatever_the_process_set(tmp_path):
    """Optuna's plots (a sweep in the same process) and plugins may change matplotlib's
    global style; curves.png keeps its colours."""
    import matplotlib.style

    from kexp.curves import draw_run_curves

    (tmp_path / "run.json").write_text('{"status": "completed", "monitor": "val_loss"}')
    (tmp_path / "history.csv").write_text(
        "epoch,loss,val_loss\n0,1.0,1.2\n1,0.6,0.9\n2,0.4,0.8\n")
    with matplotlib.style.context("ggplot"):
        draw_run_curves(tmp_path)
    pixels = _pixels(tmp_path / "curves.png")
    assert (np.abs(pixels - (0x1F, 0x77, 0xB4)).sum(axis=2) < 30).sum() > 40
    assert (np.abs(pixels - (0xFF, 0x7F, 0x0E)).sum(axis=2) < 30).sum() > 40
