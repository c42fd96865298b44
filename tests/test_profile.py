"""``train.profile``: a tf.profiler trace of the chosen steps in the run's logs/, both loops."""

from __future__ import annotations

import pytest

from tests.conftest import CONFIGS, run_dir_of


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_profile_writes_a_trace_tensorboard_reads_into_logs(kexp, tmp_path, loop):
    result = kexp("train", CONFIGS / "digits_mlp.yaml", "--smoke", "--runs-dir", tmp_path,
                  "--set", f"train.loop={loop}",
                  "--set", "train.profile={start_step: 1, end_step: 2}")
    assert result.exit_code == 0, result.stderr
    traces = list((run_dir_of(result) / "logs").rglob("*.xplane.pb"))
    assert len(traces) == 1, list((run_dir_of(result) / "logs").rglob("*"))
    assert traces[0].stat().st_size > 0
    assert "plugins/profile" in traces[0].as_posix()


def test_no_profile_no_trace(kexp, tmp_path):
    result = kexp("train", CONFIGS / "digits_mlp.yaml", "--smoke", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert not list((run_dir_of(result) / "logs").rglob("*.xplane.pb"))


@pytest.mark.parametrize(("value", "message"), [
    ("{start_step: 3, end_step: 2}", "end_step must not be before start_step"),
    ("{start_step: 0, end_step: 2}", "start_step"),
])
def test_a_bad_profile_window_is_a_config_error(kexp, tmp_path, value, message):
    result = kexp("train", CONFIGS / "digits_mlp.yaml", "--smoke", "--runs-dir", tmp_path,
                  "--set", f"train.profile={value}")
    assert result.exit_code == 2
    assert "train.profile" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("run.json"))


def test_profile_needs_tensorboard(kexp, tmp_path):
    result = kexp("train", CONFIGS / "digits_mlp.yaml", "--smoke", "--runs-dir", tmp_path,
                  "--set", "train.profile={start_step: 1, end_step: 1}",
                  "--set", "train.tensorboard=false")
    assert result.exit_code == 2
    assert "train" in result.stderr and "tensorboard: true" in result.stderr
    assert not list(tmp_path.rglob("run.json"))
