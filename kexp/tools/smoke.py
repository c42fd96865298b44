"""``make smoke``: ``kexp train --smoke`` on every config of a folder, in one process.

A config that needs something a fresh clone does not have — a Keras dataset file or
pretrained weights that are not in Keras's cache (nothing is downloaded), a ``base:`` run
that has not been trained, or the files of a file dataset (an image folder, TFRecord shards)
that are not here — is skipped with a message
saying why. Any other failure fails the whole smoke run (exit 1).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kexp.errors import ConfigError, KexpError

__all__ = ["main", "missing_requirement"]


def missing_requirement(config: Path) -> str:
    """Why ``config`` cannot run on this machine ('' when it can)."""
    from kexp.config import load_config
    from kexp.data.keras_datasets import KERAS_DATASETS, keras_home

    try:
        cfg = load_config(config, model_only=True)
    except ConfigError as exc:
        base = [p for p in exc.problems if p.path == "model.base"]
        if base:
            return f"its base model is not here ({base[0].message})"
        raise
    if cfg.data is None:
        return "it is a model-only config (no `data:` to train on)"
    spec = KERAS_DATASETS.get(cfg.data.type)
    path = cfg.data.args.get("path")
    missing = _missing_files(cfg.data.type, path)
    if missing:
        return f"its data is not here ({missing} does not exist)"
    if spec is not None and not (path and Path(path).exists()) and not (
            keras_home() / spec.cached).exists():
        return (f"it needs the {spec.name} data ({spec.path_hint}) in Keras's cache "
                f"({keras_home() / spec.cached}) or at `data.path`")
    return ""


# Datasets streamed from files a user points at (an image folder, TFRecord shards...).
_FILE_DATASETS = ("image_directory", "text_directory", "tfrecord", "array_record")


def _missing_files(data_type: str, path: object) -> str:
    """The first of a file dataset's paths (files, folders or globs) that names nothing."""
    import glob

    if data_type not in _FILE_DATASETS or path is None:
        return ""
    for entry in path if isinstance(path, list) else [path]:
        entry = str(entry)
        found = glob.glob(entry) if any(c in entry for c in "*?[") else Path(entry).exists()
        if not found:
            return entry
    return ""


def main(argv: list[str] | None = None) -> int:
    """Smoke-train every ``*.yaml`` in the folder given (default ``configs``)."""
    folder = Path((argv or sys.argv[1:] or ["configs"])[0])
    from kexp._tf import import_tensorflow

    import_tensorflow()
    import keras

    from kexp.config import load_config
    from kexp.models.applications import WeightsUnavailable, no_weight_downloads
    from kexp.training.engine import TrainOptions, train

    failures, skipped, passed = [], [], 0
    for config in sorted(folder.glob("*.yaml")):
        keras.backend.clear_session()
        start = time.perf_counter()
        try:
            why = missing_requirement(config)
            if why:
                skipped.append(config)
                print(f"skip  {config}: {why}", flush=True)
                continue
            with no_weight_downloads():
                run = train(load_config(config), TrainOptions(smoke=True, command=("smoke",)))
        except WeightsUnavailable as exc:
            skipped.append(config)
            print(f"skip  {config}: it needs pretrained weights that are not in Keras's cache "
                  f"({exc.cache_file})", flush=True)
            continue
        except KexpError as exc:
            failures.append(config)
            print(f"FAIL  {config}: {exc}", flush=True)
            continue
        passed += 1
        print(f"ok    {config} ({time.perf_counter() - start:.1f}s) -> {run.path}", flush=True)
    print(f"smoke: {passed} passed, {len(failures)} failed, {len(skipped)} skipped")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
