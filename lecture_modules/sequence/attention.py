"""Self-attention as lecture 4 draws it, and the Transformer of lecture 5 built from it (pure modules, no Lightning).

Vaswani et al. 2017, "Attention Is All You Need" (arXiv 1706.03762), for a query sequence X (B, T, d) and a key/value
sequence Y (B, S, d):

1. Projections: Q = X W_q, K = Y W_k, V = Y W_v, each split into h heads of d/h (B, h, T|S, d/h).
2. Positions: sinusoidal or learned vectors are added to the embeddings before step 1; RoPE (Su et al. 2021,
   arXiv 2104.09864) instead rotates each head's q and k by an angle proportional to the position, so the score
   q_t . k_s depends on t - s only.
3. Scores: A = softmax(Q K^T / sqrt(d/h) + mask), the mask -inf where a query may not look (the future under the
   causal mask, padding keys).
4. Mix: O = A V, the heads concatenated and projected by W_o.

:class:`MultiHeadAttention` returns A (B, h, T, S) for the attention maps when asked, and otherwise runs
``torch.nn.functional.scaled_dot_product_attention`` (the fused fast path). Masks are booleans with **True where
attention is allowed** (SDPA's convention; ``torch.nn.MultiheadAttention``'s ``attn_mask`` is the opposite).

A decoder keeps a key/value cache (:class:`KVCache`) for incremental decoding: each new token's keys and values are
appended, so step t costs O(t) instead of re-running the whole prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "POSITIONAL",
    "KVCache",
    "LearnedPositions",
    "MultiHeadAttention",
    "TransformerDecoder",
    "TransformerEncoder",
    "apply_rope",
    "causal_mask",
    "padding_mask",
    "sinusoidal_encoding",
]

POSITIONAL = ("sinusoidal", "learned", "rope")


# ------------------------------------------------------------------------------------------------ masks
def causal_mask(queries: int, keys: int | None = None, *, offset: int = 0, device=None) -> torch.Tensor:
    """(T, S) boolean, True where query t (at absolute position ``offset + t``) may attend to key s <= it."""
    keys = queries + offset if keys is None else keys
    q = torch.arange(queries, device=device)[:, None] + offset
    return torch.arange(keys, device=device)[None, :] <= q


def padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B, S) boolean, True at real positions (index < length) and False at padding."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _combine(key_mask: torch.Tensor | None, attn_mask: torch.Tensor | None) -> torch.Tensor | None:
    """A key mask (B, S) and a query-key mask (T, S) as one (B, 1, T|1, S) boolean mask, or None."""
    mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, S)
    if attn_mask is not None:
        mask = attn_mask[None, None] if mask is None else mask & attn_mask[None, None]
    return mask


# ------------------------------------------------------------------------------------------------ positions
def sinusoidal_encoding(length: int, d_model: int, *, offset: int = 0) -> torch.Tensor:
    """(length, d_model): PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...), p from ``offset``."""
    position = torch.arange(offset, offset + length, dtype=torch.float32)[:, None]  # (L, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    angles = position * inv_freq  # (L, ceil(d/2))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return pe


class LearnedPositions(nn.Module):
    """A trained vector per absolute position (BERT/GPT style), up to ``max_len`` positions."""

    def __init__(self, max_len: int, d_model: int) -> None:
        """
        Args:
            max_len: the longest sequence the table covers.
            d_model: the embedding width.
        """
        super().__init__()
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        if offset + length > self.table.num_embeddings:
            raise ValueError(
                f"sequence of {offset + length} positions, longer than the learned table's {self.table.num_embeddings}"
            )
        return self.table(torch.arange(offset, offset + length, device=self.table.weight.device))  # (L, d)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i+d/2}) of each head vector by angle position * base^(-2i/d) (RoPE, "rotate half").

    Args:
        x: (B, h, L, d_head) queries or keys, d_head even.
        positions: (L,) absolute positions.
        base: the frequency base.
    """
    half = x.shape[-1] // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)  # (d/2,)
    angles = positions.to(torch.float32)[:, None] * inv_freq  # (L, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


# ------------------------------------------------------------------------------------------------ attention
class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (steps 1, 3, 4 of the module docstring), RoPE optional (step 2)."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, rope: bool = False) -> None:
        """
        Args:
            d_model: the model width d (divisible by ``heads``).
            heads: the number of heads h.
            dropout: dropout on the attention weights.
            rope: rotate queries and keys by their positions (RoPE).
        """
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        if rope and (d_model // heads) % 2:
            raise ValueError(f"RoPE needs an even head width, got d_model / heads = {d_model // heads}")
        self.heads, self.d_head, self.dropout, self.rope = heads, d_model // heads, dropout, rope
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out_proj = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.d_head).transpose(1, 2)  # (B, n, d) -> (B, h, n, d_head)

    def project_kv(self, y: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, h, S, d_head) of ``y`` (B, S, d), keys rotated when RoPE is on."""
        k, v = self._split(self.k_proj(y)), self._split(self.v_proj(y))
        if self.rope:
            k = apply_rope(k, torch.arange(offset, offset + y.shape[1], device=y.device))
        return k, v

    def forward(
        self,
        query: torch.Tensor,
        key_value: torch.Tensor | None = None,
        *,
        key_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        offset: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``query`` (B, T, d) to ``key_value`` (B, S, d; default: ``query``, self-attention).

        Args:
            query: (B, T, d) the sequence that asks.
            key_value: (B, S, d) the sequence attended to; ignored when ``kv`` is given.
            key_mask: (B, S) True at real keys (False at padding).
            attn_mask: (T, S) True where query t may attend to key s (the causal mask).
            need_weights: also return the weights A (B, h, T, S) (the explicit path instead of SDPA).
            kv: precomputed keys and values (B, h, S, d_head) (a cache), used instead of projecting ``key_value``.
            offset: absolute position of the first query (RoPE and caches).

        Returns:
            The output (B, T, d) and the weights (B, h, T, S) or None.
        """
        q = self._split(self.q_proj(query))  # step 1: (B, h, T, d_head)
        if kv is None:
            k, v = self.project_kv(query if key_value is None else key_value, offset=offset)
        else:
            k, v = kv
        if self.rope:  # step 2: rotate the queries (keys were rotated when projected)
            q = apply_rope(q, torch.arange(offset, offset + q.shape[2], device=q.device))
        mask = _combine(key_mask, attn_mask)  # (B, 1, T|1, S) or None
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # step 3: (B, h, T, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, p, self.training) @ v  # step 4: (B, h, T, d_head)
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1)), weights  # (B, T, d)


# ------------------------------------------------------------------------------------------------ layers
def _feed_forward(d_model: int, d_ff: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))


class EncoderLayer(nn.Module):
    """Self-attention then a position-wise feed-forward net, each in a residual branch (pre- or post-norm)."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float, rope: bool, norm_first: bool) -> None:
        """
        Args:
            d_model: model width.
            heads: attention heads.
            d_ff: hidden width of the feed-forward net.
            dropout: dropout on residual branches and attention weights.
            rope: rotary positions in the attention.
            norm_first: layer norm before each branch (pre-LN) instead of after the residual sum (the paper's).
        """
        super().__init__()
        self.attn = MultiHeadAttention(d_model, heads, dropout, rope)
        self.ff = _feed_forward(d_model, d_ff, dropout)
        self.norm1, self.norm2, self.drop = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x, key_mask=None, attn_mask=None, need_weights=False):
        h = self.norm1(x) if self.norm_first else x
        a, weights = self.attn(h, key_mask=key_mask, attn_mask=attn_mask, need_weights=need_weights)
        x = x + self.drop(a) if self.norm_first else self.norm1(x + self.drop(a))
        x = x + self.drop(self.ff(self.norm2(x))) if self.norm_first else self.norm2(x + self.drop(self.ff(x)))
        return x, weights


@dataclass
class KVCache:
    """Per decoder layer: the self-attention keys/values of the tokens decoded so far, and the cross-attention
    keys/values of the encoder output (computed once). ``length`` is the number of tokens already decoded."""

    self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    length: int = 0

    def reorder(self, index: torch.Tensor) -> KVCache:
        """The cache of the hypotheses ``index`` (beam search keeps some hypotheses and drops others)."""

        def pick(pair):
            return None if pair is None else (pair[0].index_select(0, index), pair[1].index_select(0, index))

        return KVCache([pick(p) for p in self.self_kv], [pick(p) for p in self.cross_kv], self.length)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder output, feed-forward; each a residual branch."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float, rope: bool, norm_first: bool) -> None:
        """
        Args:
            d_model: model width.
            heads: attention heads.
            d_ff: hidden width of the feed-forward net.
            dropout: dropout on residual branches and attention weights.
            rope: rotary positions in the self-attention (cross-attention has no relative order).
            norm_first: pre-LN instead of the paper's post-LN.
        """
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, heads, dropout, rope)
        self.cross_attn = MultiHeadAttention(d_model, heads, dropout, rope=False)
        self.ff = _feed_forward(d_model, d_ff, dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.drop, self.norm_first = nn.Dropout(dropout), norm_first

    def _branch(self, i: int, x: torch.Tensor, fn) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, weights = fn(self.norms[i](x) if self.norm_first else x)
        x = x + self.drop(out)
        return (x if self.norm_first else self.norms[i](x)), weights

    def forward(self, x, memory, memory_mask, cache: KVCache | None, index: int, need_weights=False):
        offset = 0 if cache is None else cache.length
        causal = causal_mask(x.shape[1], offset + x.shape[1], offset=offset, device=x.device)

        def self_attention(h):
            kv = None
            if cache is not None:  # append this step's keys/values to the cache
                k, v = self.self_attn.project_kv(h, offset=offset)
                old = cache.self_kv[index]
                kv = (k, v) if old is None else (torch.cat([old[0], k], 2), torch.cat([old[1], v], 2))
                cache.self_kv[index] = kv
            return self.self_attn(h, attn_mask=causal, kv=kv, offset=offset, need_weights=need_weights)

        def cross_attention(h):
            kv = None
            if cache is not None:
                if cache.cross_kv[index] is None:
                    cache.cross_kv[index] = self.cross_attn.project_kv(memory)
                kv = cache.cross_kv[index]
            return self.cross_attn(h, memory, key_mask=memory_mask, kv=kv, need_weights=need_weights)

        x, self_w = self._branch(0, x, self_attention)
        x, cross_w = self._branch(1, x, cross_attention)
        x, _ = self._branch(2, x, lambda h: (self.ff(h), None))
        return x, self_w, cross_w


class _Stack(nn.Module):
    """Token embedding scaled by sqrt(d), positions, and a stack of layers."""

    def __init__(self, vocab_size, d_model, layers, positional, max_len, dropout, norm_first, layer_fn) -> None:
        """
        Args:
            vocab_size: vocabulary size.
            d_model: model width.
            layers: number of layers.
            positional: 'sinusoidal', 'learned' or 'rope'.
            max_len: longest sequence for learned positions.
            dropout: dropout on the embeddings.
            norm_first: pre-LN layers (then a final layer norm).
            layer_fn: builds one layer.
        """
        super().__init__()
        if positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {POSITIONAL}, got {positional!r}")
        self.embed = nn.Embedding(vocab_size, d_model)
        # std d^-1/2, so the sqrt(d)-scaled embeddings are about unit-sized like the positions (fairseq's init);
        # PyTorch's N(0, 1) would make them sqrt(d) times larger and drown the sinusoidal positions
        nn.init.normal_(self.embed.weight, mean=0.0, std=d_model**-0.5)
        self.positional, self.d_model = positional, d_model
        self.learned = LearnedPositions(max_len, d_model) if positional == "learned" else None
        self.layers = nn.ModuleList(layer_fn() for _ in range(layers))
        # pre-LN ends in a layer norm; post-LN's last layer already normalised (no unused parameters under DDP)
        self.norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.drop = nn.Dropout(dropout)

    def embed_tokens(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        x = self.embed(tokens) * math.sqrt(self.d_model)  # (B, L, d)
        if self.positional == "sinusoidal":
            x = x + sinusoidal_encoding(tokens.shape[1], self.d_model, offset=offset).to(x)
        elif self.positional == "learned":
            x = x + self.learned(tokens.shape[1], offset)
        return self.drop(x)


class TransformerEncoder(_Stack):
    """The Transformer encoder: embeddings + positions, N self-attention layers, a final layer norm (pre-LN)."""

    def __init__(self, vocab_size: int, d_model: int = 128, heads: int = 4, layers: int = 2, d_ff: int = 256,
                 dropout: float = 0.1, positional: str = "sinusoidal", max_len: int = 512, norm_first: bool = True,
                 ) -> None:  # fmt: skip
        """
        Args:
            vocab_size: source vocabulary size.
            d_model: model width.
            heads: attention heads.
            layers: number of layers.
            d_ff: feed-forward hidden width.
            dropout: dropout rate.
            positional: 'sinusoidal', 'learned' or 'rope'.
            max_len: longest sequence for learned positions.
            norm_first: pre-LN (stable without warm-up tricks) or the paper's post-LN.
        """
        rope = positional == "rope"
        super().__init__(vocab_size, d_model, layers, positional, max_len, dropout, norm_first,
                         lambda: EncoderLayer(d_model, heads, d_ff, dropout, rope, norm_first))  # fmt: skip

    def forward(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None, need_weights: bool = False,
                ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:  # fmt: skip
        """(B, S) token ids and (B, S) real-position mask -> (B, S, d) states and each layer's weights."""
        x, maps = self.embed_tokens(tokens), []
        for layer in self.layers:
            x, w = layer(x, key_mask=key_mask, need_weights=need_weights)
            maps.append(w)
        return self.norm(x), maps


class TransformerDecoder(_Stack):
    """The Transformer decoder: masked self-attention + cross-attention layers and the output projection."""

    def __init__(self, vocab_size: int, d_model: int = 128, heads: int = 4, layers: int = 2, d_ff: int = 256,
                 dropout: float = 0.1, positional: str = "sinusoidal", max_len: int = 512, norm_first: bool = True,
                 ) -> None:  # fmt: skip
        """
        Args:
            vocab_size: target vocabulary size.
            d_model: model width.
            heads: attention heads.
            layers: number of layers.
            d_ff: feed-forward hidden width.
            dropout: dropout rate.
            positional: 'sinusoidal', 'learned' or 'rope'.
            max_len: longest sequence for learned positions.
            norm_first: pre-LN or the paper's post-LN.
        """
        rope = positional == "rope"
        super().__init__(vocab_size, d_model, layers, positional, max_len, dropout, norm_first,
                         lambda: DecoderLayer(d_model, heads, d_ff, dropout, rope, norm_first))  # fmt: skip
        self.output = nn.Linear(d_model, vocab_size)

    def new_cache(self) -> KVCache:
        return KVCache([None] * len(self.layers), [None] * len(self.layers), 0)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, need_weights: bool = False) -> tuple[torch.Tensor, dict]:  # fmt: skip
        """Logits (B, T, V) for target tokens (B, T) given the encoder output (B, S, d).

        With a ``cache``, ``tokens`` are the next tokens only (usually T = 1) at positions ``cache.length`` on,
        and the cache grows by T. Also returns ``{"self": [...], "cross": [...]}`` per-layer weights (or Nones).
        """
        offset = 0 if cache is None else cache.length
        x, maps = self.embed_tokens(tokens, offset), {"self": [], "cross": []}
        for i, layer in enumerate(self.layers):
            x, self_w, cross_w = layer(x, memory, memory_mask, cache, i, need_weights)
            maps["self"].append(self_w)
            maps["cross"].append(cross_w)
        if cache is not None:
            cache.length += tokens.shape[1]
        return self.output(self.norm(x)), maps
