"""Text data readers for the BERT lecture: GLUE-style tables, SQuAD/DRCD JSON, Hugging Face datasets, and the
embedded corpora generated deterministically so the configs run offline.

Every reader returns plain Python records, so the DataModules tokenise them the same way whatever the source:

* classification: ``{"texts": (a,) or (a, b), "label": int | str, "where": "train.tsv, line 7"}`` (``where``
  names the record in messages; the embedded corpus has none)
* question answering: :class:`QAExample` (id, question, context, answer texts and character starts)

A bad file is a :class:`~datamodules.errors.DataFileError` naming the file and the line (tables) or the record
(``data[0].paragraphs[3].qas[1]`` in SQuAD JSON).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any, NamedTuple

from datamodules.errors import DataFileError, DataPathError, SettingError

__all__ = [
    "TEXT_FIELD_CANDIDATES",
    "QAExample",
    "embedded_qa_corpus",
    "embedded_sentiment_corpus",
    "load_hf_split",
    "read_squad_json",
    "read_table",
    "read_table_lines",
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
    """Rows of a TSV (``.tsv``) or CSV (other suffixes) file with a header line (see :func:`read_table_lines`)."""
    return [row for _, row in read_table_lines(path)]


def read_table_lines(path: str | Path) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` for each row of a TSV (``.tsv``) or CSV (other suffixes) file with a header line.

    GLUE's TSVs are read with quoting disabled: SST-2 sentences contain bare double quotes. A row must have as many
    fields as the header (a row without its label is an error naming the file and line, not a label ``None``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataPathError(f"no such text table: {path}")
    rows = []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            tsv = path.suffix.lower() == ".tsv"
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.DictReader(f)
            for row in reader:
                _check_row_width(row, reader.fieldnames, f"{path}, line {reader.line_num}", "tabs" if tsv else "commas")
                rows.append((reader.line_num, row))
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path} is not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise DataFileError(f"{path}, line {reader.line_num}: {exc}") from exc
    if not rows:
        raise DataFileError(f"{path}: no rows under the header")
    return rows


def _check_row_width(row: dict, header: list[str], where: str, separator: str) -> None:
    """A row has one field per header column (csv fills missing ones with None and keeps extra ones under None)."""
    fields = len(header) + len(row.get(None) or ()) - sum(v is None for k, v in row.items() if k is not None)
    if fields != len(header):
        raise DataFileError(
            f"{where}: {fields} field(s), but the header has {len(header)} ({', '.join(header)}) separated by "
            f"{separator}"
        )


def _pick_text_fields(columns: list[str], text_fields: list[str] | None, where: str) -> tuple[str, ...]:
    if text_fields:
        missing = [c for c in text_fields if c not in columns]
        if missing:
            raise SettingError(f"data.init_args.text_fields: {missing} not among the columns {columns} of {where}")
        return tuple(text_fields)
    for candidate in TEXT_FIELD_CANDIDATES:
        if all(c in columns for c in candidate):
            return candidate
    raise SettingError(
        f"{where}: cannot tell which columns hold the text (columns: {columns}); set data.init_args.text_fields"
    )


def records_from_rows(
    rows: list[dict[str, Any]], text_fields: list[str] | None, label_field: str, where: str, lines: list[int] = ()
) -> list[dict[str, Any]]:
    """Classification records from table/dataset rows: the text columns (one or a pair), the label, and ``where``
    (``<where>, line N`` with the rows' ``lines``, else ``<where>, record i``)."""
    columns = list(rows[0].keys())
    fields = _pick_text_fields(columns, text_fields, where)
    if len(fields) > 2:
        raise SettingError(f"data.init_args.text_fields: at most two (a sentence pair), got {list(fields)}")
    if label_field not in columns:
        raise SettingError(
            f"data.init_args.label_field: column '{label_field}' not found in {where} (columns: {columns})"
        )
    records = []
    for i, row in enumerate(rows):
        at = f"{where}, line {lines[i]}" if lines else f"{where}, record {i}"
        texts = tuple(row[c] for c in fields)
        if any(t is None for t in texts):
            raise DataFileError(f"{at}: an empty text field ({dict(zip(fields, texts))})")
        label = row[label_field]
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataFileError(f"{at}: no label in column '{label_field}'")
        records.append({"texts": texts, "label": label, "where": at})
    return records


# ------------------------------------------------------------------ SQuAD / DRCD JSON
def read_squad_json(path: str | Path) -> list[QAExample]:
    """Questions of a SQuAD v1.1 / DRCD file: ``{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}``.

    Each answer's ``answer_start`` must point at its text in the context; a mismatch is an error naming the
    question id, since a shifted label would silently train on the wrong span. Any other mistake names the record
    (``data[0].paragraphs[2].qas[1]``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataPathError(f"no such SQuAD/DRCD JSON file: {path}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path} is not UTF-8 text ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise DataFileError(f"{path}: expected SQuAD format {{'data': [{{'paragraphs': [...]}}]}}")
    examples = []
    for a, article in enumerate(payload["data"]):
        for p, paragraph in enumerate(_squad_field(article, "paragraphs", list, path, f"data[{a}]", [])):
            where = f"data[{a}].paragraphs[{p}]"
            context = _squad_field(paragraph, "context", str, path, where)
            for q, qa in enumerate(_squad_field(paragraph, "qas", list, path, where, [])):
                examples.append(_squad_question(qa, context, path, f"{where}.qas[{q}]"))
    if not examples:
        raise DataFileError(f"{path}: no questions found")
    return examples


_MISSING = object()


def _squad_field(record: Any, key: str, kind: type | tuple[type, ...], path: Path, where: str, default=_MISSING):
    """``record[key]`` of type ``kind`` (``default`` when absent, if given); else an error naming the record."""
    if not isinstance(record, dict):
        raise DataFileError(f"{path}, {where}: expected an object, got {type(record).__name__}")
    value = record.get(key, default)
    if value is _MISSING:
        raise DataFileError(f"{path}, {where}: no '{key}' (keys: {sorted(record)})")
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataFileError(f"{path}, {where}: '{key}' is {type(value).__name__} {value!r:.40}, not {kind}")
    return value


def _squad_question(qa: Any, context: str, path: Path, where: str) -> QAExample:
    """One question of a paragraph; its answers must be spans of ``context``."""
    qid = str(_squad_field(qa, "id", (str, int), path, where))
    where = f"{where} (question {qid})"
    question = _squad_field(qa, "question", str, path, where)
    texts, starts = [], []
    for n, answer in enumerate(_squad_field(qa, "answers", list, path, where, [])):
        text = _squad_field(answer, "text", str, path, f"{where}.answers[{n}]")
        start = _squad_field(answer, "answer_start", int, path, f"{where}.answers[{n}]")
        if context[start : start + len(text)] != text:
            raise DataFileError(
                f"{path}: question {qid}: answer {text!r} is not at character {start} of its "
                f"context (found {context[start : start + len(text)]!r})"
            )
        texts.append(text)
        starts.append(start)
    return QAExample(qid, question, context, tuple(texts), tuple(starts))


def squad_examples_from_rows(rows: list[dict[str, Any]], where: str) -> list[QAExample]:
    """QA examples from Hugging Face ``squad``-style rows (id, question, context, answers{text, answer_start})."""
    needed = {"id", "question", "context", "answers"}
    if rows and not needed <= set(rows[0]):
        raise DataFileError(f"{where}: SQuAD-style columns {sorted(needed)} needed, got {sorted(rows[0])}")
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
def load_hf_split(
    dataset: str, config: str | None, split: str, setting: str = "data.init_args.dataset"
) -> list[dict[str, Any]] | None:
    """Rows of one split of a Hugging Face dataset: a local ``save_to_disk`` directory or a hub name (offline:
    only what the local cache holds). Returns None when the dataset has no such split. A local path that does not
    exist is a :class:`DataPathError` naming ``setting``."""
    import datasets

    path = Path(dataset)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.Dataset):
            return loaded.to_list() if split == "train" else None
    else:
        if (dataset.startswith((".", "/", "~")) or path.suffix) and not path.exists():
            raise DataPathError(f"{setting} does not exist: {path} (nor is it a Hugging Face dataset name)")
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
