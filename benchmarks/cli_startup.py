"""Start-up time of ``python cli.py lectures`` (target: under 0.5 s) and of ``python cli.py --help`` versus a bare
LightningCLI with the same base classes.

``lectures`` reads entry-point metadata and the plugins' source files only (no Lightning, no torch, no plugin
import), so it is timed on its own against an absolute target, next to ``python -c pass`` (the interpreter's own
start-up on this machine).

For ``--help``, what is measured: the wall-clock time of a whole ``--help`` process (interpreter start, imports,
plugin discovery and loading, parser construction, printing the help) for ``cli.py`` and for
``benchmarks/bare_cli.py``, a LightningCLI with only the base classes (``LectureModule``, ``LightningDataModule``,
subclass mode). The difference is what ``cli.py`` adds: plugin discovery and import of every lecture, the argument
links, W&B defaults, the save-config callback. Two pairs are timed: the top-level ``--help`` and ``fit --help``
(which also builds the Trainer, model, data, optimiser and scheduler groups).

How: each command runs as a subprocess from the repository root with ``sys.executable``, output discarded, exit
code checked. After ``--warmup`` runs of each (to fill the OS file cache and ``__pycache__``), the two commands of
a pair run ``--repeats`` times, alternating, so background load falls on both alike. The table shows the median
and the minimum; the target is a median at most 0.5 s above the bare CLI's.

Run: ``.venv/bin/python benchmarks/cli_startup.py`` (``--only lectures`` skips the slow ``--help`` pairs)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.5  # --help: at most this much longer than the bare LightningCLI
LISTING_TARGET_S = 0.5  # `cli.py lectures`: at most this long, all included
PAIRS = (("--help",), ("fit", "--help"))
SCRIPTS = ("cli.py", "benchmarks/bare_cli.py")
LISTING = (("cli.py", "lectures"), ("-c", "pass"))


def run_once(cmd: list[str]) -> float:
    """Seconds one run of ``cmd`` takes; raises if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` exited with code {proc.returncode}; run it by hand in {REPO_ROOT} to see the error"
        )
    return elapsed


def time_pair(cmds: list[list[str]], warmup: int, repeats: int) -> list[list[float]]:
    """Run the commands alternately: ``warmup`` untimed rounds, then ``repeats`` timed ones."""
    for _ in range(warmup):
        for cmd in cmds:
            run_once(cmd)
    times: list[list[float]] = [[] for _ in cmds]
    for _ in range(repeats):
        for cmd, out in zip(cmds, times):
            out.append(run_once(cmd))
    return times


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of each command")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each command first")
    parser.add_argument(
        "--only", choices=("all", "lectures", "help"), default="all", help="time only the listing or only --help"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(
        f"Machine: {cpu_name()} ({platform.machine()}), os.cpu_count()={os.cpu_count()}, "
        f"Python {platform.python_version()}, lightning {importlib.metadata.version('lightning')}"
    )
    print(f"{args.repeats} timed runs of each command after {args.warmup} warm-up runs, alternating.\n")
    print("| command | median s | min s |")
    print("|---|---:|---:|")
    verdicts = []
    if args.only in ("all", "lectures"):
        cmds = [[sys.executable, *cmd] for cmd in LISTING]
        times = time_pair(cmds, args.warmup, args.repeats)
        for cmd, runs in zip(LISTING, times):
            print(f"| `python {' '.join(cmd)}` | {statistics.median(runs):.3f} | {min(runs):.3f} |")
        median = statistics.median(times[0])
        verdicts.append(
            f"`lectures`: {median:.3f} s (median); target: < {LISTING_TARGET_S} s: "
            f"{'met' if median < LISTING_TARGET_S else 'not met'}"
        )
    for pair in PAIRS if args.only in ("all", "help") else ():
        cmds = [[sys.executable, script, *pair] for script in SCRIPTS]
        times = time_pair(cmds, args.warmup, args.repeats)
        for script, runs in zip(SCRIPTS, times):
            print(f"| `python {script} {' '.join(pair)}` | {statistics.median(runs):.3f} | {min(runs):.3f} |")
        diff = statistics.median(times[0]) - statistics.median(times[1])
        verdicts.append(
            f"`{' '.join(pair)}`: cli.py is {diff:+.3f} s vs the bare LightningCLI (median); "
            f"target: <= {TARGET_S} s longer: {'met' if diff <= TARGET_S else 'not met'}"
        )
    print()
    for line in verdicts:
        print(f"- {line}")


if __name__ == "__main__":
    main()
