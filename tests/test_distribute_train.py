"""End-to-end tests of distributed training (issue 7): the real `kexp train` command under the
mirrored strategy (2 logical CPUs) and with 2 local workers (`--local-workers 2`).

Every worker of a test runs the `StepLog` plugin below: it records each trained batch and the
worker's pid, so a test can signal one worker and kill any leftover in `finally` (the workers
run in sessions of their own, out of reach of a kill of the launcher).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CONFIGS, REPO, read_history, run_kexp

STEP_LOG_PLUGIN = textwrap.dedent(
    """
    import json
    import os
    import time

    import keras

    from kexp.registry import CALLBACKS


    def _index():
        task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
        return task.get("index", 0)


    @CALLBACKS.register()
    class StepLog(keras.callbacks.Callback):
        '''Appends `epoch batch` per trained batch to $STEPLOG.<worker>; sleeps a little.'''

        def __init__(self, sleep: float = 0.0):
            super().__init__()
            self.sleep, self.epoch = sleep, 0

        def on_train_begin(self, logs=None):
            with open(f"{os.environ['STEPLOG']}.pid.{_index()}", "w") as f:
                f.write(str(os.getpid()))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            with open(f"{os.environ['STEPLOG']}.{_index()}", "a") as f:
                f.write(f"{self.epoch} {batch}\\n")
            time.sleep(self.sleep)
    """
)

MULTI_WORKER = ["--set", "distribute.strategy=multi_worker", "--set", "train.loop=custom"]
DIGITS_STEPS = 45  # ceil(1437 / 32): digits' training split in global batches of 32


@pytest.fixture
def cluster(tmp_path: Path):
    """Runs `kexp train ...` commands; kills every worker they started when the test ends."""
    plugin = tmp_path / "steplog.py"
    plugin.write_text(STEP_LOG_PLUGIN)
    steplog = tmp_path / "steps"
    # A temporary folder of their own: the test finds the workers' scratch folders there, not
    # those of a test running beside it.
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "STEPLOG": str(steplog), "PYTHONPATH": str(REPO),
           "TMPDIR": str(tmp_path / "tmp")}
    procs: list[subprocess.Popen] = []

    class Cluster:
        def __init__(self):
            self.plugin, self.steplog, self.tmp = plugin, steplog, tmp_path

        def start(self, *args: str) -> subprocess.Popen:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kexp.cli.app", "train", *map(str, args)],
                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, start_new_session=True)
            procs.append(proc)
            return proc

        def run(self, *args: str, timeout: float = 150) -> tuple[int, str]:
            proc = self.start(*args)
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out

        def steps(self, worker: int) -> list[tuple[int, int]]:
            path = Path(f"{steplog}.{worker}")
            lines = path.read_text().split() if path.exists() else []
            return list(zip(map(int, lines[::2]), map(int, lines[1::2]), strict=True))

        def pid(self, worker: int) -> int:
            return int(Path(f"{steplog}.pid.{worker}").read_text())

        def clear(self) -> None:
            for path in tmp_path.glob("steps*"):
                path.unlink()

    try:
        yield Cluster()
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for path in tmp_path.glob("steps.pid.*"):
            try:
                os.kill(int(path.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def _worker_temp_dirs(cluster) -> set[str]:
    """The scratch folders of non-chief workers in the cluster's temporary folder."""
    return {p.name for p in (cluster.tmp / "tmp").glob("kexp-worker*")}


def _run_dir(out: str, cwd: Path | None = None) -> Path:
    last = out.strip().splitlines()[-1]
    assert last.startswith("run directory: "), out[-3000:]
    path = Path(last.removeprefix("run directory: "))
    return path if cwd is None else cwd / path


# --------------------------------------------------------------------------- refusals


def test_multi_worker_with_fit_is_refused_naming_the_keras_issue(tmp_path):
    result = run_kexp("train", CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path / "runs",
                      "--set", "distribute.strategy=multi_worker", "--local-workers", "2",
                      timeout=60)
    assert result.returncode == 2, result.stderr
    assert "keras-team/keras" in result.stderr and "20585" in result.stderr
    assert "train.loop: custom" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_several_workers_need_the_multi_worker_strategy(tmp_path):
    result = run_kexp("train", CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path / "runs",
                      "--local-workers", "2", timeout=60)
    assert result.returncode == 2
    assert "distribute.strategy" in result.stderr and "multi_worker" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, named", [
    (["--workers", "127.0.0.1:1,127.0.0.1:2"], "--worker-index"),
    (["--workers", "127.0.0.1:1,127.0.0.1:2", "--worker-index", "2"], "--worker-index"),
    (["--workers", "localhost", "--worker-index", "0"], "--workers[0]"),
    (["--local-workers", "2", "--worker-index", "0"], "--local-workers"),
])
def test_bad_cluster_options_are_usage_errors(tmp_path, args, named):
    result = run_kexp("train", CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path / "runs",
                      *MULTI_WORKER, *args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert not (tmp_path / "runs").exists()


def test_local_workers_launcher_does_not_import_tensorflow(tmp_path):
    code = textwrap.dedent(
        """
        import json, sys
        import kexp.cli.workers as workers
        def launch(argv, n, **kwargs):
            print(json.dumps({"tf": "tensorflow" in sys.modules, "argv": argv[3:], "n": n}))
            return 0
        workers.launch_local_workers = launch
        from kexp.cli.app import main
        sys.argv = ["kexp", *sys.argv[1:]]
        main()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "train", str(CONFIGS / "digits_mlp.yaml"), *MULTI_WORKER,
         "--plugin", "kexp.registry", "--name", "x", "--local-workers", "2"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    launched = json.loads(result.stdout.splitlines()[0])
    assert launched == {"tf": False, "n": 2, "argv": [
        "train", str(CONFIGS / "digits_mlp.yaml"), *MULTI_WORKER,
        "--plugin", "kexp.registry", "--name", "x"]}


# --------------------------------------------------------------------------- mirrored


def test_mirrored_on_two_cpus_gives_the_default_strategys_weights_in_both_loops(tmp_path, write):
    """Same global batch, no dropout, batches that split evenly: the same weights."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype("int32")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    config = write("mlp.yaml", """
        name: mlp
        seed: 3
        data: {type: npz, path: data.npz, features: x, targets: y, batch_size: 32,
               validation_split: 0.25}
        model:
          type: sequential
          input_shape: [8]
          layers:
            - {type: Dense, units: 16, activation: relu}
            - {type: Dense, units: 2, activation: softmax}
        compile: {optimizer: {type: Adam, learning_rate: 1e-2},
                  loss: sparse_categorical_crossentropy, metrics: [accuracy]}
        train: {epochs: 2, progress: false, tensorboard: false}
    """)
    mirrored = ["--set", "distribute.strategy=mirrored",
                "--set", "distribute.devices=[/cpu:0, /cpu:1]"]
    weights, histories = {}, {}
    for label, args in {"default": [], "mirrored-fit": mirrored,
                        "mirrored-custom": [*mirrored, "--set", "train.loop=custom"]}.items():
        result = run_kexp("train", config, "--runs-dir", config.parent / "runs" / label, *args,
                          cwd=config.parent, timeout=150)
        assert result.returncode == 0, result.stderr[-3000:]
        run_dir = _run_dir(result.stdout)
        weights[label] = _weights(run_dir / "model.keras")
        histories[label] = read_history(run_dir, numbers=True)
        if label != "default":
            info = json.loads((run_dir / "run.json").read_text())
            assert info["cluster"] == {"strategy": "mirrored", "replicas": 2}
    for label in ("mirrored-fit", "mirrored-custom"):
        for a, b in zip(weights["default"], weights[label], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        assert histories[label][-1]["val_accuracy"] == pytest.approx(
            histories["default"][-1]["val_accuracy"], abs=1e-6)
        assert histories[label][-1]["loss"] == pytest.approx(histories["default"][-1]["loss"],
                                                             abs=1e-5)


def _weights(path: Path) -> list[np.ndarray]:
    """The saved model's weights, read in this process (a fresh process per model cost a
    TensorFlow start-up each)."""
    import keras

    return [np.asarray(w) for w in keras.saving.load_model(path, compile=False).get_weights()]


# --------------------------------------------------------------------------- multi_worker


def test_two_local_workers_train_digits_like_one_worker(cluster):
    before = _worker_temp_dirs(cluster)
    common = ["--plugin", cluster.plugin, "--set", "train.epochs=3",
              "--set", "train.callbacks=[{type: StepLog}]", "--runs-dir"]
    code, out = cluster.run(CONFIGS / "digits_mlp.yaml", *common, "runs1",
                            "--set", "train.loop=custom")
    assert code == 0, out[-3000:]
    one = read_history(_run_dir(out, cluster.tmp), numbers=True)[-1]["val_accuracy"]
    cluster.clear()

    code, out = cluster.run(CONFIGS / "digits_mlp.yaml", *common, "runs2", *MULTI_WORKER,
                            "--local-workers", "2")
    assert code == 0, out[-3000:]
    assert "[worker 0] worker 0 of 2 (chief)" in out and "[worker 1] worker 1 of 2" in out
    run_dir = _run_dir(out, cluster.tmp)
    two = read_history(run_dir, numbers=True)[-1]["val_accuracy"]
    assert abs(one - two) <= 0.02, (one, two)
    # Written once, by the chief; the other worker's private copy is gone.
    assert [p.name for p in (cluster.tmp / "runs2").iterdir()] == ["digits-mlp"]
    assert len(list((cluster.tmp / "runs2" / "digits-mlp").iterdir())) == 1
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["cluster"]["num_workers"] == 2 and len(info["cluster"]["workers"]) == 2
    assert not (run_dir / "checkpoints" / "preemption").exists()
    assert _worker_temp_dirs(cluster) <= before
    # Both workers ran every step once.
    expected = [(e, b) for e in range(3) for b in range(DIGITS_STEPS)]
    assert cluster.steps(0) == expected and cluster.steps(1) == expected


def test_sigterm_to_one_worker_then_resume_runs_each_step_once(cluster):
    before = _worker_temp_dirs(cluster)
    proc = cluster.start(CONFIGS / "digits_mlp.yaml", "--plugin", cluster.plugin,
                         "--runs-dir", "runs", "--set", "train.epochs=2",
                         "--set", "train.callbacks=[{type: StepLog, sleep: 0.03}]",
                         *MULTI_WORKER, "--local-workers", "2")
    deadline = time.monotonic() + 120
    while len(cluster.steps(1)) < DIGITS_STEPS + 10:  # into the second epoch
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.1)
    os.kill(cluster.pid(1), signal.SIGTERM)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 130, out[-3000:]
    assert "continue with: kexp train --local-workers 2 --resume" in out
    run_dir = cluster.tmp / out.strip().splitlines()[-1].rsplit(" ", 1)[1]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted"
    stopped = info["preempted_step"]
    assert DIGITS_STEPS < stopped < 2 * DIGITS_STEPS
    assert (run_dir / "checkpoints" / "preemption").is_dir()

    code, out = cluster.run("--resume", run_dir, "--local-workers", "2")
    assert code == 0, out[-3000:]
    assert f"at epoch 1, step {stopped - DIGITS_STEPS} of 2" in out
    expected = [(e, b) for e in range(2) for b in range(DIGITS_STEPS)]
    assert cluster.steps(0) == expected and cluster.steps(1) == expected
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["resumed"][-1]["step"] == stopped
    history = read_history(run_dir, numbers=True)
    assert len(history) == 2
    assert not (run_dir / "checkpoints" / "preemption").exists()

    # The same result as an uninterrupted run (random Dropout masks included); the train
    # metrics of the interrupted epoch cover only the steps after the restart.
    cluster.clear()
    code, out = cluster.run(CONFIGS / "digits_mlp.yaml", "--plugin", cluster.plugin,
                            "--runs-dir", "runs-whole", "--set", "train.epochs=2",
                            "--set", "train.callbacks=[{type: StepLog}]",
                            *MULTI_WORKER, "--local-workers", "2")
    assert code == 0, out[-3000:]
    whole = read_history(_run_dir(out, cluster.tmp), numbers=True)
    assert [row["val_loss"] for row in history] == [row["val_loss"] for row in whole]
    assert _worker_temp_dirs(cluster) <= before
