"""The sweep directory, ``<runs_dir>/<name>/sweep-<YYYYMMDD-HHMMSS>/``: made once every check
has passed, reopened by ``kexp sweep --resume``.

| file | content |
|---|---|
| config.yaml | the resolved config, ``sweep:`` block included: what every trial starts from |
| sweep.json | the block, the storage (password hidden), study, status, best trial |
| study.db | the embedded study (SQLite), unless ``--storage`` names another |
| trials/NNNN/ | one ordinary run directory per trial |
| output/NNNN.log | what each trial process printed |
| trials.csv, best.yaml, history.png, importances.png, parallel_coordinates.png | results |
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import yaml

from kexp.config.schema import Config
from kexp.errors import ConfigError, Problem
from kexp.monitor import direction as metric_direction
from kexp.runs import atomic_write, create_dir_atomically, now
from kexp.sweep.runner import Sweep, read_sweep
from kexp.sweep.study import embedded_url, has_password, redact

__all__ = ["check_sweep", "create_sweep", "reopen_sweep"]


def check_sweep(cfg: Config, config: Path, sets: list[str], plugins: list[str],
                storage: str | None) -> None:
    """Everything that can be checked before a sweep starts: the block, every value of the
    search space (through the config check), the metric, sampler, pruner, and the storage."""
    from kexp.sweep.space import check_metric, check_space
    from kexp.sweep.study import check_components, open_storage

    if cfg.sweep is None:
        raise ConfigError(Problem("sweep", "this config has no `sweep:` block (see the "
                                  "README's Sweeps section)", str(cfg.file or config)))
    check_space(cfg, config, sets, plugins)
    check_metric(cfg)
    check_components(cfg)
    if storage is not None:
        open_storage(storage)


def create_sweep(cfg: Config, storage: str | None, study: str | None) -> Sweep:
    """Make the sweep directory with its config.yaml and sweep.json in it: it appears whole
    (``create_dir_atomically``) or not at all, so a kill while it starts never leaves one
    that ``--resume`` refuses."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    metric = cfg.sweep.metric
    info = {
        "name": cfg.run_name(),
        "status": "running",
        "started": now(),
        "command": [redact(arg) for arg in sys.argv],
        "config_file": str(cfg.file) if cfg.file else None,
        "study": study,  # None until the directory has its name: see _study_name
        "storage": "embedded" if storage is None else redact(storage),
        "storage_complete": storage is None or not has_password(storage),
        "metric": metric,
        "direction": cfg.sweep.direction or metric_direction(metric),
        "sweep": cfg.sweep.model_dump(mode="json", exclude_none=True),
    }

    def populate(tmp: Path) -> None:
        atomic_write(tmp / "config.yaml", yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))
        atomic_write(tmp / "sweep.json", json.dumps(info, indent=2) + "\n")

    parent = Path(cfg.runs_dir) / cfg.run_name()
    path = create_dir_atomically(parent, f"sweep-{stamp}", populate).resolve()
    info["study"] = _study_name(info, path)
    atomic_write(path / "sweep.json", json.dumps(info, indent=2) + "\n")
    return Sweep(path, cfg, storage or embedded_url(path), info["study"],
                 _budget(cfg, cfg.sweep.trials), cfg.sweep.jobs)


def _study_name(info: dict, sweep_dir: Path) -> str:
    """The study's name: ``--study``, else ``<run name>/<sweep directory name>``."""
    return info.get("study") or f"{info['name']}/{sweep_dir.name}"


def reopen_sweep(sweep_dir: Path, storage: str | None, trials: int | None,
                 jobs: int | None) -> Sweep:
    """The sweep of a directory, to continue (``kexp sweep --resume``). ``--storage`` is
    needed again when the URL held a password (sweep.json keeps it hidden)."""
    from kexp.config import load_config

    sweep_dir = Path(sweep_dir).resolve()
    info = read_sweep(sweep_dir)
    if not info or not (sweep_dir / "config.yaml").is_file():
        raise ConfigError(Problem("", f"{sweep_dir} is not a sweep directory (it has no "
                                  "sweep.json and config.yaml)", "--resume"))
    cfg = load_config(sweep_dir / "config.yaml")
    if storage is None:
        if info.get("storage") == "embedded":
            storage = embedded_url(sweep_dir)
        elif info.get("storage_complete"):
            storage = info["storage"]
        else:
            raise ConfigError(Problem("", f"this sweep's study is in {info.get('storage')}, "
                                      "whose password kexp does not keep: give the URL again "
                                      "with --storage", "--resume"))
    return Sweep(sweep_dir, cfg, storage, _study_name(info, sweep_dir),
                 _budget(cfg, trials or cfg.sweep.trials),
                 jobs or cfg.sweep.jobs)


def _budget(cfg: Config, trials: int) -> int:
    """The number of trials: with the grid sampler, at most one per point of the grid."""
    if cfg.sweep.sampler.type.lower() != "grid":
        return trials
    from kexp.sweep.space import grid_size, grid_space

    size = grid_size(grid_space(cfg))
    if size < trials:
        print(f"note: the grid has {size} points; running {size} trials, not {trials}",
              file=sys.stderr)
    return min(size, trials)
