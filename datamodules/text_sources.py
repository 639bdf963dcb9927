"""Text data readers for the BERT lecture: GLUE-style tables, SQuAD/DRCD JSON, Hugging Face datasets, and the
embedded corpora generated deterministically so the configs run offline.

Every reader returns plain Python records, so the DataModules tokenise them the same way whatever the source:

* classification: ``{"texts": (a,) or (a, b), "label": int | str}``
* question answering: :class:`QAExample` (id, question, context, answer texts and character starts)
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "TEXT_FIELD_CANDIDATES",
    "QAExample",
    "embedded_qa_corpus",
    "embedded_sentiment_corpus",
    "load_hf_split",
    "read_squad_json",
    "read_table",
    "records_from_rows",
    "squad_examples_from_rows",
]

# Column names tried in order when ``text_fields`` is not given (GLUE / SuperGLUE / IMDb conventions).
TEXT_FIELD_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("sentence1", "sentence2"),
    ("question1", "question2"),
    ("premise", "hypothesis"),
    ("question", "sentence"),
    ("sentence",),
    ("text",),
)


class QAExample(NamedTuple):
    """One extractive-QA question: the gold answers are character spans of ``context``. (A named tuple, so it
    travels inside batches and through ``all_gather_object`` as is.)"""

    id: str
    question: str
    context: str
    answer_texts: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()


# ------------------------------------------------------------------ tables (GLUE TSV / CSV)
def read_table(path: str | Path) -> list[dict[str, str]]:
    """Rows of a TSV (``.tsv``) or CSV (other suffixes) file with a header line.

    GLUE's TSVs are read with quoting disabled: SST-2 sentences contain bare double quotes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text table not found: {path}")
    with path.open(encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".tsv":
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.DictReader(f)
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no rows under the header")
    return rows


def _pick_text_fields(columns: list[str], text_fields: list[str] | None, where: str) -> tuple[str, ...]:
    if text_fields:
        missing = [c for c in text_fields if c not in columns]
        if missing:
            raise ValueError(f"{where}: text_fields {missing} not among the columns {columns}")
        return tuple(text_fields)
    for candidate in TEXT_FIELD_CANDIDATES:
        if all(c in columns for c in candidate):
            return candidate
    raise ValueError(
        f"{where}: cannot tell which columns hold the text (columns: {columns}); set data.init_args.text_fields"
    )


def records_from_rows(
    rows: list[dict[str, Any]], text_fields: list[str] | None, label_field: str, where: str
) -> list[dict[str, Any]]:
    """Classification records from table/dataset rows: the text columns (one or a pair) and the label."""
    columns = list(rows[0].keys())
    fields = _pick_text_fields(columns, text_fields, where)
    if len(fields) > 2:
        raise ValueError(f"{where}: at most two text fields (a sentence pair), got {list(fields)}")
    if label_field not in columns:
        raise ValueError(f"{where}: label column '{label_field}' not found (columns: {columns}); set label_field")
    records = []
    for i, row in enumerate(rows):
        texts = tuple(row[c] for c in fields)
        if any(t is None for t in texts):
            raise ValueError(f"{where}: row {i} has an empty text field ({dict(zip(fields, texts))})")
        records.append({"texts": texts, "label": row[label_field]})
    return records


# ------------------------------------------------------------------ SQuAD / DRCD JSON
def read_squad_json(path: str | Path) -> list[QAExample]:
    """Questions of a SQuAD v1.1 / DRCD file: ``{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}``.

    Each answer's ``answer_start`` must point at its text in the context; a mismatch is an error naming the
    question id, since a shifted label would silently train on the wrong span.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD/DRCD JSON not found: {path}")
    payload = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise ValueError(f"{path}: expected SQuAD format {{'data': [{{'paragraphs': [...]}}]}}")
    examples = []
    for article in payload["data"]:
        for paragraph in article.get("paragraphs", []):
            context = paragraph["context"]
            for qa in paragraph.get("qas", []):
                answers = qa.get("answers", [])
                texts = tuple(a["text"] for a in answers)
                starts = tuple(int(a["answer_start"]) for a in answers)
                for text, start in zip(texts, starts):
                    if context[start : start + len(text)] != text:
                        raise ValueError(
                            f"{path}: question {qa['id']}: answer {text!r} is not at character {start} of its "
                            f"context (found {context[start : start + len(text)]!r})"
                        )
                examples.append(QAExample(str(qa["id"]), qa["question"], context, texts, starts))
    if not examples:
        raise ValueError(f"{path}: no questions found")
    return examples


def squad_examples_from_rows(rows: list[dict[str, Any]], where: str) -> list[QAExample]:
    """QA examples from Hugging Face ``squad``-style rows (id, question, context, answers{text, answer_start})."""
    needed = {"id", "question", "context", "answers"}
    if rows and not needed <= set(rows[0]):
        raise ValueError(f"{where}: SQuAD-style columns {sorted(needed)} needed, got {sorted(rows[0])}")
    return [
        QAExample(
            str(r["id"]),
            r["question"],
            r["context"],
            tuple(r["answers"]["text"]),
            tuple(int(s) for s in r["answers"]["answer_start"]),
        )
        for r in rows
    ]


# ------------------------------------------------------------------ Hugging Face datasets
def load_hf_split(dataset: str, config: str | None, split: str) -> list[dict[str, Any]] | None:
    """Rows of one split of a Hugging Face dataset: a local ``save_to_disk`` directory or a hub name (offline:
    only what the local cache holds). Returns None when the dataset has no such split."""
    import datasets

    path = Path(dataset)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.Dataset):
            return loaded.to_list() if split == "train" else None
    else:
        try:
            loaded = datasets.load_dataset(dataset, config)
        except Exception as exc:  # the hub or the cache: say what to do, keep the cause
            raise ValueError(
                f"cannot load Hugging Face dataset {dataset!r} (config {config!r}): {exc}. Offline, pass a local "
                "directory written by Dataset(Dict).save_to_disk, or files via train_file/val_file/test_file."
            ) from exc
    return loaded[split].to_list() if split in loaded else None


# ------------------------------------------------------------------ embedded corpora
_SUBJECTS = [
    "the film", "the movie", "this picture", "the story", "the acting", "the script", "the soundtrack",
    "the ending", "the cast", "the director's work", "the dialogue", "the plot", "the camera work", "the sequel",
]  # fmt: skip
_POSITIVE = [
    "wonderful", "brilliant", "moving", "delightful", "charming", "superb", "funny", "beautiful", "gripping",
    "clever", "heartfelt", "excellent",
]  # fmt: skip
_NEGATIVE = [
    "dull", "boring", "awful", "clumsy", "tedious", "painful", "bland", "forgettable", "messy", "lifeless",
    "predictable", "terrible",
]  # fmt: skip
_ADVERBS = ["", "truly ", "really ", "quite ", "simply ", "rather ", "utterly "]
_TEMPLATES = ["{s} is {a}{j} .", "{s} was {a}{j} and i {v} it .", "i found {s} {a}{j} .", "{s} feels {a}{j} ."]


def embedded_sentiment_corpus(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` templated SST-2-like sentences (lower-cased, tokenised like SST-2) with labels 1 = positive,
    0 = negative; balanced, deterministic for a given ``seed``."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        label = i % 2
        words = _POSITIVE if label else _NEGATIVE
        sentence = rng.choice(_TEMPLATES).format(
            s=rng.choice(_SUBJECTS), a=rng.choice(_ADVERBS), j=rng.choice(words), v="loved" if label else "hated"
        )
        records.append({"texts": (sentence,), "label": label})
    rng.shuffle(records)
    return records


_NAMES = ["Alice Moreau", "Bao Chen", "Carlos Ruiz", "Dana Okafor", "Erik Lund", "Fatima Haddad", "Goro Sato",
          "Hana Novak", "Ivan Petrov", "Julia Rossi", "Kofi Mensah", "Lena Berg"]  # fmt: skip
_CITIES = ["Lisbon", "Osaka", "Nairobi", "Quebec", "Tallinn", "Cusco", "Hanoi", "Porto", "Dublin", "Tromso",
           "Leipzig", "Perth"]  # fmt: skip
_FIELDS = ["chemistry", "geology", "music", "linguistics", "astronomy", "economics", "botany", "architecture"]
_PRIZES = ["the Silver Quill", "the Orion Medal", "the Lantern Prize", "the Cobalt Award", "the Meridian Cup"]


def _person_paragraph(rng: random.Random, name: str) -> tuple[str, list[tuple[str, str]]]:
    """One templated biography and its (question, answer) pairs; every answer occurs once in the text."""
    first = name.split()[0]
    city, city2 = rng.sample(_CITIES, 2)
    year, subject, prize = str(rng.randint(1901, 1999)), rng.choice(_FIELDS), rng.choice(_PRIZES)
    award_year = str(int(year) + rng.randint(25, 60))
    text = (
        f"{name} was born in {city} in {year}. After school, {first} studied {subject} at the university of "
        f"{city2}, where the department later named a library after the family. In {award_year} the work of "
        f"{first} was honoured with {prize}."
    )
    qas = [
        (f"Where was {name} born?", city),
        (f"In which year was {name} born?", year),
        (f"What did {first} study?", subject),
        (f"Which university did {first} attend?", f"university of {city2}"),
        (f"Which prize did {first} receive?", prize),
    ]
    return text, qas


def embedded_qa_corpus(n_paragraphs: int, seed: int, long_every: int = 4) -> list[QAExample]:
    """Templated biographies with 5 questions each. Every ``long_every``-th paragraph joins three biographies
    (of different people), so its context is longer than one window and answers fall in different windows."""
    rng = random.Random(seed)
    examples = []
    for p in range(n_paragraphs):
        joined = long_every > 0 and p % long_every == long_every - 1
        parts = [_person_paragraph(rng, name) for name in rng.sample(_NAMES, 3 if joined else 1)]
        context = " ".join(text for text, _ in parts)
        offset = 0
        for k, (text, qas) in enumerate(parts):
            for q, (question, answer) in enumerate(qas):
                start = offset + text.index(answer)
                examples.append(QAExample(f"p{p}-{k}-q{q}", question, context, (answer,), (start,)))
            offset += len(text) + 1
    return examples
