"""Extractive QA post-processing (SQuAD / DRCD style), plain functions testable without a Trainer.

The lecture half of Hugging Face's ``utils_qa.py``; the windows themselves (question + context -> overlapping
token windows with offsets and gold positions) are data code: :func:`datamodules.qa_features.encode_qa`.

1. :func:`nbest_spans`: per window, the ``n_best`` highest-scoring spans with ``end >= start`` and at most
   ``max_answer_length`` tokens, as character spans of the context (vectorised over the batch).
2. :class:`CandidatePool`: keeps only each question's ``n_best`` candidates while evaluation streams batch by
   batch (never all logits), merges pools from several processes, and picks the best span across windows.
3. :func:`squad_scores`: exact match and F1 with SQuAD's answer normalisation (torchmetrics), over characters
   for Chinese/Japanese/Korean answers (DRCD).
"""

from __future__ import annotations

import heapq
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch

from datamodules.qa_features import NO_OFFSET
from datamodules.text_sources import QAExample

__all__ = ["CandidatePool", "cjk_tokens", "nbest_spans", "squad_scores"]


def nbest_spans(
    start_logits: torch.Tensor, end_logits: torch.Tensor, offsets: torch.Tensor, n_best: int, max_answer_length: int
) -> list[list[tuple[float, int, int]]]:
    """The ``n_best`` best spans of each window as ``(score, char_start, char_end)``, best first.

    Args:
        start_logits: (B, L) start scores.
        end_logits: (B, L) end scores.
        offsets: (B, L, 2) character offsets, ``NO_OFFSET`` (-1) outside the context.
        n_best: start and end candidates considered per window, and spans returned.
        max_answer_length: longest answer in tokens.

    Only spans inside the context with ``start <= end < start + max_answer_length`` are scored; a window with no
    valid span returns an empty list.
    """
    in_context = offsets[..., 0] != NO_OFFSET  # (B, L)
    neg = torch.finfo(torch.float32).min
    start = start_logits.float().masked_fill(~in_context, neg)
    end = end_logits.float().masked_fill(~in_context, neg)
    k = min(n_best, start.shape[1])
    s_val, s_idx = start.topk(k, dim=1)  # (B, k)
    e_val, e_idx = end.topk(k, dim=1)  # (B, k)
    scores = s_val[:, :, None] + e_val[:, None, :]  # (B, k, k)
    length = e_idx[:, None, :] - s_idx[:, :, None]  # (B, k, k) end - start
    valid = (length >= 0) & (length < max_answer_length)
    valid &= in_context.gather(1, s_idx)[:, :, None] & in_context.gather(1, e_idx)[:, None, :]
    scores = scores.masked_fill(~valid, float("-inf")).flatten(1)  # (B, k*k)
    top_val, top_flat = scores.topk(min(n_best, scores.shape[1]), dim=1)  # (B, n)
    starts, ends = s_idx.gather(1, top_flat // k), e_idx.gather(1, top_flat % k)  # (B, n) token indices
    char_starts = offsets[..., 0].gather(1, starts).tolist()
    char_ends = offsets[..., 1].gather(1, ends).tolist()
    out = []
    for b, row in enumerate(top_val.tolist()):
        out.append([(v, char_starts[b][j], char_ends[b][j]) for j, v in enumerate(row) if v != float("-inf")])
    return out


class CandidatePool:
    """Per question: the gold answers, the context, and the ``n_best`` best ``(score, char_start, char_end)``
    spans seen so far across its windows. Memory is O(questions x n_best), whatever the number of windows."""

    def __init__(self, n_best: int) -> None:
        self.n_best = n_best
        self.best: dict[str, list[tuple[float, int, int]]] = {}
        self.examples: dict[str, QAExample] = {}

    def add(self, example: QAExample, spans: Iterable[tuple[float, int, int]]) -> None:
        self.examples.setdefault(example.id, example)
        merged = [*self.best.get(example.id, []), *spans]
        self.best[example.id] = heapq.nlargest(self.n_best, merged)

    def state(self) -> dict[str, Any]:
        """A picklable snapshot, for ``all_gather_object``."""
        return {"best": self.best, "examples": self.examples}

    def merge(self, state: dict[str, Any]) -> None:
        for qid, example in state["examples"].items():
            self.add(example, state["best"].get(qid, []))

    def __len__(self) -> int:
        return len(self.examples)

    def predictions(self) -> dict[str, str]:
        """SQuAD's prediction format ``{question id: answer text}``: the best span over all windows ("" if
        no window had a valid span)."""
        out = {}
        for qid, example in self.examples.items():
            spans = self.best.get(qid)
            out[qid] = example.context[spans[0][1] : spans[0][2]] if spans else ""
        return out

    def references(self) -> dict[str, list[str]]:
        return {qid: list(e.answer_texts) for qid, e in self.examples.items()}


# Chinese, Japanese and Korean scripts: CJK ideographs (with extensions A-B and compatibility forms), kana, Hangul
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002a6df]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def cjk_tokens(text: str) -> list[str]:
    """SQuAD's normalisation (lower case; no punctuation, here any Unicode punctuation, so also full-width
    brackets, commas and stops; no English articles), then tokens: every CJK character on its own, runs of other
    characters split at whitespace. Chinese has no spaces, so SQuAD's whitespace tokens would make F1
    all-or-nothing per answer; character tokens are what the DRCD and CMRC 2018 evaluations score (Shao et al.
    2018, arXiv 1806.00920; Cui et al. 2019, arXiv 1810.07366)."""
    text = "".join(
        " " if c in string.punctuation or unicodedata.category(c).startswith("P") else c for c in text.lower()
    )
    text = _ARTICLES.sub(" ", text)
    return _CJK.sub(lambda m: f" {m.group()} ", text).split()


def _token_f1(pred: list[str], gold: list[str]) -> float:
    if not pred or not gold:  # an answer that normalises to nothing: right only if both do
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """Exact match and F1 in percent, max over each question's gold answers, averaged over questions.

    Questions whose gold answers are Latin-script text get SQuAD v1.1's evaluation (lower-case, no punctuation, no
    articles, squeezed whitespace; F1 over whitespace tokens) via torchmetrics. Questions with a CJK character in a
    gold answer (DRCD, CMRC) are scored over :func:`cjk_tokens` instead, so a partly right Chinese answer earns
    partial F1; a mixed file averages the two groups by question count."""
    from torchmetrics.functional.text import squad

    missing = sorted(set(references) - set(predictions))
    if missing:
        raise ValueError(f"no prediction for {len(missing)} question(s), e.g. {missing[:3]}")
    cjk = [qid for qid, refs in references.items() if any(has_cjk(r) for r in refs)]
    cjk_ids = set(cjk)
    latin = [qid for qid in references if qid not in cjk_ids]
    em_sum = f1_sum = 0.0
    if latin:
        preds = [{"prediction_text": predictions[qid], "id": qid} for qid in latin]
        target = [
            {"answers": {"text": references[qid], "answer_start": [0] * len(references[qid])}, "id": qid}
            for qid in latin
        ]
        scores = squad(preds, target)
        em_sum += float(scores["exact_match"]) * len(latin)
        f1_sum += float(scores["f1"]) * len(latin)
    for qid in cjk:
        pred = cjk_tokens(predictions[qid])
        golds = [cjk_tokens(r) for r in references[qid]]
        em_sum += 100.0 * max(float(pred == g) for g in golds)
        f1_sum += 100.0 * max(_token_f1(pred, g) for g in golds)
    n = max(len(references), 1)
    return {"exact_match": em_sum / n, "f1": f1_sum / n}
