"""``kexp train CONFIG``: train, and print where the run went; ``kexp train --resume
RUN_DIR``: continue a run from its own saved state.

Several workers (``distribute.strategy: multi_worker``): ``--workers host:port,host:port
--worker-index I`` makes this process worker ``I`` of that cluster (it sets ``TF_CONFIG``
before TensorFlow starts); run the same command, same config, on every host. ``--local-workers
N`` starts N such workers on 127.0.0.1 and waits for them, without importing TensorFlow.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import typer

from kexp.cli.options import PluginOpt, QuietOpt, SetOpt, config_files, run_dirs


def train(
    config: Path = typer.Argument(None, dir_okay=False, show_default=False, metavar="CONFIG",
                                  autocompletion=config_files,
                                  help="The experiment's YAML file (not with --resume)."),
    set_: list[str] = SetOpt,
    plugin: list[str] = PluginOpt,
    name: str = typer.Option(None, "--name", help="Run name (default: the config's name:, "
                             "else the file's stem)."),
    runs_dir: Path = typer.Option(None, "--runs-dir", help="Where run directories go "
                                  "(default: the config's runs_dir:, else runs/)."),
    smoke: bool = typer.Option(False, "--smoke", help="Two batches of train and validation "
                               "data for one epoch, under <runs_dir>/_smoke/ (for CI)."),
    resume: Path = typer.Option(None, "--resume", metavar="RUN_DIR", file_okay=False,
                                autocompletion=run_dirs,
                                help="Continue an interrupted, killed or failed run from its "
                                "own config.yaml and newest saved epoch. --set train.epochs=N "
                                "(the one override allowed) extends a completed run."),
    workers: str = typer.Option(None, "--workers", metavar="HOST:PORT,...",
                                help="multi_worker: every worker's address, the same list on "
                                "every host (worker 0 is the chief). Sets TF_CONFIG."),
    worker_index: int = typer.Option(None, "--worker-index", metavar="I",
                                     help="multi_worker: this process's position in --workers."),
    local_workers: int = typer.Option(None, "--local-workers", metavar="N", min=1,
                                      help="multi_worker: start N workers on 127.0.0.1 and "
                                      "wait for them."),
    quiet: bool = QuietOpt,
    print_run_dir: bool = typer.Option(
        False, "--print-run-dir", help="End stdout with the run directory's bare path (for "
        "scripts: RUN=$(kexp train c.yaml -q --print-run-dir | tail -n 1))."),
) -> None:
    """Train a model as CONFIG says; prints the run directory."""
    from kexp.output import set_quiet

    set_quiet(quiet)
    _BARE[0] = print_run_dir
    if local_workers is not None:
        _check_not_both(workers, worker_index)
        _check_multi_worker(config, resume, set_, plugin)
        raise typer.Exit(_launch(local_workers, config, set_, plugin, name, runs_dir, smoke,
                                 resume))
    if workers is not None or worker_index is not None:
        _set_tf_config(workers, worker_index)
        _check_multi_worker(config, resume, set_, plugin)
    if resume is not None:
        _resume(resume, config, set_, plugin, name, runs_dir, smoke)
        return
    if config is None:
        raise typer.BadParameter("give a CONFIG file, or --resume RUN_DIR.",
                                 param_hint="CONFIG")
    from kexp.config import load_config

    cfg = load_config(config, _sets(set_, name, runs_dir), plugin)

    from kexp.training.engine import TrainOptions
    from kexp.training.engine import train as run_training

    trial = _trial()
    options = TrainOptions(smoke=smoke, command=tuple(sys.argv))
    if trial is not None:
        options = TrainOptions(smoke=smoke, command=tuple(sys.argv), run_dir=trial.run_dir,
                               info=trial.info(),
                               callbacks=(trial.reporter(cfg.train.tensorboard),))
    run = run_training(cfg, options)
    if trial is not None:
        trial.finish(run.path)
    _echo_run(run.path)


def _trial():
    """The sweep trial this process trains (``kexp sweep`` sets ``KEXP_TRIAL``), or None."""
    if not os.environ.get("KEXP_TRIAL"):
        return None
    from kexp.sweep.trial import trial_from_env

    return trial_from_env()


def _sets(sets: list[str], name: str | None, runs_dir: Path | None) -> list[str]:
    sets = list(sets)
    if name:
        sets.append(f"name={name}")
    if runs_dir:
        sets.append(f"runs_dir={runs_dir}")
    return sets


def _resume(run_dir: Path, config: Path | None, sets: list[str], plugins: list[str],
            name: str | None, runs_dir: Path | None, smoke: bool) -> None:
    given = [flag for flag, value in (("CONFIG", config), ("--plugin", plugins),
                                      ("--name", name), ("--runs-dir", runs_dir),
                                      ("--smoke", smoke)) if value]
    if given:
        raise typer.BadParameter(
            f"--resume continues a run with its own config.yaml and plugins; {given[0]} "
            "cannot be given with it.", param_hint="--resume")
    from kexp.training.engine import resume as resume_training

    trial = _trial()
    callbacks = (trial.reporter(),) if trial is not None else ()
    run = resume_training(run_dir, sets, command=tuple(sys.argv), callbacks=callbacks)
    if trial is not None:
        trial.finish(run.path)
    _echo_run(run.path)


# --print-run-dir: the run directory's line is its bare path
_BARE = [False]


def _echo_run(path: Path) -> None:
    from kexp.training.distribute import is_chief

    if is_chief():
        typer.echo(str(path) if _BARE[0] else f"run directory: {path}")
    else:
        typer.echo(f"done; the chief wrote the run directory ({path})"
                   if path.exists() else "done; the chief wrote the run directory")


# --------------------------------------------------------------------------- workers


def _check_not_both(workers: str | None, worker_index: int | None) -> None:
    if workers is not None or worker_index is not None:
        raise typer.BadParameter("--local-workers starts its own cluster; --workers and "
                                 "--worker-index cannot be given with it.",
                                 param_hint="--local-workers")


def _set_tf_config(workers: str | None, worker_index: int | None) -> None:
    """TF_CONFIG for ``--workers``/``--worker-index``, set before TensorFlow starts."""
    if workers is None or worker_index is None:
        missing = "--worker-index" if workers is not None else "--workers"
        raise typer.BadParameter(f"--workers and --worker-index go together; {missing} is "
                                 "missing.", param_hint=missing)
    from kexp.training.distribute import tf_config_for

    addresses = [w.strip() for w in workers.split(",") if w.strip()]
    os.environ["TF_CONFIG"] = json.dumps(tf_config_for(addresses, worker_index))


def _check_multi_worker(config: Path | None, resume: Path | None, sets: list[str],
                        plugins: list[str]) -> None:
    """Several workers need ``distribute.strategy: multi_worker`` (and the custom loop):
    otherwise every worker would train alone and write a run of its own."""
    from kexp.config import load_config
    from kexp.errors import ConfigError, Problem

    if resume is not None:
        from kexp.runs import resolve_run_dir

        run_dir = resolve_run_dir(resume)
        if run_dir is None or not (run_dir / "config.yaml").is_file():
            return  # the resume itself reports it
        cfg = load_config(run_dir / "config.yaml")
    elif config is None:
        return
    else:
        cfg = load_config(config, list(sets), plugins)
    if cfg.distribute.strategy != "multi_worker":
        raise ConfigError(Problem(
            "distribute.strategy",
            "--workers, --worker-index and --local-workers need the multi_worker strategy. "
            f"Received: strategy={cfg.distribute.strategy!r}. Expected: multi_worker (e.g. "
            "--set distribute.strategy=multi_worker --set train.loop=custom).",
            cfg.where("distribute.strategy")))


def _launch(n: int, config: Path | None, sets: list[str], plugins: list[str],
            name: str | None, runs_dir: Path | None, smoke: bool, resume: Path | None) -> int:
    """Run ``n`` workers of this command on 127.0.0.1; returns the cluster's exit code."""
    from kexp.cli.workers import launch_local_workers
    from kexp.training.distribute import PREEMPTED_EXIT_CODE

    argv = [sys.executable, "-m", "kexp.cli.app", "train"]
    argv += [str(config)] if config is not None else []
    for value in sets:
        argv += ["--set", value]
    for value in plugins:
        argv += ["--plugin", value]
    for flag, value in (("--name", name), ("--runs-dir", runs_dir), ("--resume", resume)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--smoke"] if smoke else []
    found: list[str] = []

    def watch(index: int, line: str) -> None:
        match = re.match(r"run directory: (.+)$", line.strip())
        if index == 0 and match:
            found.append(match.group(1))

    code = launch_local_workers(argv, n, on_line=watch)
    run_dir = found[-1] if found else (str(resume) if resume else None)
    if code == 0 and run_dir:
        typer.echo(f"run directory: {run_dir}")
    elif code == PREEMPTED_EXIT_CODE and run_dir:
        typer.echo(f"interrupted; continue with: kexp train --local-workers {n} "
                   f"--resume {run_dir}", err=True)
    elif code:
        typer.echo(f"a worker failed (exit code {code})"
                   + (f"; run directory: {run_dir}" if run_dir else ""), err=True)
    return code
