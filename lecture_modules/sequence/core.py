"""Pure pieces of sequence-to-sequence training and decoding (lecture 5, HW5), tested without a Trainer.

* :func:`label_smoothed_nll`: Szegedy et al. 2016's label smoothing as fairseq's ``label_smoothed_cross_entropy``
  writes it, (1 - eps) NLL + eps mean over the vocabulary of -log p, padding ignored.
* :class:`InverseSqrtLR`: Vaswani et al.'s schedule, lr * min(step / warmup, sqrt(warmup / step)).
* :func:`greedy_decode` and :func:`beam_search` (with the GNMT length penalty ((5 + |y|) / 6)^alpha, Wu et al.
  2016, arXiv 1609.08144) over a :class:`StepDecoder`: anything with ``start`` / ``step`` / ``reorder``.
* :func:`scheduled_sampling_inputs`: Bengio et al. 2015 (arXiv 1506.03099) in the two-pass form that also fits a
  Transformer (Mihaylova & Martins 2019, arXiv 1906.07651): decoder inputs where each gold token is replaced by
  the model's own prediction with probability p.
* :func:`bleu` / :func:`chrf`: sacrebleu's corpus scores.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import Metric

from datamodules.errors import SettingError

__all__ = [
    "CorpusScore",
    "InverseSqrtLR",
    "StepDecoder",
    "beam_search",
    "bleu",
    "chrf",
    "gather_rows",
    "greedy_decode",
    "label_smoothed_nll",
    "length_penalty",
    "scheduled_sampling_inputs",
    "sentence_bleu",
]


# ------------------------------------------------------------------------------------------------ training
def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, epsilon: float, ignore_index: int) -> torch.Tensor:
    """Mean over real target tokens of (1 - eps) (-log p(y)) + eps mean_v (-log p(v)).

    Args:
        logits: (N, V) scores.
        target: (N,) gold ids; ``ignore_index`` marks padding.
        epsilon: smoothing mass eps in [0, 1); 0 is plain cross-entropy.
        ignore_index: the padding id.
    """
    logp = logits.log_softmax(dim=-1)  # (N, V)
    keep = target != ignore_index
    nll = -logp.gather(1, target.clamp(min=0)[:, None]).squeeze(1)  # (N,)
    smooth = -logp.mean(dim=-1)  # (N,) the uniform distribution's cross-entropy
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    return loss[keep].sum() / keep.sum().clamp(min=1)


class InverseSqrtLR(LRScheduler):
    """Linear warm-up to the base lr over ``warmup_steps``, then decay as 1/sqrt(step) (Vaswani et al., fairseq's
    ``inverse_sqrt``), stepped per optimiser step."""

    interval = "step"

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 4000, last_epoch: int = -1) -> None:
        """
        Args:
            optimizer: the wrapped optimiser.
            warmup_steps: steps of linear warm-up (the peak lr is the optimiser's lr, reached at this step).
            last_epoch: index of the last step (resume).
        """
        if warmup_steps < 1:
            raise SettingError(f"lr_scheduler.init_args.warmup_steps must be >= 1, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        step = max(step, 1)
        return min(step / self.warmup_steps, math.sqrt(self.warmup_steps / step))

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch + 1) for base in self.base_lrs]


def scheduled_sampling_inputs(gold_inputs: torch.Tensor, predictions: torch.Tensor, probability: float,
                              generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """Decoder inputs (B, T): position t > 0 takes the model's prediction for it (made from the gold prefix,
    ``predictions[:, t - 1]``) with ``probability``, else the gold token; position 0 (BOS) stays."""
    if probability <= 0:
        return gold_inputs
    use = torch.rand(gold_inputs.shape, generator=generator, device=gold_inputs.device) < probability
    use[:, 0] = False
    shifted = torch.cat([gold_inputs[:, :1], predictions[:, :-1]], dim=1)  # prediction for position t
    return torch.where(use, shifted, gold_inputs)


# ------------------------------------------------------------------------------------------------ decoding
class StepDecoder(Protocol):
    """A model decoded one token at a time: ``start`` encodes the source and returns the decoder state, ``step``
    takes the last tokens (B,) and returns log-probabilities (B, V) and the new state, ``reorder`` keeps rows."""

    def start(self, src: torch.Tensor, src_mask: torch.Tensor) -> Any: ...

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]: ...

    def reorder(self, state: Any, index: torch.Tensor) -> Any: ...


def length_penalty(length: int | torch.Tensor, alpha: float) -> float | torch.Tensor:
    """GNMT's ((5 + |y|) / 6)^alpha; alpha = 0 ranks by total log-probability."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def greedy_decode(model: StepDecoder, src: torch.Tensor, src_mask: torch.Tensor, *, bos: int, eos: int,
                  max_len: int) -> list[list[int]]:  # fmt: skip
    """Argmax at each step, batched; each output stops after its EOS (kept) or at ``max_len`` tokens."""
    state = model.start(src, src_mask)
    tokens = torch.full((src.shape[0],), bos, dtype=torch.long, device=src.device)
    out = [[] for _ in range(src.shape[0])]
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logp, state = model.step(tokens, state)
        tokens = logp.argmax(dim=-1)  # (B,)
        for i in torch.nonzero(~done).flatten().tolist():
            out[i].append(int(tokens[i]))
        done |= tokens == eos
        if done.all():
            break
    return out


@torch.no_grad()
def beam_search(model: StepDecoder, src: torch.Tensor, src_mask: torch.Tensor, *, bos: int, eos: int, max_len: int,
                beam: int, alpha: float = 0.0) -> list[list[int]]:  # fmt: skip
    """The best hypothesis per source under score = sum log p / length_penalty(|y|, alpha).

    Each step scores every extension of the ``beam`` live hypotheses and takes the best 2 * beam; an EOS among
    the first ``beam`` of them finishes a hypothesis, the best ``beam`` others live on (fairseq's rule, so beam 1
    is greedy decoding). Decoding stops when ``beam`` hypotheses have finished or at ``max_len`` tokens (the
    live ones then count as finished). One source at a time.
    """
    return [_beam_one(model, src[i : i + 1], src_mask[i : i + 1], bos, eos, max_len, beam, alpha)
            for i in range(src.shape[0])]  # fmt: skip


def _beam_one(model, src, src_mask, bos, eos, max_len, beam, alpha) -> list[int]:
    state = model.start(src, src_mask)
    hyps: list[list[int]] = [[]]
    scores = torch.zeros(1, device=src.device)  # (k,) total log-probabilities
    last = torch.full((1,), bos, dtype=torch.long, device=src.device)
    finished: list[tuple[float, list[int]]] = []
    for t in range(max_len):
        logp, state = model.step(last, state)  # (k, V)
        total = (scores[:, None] + logp).flatten()  # (k * V,)
        vocab = logp.shape[1]
        best, idx = total.topk(min(2 * beam, total.numel()))
        keep_rows, keep_tokens, keep_scores = [], [], []
        for rank, (score, flat) in enumerate(zip(best.tolist(), idx.tolist(), strict=True)):
            row, token = divmod(flat, vocab)
            if token == eos:
                if rank < beam:
                    finished.append((score / length_penalty(t + 1, alpha), [*hyps[row], eos]))
            elif len(keep_rows) < beam:
                keep_rows.append(row), keep_tokens.append(token), keep_scores.append(score)
        if len(finished) >= beam or not keep_rows:
            break
        index = torch.tensor(keep_rows, device=src.device)
        hyps = [[*hyps[r], tok] for r, tok in zip(keep_rows, keep_tokens, strict=True)]
        scores = torch.tensor(keep_scores, device=src.device)
        last = torch.tensor(keep_tokens, device=src.device)
        state = model.reorder(state, index)
    else:  # max_len reached: the live hypotheses end here
        finished += [(s / length_penalty(max_len, alpha), h) for s, h in zip(scores.tolist(), hyps, strict=True)]
    return max(finished, key=lambda f: f[0])[1]


# ------------------------------------------------------------------------------------------------ scores
def bleu(hypotheses: list[str], references: list[str], tokenize: str = "13a") -> float:
    """sacrebleu's corpus BLEU (0-100) with one reference per sentence; ``tokenize='zh'`` for Chinese targets."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize).score)


def sentence_bleu(hypothesis: str, reference: str, tokenize: str = "13a") -> float:
    """sacrebleu's smoothed sentence BLEU (0-100), for the sample-translation table."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, [reference], tokenize=tokenize).score)


def chrf(hypotheses: list[str], references: list[str]) -> float:
    """sacrebleu's corpus chrF (0-100), character n-grams: no tokenisation choice needed for Chinese."""
    import sacrebleu

    return float(sacrebleu.corpus_chrf(hypotheses, [references]).score)


class CorpusScore(Metric):
    """sacrebleu's corpus BLEU or chrF from sufficient statistics summed over batches and ranks (a corpus score is
    not a mean of batch scores), so it is exact under DDP."""

    full_state_update = False

    def __init__(self, kind: str = "bleu", tokenize: str = "13a") -> None:
        """
        Args:
            kind: 'bleu' or 'chrf'.
            tokenize: sacrebleu's BLEU tokeniser ('zh' for Chinese, 'none' for pre-tokenised text).
        """
        super().__init__()
        from sacrebleu.metrics import BLEU, CHRF

        self.scorer = BLEU(tokenize=tokenize) if kind == "bleu" else CHRF()
        size = len(self.scorer._extract_corpus_statistics(["a"], [["a"]])[0])
        self.add_state("stats", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, hypotheses: list[str], references: list[str]) -> None:
        if hypotheses:
            stats = self.scorer._extract_corpus_statistics(hypotheses, [references])
            self.stats += torch.tensor(stats, dtype=torch.float64, device=self.stats.device).sum(0)

    def compute(self) -> torch.Tensor:
        stats = [int(v) if float(v).is_integer() else float(v) for v in self.stats.tolist()]
        return torch.tensor(self.scorer._compute_score_from_stats(stats).score, dtype=torch.float32)


def gather_rows(rows: list) -> list:
    """Every rank's ``rows`` in one list (rank order) under DDP; ``rows`` itself in one process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return rows
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, rows)
    return [r for part in gathered for r in part]
