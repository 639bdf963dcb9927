"""RNN sequence-to-sequence with attention — lecture 5 / HW5's simple baseline.

Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly Learning to Align and Translate" (arXiv
1409.0473): the training and decoding of :mod:`.seq2seq` with a bidirectional GRU encoder and a GRU decoder that
attends over the encoder states at every step (additive attention, :class:`~.models.BahdanauAttention`), one layer
of 256 units each side.

Run: ``python cli.py fit --config configs/seq2seq_rnn.yaml``
"""

from __future__ import annotations

from typing import Any

from lecture_modules.sequence.models import Seq2SeqSpec
from lecture_modules.sequence.seq2seq import Seq2Seq

__all__ = ["RNNAttentionSeq2Seq"]


class RNNAttentionSeq2Seq(Seq2Seq):
    """RNN encoder-decoder with Bahdanau attention (arXiv 1409.0473): HW5's simple baseline."""

    def __init__(self, net: Seq2SeqSpec = Seq2SeqSpec(kind="rnn", d_model=256, layers=1), **kwargs: Any) -> None:
        """
        Args:
            net: the encoder-decoder: a one-layer bidirectional GRU encoder and GRU decoder of 256 units.
        """
        super().__init__(net=net, **kwargs)
