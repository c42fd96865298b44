"""Determinism and kill -9: with `deterministic: true`, the same config gives bit-identical
weights, and a run killed at any moment and resumed gives the weights of an uninterrupted one
(shuffling and dropout, both loops). Every file a kill leaves behind parses."""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kexp.cli.app import app
from kexp.tools.soak import file_problems
from kexp.training import resume as rs
from tests.conftest import read_run_json as info
from tests.conftest import run_dir_of
from tests.test_resume import CONFIG, assert_same_weights, epochs_in, only_run, start_kexp, wait_for

LOOPS = ["fit", "custom"]


def _kexp(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "det.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory) -> dict[str, Path]:
    """An uninterrupted run per loop: its final model."""
    runs = tmp_path_factory.mktemp("reference")
    models = {}
    for loop in LOOPS:
        result = _kexp("train", config, "--runs-dir", runs, "--set", f"train.loop={loop}")
        assert result.exit_code == 0, result.stderr
        models[loop] = run_dir_of(result) / "model.keras"
    return models


@pytest.mark.parametrize("loop", LOOPS)
def test_the_same_config_twice_gives_bit_identical_weights(config, reference, tmp_path, loop):
    result = _kexp("train", config, "--runs-dir", tmp_path, "--set", f"train.loop={loop}")
    assert result.exit_code == 0, result.stderr
    assert_same_weights(run_dir_of(result) / "model.keras", reference[loop])


@pytest.mark.parametrize("loop", LOOPS)
def test_kill_9_after_epoch_2_then_resume_equals_an_uninterrupted_run(config, reference,
                                                                      tmp_path, loop):
    runs = tmp_path / "runs"
    proc = start_kexp("train", config, "--runs-dir", runs, "--set", f"train.loop={loop}",
                      log=tmp_path / "log")
    assert wait_for(lambda: any(runs.glob("*/*/state/epoch-0002")), proc)
    proc.kill()
    proc.wait()
    run = only_run(runs)
    assert info(run)["status"] == "running"  # what kill -9 leaves: nobody marked it

    result = _kexp("train", "--resume", run)
    assert result.exit_code == 0, result.stderr
    start = int(re.search(r"at epoch (\d+) of 6", result.stderr).group(1))
    assert start >= 2 and str(run) in result.stderr
    assert info(run)["status"] == "completed" and info(run)["epochs_completed"] == 6
    assert epochs_in(run / "history.csv") == list(range(6))
    assert tensorboard_epochs(run) == {"train": list(range(6)), "validation": list(range(6))}
    assert_same_weights(run / "model.keras", reference[loop])


def test_resume_after_a_kill_between_the_logs_and_the_state_save(config, reference, tmp_path):
    """The newest save is lost (killed while saving it, or damaged): the run resumes from the
    one before, with a warning; history.csv and TensorBoard drop the epoch being redone."""
    runs = tmp_path / "runs"
    proc = start_kexp("train", config, "--runs-dir", runs, log=tmp_path / "log")
    assert wait_for(lambda: any(runs.glob("*/*/state/epoch-0003")), proc)
    proc.kill()
    proc.wait()
    run = only_run(runs)
    newest = rs.state_sets(run)[-1]
    npz = newest / "variables.npz"
    npz.write_bytes(npz.read_bytes()[:100])

    result = _kexp("train", "--resume", run)
    assert result.exit_code == 0, result.stderr
    assert f"{newest} is unusable" in result.stderr
    assert f"at epoch {int(newest.name[-4:]) - 1} of 6" in result.stderr
    assert epochs_in(run / "history.csv") == list(range(6))
    assert tensorboard_epochs(run) == {"train": list(range(6)), "validation": list(range(6))}
    assert_same_weights(run / "model.keras", reference["fit"])


@pytest.mark.skipif(not os.environ.get("KEXP_SOAK"), reason="a soak: make soak (KEXP_SOAK=1)")
@pytest.mark.parametrize("loop", LOOPS)
def test_random_kills_never_leave_a_run_that_fails_to_parse_or_resume(config, reference,
                                                                      tmp_path, loop):
    """Three `kill -9`s per loop at random moments of a process's life -- setting up, tracing,
    training, saving, finishing -- each later one on a resumed process. After every kill each
    file parses; every run then resumes to the uninterrupted weights. (More kills: `make
    soak`; `tests/test_soak.py` kills four more, from the process's start.)"""
    rng = random.Random()  # not the `random` module: kexp seeds it in-process
    delays: list[float] = []
    finished: list[Path] = []
    run = None
    for trial in range(3):
        runs = tmp_path / f"runs{len(finished)}"
        args = (("train", config, "--runs-dir", runs, "--set", f"train.loop={loop}")
                if run is None else ("train", "--resume", run))
        started = _training(runs, run)
        proc = start_kexp(*args, log=tmp_path / f"log{trial}")
        wait_for(started, proc)
        delays.append(round(rng.uniform(0, 3.0), 3))  # ~ a process's life after set-up
        time.sleep(delays[-1])
        proc.kill()
        proc.wait()
        run = run or only_run(runs)
        assert_every_file_parses(run, f"after kill {trial + 1} (delays {delays})")
        if info(run)["status"] == "completed":
            finished.append(run)
            run = None

    if run is not None:
        result = _kexp("train", "--resume", run)
        assert result.exit_code == 0, f"delays {delays}: {result.stderr}"
        finished.append(run)
    for run in finished:
        assert info(run)["status"] == "completed"
        assert epochs_in(run / "history.csv") == list(range(6)), f"delays {delays}"
        assert_same_weights(run / "model.keras", reference[loop])
        assert not [p for p in run.rglob(".*") if p.name != ".lock"], "temporaries left"


def _training(runs: Path, run: Path | None) -> Callable[[], bool]:
    """A test for "the process is training": a new run has written its run.json, a resumed
    one has added itself to the run's `resumed` list."""
    if run is None:
        return lambda: (found := only_run(runs)) is not None and bool(info(found))
    before = len(info(run).get("resumed", []))
    return lambda: len(info(run).get("resumed", [])) > before


def tensorboard_epochs(run: Path) -> dict[str, list[int]]:
    """The epochs TensorBoard shows for `epoch_loss`, per log directory."""
    from tensorboard.backend.event_processing import plugin_event_accumulator

    shown = {}
    for name in ("train", "validation"):
        accumulator = plugin_event_accumulator.EventAccumulator(str(run / "logs" / name))
        accumulator.Reload()
        shown[name] = [event.step for event in accumulator.Tensors("epoch_loss")]
    return shown


def assert_every_file_parses(run: Path, when: str) -> None:
    """Every file of the run directory reads back with its format's reader (hidden files --
    the lock, temporaries of interrupted writes -- are not part of the run)."""
    problems = file_problems(run)
    assert not problems, f"{when}: {problems}"
