"""Shared test helpers: inline YAML configs, running the real `kexp` command, reading what a
run wrote (its directory, history.csv, run.json); Keras's global state cleared after every
test."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def write(tmp_path: Path):
    """write("name.yaml", '''yaml''') -> Path, dedented, in a temporary folder."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return _write


@pytest.fixture
def kexp():
    """kexp(*args) -> Result: runs the kexp CLI in-process (stdout and stderr apart)."""
    from kexp.cli.app import app

    runner = CliRunner()

    def _run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return _run


def run_kexp(*args: str, cwd: Path | None = None, timeout: float = 300,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """The real `kexp` command in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "kexp.cli.app", *map(str, args)],
        cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_dir_of(result) -> Path:
    """The run directory ``kexp train`` printed (its last ``run directory:`` line); ``result``
    is a CliRunner result, a CompletedProcess or the output text."""
    out = result if isinstance(result, str) else result.stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("run directory: ")]
    if not lines:
        err = "" if isinstance(result, str) else result.stderr
        raise AssertionError(f"no run directory in the output:\n{out}\n{err}")
    return Path(lines[-1].removeprefix("run directory: "))


def read_history(run: Path, numbers: bool = False) -> list[dict]:
    """The rows of a run's history.csv (strings, or floats with ``numbers``)."""
    with open(Path(run) / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) for k, v in row.items()} for row in rows] if numbers else rows


def read_run_json(run: Path) -> dict:
    """A run's run.json, as the file holds it."""
    return json.loads((Path(run) / "run.json").read_text())


@pytest.fixture(autouse=True)
def _fresh_keras():
    """Keras's global state (layer name counters, the global seed generator, TensorFlow's
    graph) is cleared after every test that imported Keras; tests that did not pay nothing."""
    yield
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.backend.clear_session()
    if "tensorflow" in sys.modules:
        # `deterministic: true` trained in-process turns on TensorFlow's op determinism for
        # the whole process, and Keras then drops jit_compile and refuses the global
        # generator: a later test would see another test's setting.
        from tensorflow.python.framework import config

        if config.is_op_determinism_enabled():
            config.disable_op_determinism()


@pytest.fixture(autouse=True)
def _not_quiet():
    """`--quiet` is kept in the environment (KEXP_QUIET=1, for the processes a command
    starts): a test that ran a command with it in-process must not silence the notices of
    the tests after it (test_determinism's "resuming ... at epoch N of 6" went missing when a
    quiet test ran first in the same process)."""
    before = os.environ.get("KEXP_QUIET")
    yield
    if before is None:
        os.environ.pop("KEXP_QUIET", None)
    else:
        os.environ["KEXP_QUIET"] = before


# --------------------------------------------------------------------------- two processes

# `make test` runs the suite in two processes (pytest-xdist, `-n 2 --dist loadfile
# --no-loadscope-reorder`): each test file runs whole in one process, so a module-scoped
# fixture (a trained run, a finished sweep) is built once. The files that take longest go
# first, longest first, so that the last ones handed out are short. (Not `--dist loadgroup`:
# with pytest 9 its `xdist_group` marks are ignored, xdist 3.8 sets a node id attribute pytest
# no longer reads.)
SLOW_FIRST = ("test_sweep.py", "test_distribute_train.py", "test_determinism.py",
              "test_phases.py", "test_keras_user.py", "test_cli_conventions.py", "test_bench.py",
              "test_resume.py", "test_file_data.py", "test_soak.py", "test_cli_evaluate.py",
              "test_readme.py")


def pytest_collection_modifyitems(config, items):
    """In an xdist worker: the slow files first (a stable sort: the rest keep their order)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: i for i, name in enumerate(SLOW_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
