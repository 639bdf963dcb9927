"""``benchmarks/lifelong.py`` with the MAS-vs-HW14 investigation's options; not the lecture's benchmark.

HW14's sample code handles the importances in ways the lecture's methods do not offer (see
``benchmarks/investigations/hw14_protocol.py``). This script runs ``benchmarks/lifelong.py`` with every option of
that script, plus the investigation's own:

* MAS and SCP run as ``MASHW14`` / ``SCPHW14``, which take HW14's protocols (with the options below left out, they
  are the lecture's MAS and SCP step for step);
* ``--accumulate hw14``: the compounding sum of HW14's later (rotated-MNIST) sample code;
* ``--estimate-on seen``: every seen task re-estimated at each task's end (HW14's 2021 sample code; give
  ``--importance-samples``, the images kept of each old task);
* ``--importance-on-eval-images``: a diagnostic. The importances are estimated on the test images the accuracy
  matrix scores, as HW14's sample code does (``benchmarks/investigations/leaky_importance.py``); the scored images
  then shape the penalty that protects them, so the numbers measure what that choice is worth, not the method.

Its results files have the schema of ``benchmarks/lifelong.py``'s; ``--combine`` tabulates them too.

Run (HW14's 2021 protocol for MAS, all 10,000 test images scored):
``.venv/bin/python benchmarks/investigations/lifelong_hw14.py --mnist ../shared/data/mnist --methods mas
--reset-optimizer --accumulate mean --estimate-on seen --importance-samples 10000 --model-arg per_sample=false
--results r.json --figure r.png``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: lifelong.py, machine.py, runner.py
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, so it runs from anywhere

import lifelong  # benchmarks/lifelong.py

HW14_CLASSES = {
    "mas": "benchmarks.investigations.hw14_protocol.MASHW14",
    "scp": "benchmarks.investigations.hw14_protocol.SCPHW14",
}
LEAKY_STREAM = "benchmarks.investigations.leaky_importance.ImportanceOnEvalImages"


def investigation_overrides(method: str, args) -> tuple[list[str], list[str]]:
    """``benchmarks/lifelong.py``'s overrides, with MAS and SCP swapped for their HW14-protocol classes."""
    first, extra = lifelong.lecture_overrides(method, args)
    if method in HW14_CLASSES:
        first.append(f"--model={HW14_CLASSES[method]}")  # before HW14's setting, whose model overrides then apply
        if args.estimate_on:
            extra += ["--model.init_args.estimate_on", args.estimate_on]
    if args.importance_on_eval_images:
        first += ["--data.class_path", LEAKY_STREAM]
    return first, extra


def investigation_notes(args) -> list[str]:
    notes = lifelong.lecture_notes(args)
    if getattr(args, "estimate_on", None) == "seen":
        notes.append("MAS/SCP re-estimate every seen task at each task's end (HW14 2021)")
    if getattr(args, "importance_on_eval_images", False):
        notes.append("DIAGNOSTIC: the importance images are the scored test images instead (HW14's choice; leaks)")
    return notes


def build_parser() -> argparse.ArgumentParser:
    parser = lifelong.build_parser(accumulate=("sum", "mean", "hw14"))
    parser.description = __doc__
    parser.add_argument(
        "--estimate-on",
        choices=["current", "seen"],
        default=None,
        help="MAS/SCP: each task's importance once, on its own data (current, the lecture's), or every seen task "
        "re-estimated at each task's end (seen, HW14 2021)",
    )
    parser.add_argument(
        "--importance-on-eval-images",
        action="store_true",
        help="diagnostic only: estimate EWC/MAS/SCP importances on the test images the matrix scores, as HW14's "
        "sample code does; measures what that choice is worth, leaks, not a result",
    )
    return parser


if __name__ == "__main__":
    lifelong.main(parser=build_parser(), overrides=investigation_overrides, notes=investigation_notes)
