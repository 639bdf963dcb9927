"""Domain adaptation upper bound — lecture 11: the same network trained on *labelled target* data.

Target labels are not available in a real adaptation problem; this oracle shows how far adaptation could go.
Its config sets ``data.init_args.train_on: target``, the only setting under which training batches carry target
labels (every other method refuses it).

Run: ``python cli.py fit --config configs/target_oracle.yaml``
"""

from __future__ import annotations

from lecture_modules.domain_adaptation.source_only import SourceOnly

__all__ = ["TargetOracle"]


class TargetOracle(SourceOnly):
    """Domain adaptation upper bound: train on labelled target data (lecture 11)."""

    train_on = "target"
