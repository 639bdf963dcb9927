"""Extractive-QA features (SQuAD / DRCD style): question + context -> overlapping token windows.

The data half of Hugging Face's ``run_qa.py`` (``prepare_train_features`` / ``prepare_validation_features``): a
long context is cut into windows of ``max_length`` tokens that share ``doc_stride`` tokens; every window keeps
the offset mapping of its context tokens (the lecture's post-processing turns token spans back into characters
with it) and, for training, the gold start/end token positions ([CLS] = 0 when the answer is not wholly inside
the window). Plain functions, testable without a Trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datamodules.text_sources import QAExample
from datamodules.tokenization import MODEL_INPUTS

__all__ = ["NO_OFFSET", "encode_qa"]

NO_OFFSET = -1  # offset value of tokens outside the context (question, specials, padding)


def _context_span(sequence_ids: Sequence[int | None]) -> tuple[int, int]:
    """First and last token index of the context (sequence id 1)."""
    first = sequence_ids.index(1)
    last = len(sequence_ids) - 1 - list(reversed(sequence_ids)).index(1)
    return first, last


def _token_positions(
    offsets: Sequence[tuple[int, int]], first: int, last: int, start_char: int, end_char: int
) -> tuple[int, int]:
    """Token span [start, end] covering characters [start_char, end_char); (0, 0) when not inside the window."""
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def encode_qa(
    tokenizer, examples: Sequence[QAExample], max_length: int, doc_stride: int, with_labels: bool
) -> list[dict[str, Any]]:
    """Windows ("features") of question + context pairs.

    Args:
        tokenizer: a fast tokenizer (offset mappings).
        examples: the questions.
        max_length: tokens per window, question and specials included.
        doc_stride: tokens shared by consecutive windows of one context (Hugging Face's ``stride``).
        with_labels: add ``start_positions`` / ``end_positions`` from each example's first answer.

    Returns:
        One dict per window: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the model uses them),
        ``example_index`` and ``offsets`` (per token ``(char_start, char_end)``, ``(-1, -1)`` outside the context).
    """
    enc = tokenizer(
        [e.question.lstrip() for e in examples],
        [e.context for e in examples],
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    features = []
    for i, example_index in enumerate(enc["overflow_to_sample_mapping"]):
        sequence_ids = enc.sequence_ids(i)
        first, last = _context_span(sequence_ids)
        offsets = [
            tuple(o) if s == 1 else (NO_OFFSET, NO_OFFSET)
            for o, s in zip(enc["offset_mapping"][i], sequence_ids, strict=True)
        ]
        feature = {k: enc[k][i] for k in MODEL_INPUTS if k in enc}
        feature.update(example_index=example_index, offsets=offsets)
        if with_labels:
            example = examples[example_index]
            if not example.answer_texts:
                raise ValueError(f"training question {example.id!r} has no answer")
            start_char = example.answer_starts[0]
            end_char = start_char + len(example.answer_texts[0])
            raw = enc["offset_mapping"][i]
            feature["start_positions"], feature["end_positions"] = _token_positions(
                raw, first, last, start_char, end_char
            )
        features.append(feature)
    return features
