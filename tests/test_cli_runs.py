"""``kexp runs`` and ``kexp tensorboard`` over a real run (digits, 2 epochs) plus hand-made
partial runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kexp.cli.app import app
from tests.conftest import read_history

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EPOCHS = 2


def _kexp(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """A runs directory: one completed digits run, one run still running (no history yet),
    one whose run.json is corrupt, one that died before writing run.json."""
    runs = tmp_path_factory.mktemp("runs") / "runs"
    result = _kexp("train", CONFIGS / "digits_mlp.yaml", "--runs-dir", runs,
                   "--set", f"train.epochs={EPOCHS}")
    assert result.exit_code == 0, result.output
    running = runs / "slow" / "20260101-120000"
    running.mkdir(parents=True)
    (running / "run.json").write_text(json.dumps(
        {"name": "slow", "status": "running", "started": "2026-01-01T12:00:00+00:00",
         "epochs": 5, "epochs_completed": 0}))
    killed = runs / "dead" / "20260101-123000"  # running, but no process holds its lock
    killed.mkdir(parents=True)
    (killed / "run.json").write_text(json.dumps(
        {"name": "dead", "status": "running", "started": "2026-01-01T12:30:00+00:00",
         "epochs": 5, "epochs_completed": 2}))
    corrupt = runs / "broken" / "20260101-130000"
    corrupt.mkdir(parents=True)
    (corrupt / "run.json").write_text('{"status": "compl')
    unborn = runs / "unborn" / "20260101-140000"
    unborn.mkdir(parents=True)
    (unborn / "config.yaml").write_text("name: unborn\n")
    return runs


def _digits_run(runs_dir: Path) -> Path:
    return next((runs_dir / "digits-mlp").iterdir())


def _row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if name in line)


# --------------------------------------------------------------------------- kexp runs


def test_runs_lists_every_run_without_importing_tensorflow(runs_dir):
    from kexp.runs import Run

    holder = Run(runs_dir / "slow" / "20260101-120000")  # a live trainer holds the lock
    assert holder.lock()
    script = textwrap.dedent(f"""\
        import sys
        from typer.testing import CliRunner
        from kexp.cli.app import app
        result = CliRunner().invoke(app, ["runs", {str(runs_dir)!r}], env={{"COLUMNS": "200"}})
        print(result.output)
        print("exit", result.exit_code)
        print("imported", sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
        """)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=60)
    finally:
        holder.unlock()
    out = done.stdout
    assert "exit 0" in out, out + done.stderr
    assert "imported []" in out

    history = read_history(_digits_run(runs_dir))
    best_loss = min(float(r["val_loss"]) for r in history)
    best_acc = max(float(r["val_accuracy"]) for r in history)
    digits = _row(out, "digits-mlp/")
    assert "completed" in digits and f"{EPOCHS}/{EPOCHS}" in digits
    assert f"{best_loss:.4g}" in digits and f"val_accuracy {best_acc:.4g}" in digits
    assert "running" in _row(out, "slow/") and "0/5" in _row(out, "slow/")
    assert "killed" in _row(out, "dead/") and "2/5" in _row(out, "dead/")
    assert "unknown" in _row(out, "broken/")
    assert "unknown" in _row(out, "unborn/")


def test_runs_of_an_empty_or_missing_directory(tmp_path):
    empty = _kexp("runs", tmp_path)
    assert empty.exit_code == 0 and "no runs" in empty.output
    missing = _kexp("runs", tmp_path / "nope")
    assert missing.exit_code == 2 and "no such directory" in missing.output


# --------------------------------------------------------------------------- tensorboard


def test_event_files_hold_one_epoch_scalar_per_epoch(runs_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for side in ("train", "validation"):
        events = EventAccumulator(str(_digits_run(runs_dir) / "logs" / side))
        events.Reload()
        assert "epoch_loss" in events.Tags()["tensors"]
        assert [e.step for e in events.Tensors("epoch_loss")] == list(range(EPOCHS))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def test_tensorboard_serves_the_runs_until_terminated(runs_dir):
    port = _free_port()
    run = _digits_run(runs_dir)
    expected = f"digits-mlp/{run.name}/train"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kexp.cli.app", "tensorboard", str(runs_dir), "--port",
         str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline, runs = time.monotonic() + 60, []
        while time.monotonic() < deadline and proc.poll() is None:
            status, body = _get(f"http://127.0.0.1:{port}/data/runs")
            runs = json.loads(body) if status == 200 else []
            if expected in runs:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        assert _get(f"http://127.0.0.1:{port}/")[0] == 200
        assert expected in runs and f"digits-mlp/{run.name}/validation" in runs
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in out and "stopped" in out


def test_tensorboard_without_runs_is_exit_2(tmp_path):
    result = _kexp("tensorboard", tmp_path)
    assert result.exit_code == 2 and "no runs with TensorBoard logs" in result.output
    missing = _kexp("tensorboard", tmp_path / "nope")
    assert missing.exit_code == 2 and "no such directory" in missing.output
