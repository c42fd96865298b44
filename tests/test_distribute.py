"""Tests for kexp.training.distribute and kexp.cli.workers: TF_CONFIG, ports, the local-worker
launcher, and one real MirroredStrategy run (in a subprocess: logical CPU devices must exist before TF starts)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from kexp.cli import workers
from kexp.errors import ConfigError
from kexp.training import distribute

# --------------------------------------------------------------------------- TF_CONFIG


def test_tf_config_for_builds_a_worker_cluster():
    workers = ["127.0.0.1:2222", "10.0.0.2:2223"]

    config = distribute.tf_config_for(workers, 1)

    assert config == {
        "cluster": {"worker": workers},
        "task": {"type": "worker", "index": 1},
    }
    assert json.loads(json.dumps(config)) == config


@pytest.mark.parametrize(
    ("workers", "index", "where"),
    [
        (["127.0.0.1"], 0, "--workers[0]"),
        (["127.0.0.1:port"], 0, "--workers[0]"),
        ([":2222"], 0, "--workers[0]"),
        (["127.0.0.1:70000"], 0, "--workers[0]"),
        (["h:1", "h:1"], 0, "'h:1' is listed twice"),
        (["h:1", "h:2"], 2, "--worker-index"),
        (["h:1"], -1, "--worker-index"),
        ([], 0, "--workers"),
    ],
)
def test_tf_config_for_rejects_bad_workers(workers, index, where):
    with pytest.raises(ConfigError) as info:
        distribute.tf_config_for(workers, index)

    assert where in str(info.value)


def test_cluster_of_one_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)

    assert distribute.is_chief()
    assert distribute.worker_index() == 0
    assert distribute.num_workers() == 1
    assert distribute.worker_addresses() == []


@pytest.mark.parametrize(
    ("cluster", "task", "chief", "index", "count"),
    [
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True, 0, 2),
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False, 1, 2),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True, 0, 2),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False, 1, 2),
    ],
)
def test_cluster_queries_read_tf_config(monkeypatch, cluster, task, chief, index, count):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))

    assert distribute.is_chief() is chief
    assert distribute.worker_index() == index
    assert distribute.num_workers() == count
    assert distribute.worker_addresses() == [*cluster.get("chief", []), *cluster["worker"]]


def test_tf_config_built_for_a_worker_reads_back(monkeypatch):
    config = distribute.tf_config_for(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], 2)
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))

    assert (distribute.is_chief(), distribute.worker_index(), distribute.num_workers()) == (
        False, 2, 3,
    )


def test_malformed_tf_config_is_a_config_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{cluster: ")

    with pytest.raises(ConfigError, match="TF_CONFIG: not valid JSON"):
        distribute.is_chief()


# The rules between distribute: options and the rest of the config are config rules
# (kexp.config.rules), tested through kexp train and kexp validate in tests/test_bad_input.py.


def test_mirrored_devices_must_exist():
    # Runs TensorFlow in this process: only with its default single CPU device.
    with pytest.raises(ConfigError, match=r"distribute.devices\[1\]: no such device .*'/gpu:7'"):
        distribute.make_strategy("mirrored", ["/cpu:0", "/gpu:7"])
    with pytest.raises(ConfigError, match=r"distribute.devices\[0\]: not a device name"):
        distribute.make_strategy("mirrored", ["bogus"])
    with pytest.raises(ConfigError, match="must be made before TensorFlow starts"):
        distribute.make_strategy("mirrored", ["/cpu:0", "/cpu:63"])


# --------------------------------------------------------------------------- ports


def test_free_ports_are_distinct_and_bindable_on_loopback():
    ports = workers.free_ports(4)

    assert len(set(ports)) == 4
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


# --------------------------------------------------------------------------- launcher

# A worker: prints what TF_CONFIG says it is, then behaves as the test's argv asks.
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    config = json.loads(os.environ["TF_CONFIG"])
    index = config["task"]["index"]
    print("index", index, "cluster", ",".join(config["cluster"]["worker"]))
    sleeps = [float(s) for s in sys.argv[1].split(",")]
    codes = [int(c) for c in sys.argv[2].split(",")]
    time.sleep(sleeps[index])
    print("exiting", codes[index])
    sys.exit(codes[index])
    """
)


def _launch(capsys, sleeps: str, codes: str) -> tuple[int, str, float]:
    start = time.monotonic()
    code = workers.launch_local_workers(
        [sys.executable, "-c", WORKER, sleeps, codes], 2, grace_period=2.0
    )
    return code, capsys.readouterr().out, time.monotonic() - start


def test_launcher_gives_each_worker_its_tf_config_and_prefixes_output(capsys):
    code, out, _ = _launch(capsys, "0,0", "0,0")

    assert code == 0
    lines = out.splitlines()
    assert any(line.startswith("[worker 0] index 0 cluster 127.0.0.1:") for line in lines)
    assert any(line.startswith("[worker 1] index 1 cluster 127.0.0.1:") for line in lines)
    clusters = {line.split("cluster ")[1] for line in lines if " cluster " in line}
    assert len(clusters) == 1  # both workers see the same cluster


def test_launcher_passes_each_line_with_its_worker(capsys):
    seen: list[tuple[int, str]] = []
    code = workers.launch_local_workers(
        [sys.executable, "-c", WORKER, "0,0", "0,0"], 2, grace_period=2.0,
        on_line=lambda index, line: seen.append((index, line)),
    )

    assert code == 0
    assert (0, "exiting 0") in seen and (1, "exiting 0") in seen
    assert all(line.startswith(f"index {i} ") for i, line in seen if line.startswith("index"))


def test_launcher_returns_the_first_failure(capsys):
    code, out, _ = _launch(capsys, "0.6,0", "5,3")

    assert code == 3
    assert "[worker 1] exiting 3" in out


def test_launcher_stops_the_others_when_one_fails_hard(capsys):
    code, out, elapsed = _launch(capsys, "60,0", "0,1")

    assert code == 1
    assert "[worker 0] exiting" not in out  # stopped by SIGTERM, not finished
    assert elapsed < 20


def test_launcher_lets_preempted_workers_finish_saving(capsys):
    preempted = distribute.PREEMPTED_EXIT_CODE
    code, out, _ = _launch(capsys, "0.6,0", f"{preempted},{preempted}")

    assert code == preempted
    assert f"[worker 0] exiting {preempted}" in out  # not stopped by the launcher


# Workers that report a signal and exit with the pre-emption code, or ignore SIGTERM.
SIGNALLED_WORKER = textwrap.dedent(
    """
    import signal, sys, time
    def on_term(signum, frame):
        print("got", signal.Signals(signum).name, flush=True)
        sys.exit(130)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[1] == "ignore" else on_term)
    print("ready", flush=True)
    time.sleep(60)
    """
)

LAUNCHER = textwrap.dedent(
    """
    import sys
    from kexp.cli.workers import launch_local_workers
    argv = [sys.executable, "-c", sys.argv[1], sys.argv[2]]
    sys.exit(launch_local_workers(argv, 2, grace_period=1.0))
    """
)


@pytest.mark.parametrize(
    ("sig", "behaviour", "expected"),
    [
        ("SIGINT", "exit", 130),  # Ctrl-C becomes one SIGTERM per worker
        ("SIGTERM", "exit", 130),
        ("SIGTERM", "ignore", 128 + 9),  # killed after the grace period
    ],
)
def test_launcher_forwards_signals_as_sigterm(sig, behaviour, expected):
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, SIGNALLED_WORKER, behaviour],
        stdout=subprocess.PIPE, text=True,
    )
    lines = []
    while sum("ready" in line for line in lines) < 2:
        lines.append(launcher.stdout.readline())
        assert lines[-1], f"launcher ended early: {lines}"
    start = time.monotonic()

    launcher.send_signal(getattr(__import__("signal"), sig))
    out = launcher.communicate(timeout=30)[0]

    assert launcher.returncode == expected
    assert time.monotonic() - start < 15
    if behaviour == "exit":
        assert "[worker 0] got SIGTERM" in out
        assert "[worker 1] got SIGTERM" in out


# --------------------------------------------------------------------------- one real run

# Two replicas (logical CPUs) and the default strategy train the same model from the same
# weights on the same global batches; the per-replica loss scaling and gradient all-reduce
# must make the results equal. Compiled loss and metrics drive the step, as in fit_custom.
MIRRORED_VS_DEFAULT = textwrap.dedent(
    """
    import json
    import numpy as np
    from kexp.training import _keras_private, distribute
    mirrored = distribute.make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
    default = distribute.make_strategy("default")
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(192, 6)).astype("float32")
    y = (x[:, :3].sum(1) > x[:, 3:].sum(1)).astype("int32")

    def train(strategy, weights):
        with strategy.scope():
            model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                      keras.layers.Dense(2, activation="softmax")])
            model.compile(optimizer=keras.optimizers.SGD(0.5),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        if weights is not None:
            model.set_weights(weights)
        initial = model.get_weights()
        _keras_private.symbolic_build(model, (x[:32], y[:32]), strategy)

        def train_one(data):
            xb, yb = data
            with tf.GradientTape() as tape:
                pred = model(xb, training=True)
                loss = model.compute_loss(x=xb, y=yb, y_pred=pred, training=True)
            grads = tape.gradient(loss, model.trainable_weights)
            model.optimizer.apply(grads, model.trainable_weights)
            model.compute_metrics(xb, yb, pred)
            return loss

        step = tf.function(distribute.distributed_step(strategy, train_one))
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
        losses = [float(step(batch)) for batch in distribute.distribute_dataset(strategy, data)]
        accuracy = float(model.get_metrics_result()["accuracy"])
        return initial, model.get_weights(), losses, accuracy

    initial, base, base_losses, base_acc = train(default, None)
    _, weights, losses, acc = train(mirrored, initial)
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "devices": list(mirrored.extended.worker_devices),
        "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(base, weights)),
        "moved": max(float(np.abs(a - b).max()) for a, b in zip(initial, base)),
        "loss_diff": max(abs(a - b) for a, b in zip(base_losses, losses)),
        "accuracy": [base_acc, acc],
    }))
    """
)


def test_mirrored_on_two_cpus_trains_like_the_default_strategy():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_VS_DEFAULT],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(report)  # the measured difference, for `pytest -s`

    assert report["replicas"] == 2
    assert report["devices"][1].endswith("CPU:1")
    assert report["moved"] > 1e-2  # the steps did train
    assert report["max_abs_diff"] < 1e-5
    assert report["loss_diff"] < 1e-5
    assert report["accuracy"][0] == report["accuracy"][1]


def test_preempted_step_reads_the_step_of_the_latest_checkpoint(tmp_path):
    # Last in this file: it starts TensorFlow in this process.
    import tensorflow as tf

    assert distribute.preempted_step(str(tmp_path / "none")) is None
    step = tf.Variable(7, dtype=tf.int64)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step), str(tmp_path), 1)
    manager.save()
    step.assign(12)
    manager.save()

    assert distribute.preempted_step(str(tmp_path)) == 12
