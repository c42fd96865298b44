"""``make bench``: kexp against plain Keras, in the same run, interleaved.

    python bench/run.py            # the full benchmark: every group 5 times
    python bench/run.py --quick    # about a minute: batch 32 only, one repetition

What is measured:

- Training throughput on the chapter's MNIST network (MNIST-shaped synthetic data, seeded)
  at batch 32, 128 and 1024, on the ticket model (wide inputs, two outputs) and on a small
  convnet (28x28x1, batch 32 and 128): plain Keras ``model.fit`` on NumPy arrays with every
  default (the default baseline), the same tuned (``steps_per_execution=32``, kexp's thread
  setting, ``verbose=2``: the baseline the targets use), ``kexp train`` with
  ``train.loop: fit``, and with ``train.loop: custom`` in each compile mode (``eager`` on a
  few steps per epoch, reported per sample). One warm-up epoch, then timed epochs. Every
  run is its own process (peak memory per variant); within a repetition the variants of a
  group run back to back, in an order rotated each repetition, and each repetition uses its
  own seed (the same for every variant). Figures are medians over repetitions; ratios are
  medians (and min-max) of the per-repetition ratios to each baseline's run of the same
  repetition.
- Whole processes: ``kexp --help``, ``kexp validate``, and ``kexp train --smoke`` against a
  plain Keras script doing the same two batches (``bench/plain_smoke.py``), and the same
  script with kexp's two process shortcuts (``--shortcuts``), best of N, with peak memory.
- This CPU's matmul roofline (``bench/roofline.py``, in its own processes): the peak GFLOP/s
  of a large matmul, as samples/s of the MNIST network; ``kexp custom/epoch`` at batch 32 is
  reported as a fraction of it.

The table goes to the terminal; the figures to ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench import report  # noqa: E402
from bench.workloads import Variant, make_mnist_like, make_tickets, write_npz  # noqa: E402

__all__ = ["Plan", "full_plan", "quick_plan", "main", "run_benchmark", "time_process"]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DIGITS_CONFIG = REPO / "configs" / "digits_mlp.yaml"
# Children print less: TensorFlow's C++ start-up notices are not what is measured.
# The plain smoke script with kexp's two process shortcuts (see bench/plain_smoke.py).
PLAIN_SHORTCUTS = "plain Keras script, same shortcuts"
CHILD_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
# What `kexp --help` and `kexp validate` cannot avoid: Python and the libraries they need.
BARE_IMPORT = report.BARE_IMPORT


@dataclass
class Group:
    """Variants compared with one another; the first is the baseline."""

    title: str
    variants: list[Variant]
    reps: int


@dataclass
class Plan:
    """How much to run. ``budget_seconds`` caps the whole benchmark: a repetition that would
    not fit is skipped (every group always gets at least one)."""

    mnist_samples: int
    ticket_samples: int
    groups: list[Group]
    convnet_samples: int = 0
    help_reps: int = 7
    smoke_reps: int = 3
    roofline: bool = True
    budget_seconds: float = 540.0
    processes: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _baselines(workload: str, batch: int, epochs: int) -> list[Variant]:
    """Plain Keras as written (every default), then tuned (steps_per_execution=32, kexp's
    threads, verbose=2): the first variant of every group is the default baseline."""
    return [Variant("plain fit", "plain", workload, batch, epochs=epochs),
            Variant("plain fit, tuned", "tuned", workload, batch, epochs=epochs)]


def _mnist_group(batch: int, epochs: int, reps: int, modes: tuple[str, ...],
                 eager_steps: int = 0, reference: bool = False) -> Group:
    variants = [*_baselines("mnist", batch, epochs),
                Variant("kexp fit", "kexp", "mnist", batch, epochs=epochs)]
    variants += [Variant(f"kexp custom/{mode}", "kexp", "mnist", batch, loop="custom",
                         compile_mode=mode, epochs=epochs) for mode in modes]
    if eager_steps:
        variants.append(Variant("kexp custom/eager", "kexp", "mnist", batch, loop="custom",
                                compile_mode="eager", steps=eager_steps, epochs=epochs))
    if reference:
        variants.append(Variant("hand-written epoch fn", "reference", "mnist", batch,
                                epochs=epochs))
    return Group(f"chapter MNIST network, batch {batch}", variants, reps)


def _fit_and_epoch_group(workload: str, title: str, batch: int, epochs: int,
                         reps: int) -> Group:
    """Both baselines, ``kexp fit`` and ``kexp custom/epoch`` (the ticket model, the convnet)."""
    variants = [*_baselines(workload, batch, epochs),
                Variant("kexp fit", "kexp", workload, batch, epochs=epochs),
                Variant("kexp custom/epoch", "kexp", workload, batch, loop="custom",
                        epochs=epochs)]
    return Group(f"{title}, batch {batch}", variants, reps)


def full_plan() -> Plan:
    """The default ``make bench``: every group 5 times (ratios as median and min-max).

    Sized to finish within 30 minutes on an idle 2-core machine: about 8 s of every run is
    fixed (TensorFlow's import, building, tracing, the warm-up epoch), so each run times one
    epoch after the warm-up one, on 30,000 MNIST-shaped samples; the custom loop's ``step``
    and ``eager`` modes (0.47x and 0.07x tuned fit at batch 32 in the last run with them, the
    slowest runs of a repetition) are left out.
    """
    return Plan(
        mnist_samples=30_000,
        ticket_samples=4_096,
        convnet_samples=6_000,
        groups=[
            _mnist_group(32, epochs=2, reps=5, modes=("epoch",), reference=True),
            _mnist_group(128, epochs=2, reps=5, modes=("epoch",)),
            _mnist_group(1024, epochs=2, reps=5, modes=("epoch",)),
            _fit_and_epoch_group("ticket", "ticket model", 32, epochs=2, reps=5),
            _fit_and_epoch_group("convnet", "small convnet 28x28x1", 32, epochs=2, reps=5),
            _fit_and_epoch_group("convnet", "small convnet 28x28x1", 128, epochs=2, reps=5),
        ],
        smoke_reps=5,
        budget_seconds=1800.0,
    )


def quick_plan() -> Plan:
    """``--quick``: batch 32 only, one repetition, one timed epoch; about a minute."""
    return Plan(
        mnist_samples=20_000,
        ticket_samples=0,
        groups=[_mnist_group(32, epochs=2, reps=1, modes=("epoch",), reference=True)],
        help_reps=3,
        smoke_reps=1,
        budget_seconds=120.0,
    )


def run_benchmark(plan: Plan, workdir: Path, console: Any) -> dict[str, Any]:
    """Run ``plan`` in ``workdir``; return the results (what ``latest.json`` holds)."""
    started = time.perf_counter()
    info = plan_info(plan)
    data = _write_data(plan, workdir)
    processes = time_processes(plan, workdir, console) if plan.processes else {}
    roofline = measure_roofline(console) if plan.roofline else {}
    runs = _run_groups(plan, data, workdir, console, started)
    info["load_average_at_end"] = list(os.getloadavg())
    return report.summarize(info, plan.groups, runs, processes,
                            seconds=time.perf_counter() - started, roofline=roofline)


def measure_roofline(console: Any) -> dict[str, Any]:
    """``bench/roofline.py`` with TensorFlow's default thread pools (every core: the
    roofline) and with one thread per pool (what kexp picks for the MLP at batch 32)."""
    out: dict[str, Any] = {}
    for key, threads in (("default", 0), ("one_thread", 1)):
        done = subprocess.run([sys.executable, str(REPO / "bench" / "roofline.py"),
                               "--threads", str(threads)], capture_output=True, text=True,
                              env=CHILD_ENV, cwd=REPO)
        if done.returncode != 0:
            console.print(f"[red]bench/roofline.py --threads {threads} failed[/]\n"
                          f"{done.stderr[-2000:]}")
            continue
        out[key] = json.loads(done.stdout.strip().splitlines()[-1])
        figures = out[key]
        console.print(f"  matmul roofline, {report.ROOFLINE_THREADS[key]}: "
                      f"{figures['peak_gflops']:.0f} GFLOP/s = "
                      f"{figures['roofline_samples_per_s']:,.0f} MLP samples/s; the MLP's "
                      f"batch-32 matmuls alone {figures['mlp_matmuls_samples_per_s']:,.0f} "
                      "samples/s")
    return out


def plan_info(plan: Plan) -> dict[str, Any]:
    """What the results were measured with (machine, versions, sizes)."""
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "mnist_samples": plan.mnist_samples,
        "ticket_samples": plan.ticket_samples,
        "convnet_samples": plan.convnet_samples,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "keras": version("keras"),
        "load_average_at_start": list(os.getloadavg()),
        "kexp_source": kexp_source(),
        **plan.extra,
    }


def kexp_source() -> dict[str, Any]:
    """Which kexp is measured: its folder, and for this repository's own, the commit and
    whether ``kexp/`` has uncommitted changes (other engineers' work in progress)."""
    import importlib.util

    spec = importlib.util.find_spec("kexp")
    folder = Path(spec.origin).parent if spec and spec.origin else None
    out: dict[str, Any] = {"path": str(folder)}
    if folder is None or folder != REPO / "kexp":
        return out

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    out["commit"] = git("rev-parse", "--short", "HEAD")
    out["uncommitted_changes"] = bool(git("status", "--porcelain", "--", "kexp"))
    return out


def _write_data(plan: Plan, workdir: Path) -> dict[str, tuple[Path, int]]:
    """The workloads' ``.npz`` files: ``{workload: (path, samples)}``."""
    data: dict[str, tuple[Path, int]] = {}
    workloads = {v.workload for g in plan.groups for v in g.variants}
    if "mnist" in workloads:
        x, y = make_mnist_like(plan.mnist_samples, seed=0)
        data["mnist"] = (write_npz(workdir / "mnist.npz", {"x": x, "y": y}), len(y))
    if "convnet" in workloads:
        x, y = make_mnist_like(plan.convnet_samples, seed=0)
        data["convnet"] = (write_npz(workdir / "convnet.npz",
                                     {"x": x.reshape(-1, 28, 28, 1), "y": y}), len(y))
    if "ticket" in workloads:
        arrays = make_tickets(plan.ticket_samples, seed=0)
        data["ticket"] = (write_npz(workdir / "tickets.npz", arrays), plan.ticket_samples)
    return data


def _run_groups(plan: Plan, data: dict[str, tuple[Path, int]], workdir: Path, console: Any,
                started: float) -> list[dict[str, Any]]:
    """Every group's repetitions, round-robin over the groups, within the time budget."""
    runs: list[dict[str, Any]] = []
    rep_seconds: dict[str, float] = {}
    for rep in range(max(g.reps for g in plan.groups)):
        for group in plan.groups:
            if rep >= group.reps:
                continue
            elapsed = time.perf_counter() - started
            if rep > 0 and elapsed + rep_seconds.get(group.title, 0) > plan.budget_seconds:
                console.print(f"[yellow]skipping repetition {rep + 1} of {group.title}: "
                              f"over the {plan.budget_seconds:.0f} s budget[/]")
                continue
            rep_start = time.perf_counter()
            # Rotate the order so no variant always runs first (or right after another).
            shift = rep % len(group.variants)
            for variant in group.variants[shift:] + group.variants[:shift]:
                path, samples = data[variant.workload]
                runs.append(_run_one(variant, group.title, rep, path, samples, workdir,
                                     console))
            rep_seconds[group.title] = time.perf_counter() - rep_start
    return runs


def _run_one(variant: Variant, group: str, rep: int, data: Path, samples: int, workdir: Path,
             console: Any) -> dict[str, Any]:
    """One variant in its own process; its result plus the process's peak memory."""
    folder = workdir / f"{variant.key}-r{rep}"
    folder.mkdir(parents=True)
    spec = {"variant": variant.to_dict(), "data": str(data), "num_samples": samples,
            "seed": rep, "workdir": str(folder)}
    (folder / "spec.json").write_text(json.dumps(spec))
    result_path = folder / "result.json"
    log = folder / "log.txt"
    cmd = [sys.executable, str(REPO / "bench" / "worker.py"), str(folder / "spec.json"),
           str(result_path)]
    seconds, code, rss_kb = time_process(cmd, log)
    record: dict[str, Any] = {"group": group, "variant": variant.name, "rep": rep,
                              "batch": variant.batch, "workload": variant.workload,
                              "process_seconds": seconds, "peak_rss_mb": rss_kb / 1024}
    if code != 0 or not result_path.exists():
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        console.print(f"[red]{group} / {variant.name} (rep {rep + 1}) failed with exit "
                      f"code {code}[/]\n{tail}")
        record["error"] = f"exit code {code}"
        return record
    record.update(json.loads(result_path.read_text()))
    rate = report.rate(record, "epoch_seconds")
    console.print(f"  {group:<36} {variant.name:<20} rep {rep + 1}: "
                  f"{rate:>9,.0f} samples/s  loss {record['final_loss']:.4f}  "
                  f"{record['peak_rss_mb']:,.0f} MB  ({seconds:.1f} s)")
    return record


def time_process(cmd: list[str], log: Path | None = None,
                 cwd: Path = REPO) -> tuple[float, int, int]:
    """Run ``cmd``; return its wall seconds, exit code and peak resident memory (KB).

    The command runs under ``bench/launch.py``, which forks it and reads its ``ru_maxrss``
    with ``wait4``: forked from this (large) process, its figure would include ours.
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result = Path(handle.name)
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        subprocess.run([sys.executable, str(REPO / "bench" / "launch.py"), str(result), *cmd],
                       stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=CHILD_ENV,
                       check=True)
        figures = json.loads(result.read_text())
    finally:
        if log:
            out.close()
        result.unlink(missing_ok=True)
    return figures["seconds"], figures["exit_code"], figures["maxrss_kb"]


def _kexp_command() -> list[str]:
    """The ``kexp`` console script a user runs (beside this Python), else ``python -m``."""
    script = Path(sys.executable).parent / "kexp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "kexp.cli.app"]


def time_processes(plan: Plan, workdir: Path, console: Any) -> dict[str, Any]:
    """Whole-process timings, interleaved, with peak memory: ``kexp --help``, ``kexp
    validate`` and a bare import of the libraries they need, in turn ``help_reps`` times
    (median and best; the first run of a fresh clone writes kexp's byte code and counts
    too), then the smoke runs (best of N)."""
    kexp = _kexp_command()
    cli = {
        "kexp --help": kexp + ["--help"],
        "kexp validate": kexp + ["validate", str(DIGITS_CONFIG)],
        BARE_IMPORT: [sys.executable, "-c", "import typer, yaml, pydantic"],
    }
    cli_runs: dict[str, list[tuple[float, int, int]]] = {name: [] for name in cli}
    for _ in range(plan.help_reps):
        for name, cmd in cli.items():
            cli_runs[name].append(time_process(cmd, workdir / name.replace(" ", "_")))
    out: dict[str, Any] = {name: _best(runs) for name, runs in cli_runs.items()}
    smoke = {
        "kexp train --smoke": kexp + ["train", "--smoke", str(DIGITS_CONFIG), "--runs-dir",
                                      str(workdir / "smoke-runs")],
        "plain Keras script": [sys.executable, str(REPO / "bench" / "plain_smoke.py"),
                               str(workdir / "plain-smoke")],
        PLAIN_SHORTCUTS: [sys.executable, str(REPO / "bench" / "plain_smoke.py"),
                          "--shortcuts", str(workdir / "plain-smoke-shortcuts")],
    }
    samples: dict[str, list[tuple[float, int, int]]] = {name: [] for name in smoke}
    for rep in range(plan.smoke_reps):
        # Rotate which goes first: the first may find a colder file cache.
        names = list(smoke)[rep % len(smoke):] + list(smoke)[:rep % len(smoke)]
        for name in names:
            log = workdir / f"{name.replace(' ', '_').replace(',', '')}-{rep}.log"
            samples[name].append(time_process(smoke[name], log))
    for name, runs in samples.items():
        out[name] = _best(runs)
    for name, figures in out.items():
        console.print(f"  {name:<36} {figures['seconds']:.2f} s best, "
                      f"{figures['median_seconds']:.2f} s median "
                      f"({min(figures['all_seconds']):.2f}–{max(figures['all_seconds']):.2f})  "
                      f"{figures['peak_rss_mb']:,.0f} MB  ({figures['reps']} runs)")
    return out


def _best(runs: list[tuple[float, int, int]]) -> dict[str, Any]:
    """The best run (``seconds``, its exit code and memory) and the median of all."""
    import statistics

    ok = [r for r in runs if r[1] == 0]
    chosen = min(ok) if ok else runs[0]
    return {"seconds": chosen[0], "exit_code": chosen[1], "peak_rss_mb": chosen[2] / 1024,
            "median_seconds": statistics.median(r[0] for r in runs),
            "all_seconds": [r[0] for r in runs], "reps": len(runs),
            "failed": len(runs) - len(ok)}


def main(argv: list[str] | None = None) -> int:
    """``bench/run.py [--quick] [--out FILE] [--budget SECONDS] [--no-processes]``."""
    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="about a minute: batch 32 only, one repetition")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: bench/results/latest.json, "
                             "or quick.json with --quick)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds the whole benchmark may take (default 1800; 120 quick)")
    parser.add_argument("--no-processes", action="store_true",
                        help="skip the whole-process timings")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the groups whose title contains TEXT (repeatable; "
                             "e.g. --only 'MNIST network, batch 32' --only convnet)")
    args = parser.parse_args(argv)

    plan = quick_plan() if args.quick else full_plan()
    if args.only:
        plan.groups = [g for g in plan.groups if any(t in g.title for t in args.only)]
        if not plan.groups:
            parser.error(f"no group title contains {' or '.join(map(repr, args.only))}")
    if args.budget is not None:
        plan.budget_seconds = args.budget
    plan.processes = not args.no_processes
    out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")
    # Piped output would be cut to 80 columns, too narrow for the table.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 220)
    console.print(f"kexp benchmark ({'quick' if args.quick else 'full'}): "
                  f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="kexp-bench-") as tmp:
        results = run_benchmark(plan, Path(tmp), console)
    given = sys.argv[1:] if argv is None else argv
    results["command"] = " ".join(["python bench/run.py", *given]) if given else "make bench"
    report.print_report(results, console)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    console.print(f"results: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
