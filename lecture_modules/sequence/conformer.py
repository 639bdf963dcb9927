"""Conformer sequence classification — lecture 4 / HW4's strong line.

Gulati et al. 2020, "Conformer: Convolution-augmented Transformer for Speech Recognition" (arXiv 2005.08100): the
classifier of :mod:`.classification` with Conformer blocks (half-step feed-forward, self-attention, a depthwise
convolution module, half-step feed-forward, layer norm) instead of Transformer layers; one block.

Run: ``python cli.py fit --config configs/speaker_conformer.yaml``
"""

from __future__ import annotations

from typing import Any

from lecture_modules.sequence.classification import SequenceClassifier
from lecture_modules.sequence.encoders import EncoderSpec

__all__ = ["ConformerClassifier"]


class ConformerClassifier(SequenceClassifier):
    """Conformer sequence classification (arXiv 2005.08100): macaron FFN, MHSA and a depthwise-convolution module."""

    def __init__(self, net: EncoderSpec = EncoderSpec(kind="conformer", layers=1), **kwargs: Any) -> None:
        """
        Args:
            net: the encoder: one Conformer block (kernel 15, RoPE in its self-attention).
        """
        super().__init__(net=net, **kwargs)
