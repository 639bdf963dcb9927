"""Text DataModules of the BERT lecture: GLUE-style sequence classification and SQuAD/DRCD extractive QA.

Sources, in order of precedence: files (``train_file`` / ``val_file`` / ``test_file``: TSV/CSV tables or
SQuAD/DRCD JSON), a Hugging Face dataset (``dataset``: a local ``save_to_disk`` directory or a hub name), else the
embedded corpus generated deterministically (no download). A split that is missing is carved from ``train`` with
``seed`` (``val_fraction``; QA splits by context so no paragraph is in both parts).

Tokenisation is data code, as in Hugging Face's ``run_qa.py``: ``tokenizer_name_or_path`` names the model whose
tokenizer is loaded (:mod:`datamodules.tokenization`), and the CLI links it to the lecture's ``model_name_or_path``;
QA windows come from :mod:`datamodules.qa_features`. Batches are padded dynamically to their longest sequence;
``group_by_length`` sorts samples by length inside large shuffled chunks so batches waste less padding, and stays
deterministic, DDP-sharded and resumable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from datamodules.errors import DataFileError, SettingError
from datamodules.image import make_loader, resume_sampler
from datamodules.paths import require_file
from datamodules.qa_features import NO_OFFSET, encode_qa
from datamodules.samplers import ResumableSampler, ShardSampler
from datamodules.text_sources import (
    QAExample,
    embedded_qa_corpus,
    embedded_sentiment_corpus,
    load_hf_split,
    read_squad_json,
    read_table_lines,
    records_from_rows,
    squad_examples_from_rows,
)
from datamodules.tokenization import MODEL_INPUTS, TINY_BERT, load_tokenizer

__all__ = ["LengthGroupedSampler", "QACollator", "QADataModule", "TextClassificationDataModule"]

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class LengthGroupedSampler(ResumableSampler):
    """:class:`ResumableSampler` whose epoch permutation is sorted by length (longest first) inside chunks of
    ``group_size`` indices, so consecutive batches hold sequences of similar length. The chunks come from the
    seeded permutation, so the order stays random across chunks, deterministic, sharded and resumable."""

    def __init__(self, lengths: Sequence[int], group_size: int, **kwargs: Any) -> None:
        if group_size < 1:
            raise ValueError(f"LengthGroupedSampler.group_size must be >= 1, got {group_size}")
        self.lengths, self.group_size = list(lengths), group_size
        super().__init__(len(self.lengths), **kwargs)

    def _epoch_indices(self) -> list[int]:
        indices = super()._epoch_indices()
        out: list[int] = []
        for i in range(0, len(indices), self.group_size):
            out += sorted(indices[i : i + self.group_size], key=lambda j: -self.lengths[j])
        return out


class _TextDataModule(L.LightningDataModule):
    """Shared plumbing: the tokenizer, split carving, and the (resumable, sharded) loaders."""

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        dataset: str | None = None,
        dataset_config: str | None = None,
        split_names: dict[str, str] | None = None,
        tokenizer_name_or_path: str = TINY_BERT,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        limit_train_samples: int | None = None,
        limit_eval_samples: int | None = None,
        group_by_length: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        """
        Args:
            train_file: the training file, in the format of the DataModule (see its class docstring).
            val_file: the validation file (default: ``val_fraction`` of train).
            test_file: a labelled test file (optional).
            dataset: Hugging Face dataset: a ``save_to_disk`` directory or a hub name (offline: from the cache).
            dataset_config: the dataset's configuration name (e.g. ``sst2`` for ``glue``).
            split_names: our split -> the dataset's split name (default train/validation/test).
            tokenizer_name_or_path: the model's name (:mod:`datamodules.tokenization`); the CLI links it to
                ``model.init_args.model_name_or_path``.
            max_length: longest tokenised input (a QA window); longer inputs are truncated.
            batch_size: training batch size per process.
            eval_batch_size: validation/test batch size per process (default: ``batch_size``).
            val_fraction: part of train held out when there is no validation split (0: none).
            limit_train_samples: keep the first N training records; for quick runs.
            limit_eval_samples: keep the first N validation/test records; for quick runs.
            group_by_length: batch sequences of similar length (less padding).
            num_workers: DataLoader worker processes.
            seed: seed of the held-out split and of the per-epoch shuffling.
        """
        super().__init__()
        name = type(self).__name__
        if batch_size < 1:
            raise ValueError(f"{name}.batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"{name}.val_fraction must be in [0, 1), got {val_fraction}")
        if max_length < 8:
            raise ValueError(f"{name}.max_length must be >= 8 tokens, got {max_length}")
        if train_file is not None and dataset is not None:
            raise SettingError(
                f"{name}: set either data.init_args.train_file (val_file, test_file) or data.init_args.dataset, "
                "not both"
            )
        for split, file in zip(SPLITS, (train_file, val_file, test_file)):
            if file is not None:
                require_file(file, f"data.init_args.{split}_file")
        self.files = dict(zip(SPLITS, (train_file, val_file, test_file)))
        self.dataset, self.dataset_config = dataset, dataset_config
        self.split_names = {"train": "train", "val": "validation", "test": "test", **(split_names or {})}
        self.tokenizer_name_or_path = tokenizer_name_or_path
        self.max_length, self.batch_size = max_length, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_fraction = val_fraction
        self.limit_train_samples, self.limit_eval_samples = limit_train_samples, limit_eval_samples
        self.group_by_length, self.num_workers, self.seed = group_by_length, num_workers, seed
        self._raw: dict[str, list] | None = None
        self._features: dict[str, list[dict[str, Any]]] | None = None
        self._tokenizer = None
        self.save_hyperparameters()  # with the subclass's own arguments (Lightning collects every __init__ frame)

    # ------------------------------------------------------------------ raw data
    def describe(self) -> str:
        if any(self.files.values()):
            return ", ".join(f"{k}={v}" for k, v in self.files.items() if v)
        return f"dataset {self.dataset!r}" if self.dataset else "the embedded corpus"

    def raw_splits(self) -> dict[str, list]:
        """The untokenised records per split, loaded once (``train`` always, ``val``/``test`` when available)."""
        if self._raw is None:
            if any(self.files.values()):
                if self.files["train"] is None:
                    raise SettingError(
                        "data.init_args.val_file/test_file given without data.init_args.train_file (the training "
                        "file is needed, and sets the class list)"
                    )
                raw = {k: self.read_file(Path(v)) for k, v in self.files.items() if v}
            elif self.dataset:
                raw = {}
                for split in SPLITS:
                    rows = load_hf_split(self.dataset, self.dataset_config, self.split_names[split])
                    if rows:
                        raw[split] = self.from_rows(rows, f"{self.dataset}[{self.split_names[split]}]")
                if "train" not in raw:
                    raise SettingError(
                        f"data.init_args.split_names: dataset {self.dataset!r} has no split "
                        f"{self.split_names['train']!r} for training"
                    )
            else:
                raw = self.embedded()
            if "val" not in raw and self.val_fraction > 0:
                raw["train"], raw["val"] = self.carve(raw["train"])
            if self.limit_train_samples is not None:
                raw["train"] = raw["train"][: self.limit_train_samples]
            if self.limit_eval_samples is not None:
                raw.update({k: v[: self.limit_eval_samples] for k, v in raw.items() if k != "train"})
            self._raw = raw
            log.info("%s: %s", self.describe(), {k: len(v) for k, v in raw.items()})
        return self._raw

    def read_file(self, path: Path) -> list:
        raise NotImplementedError

    def from_rows(self, rows: list[dict[str, Any]], where: str) -> list:
        raise NotImplementedError

    def embedded(self) -> dict[str, list]:
        raise NotImplementedError

    def carve(self, records: list) -> tuple[list, list]:
        """Seeded train/val split of ``records`` (``val_fraction`` held out)."""
        perm = torch.randperm(len(records), generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_val = max(1, round(self.val_fraction * len(records)))
        if n_val >= len(records):
            raise SettingError(
                f"{self.describe()}: {len(records)} training records are too few to hold out a val split; give "
                "data.init_args.val_file or set data.init_args.val_fraction 0"
            )
        return [records[i] for i in sorted(perm[n_val:])], [records[i] for i in sorted(perm[:n_val])]

    # ------------------------------------------------------------------ tokenisation
    @property
    def tokenizer(self):
        """The model's tokenizer (``tokenizer_name_or_path``), loaded on first use."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name_or_path)
        return self._tokenizer

    def encode(self, split: str, records: list) -> list[dict[str, Any]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._features is None:
            self._features = {k: self.encode(k, v) for k, v in self.raw_splits().items() if v}

    # ------------------------------------------------------------------ loaders
    def collate(self, split: str):
        raise NotImplementedError

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        data = self._features["train"]
        world, rank = self._world()
        common = {"num_replicas": world, "rank": rank, "seed": self.seed, "shuffle": True}
        if self.group_by_length:
            lengths = [len(f["input_ids"]) for f in data]
            sampler = LengthGroupedSampler(lengths, group_size=50 * self.batch_size * world, **common)
        else:
            sampler = ResumableSampler(len(data), **common)
        resume_sampler(self.trainer, sampler, self.batch_size)
        return make_loader(data, sampler, self.batch_size, self.num_workers, self.seed, self.collate("train"))

    def _eval_loader(self, split: str) -> DataLoader:
        self.setup()
        if split not in self._features:
            raise ValueError(f"{self.describe()} has no '{split}' split: give {split}_file (or val_fraction > 0)")
        data = self._features[split]
        world, rank = self._world()
        sampler = ShardSampler(len(data), world, rank)
        return make_loader(data, sampler, self.eval_batch_size, self.num_workers, self.seed, self.collate(split))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        self.setup()
        return self._eval_loader("test" if "test" in self._features else "val")


class TextClassificationDataModule(_TextDataModule):
    """Single sentences or sentence pairs with a label (GLUE style), tokenised as [CLS] a [SEP] b [SEP].

    Files are TSV (GLUE, e.g. SST-2's ``sentence<TAB>label``, read without quote processing) or CSV tables with a
    header; datasets have the same columns. Default: the embedded sentiment corpus.
    """

    def __init__(self, text_fields: list[str] | None = None, label_field: str = "label", **kwargs: Any) -> None:
        """
        Args:
            text_fields: the text column(s), one or a pair (default: found among GLUE's column names).
            label_field: the label column (integers, or strings mapped to ids in sorted order).
            **kwargs: the sources, tokenizer, lengths and loader settings of every text DataModule
                (:class:`_TextDataModule`); ``max_length`` truncates the longer text of a pair first.
        """
        super().__init__(**kwargs)
        self.text_fields, self.label_field = text_fields, label_field
        self.label_names: list[str] = []

    @property
    def num_classes(self) -> int:
        """Number of labels (linked into the model by the CLI)."""
        self.raw_splits()
        return len(self.label_names)

    def read_file(self, path: Path) -> list:
        lines, rows = zip(*read_table_lines(path))
        return records_from_rows(list(rows), self.text_fields, self.label_field, str(path), lines=list(lines))

    def from_rows(self, rows: list[dict[str, Any]], where: str) -> list:
        return records_from_rows(rows, self.text_fields, self.label_field, where)

    def embedded(self) -> dict[str, list]:
        return {
            "train": embedded_sentiment_corpus(400, seed=self.seed),
            "val": embedded_sentiment_corpus(100, seed=self.seed + 1),
            "test": embedded_sentiment_corpus(100, seed=self.seed + 2),
        }

    def raw_splits(self) -> dict[str, list]:
        first_time = self._raw is None
        raw = super().raw_splits()
        if first_time:
            self._index_labels(raw)
        return raw

    def _index_labels(self, raw: dict[str, list]) -> None:
        """Label ids. The training labels set the class list: integers keep their value (classes 0..max; -1 marks
        unlabelled rows), names map in sorted order. A label outside that list, or a training label of the other
        kind (a number among names), is an error naming its file and line."""
        train = raw["train"]
        keys = {split: [_label_key(r["label"]) for r in records] for split, records in raw.items()}
        numbers = [isinstance(k, int) for k in keys["train"]]
        if all(numbers):
            self.label_names = [str(i) for i in range(max(keys["train"]) + 1)]
            ids = {i: i for i in range(-1, len(self.label_names))}
        elif any(numbers):  # names and numbers mixed: name the first label of the rarer kind
            rare = sum(numbers) <= len(numbers) / 2
            i = numbers.index(rare)
            common = sorted({str(k) for k, n in zip(keys["train"], numbers) if n != rare})
            raise DataFileError(
                f"{_where(train[i], 'train', i)}: label {train[i]['label']!r}, but the other training labels are "
                f"{'names' if rare else 'numbers'} ({', '.join(common[:4])}{', ...' if len(common) > 4 else ''})"
            )
        else:
            self.label_names = sorted(set(keys["train"]))
            ids = {name: i for i, name in enumerate(self.label_names)}
        for split, records in raw.items():
            for i, (r, key) in enumerate(zip(records, keys[split])):
                if key not in ids:
                    allowed = (
                        f"0..{len(self.label_names) - 1}, or -1 for an unlabelled row"
                        if all(numbers)
                        else ", ".join(self.label_names)
                    )
                    raise DataFileError(
                        f"{_where(r, split, i)}: label {str(r['label'])!r} is not one of the training labels "
                        f"({allowed})"
                    )
                r["label"] = ids[key]
        if len(self.label_names) < 2:
            raise DataFileError(f"{self.describe()}: the training labels have fewer than 2 classes {self.label_names}")

    def encode(self, split: str, records: list) -> list[dict[str, Any]]:
        records = [r for r in records if r["label"] >= 0]  # GLUE test files are unlabelled (-1)
        pairs = [r["texts"] for r in records]
        second = [p[1] for p in pairs] if pairs and len(pairs[0]) == 2 else None
        enc = self.tokenizer([p[0] for p in pairs], second, truncation=True, max_length=self.max_length)
        keys = [k for k in MODEL_INPUTS if k in enc]
        return [{**{k: enc[k][i] for k in keys}, "labels": r["label"]} for i, r in enumerate(records)]

    def collate(self, split: str):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer, return_tensors="pt")


def _label_key(label: Any) -> int | str:
    """A label as read: an integer (an int, or a string of digits with an optional '-') or a name."""
    if isinstance(label, int) and not isinstance(label, bool):
        return label
    text = str(label)
    return int(text) if text.lstrip("-").isdigit() else text


def _where(record: dict[str, Any], split: str, index: int) -> str:
    """Where a classification record comes from (file and line, dataset record), for messages."""
    return record.get("where") or f"split '{split}', record {index}"


class QACollator:
    """Pads a batch of QA windows; evaluation batches also carry ``offsets`` (B, L, 2, -1 padded) and the
    ``examples`` (the question records of each window, for post-processing)."""

    def __init__(self, tokenizer, examples: Sequence[QAExample] | None) -> None:
        self.tokenizer, self.examples = tokenizer, examples

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        model_keys = [k for k in features[0] if k not in ("offsets", "example_index")]
        batch = dict(self.tokenizer.pad([{k: f[k] for k in model_keys} for f in features], return_tensors="pt"))
        if self.examples is not None:
            length = batch["input_ids"].shape[1]
            offsets = torch.full((len(features), length, 2), NO_OFFSET, dtype=torch.long)  # (B, L, 2)
            for i, f in enumerate(features):
                offsets[i, : len(f["offsets"])] = torch.tensor(f["offsets"], dtype=torch.long)
            batch["offsets"] = offsets
            batch["examples"] = [self.examples[f["example_index"]] for f in features]
        return batch


class QADataModule(_TextDataModule):
    """Extractive QA (SQuAD v1.1 / DRCD JSON, or Hugging Face ``squad``-style datasets) in overlapping windows.

    Files are SQuAD v1.1 / DRCD JSON (``data[].paragraphs[].qas[].answers[]``); datasets have SQuAD's columns.
    Default: the embedded templated biographies.
    """

    def __init__(self, doc_stride: int = 128, max_length: int = 384, batch_size: int = 16, **kwargs: Any) -> None:
        """
        Args:
            doc_stride: tokens of context shared by consecutive windows of a long paragraph.
            max_length: tokens per window (question, context and special tokens).
            batch_size: training batch size (windows) per process.
            **kwargs: the sources, tokenizer, lengths and loader settings of every text DataModule
                (:class:`_TextDataModule`); QA splits ``val_fraction`` by context and counts samples in questions.
        """
        if not 0 <= doc_stride < max_length // 2:
            raise ValueError(f"QADataModule.doc_stride must be in [0, max_length / 2), got {doc_stride}")
        super().__init__(max_length=max_length, batch_size=batch_size, **kwargs)
        self.doc_stride = doc_stride

    def read_file(self, path: Path) -> list:
        return read_squad_json(path)

    def from_rows(self, rows: list[dict[str, Any]], where: str) -> list:
        return squad_examples_from_rows(rows, where)

    def embedded(self) -> dict[str, list]:
        return {
            "train": embedded_qa_corpus(48, seed=self.seed),
            "val": embedded_qa_corpus(8, seed=self.seed + 1),
            "test": embedded_qa_corpus(8, seed=self.seed + 2),
        }

    def carve(self, records: list) -> tuple[list, list]:
        """Hold out whole contexts, so no paragraph is both trained and evaluated on."""
        contexts = sorted({e.context for e in records})
        perm = torch.randperm(len(contexts), generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_val = max(1, round(self.val_fraction * len(contexts)))
        if n_val >= len(contexts):
            raise SettingError(
                f"{self.describe()}: {len(contexts)} contexts are too few to hold out a val split; give "
                "data.init_args.val_file or set data.init_args.val_fraction 0"
            )
        held_out = {contexts[i] for i in perm[:n_val]}
        return [e for e in records if e.context not in held_out], [e for e in records if e.context in held_out]

    def encode(self, split: str, records: list) -> list[dict[str, Any]]:
        with_labels = split == "train"
        return encode_qa(
            self.tokenizer, records, max_length=self.max_length, doc_stride=self.doc_stride, with_labels=with_labels
        )

    def collate(self, split: str) -> QACollator:
        return QACollator(self.tokenizer, None if split == "train" else self.raw_splits()[split])
