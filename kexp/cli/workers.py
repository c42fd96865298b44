"""``--local-workers N``: start N copies of ``kexp train`` as a cluster on 127.0.0.1 and wait
for them (a process launcher: no TensorFlow here).

Each worker gets its own ``TF_CONFIG`` (``kexp.training.distribute.tf_config_for``); its output
is printed with a ``[worker i]`` prefix. Signals are turned into one coordinated SIGTERM per
worker, the signal on which every worker saves its state at the same step
(``kexp.training.distribute.preemption_handler``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from kexp.training.distribute import PREEMPTED_EXIT_CODE, tf_config_for

__all__ = ["free_ports", "launch_local_workers"]


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
