"""Distribution: `tf.distribute` strategies, the worker cluster, local workers, pre-emption.

```yaml
distribute:
  strategy: multi_worker       # default | mirrored | multi_worker
  devices: [/cpu:0, /cpu:1]    # mirrored only; default: every GPU, else the CPU
  communication: auto          # multi_worker only: auto | ring | nccl
```

How the pieces fit (TensorFlow 2.21, Keras 3.15):

- ``make_strategy`` first, before any dataset or model exists: ``MultiWorkerMirroredStrategy``
  refuses to start once TensorFlow's runtime is initialised.
- Create the model, optimizer, metrics and compiled loss under ``strategy.scope()``, then
  ``build_for_strategy`` on one global batch (Keras builds compiled metrics lazily, which
  fails inside ``strategy.run``).
- ``distribute_dataset`` splits each global batch across replicas (``data.batch_size`` is the
  global batch). Keras's ``compute_loss`` already scales the loss by ``1 / replicas``, so the
  per-replica losses sum to the loss of the global batch: ``distributed_step`` sums them.
- Every worker executes the same calls in the same order (reading a metric's result is a
  collective); only the chief (``is_chief()``) writes files.
- ``preemption_handler`` makes SIGTERM to any worker save all workers' state at the same step
  and raise ``Preempted`` (exit code ``PREEMPTED_EXIT_CODE``); ``--resume`` restores it.

TensorFlow is imported inside functions. The rules between ``distribute:`` options and the
rest of a config (``devices`` with ``mirrored`` only, ``multi_worker`` with the custom loop)
are config rules, in ``kexp.config.rules``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from kexp.errors import ConfigError, KexpError, Problem

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "Preempted",
    "make_strategy",
    "tf_config_for",
    "is_chief",
    "worker_index",
    "num_workers",
    "worker_addresses",
    "free_ports",
    "launch_local_workers",
    "distribute_dataset",
    "build_for_strategy",
    "distributed_step",
    "preemption_handler",
    "preempted_step",
]

# A pre-empted run is an interrupted run: its state is saved and `kexp train --resume` continues
# it, exactly what the spec's exit code 130 promises. (TensorFlow's own default is 42.)
PREEMPTED_EXIT_CODE = 130


class Preempted(KexpError):
    """A worker received SIGTERM; every worker saved its state at the same step and stopped.

    Raised by the handler of ``preemption_handler``. The engine marks the run ``interrupted``
    (chief only) and exits with ``exit_code``; restarting every worker with ``--resume``
    continues from the saved step.
    """

    exit_code = PREEMPTED_EXIT_CODE

    def __init__(self, message: str = "pre-empted: state saved; rerun with --resume"):
        super().__init__(message)


# --------------------------------------------------------------------------- strategies


def make_strategy(
    strategy: str = "default",
    devices: list[str] | None = None,
    communication: str = "auto",
) -> Any:
    """Create the ``tf.distribute.Strategy`` a config asks for.

    Call it before building datasets or models. ``multi_worker`` reads the cluster from
    ``TF_CONFIG`` (without it, this process is a cluster of one). ``mirrored`` over more CPU
    devices than exist (``[/cpu:0, /cpu:1]``) splits the CPU into logical devices, which is
    only possible before TensorFlow starts.

    Example:
        ```yaml
        distribute: {strategy: mirrored, devices: [/cpu:0, /cpu:1]}
        ```

    Args:
        strategy: ``default`` (``tf.distribute.get_strategy()``), ``mirrored`` or
            ``multi_worker``.
        devices: devices of a ``mirrored`` strategy; ``None`` lets TensorFlow choose.
        communication: ``auto``, ``ring`` or ``nccl``, for ``multi_worker``.

    Returns:
        The strategy.

    Raises:
        ConfigError: a device that does not exist on this machine. (The options themselves
            were checked with the config: ``kexp.config.rules``.)
    """
    import tensorflow as tf

    if strategy == "default":
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        if devices:
            _ensure_devices(devices)
        return tf.distribute.MirroredStrategy(devices or None)
    return _multi_worker_strategy(communication)


def _ensure_devices(devices: list[str]) -> None:
    """Check every device exists, splitting the CPU into logical devices if more are named."""
    import tensorflow as tf

    specs = []
    for i, name in enumerate(devices):
        try:
            specs.append(tf.DeviceSpec.from_string(name))
        except ValueError as e:
            raise ConfigError(Problem(f"distribute.devices[{i}]", f"not a device name ({e}). "
                                      f"Expected e.g. /gpu:0 or /cpu:1.")) from None
    cpus = [s.device_index or 0 for s in specs if (s.device_type or "").upper() == "CPU"]
    if cpus and max(cpus) > 0:
        _split_cpu(max(cpus) + 1)
    available = {
        (d.device_type, int(d.name.rsplit(":", 1)[1])) for d in tf.config.list_logical_devices()
    }
    for i, spec in enumerate(specs):
        if ((spec.device_type or "").upper(), spec.device_index or 0) not in available:
            names = ", ".join(f"/{t.lower()}:{n}" for t, n in sorted(available))
            raise ConfigError(Problem(f"distribute.devices[{i}]", f"no such device on this "
                                      f"machine: {devices[i]!r}. Available: {names}."))


def _split_cpu(count: int) -> None:
    """Make ``count`` logical CPU devices (MirroredStrategy silently runs every replica of a
    missing device on /cpu:0 otherwise)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu) or [None]
    if len(current) >= count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        raise ConfigError(Problem("distribute.devices", f"{count} CPU devices must be made "
                                  f"before TensorFlow starts, and it has already started "
                                  f"with {len(current)}.")) from None


def _multi_worker_strategy(communication: str) -> Any:
    import tensorflow as tf

    implementation = tf.distribute.experimental.CommunicationImplementation
    options = tf.distribute.experimental.CommunicationOptions(
        implementation={"auto": implementation.AUTO, "ring": implementation.RING,
                        "nccl": implementation.NCCL}[communication]
    )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as e:
        # "Collective ops must be configured at program startup": a kexp bug, not the user's.
        raise RuntimeError(
            "make_strategy('multi_worker') must run before any TensorFlow op (dataset, model, "
            f"tensor) is created. TensorFlow said: {e}"
        ) from e


# --------------------------------------------------------------------------- the cluster


def tf_config_for(workers: list[str], index: int) -> dict[str, Any]:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of ``workers`` (worker 0 is chief).

    Built by ``kexp train CONFIG --workers host:port,host:port --worker-index I``.

    Args:
        workers: ``host:port`` of every worker, the same list on every worker.
        index: this worker's position in ``workers``.

    Returns:
        ``{"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}``; set
        ``os.environ["TF_CONFIG"] = json.dumps(...)`` before ``make_strategy``.

    Raises:
        ConfigError: an address that is not ``host:port``, a repeated address, an index out
            of range.
    """
    problems = [
        Problem(f"--workers[{i}]", f"expected host:port. Received: {w!r}.")
        for i, w in enumerate(workers)
        if not _is_address(w)
    ]
    problems += [
        Problem("--workers", f"{w!r} is listed twice.")
        for w in sorted({w for w in workers if workers.count(w) > 1})
    ]
    if not workers:
        problems.append(Problem("--workers", "expected at least one host:port. Received: []."))
    elif not 0 <= index < len(workers):
        problems.append(Problem("--worker-index", f"expected 0 to {len(workers) - 1} (one per "
                                f"--workers address). Received: {index}."))
    if problems:
        raise ConfigError(problems)
    return {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}}


def _is_address(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _tf_config() -> dict[str, Any]:
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(Problem("TF_CONFIG", f"not valid JSON: {e}.")) from None
    if not isinstance(config, dict):
        raise ConfigError(Problem("TF_CONFIG", f"expected a JSON object. Received: {raw!r}."))
    return config


def _task() -> tuple[str, int, dict[str, list[str]]]:
    config = _tf_config()
    task = config.get("task") or {}
    return str(task.get("type", "worker")), int(task.get("index", 0)), config.get("cluster") or {}


def is_chief() -> bool:
    """Whether this process writes the run directory: the ``chief`` task, else worker 0
    (TensorFlow's rule). True without ``TF_CONFIG``."""
    task_type, index, cluster = _task()
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and not cluster.get("chief")


def worker_index() -> int:
    """This worker's position in the cluster, chief first (0 without ``TF_CONFIG``)."""
    task_type, index, cluster = _task()
    if task_type == "chief":
        return 0
    return len(cluster.get("chief") or []) + index


def num_workers() -> int:
    """Number of training processes in ``TF_CONFIG`` (chief and workers; 1 without it)."""
    _, _, cluster = _task()
    return max(1, len(cluster.get("chief") or []) + len(cluster.get("worker") or []))


def worker_addresses() -> list[str]:
    """``host:port`` of every training process in ``TF_CONFIG``, chief first (``[]`` without
    it)."""
    _, _, cluster = _task()
    return [*(cluster.get("chief") or []), *(cluster.get("worker") or [])]


# --------------------------------------------------------------------------- local workers


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now.

    The sockets are held together so the ports differ, then closed: another process could
    still take one before a worker binds it (rare; the worker then fails to start).
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch_local_workers(argv: list[str], n: int, *, grace_period: float = 60.0,
                         on_line: Callable[[int, str], None] | None = None) -> int:
    """Run ``n`` copies of a command as a cluster on 127.0.0.1 and wait for all of them.

    Each copy gets its own ``TF_CONFIG`` (free ports, worker 0 is chief); its output is
    printed with a ``[worker i]`` prefix. SIGINT or SIGTERM to this process stops the workers
    with SIGTERM, the signal on which they save their state together and exit with
    ``PREEMPTED_EXIT_CODE`` (a SIGINT per worker would leave them stuck in collectives); a
    second signal, or ``grace_period`` seconds without exit, kills them. When one worker fails
    (exits with neither 0 nor ``PREEMPTED_EXIT_CODE``), the others are stopped the same way:
    the cluster cannot go on without it.

    Args:
        argv: the command, e.g.
            ``[sys.executable, "-m", "kexp.cli.app", "train", "cfg.yaml"]``.
        n: number of workers.
        grace_period: seconds between SIGTERM and SIGKILL.
        on_line: called with ``(worker index, line)`` for every line a worker prints.

    Returns:
        0 when every worker succeeds, else the first non-zero exit code (a worker killed by
        signal ``s`` counts as ``128 + s``, as in a shell).
    """
    addresses = [f"127.0.0.1:{port}" for port in free_ports(n)]
    cluster = _Cluster([], grace_period)
    # Signals are forwarded from before the first worker starts: a Ctrl-C at any moment
    # reaches every worker (one started after it gets its SIGTERM at once).
    with _forwarding_signals(cluster):
        pumps = []
        for i in range(n):
            worker = _start_worker(argv, tf_config_for(addresses, i))
            cluster.workers.append(worker)
            if cluster.deadline is not None:
                worker.send_signal(signal.SIGTERM)
            pumps.append(_pump(worker.stdout, f"[worker {i}] ", _for_worker(on_line, i)))
        code = cluster.wait()
    for pump in pumps:
        pump.join(timeout=5)
    return code


def _start_worker(argv: list[str], tf_config: dict[str, Any]) -> subprocess.Popen:
    env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "PYTHONUNBUFFERED": "1"}
    # A session of its own: Ctrl-C in the terminal reaches the launcher only, which turns it
    # into one coordinated SIGTERM per worker.
    return subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True,
    )


_print_lock = threading.Lock()


def _for_worker(on_line: Callable[[int, str], None] | None,
                index: int) -> Callable[[str], None] | None:
    return None if on_line is None else lambda line: on_line(index, line)


def _pump(stream: IO[bytes], prefix: str,
          on_line: Callable[[str], None] | None = None) -> threading.Thread:
    def copy() -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\r\n")
            with _print_lock:
                print(prefix + line, file=sys.stdout, flush=True)
            if on_line is not None:
                on_line(line)
        stream.close()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


class _Cluster:
    """Worker processes that succeed together or are stopped together."""

    def __init__(self, workers: list[subprocess.Popen], grace_period: float):
        self.workers = workers
        self.grace_period = grace_period
        self.deadline: float | None = None  # when stopping workers get SIGKILL

    def stop(self) -> None:
        """SIGTERM every live worker on the first call, SIGKILL on the next."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.grace_period
            self._send(signal.SIGTERM)
        else:
            self._send(signal.SIGKILL)

    def wait(self) -> int:
        first_failure = 0
        while any(w.poll() is None for w in self.workers):
            for w in self.workers:
                code = _exit_code(w)
                if code and not first_failure:
                    first_failure = code
                    if code != PREEMPTED_EXIT_CODE:
                        self.stop()
            if self.deadline is not None and time.monotonic() > self.deadline:
                self._send(signal.SIGKILL)
            time.sleep(0.05)
        codes = [_exit_code(w) for w in self.workers]
        return first_failure or next((c for c in codes if c), 0)

    def _send(self, sig: int) -> None:
        for w in self.workers:
            if w.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.send_signal(sig)


def _exit_code(worker: subprocess.Popen) -> int:
    code = worker.poll()
    if code is None:
        return 0
    return 128 - code if code < 0 else code


@contextlib.contextmanager
def _forwarding_signals(cluster: _Cluster) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: cluster.stop())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- training helpers


def distribute_dataset(strategy: Any, dataset: Any) -> Any:
    """Split each global batch of ``dataset`` across the strategy's replicas.

    Workers shard by DATA (each takes its slice of every batch), so every worker must build
    the same dataset: same files, same shuffle seed.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def build_for_strategy(model: Any, strategy: Any, data_batch: Any) -> None:
    """Build a compiled model's variables, compiled loss and metrics, and optimizer slots.

    Keras builds compiled metrics on first use; inside ``strategy.run`` under a
    ``tf.function`` that fails ("You must feed a value for placeholder tensor
    'cond/else/_1/cond/Placeholder'"). ``model.fit`` avoids it with the same symbolic build,
    from shapes only: no weight or metric changes.

    Args:
        model: a compiled model created under ``strategy.scope()``.
        strategy: the strategy.
        data_batch: one undistributed batch ``(x, y)`` or ``(x, y, sample_weight)``.
    """
    with strategy.scope():
        model._symbolic_build(data_batch=data_batch)


def distributed_step(strategy: Any, step_fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a per-replica step ``step_fn(data)`` to run on every replica and sum its results.

    ``step_fn`` is written as for one device (``model.compute_loss`` already divides by the
    number of replicas); return only such per-global-batch values, e.g. the loss, and read
    metrics with ``model.get_metrics_result()`` on every worker. Wrap the result in
    ``tf.function`` for speed.

    Args:
        strategy: the strategy (the default one runs ``step_fn`` as is).
        step_fn: the step on one replica's share of a batch.

    Returns:
        ``step(data)`` taking a batch of ``distribute_dataset`` and returning ``step_fn``'s
        output structure, summed over replicas.
    """
    import tensorflow as tf

    def step(data: Any) -> Any:
        outputs = strategy.run(step_fn, args=(data,))
        return tf.nest.map_structure(
            lambda value: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None), outputs
        )

    return step


@contextlib.contextmanager
def preemption_handler(strategy: Any, checkpoint: Any, directory: str,
                       restore: bool = True) -> Iterator[Any]:
    """A ``PreemptionCheckpointHandler`` whose state lives in ``directory``, written by the chief.

    On entry every worker restores the latest checkpoint of ``directory`` (so all workers
    must see it: a shared filesystem, as local workers have). Run each training step as
    ``handler.run(step, ...)``: after SIGTERM to any worker, all workers save ``checkpoint``
    at the same step (the chief into ``directory``, the others into a temporary directory
    removed on exit) and ``handler.run`` raises ``Preempted``. Nothing is written otherwise.

    Args:
        strategy: the strategy (any: the default and mirrored ones run in local mode).
        checkpoint: a ``tf.train.Checkpoint`` of the model, the optimizer and a step counter;
            Keras 3 models and optimizers are tracked by it directly.
        directory: the chief's checkpoint directory, e.g. ``<run>/checkpoints/preemption``.
        restore: restore the latest checkpoint of ``directory``. False: a checkpoint there is
            stale (the run went on after it) and the chief removes it, since the handler
            would restore it on the chief only.

    Yields:
        The handler.
    """
    import tensorflow as tf

    if not restore and is_chief():
        shutil.rmtree(directory, ignore_errors=True)
    latest = tf.train.latest_checkpoint(directory) if restore else None
    if latest:
        # Before the handler exists: its own step counter is attached to `checkpoint` later and
        # gets the saved value then (deferred restoration), equal on every worker.
        checkpoint.restore(latest)
    scratch = None if is_chief() else tempfile.mkdtemp(prefix=f"kexp-worker{worker_index()}-")
    manager = tf.train.CheckpointManager(checkpoint, scratch or directory, max_to_keep=1)
    handler = tf.distribute.experimental.PreemptionCheckpointHandler(
        getattr(strategy, "cluster_resolver", None),
        manager,
        termination_config=tf.distribute.experimental.TerminationConfig(exit_fn=_preempted),
    )
    try:
        yield handler
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _preempted() -> None:
    raise Preempted()


def preempted_step(directory: str) -> int | None:
    """The global step saved in the latest pre-emption checkpoint of ``directory`` (``None``
    without one, or when it cannot be read)."""
    import tensorflow as tf

    try:
        latest = tf.train.latest_checkpoint(directory)
        if not latest:
            return None
        return int(tf.train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE"))
    except (OSError, ValueError, tf.errors.OpError):
        return None  # being removed by the chief as stale: not usable either way
