"""``kexp tensorboard [RUNS_DIR|RUN_DIR...]``: TensorBoard's own server over the runs' logs.

Each run's ``logs/`` becomes one TensorBoard run group named ``<run name>/<timestamp>``
(``--logdir_spec``), so runs of several experiments sit side by side.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from kexp.cli.options import run_dirs


def tensorboard(
    paths: list[Path] = typer.Argument(
        None, metavar="RUNS_DIR|RUN_DIR", show_default=False,
        help="Runs directories (every run under them), runs/<name> or run directories. "
        "Default: runs.", autocompletion=run_dirs),
    port: int = typer.Option(None, "--port", help="Port to serve on. Default: 6006, or the "
                             "next free port after it.", show_default=False),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind: 127.0.0.1 serves "
                             "this machine only; 0.0.0.0 every network it is on."),
) -> None:
    """Serve TensorBoard over the runs' logs until Ctrl-C (exit code 0)."""
    from kexp.errors import DataError

    runs = _run_logs(paths or [Path("runs")])
    if not runs:
        where = ", ".join(str(p) for p in paths or [Path("runs")])
        raise DataError(f"no runs with TensorBoard logs under {where} (a run directory has "
                        "run.json and logs/; train one with `kexp train CONFIG`).")
    url = _launch(",".join(f"{name}:{logs}" for name, logs in runs), host, port)
    typer.echo(f"TensorBoard at {url} over {len(runs)} run(s):")
    for name, logs in runs:
        typer.echo(f"  {name}  {logs}")
    typer.echo("Press Ctrl-C to stop.")
    _wait_for_stop()
    typer.echo("TensorBoard stopped.")


def _run_logs(paths: list[Path]) -> list[tuple[str, Path]]:
    """``(name, logs dir)`` of every run under ``paths`` that has a ``logs/``, names unique."""
    from kexp.errors import DataError
    from kexp.runs import find_runs, read_record

    found: dict[Path, str] = {}
    for path in paths:
        if not path.is_dir():
            raise DataError(f"{path}: no such directory (give runs directories or run "
                            "directories).")
        for run in find_runs(path):
            logs = (run / "logs").resolve()
            if logs.is_dir() and logs not in found:
                record = read_record(run)
                name = _name(run, record.name if record is not None else None)
                found[logs] = _unique(name, found.values())
    return [(name, logs) for logs, name in found.items()]


def _name(run: Path, name: object) -> str:
    # ',' and ':' separate the entries of --logdir_spec.
    text = f"{name or run.parent.name}/{run.name}"
    return text.replace(",", "_").replace(":", "_")


def _unique(name: str, taken) -> str:
    taken = set(taken)
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def _launch(logdir_spec: str, host: str, port: int | None) -> str:
    """Start TensorBoard's server in a background thread; return its URL."""
    from tensorboard import program

    argv = [None, "--logdir_spec", logdir_spec, "--host", host]
    if port is not None:
        argv += ["--port", str(port)]
    board = program.TensorBoard()
    board.configure(argv=argv)
    try:
        return board.launch()
    except program.TensorBoardServerException as exc:
        raise typer.BadParameter(exc.msg, param_hint="--port / --host") from None


def _wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM; both stop the server cleanly."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        while not stop.wait(timeout=1.0):  # a timeout keeps Ctrl-C responsive
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
