"""``kexp sweep CONFIG``: search the config's ``sweep:`` block with Optuna, one ``kexp train``
process per trial; ``kexp sweep --resume SWEEP_DIR``: continue (or join) a sweep."""

from __future__ import annotations

from pathlib import Path

import typer

from kexp.cli.options import PluginOpt, QuietOpt, SetOpt, config_files, run_dirs


def sweep(
    config: Path = typer.Argument(None, dir_okay=False, show_default=False, metavar="CONFIG",
                                  help="The experiment's YAML file, with a sweep: block.",
                                  autocompletion=config_files),
    set_: list[str] = SetOpt,
    plugin: list[str] = PluginOpt,
    name: str = typer.Option(None, "--name", help="Sweep name (default: the config's name:, "
                             "else the file's stem)."),
    runs_dir: Path = typer.Option(None, "--runs-dir", help="Where the sweep directory goes "
                                  "(default: the config's runs_dir:, else runs/)."),
    trials: int = typer.Option(None, "--trials", min=1, help="Trials in all (sweep.trials)."),
    jobs: int = typer.Option(None, "--jobs", min=1, help="Trials at once on this machine "
                             "(sweep.jobs)."),
    storage: str = typer.Option(None, "--storage", metavar="URL",
                                help="An Optuna storage URL (postgresql://user:pw@host/db) "
                                "shared by several kexp sweep processes. Default: a SQLite "
                                "file in the sweep directory."),
    study: str = typer.Option(None, "--study", metavar="NAME", help="The study's name in "
                              "the storage (the same on every machine that shares it)."),
    resume: Path = typer.Option(None, "--resume", metavar="SWEEP_DIR", file_okay=False,
                                help="Continue a sweep: finished trials are kept, trials that "
                                "were running continue from their run directories.",
                                autocompletion=run_dirs),
    quiet: bool = QuietOpt,
) -> None:
    """Run the config's sweep; prints the sweep directory and the best trial."""
    from kexp.output import set_quiet

    set_quiet(quiet)
    from kexp.sweep.directory import check_sweep, create_sweep, reopen_sweep
    from kexp.sweep.runner import run_sweep

    if resume is not None:
        given = [flag for flag, value in (("CONFIG", config), ("--set", set_),
                                          ("--plugin", plugin), ("--name", name),
                                          ("--runs-dir", runs_dir), ("--study", study))
                 if value]
        if given:
            raise typer.BadParameter(f"--resume continues a sweep with its own config; "
                                     f"{given[0]} cannot be given with it.",
                                     param_hint="--resume")
        plan = reopen_sweep(resume, storage, trials, jobs)
    else:
        if config is None:
            raise typer.BadParameter("give a CONFIG file, or --resume SWEEP_DIR.",
                                     param_hint="CONFIG")
        from kexp.config import load_config

        sets = list(set_)
        for key, value in (("name", name), ("runs_dir", runs_dir), ("sweep.trials", trials),
                           ("sweep.jobs", jobs)):
            if value is not None:
                sets.append(f"{key}={value}")
        cfg = load_config(config, sets, plugin)
        check_sweep(cfg, config, sets, plugin, storage)
        plan = create_sweep(cfg, storage, study)
    typer.echo(f"sweep directory: {plan.dir}")
    if not quiet:
        typer.echo(f"{plan.trials} trials, {plan.jobs} at once; {plan.direction} "
                   f"{plan.metric}")
    study_ = run_sweep(plan)
    _report(plan, study_)


def _report(plan, study) -> None:
    from kexp.cli.console import console
    from kexp.sweep.results import best_trial, top_table

    best = best_trial(study)
    if best is None:
        typer.echo(f"no trial completed; see {plan.dir / 'trials.csv'}")
        return
    console().print(top_table(study, plan.metric, plan.direction))
    typer.echo(f"best trial: {best.number}  {plan.metric} {best.value:.6g}  "
               f"{best.user_attrs.get('run_dir')}")
    if (plan.dir / "best.yaml").exists():
        typer.echo(f"best config: {plan.dir / 'best.yaml'}")
    typer.echo(f"sweep directory: {plan.dir}")
