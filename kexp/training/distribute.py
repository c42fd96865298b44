"""Distribution: `tf.distribute` strategies, the worker cluster, pre-emption, and what a run
needs from them.

```yaml
distribute:
  strategy: multi_worker       # default | mirrored | multi_worker
  devices: [/cpu:0, /cpu:1]    # mirrored only; default: every GPU, else the CPU
  communication: auto          # multi_worker only: auto | ring | nccl
```

How the pieces fit (TensorFlow 2.21, Keras 3.15):

- ``start_strategy`` (``make_strategy``) first, before any dataset or model exists:
  ``MultiWorkerMirroredStrategy`` refuses to start once TensorFlow's runtime is initialised.
- Create the model, optimizer, metrics and compiled loss under ``strategy.scope()``, then
  build them symbolically on one global batch (``kexp.training._keras_private.symbolic_build``;
  Keras builds compiled metrics lazily, which fails inside ``strategy.run``).
- ``distribute_dataset`` splits each global batch across replicas (``data.batch_size`` is the
  global batch). Keras's ``compute_loss`` already scales the loss by ``1 / replicas``, so the
  per-replica losses sum to the loss of the global batch: ``distributed_step`` sums them.
- Every worker executes the same calls in the same order (reading a metric's result is a
  collective); only the chief (``is_chief()``) writes files. Non-chief workers train in a
  private temporary directory (``private_dir``, ``private_copy``).
- ``preemption_handler`` makes SIGTERM to any worker save all workers' state at the same step
  and raise ``Preempted`` (exit code ``PREEMPTED_EXIT_CODE``); ``--resume`` restores it
  (``plan_distribution``).

The process launcher of ``--local-workers`` is part of the command line
(``kexp.cli.workers``). TensorFlow is imported inside functions: the launcher imports this
module for ``tf_config_for`` and must not start TensorFlow. The rules between ``distribute:``
options and the rest of a config (``devices`` with ``mirrored`` only, ``multi_worker`` with
the custom loop) are config rules, in ``kexp.config.rules``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kexp.errors import ConfigError, KexpError, Problem
from kexp.output import notice
from kexp.runs import Run

if TYPE_CHECKING:
    from kexp.config.schema import Config

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "Preempted",
    "Distributed",
    "make_strategy",
    "start_strategy",
    "strategy_scope",
    "writes_run",
    "tf_config_for",
    "is_chief",
    "worker_index",
    "num_workers",
    "worker_addresses",
    "cluster_info",
    "private_dir",
    "private_copy",
    "remove_private",
    "plan_distribution",
    "distribute_dataset",
    "per_worker",
    "skip_steps",
    "distributed_step",
    "preemption_handler",
    "preempted_step",
]

# A pre-empted run is an interrupted run: its state is saved and `kexp train --resume` continues
# it, exactly what the spec's exit code 130 promises. (TensorFlow's own default is 42.)
PREEMPTED_EXIT_CODE = 130


class Preempted(KexpError):
    """A worker received SIGTERM; every worker saved its state at the same step and stopped.

    Raised by the handler of ``preemption_handler``. ``fit`` marks the run ``interrupted``
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


# --------------------------------------------------------------------------- training helpers


# The attribute marking a dataset each worker built for itself (``per_worker``): the number
# of per-replica batches one step takes from it.
_PER_WORKER = "_kexp_replicas_per_worker"


def per_worker(dataset: Any, local_replicas: int) -> Any:
    """Mark ``dataset`` as this worker's own part of the training data, in per-replica
    batches (a streamed dataset sharded by file, ``kexp.data.stream.Shard``):
    ``distribute_dataset`` then hands it to the worker's replicas as it is, instead of
    splitting global batches. ``local_replicas``: the replicas of this worker."""
    setattr(dataset, _PER_WORKER, local_replicas)
    return dataset


def skip_steps(dataset: Any, steps: int) -> Any:
    """``dataset`` without the batches of its first ``steps`` steps (a run resumed from a
    pre-emption checkpoint): global batches, or per-replica ones of a ``per_worker`` one."""
    local = getattr(dataset, _PER_WORKER, None)
    if local is None:
        return dataset.skip(steps)
    return per_worker(dataset.skip(steps * local), local)


def distribute_dataset(strategy: Any, dataset: Any) -> Any:
    """Split each global batch of ``dataset`` across the strategy's replicas.

    Workers shard by DATA (each takes its slice of every batch), so every worker must build
    the same dataset: same files, same shuffle seed. A ``per_worker`` dataset is each
    worker's own, already in per-replica batches: its replicas take its batches in turn.
    """
    import tensorflow as tf

    if getattr(dataset, _PER_WORKER, None) is not None:
        return strategy.distribute_datasets_from_function(lambda _: dataset)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


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


# --------------------------------------------------------------------------- a run's distribution


@dataclass(frozen=True)
class Distributed:
    """How a run is distributed: the strategy, and for ``multi_worker`` with the custom loop
    the pre-emption checkpoint directory, whether to restore it, and the batch of the first
    epoch it resumes at."""

    strategy: Any
    preemption_dir: str | None = None
    restore: bool = False
    initial_step: int = 0


def start_strategy(cfg: Config) -> Any:
    """The config's strategy (None for the default one), created before any tensor exists."""
    spec = cfg.distribute
    if spec.strategy == "default":
        return None
    strategy = make_strategy(spec.strategy, spec.devices, spec.communication)
    if spec.strategy == "multi_worker":
        role = " (chief)" if is_chief() else ""
        notice(f"worker {worker_index()} of {num_workers()}{role}, "
               f"{strategy.num_replicas_in_sync} replicas")
    return strategy


def strategy_scope(strategy: Any) -> Any:
    """``strategy.scope()``, or nothing for the default strategy (None)."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def writes_run(cfg: Config) -> bool:
    """Whether this process writes the run directory (the chief, or the only process)."""
    return cfg.distribute.strategy != "multi_worker" or is_chief()


def cluster_info(cfg: Config, strategy: Any) -> dict[str, Any]:
    """What run.json records as ``cluster``."""
    cluster: dict[str, Any] = {"strategy": cfg.distribute.strategy,
                               "replicas": strategy.num_replicas_in_sync}
    if cfg.distribute.strategy == "multi_worker":
        cluster["num_workers"] = num_workers()
        cluster["workers"] = worker_addresses()
    return cluster


def private_dir() -> Path:
    """A new temporary directory for a non-chief worker's copy of the run."""
    return Path(tempfile.mkdtemp(prefix=f"kexp-worker{worker_index()}-"))


def private_copy(run: Run) -> Run:
    """A non-chief worker's copy of the run it resumes (not the TensorBoard logs, the
    pre-emption checkpoints or the lock: every worker reads those from the run itself)."""
    copy = private_dir() / run.path.parent.name / run.path.name
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns(".lock", "logs",
                                                                 "preemption", ".*.tmp*"))
    return Run(copy)


def remove_private(run: Run) -> None:
    """Remove a non-chief worker's ``<tmp>/<name>/<run>``."""
    shutil.rmtree(run.path.parent.parent, ignore_errors=True)


def plan_distribution(cfg: Config, strategy: Any, run: Run, source: Run | None, steps: int,
                      start: int, resumed: bool) -> Distributed | None:
    """The run's distribution (None without a strategy). Under ``multi_worker`` with the
    custom loop, a resumed run restores the pre-emption checkpoint of ``source`` (the run
    itself, for a non-chief worker's private copy) when it lies in epoch ``start``."""
    if strategy is None:
        return None
    if cfg.distribute.strategy != "multi_worker" or cfg.train.loop != "custom":
        return Distributed(strategy)
    directory = str((source or run).file("checkpoints/preemption"))
    step = preempted_step(directory) if resumed else None
    # Usable when it lies in the epoch the state sets resume at; older is stale.
    if step is None or not start * steps <= step < (start + 1) * steps:
        return Distributed(strategy, directory)
    return Distributed(strategy, directory, restore=True, initial_step=step - start * steps)
