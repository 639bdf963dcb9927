"""The two encoder-decoders of HW5, behind one interface (:class:`~lecture_modules.sequence.core.StepDecoder`).

* :class:`RNNSeq2Seq`: Bahdanau, Cho & Bengio 2015 (arXiv 1409.0473). A bidirectional GRU encodes the source into
  h_1..h_S; at step t the decoder GRU's previous state s_{t-1} scores every h_j with a small MLP,
  e_tj = v^T tanh(W s_{t-1} + U h_j), a_t = softmax(e_t) over real positions, context c_t = sum_j a_tj h_j, and
  s_t = GRU([y_{t-1}; c_t], s_{t-1}); the output layer reads [s_t; c_t; y_{t-1}].
* :class:`TransformerSeq2Seq`: the encoder and decoder of :mod:`.attention` (Vaswani et al., arXiv 1706.03762),
  decoding incrementally with a key/value cache.

``forward(src, src_mask, tgt_in)`` is teacher forcing: logits (B, T, V) for every target position at once, and
the attention maps for the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lecture_modules.base import bad_setting
from lecture_modules.nets import Spec
from lecture_modules.sequence.attention import POSITIONAL, TransformerDecoder, TransformerEncoder

__all__ = ["BahdanauAttention", "RNNSeq2Seq", "Seq2SeqSpec", "TransformerSeq2Seq"]


@dataclass(frozen=True)
class Seq2SeqSpec(Spec):
    """An encoder-decoder for translation.

    Attributes:
        kind: ``transformer`` or ``rnn`` (bidirectional GRU encoder, GRU decoder with Bahdanau attention).
        d_model: model width (Transformer) or embedding and hidden size (RNN).
        heads: attention heads (Transformer; must divide d_model).
        layers: encoder and decoder layers each.
        d_ff: feed-forward hidden width (Transformer).
        dropout: dropout rate in [0, 1).
        positional: ``sinusoidal``, ``learned`` or ``rope`` (Transformer).
        max_len: longest sequence, source or target, in tokens (learned positions, decoding limit).
        norm_first: pre-LN Transformer layers (False: the paper's post-LN).
    """

    kind: Literal["transformer", "rnn"] = "transformer"
    d_model: int = 128
    heads: int = 4
    layers: int = 2
    d_ff: int = 256
    dropout: float = 0.1
    positional: str = "sinusoidal"
    max_len: int = 256
    norm_first: bool = True

    def validate(self, owner: str = "net") -> None:
        if self.kind not in ("transformer", "rnn"):
            raise bad_setting(f"{owner}.kind", self.kind, "'transformer' or 'rnn'")
        for name in ("d_model", "heads", "layers", "d_ff", "max_len"):
            if getattr(self, name) < 1:
                raise bad_setting(f"{owner}.{name}", getattr(self, name), ">= 1")
        if self.d_model % self.heads:
            raise bad_setting(f"{owner}.d_model", self.d_model, f"divisible by {owner}.heads ({self.heads})")
        if self.positional not in POSITIONAL:
            raise bad_setting(f"{owner}.positional", self.positional, f"one of {list(POSITIONAL)}")
        if self.positional == "rope" and (self.d_model // self.heads) % 2:
            raise bad_setting(f"{owner}.d_model", self.d_model, "such that d_model / heads is even (RoPE)")
        if not 0.0 <= self.dropout < 1.0:
            raise bad_setting(f"{owner}.dropout", self.dropout, "in [0, 1)")

    def build(self, src_vocab: int, tgt_vocab: int) -> nn.Module:
        if self.kind == "rnn":
            return RNNSeq2Seq(src_vocab, tgt_vocab, self.d_model, self.layers, self.dropout)
        return TransformerSeq2Seq(src_vocab, tgt_vocab, self)


class TransformerSeq2Seq(nn.Module):
    """Transformer encoder-decoder with cached incremental decoding."""

    def __init__(self, src_vocab: int, tgt_vocab: int, spec: Seq2SeqSpec) -> None:
        """
        Args:
            src_vocab: source vocabulary size.
            tgt_vocab: target vocabulary size.
            spec: the sizes.
        """
        super().__init__()
        sizes = dict(d_model=spec.d_model, heads=spec.heads, layers=spec.layers, d_ff=spec.d_ff, dropout=spec.dropout,
                     positional=spec.positional, max_len=spec.max_len, norm_first=spec.norm_first)  # fmt: skip
        self.encoder = TransformerEncoder(src_vocab, **sizes)
        self.decoder = TransformerDecoder(tgt_vocab, **sizes)
        self.use_cache = True  # benchmarks switch it off to time decoding without the cache

    def forward(self, src, src_mask, tgt_in, need_weights: bool = False):
        memory, enc_maps = self.encoder(src, src_mask, need_weights)  # (B, S, d)
        logits, maps = self.decoder(tgt_in, memory, src_mask, need_weights=need_weights)  # (B, T, V)
        return logits, {"encoder": enc_maps, **maps}

    def start(self, src, src_mask):
        memory, _ = self.encoder(src, src_mask)
        cache = self.decoder.new_cache() if self.use_cache else None
        return {"memory": memory, "mask": src_mask, "cache": cache, "prefix": src.new_zeros(src.shape[0], 0)}

    def step(self, tokens, state):
        prefix = torch.cat([state["prefix"], tokens[:, None]], dim=1)  # (B, t)
        if state["cache"] is None:  # recompute the whole prefix: O(t^2) per step
            logits, _ = self.decoder(prefix, state["memory"], state["mask"])
        else:  # only the new token, against the cached keys and values
            logits, _ = self.decoder(tokens[:, None], state["memory"], state["mask"], cache=state["cache"])
        return logits[:, -1].log_softmax(dim=-1), {**state, "prefix": prefix}

    def reorder(self, state, index):
        cache = None if state["cache"] is None else state["cache"].reorder(index)
        return {"memory": state["memory"].index_select(0, index), "mask": state["mask"].index_select(0, index),
                "cache": cache, "prefix": state["prefix"].index_select(0, index)}  # fmt: skip


class BahdanauAttention(nn.Module):
    """Additive attention: e_j = v^T tanh(W s + U h_j), softmax over real positions, context sum_j a_j h_j."""

    def __init__(self, query_dim: int, key_dim: int, hidden: int) -> None:
        """
        Args:
            query_dim: decoder state size.
            key_dim: encoder output size.
            hidden: the scoring MLP's width.
        """
        super().__init__()
        self.w, self.u, self.v = (
            nn.Linear(query_dim, hidden, bias=False),
            nn.Linear(key_dim, hidden),
            nn.Linear(hidden, 1, bias=False),
        )

    def forward(self, s, keys, projected_keys, mask):
        """s (B, q), keys (B, S, k), U h (B, S, hidden), mask (B, S) -> context (B, k), weights (B, S)."""
        scores = self.v(torch.tanh(self.w(s)[:, None] + projected_keys)).squeeze(-1)  # (B, S)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return (weights[:, :, None] * keys).sum(1), weights


class RNNSeq2Seq(nn.Module):
    """Bidirectional GRU encoder, GRU decoder with Bahdanau attention (HW5's simple baseline)."""

    def __init__(self, src_vocab: int, tgt_vocab: int, hidden: int, layers: int, dropout: float) -> None:
        """
        Args:
            src_vocab: source vocabulary size.
            tgt_vocab: target vocabulary size.
            hidden: embedding and GRU size.
            layers: GRU layers of encoder and decoder.
            dropout: dropout on embeddings and outputs.
        """
        super().__init__()
        self.src_embed, self.tgt_embed = nn.Embedding(src_vocab, hidden), nn.Embedding(tgt_vocab, hidden)
        self.encoder = nn.GRU(hidden, hidden, layers, batch_first=True, bidirectional=True,
                              dropout=dropout if layers > 1 else 0.0)  # fmt: skip
        self.bridge = nn.Linear(2 * hidden, hidden)  # last encoder states (both directions) -> first decoder state
        self.attention = BahdanauAttention(hidden, 2 * hidden, hidden)
        self.cell = nn.GRU(
            hidden + 2 * hidden, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.output = nn.Linear(hidden + 2 * hidden + hidden, tgt_vocab)
        self.drop, self.layers = nn.Dropout(dropout), layers

    def start(self, src, src_mask):
        lengths = src_mask.sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.drop(self.src_embed(src)), lengths, batch_first=True,
                                                   enforce_sorted=False)  # fmt: skip
        out, h = self.encoder(packed)
        keys, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])  # (B, S, 2H)
        h = h.view(self.layers, 2, src.shape[0], -1)  # (layers, directions, B, H)
        s = torch.tanh(self.bridge(torch.cat([h[:, 0], h[:, 1]], dim=-1)))  # (layers, B, H)
        return {"keys": keys, "proj": self.attention.u(keys), "mask": src_mask, "s": s}

    def _step(self, emb, state):
        """One decoder step from embedded inputs (B, H): GRU output (B, H), context (B, 2H), weights (B, S), state."""
        context, weights = self.attention(state["s"][-1], state["keys"], state["proj"], state["mask"])
        out, s = self.cell(torch.cat([emb, context], -1)[:, None], state["s"])  # (B, 1, H)
        return out[:, 0], context, weights, {**state, "s": s}

    def _logits(self, out, context, emb):
        """The output layer on [s_t; c_t; y_{t-1}]: (..., H), (..., 2H), (..., H) -> (..., V)."""
        return self.output(self.drop(torch.cat([out, context, emb], -1)))

    def forward(self, src, src_mask, tgt_in, need_weights: bool = False):
        state = self.start(src, src_mask)
        emb = self.drop(self.tgt_embed(tgt_in))  # (B, T, H)
        outs, contexts, maps = [], [], []
        for t in range(tgt_in.shape[1]):  # the recurrence; the output layer runs once over all steps below
            out, context, weights, state = self._step(emb[:, t], state)
            outs.append(out), contexts.append(context), maps.append(weights)
        logits = self._logits(torch.stack(outs, 1), torch.stack(contexts, 1), emb)  # (B, T, V)
        cross = torch.stack(maps, 1)[:, None] if need_weights else None  # (B, 1, T, S): one "head"
        return logits, {"encoder": [], "self": [], "cross": [cross]}

    def step(self, tokens, state):
        emb = self.drop(self.tgt_embed(tokens))
        out, context, _, state = self._step(emb, state)
        return self._logits(out, context, emb).log_softmax(dim=-1), state

    def reorder(self, state, index):
        return {k: v.index_select(1 if k == "s" else 0, index) for k, v in state.items()}
