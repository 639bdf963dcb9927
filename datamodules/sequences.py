"""Sequence-classification DataModule (HW4): variable-length feature sequences (B, T, F) and one label each.

Sources: ``data_dir`` in HW4's format (``metadata.json``: ``{"n_mels": F, "speakers": {name: [{"feature_path":
"uttr-*.pt", "mel_len": T}, ...]}}``, ``mapping.json``: ``{"speaker2id": {name: id}}``, and one (T, F) float tensor
per ``uttr-*.pt``, read with ``torch.load(weights_only=True)``), else ``task``: the embedded ordered-motif task
(:func:`ordered_motifs`) or language identification of single words (:func:`language_words`, from the word lists
of the ``wordfreq`` package: characters as one-hot frames).
Utterances are shuffled with ``seed`` and split train / val / test by ``val_fraction`` / ``test_fraction``.

As HW4 does, training takes a random ``segment_len``-frame segment of each sequence (shorter ones whole; the crop
comes from a generator seeded by ``seed``, the epoch and the index, so it is resumable and DDP-consistent);
validation and test see whole sequences, padded in the batch with a mask (True at real frames).

``predict`` reads HW4's ``testdata.json`` (``{"utterances": [{"feature_path": ..., "mel_len": ...}, ...]}``, no
labels) from ``data_dir`` (or ``test_json``): batches carry ``index``, the utterance's row, and the lecture writes
HW4's submission CSV with :attr:`SequenceDataModule.predict_ids` and :attr:`SequenceDataModule.class_names`
(``id2speaker`` of ``mapping.json``).

Linked into the lecture: ``num_classes`` and ``input_shape`` = (F,).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.errors import DataFileError, SettingError
from datamodules.image import make_loader, resume_sampler
from datamodules.paths import require_file, require_folder
from datamodules.samplers import ResumableSampler, ShardSampler

__all__ = ["SequenceDataModule", "collate_sequences", "language_words", "one_hot_characters", "ordered_motifs",
           "read_hw4"]  # fmt: skip

SPLITS = ("train", "val", "test")
LANGUAGES = ("en", "de", "nl", "fr", "es", "pt", "it")  # Latin script; close pairs: de/nl, es/pt/it


def language_words(languages: list[str], top_n: int, min_len: int = 3) -> tuple[list[str], list[int]]:
    """Words of each language among its ``top_n`` most frequent (``wordfreq.top_n_list``), alphabetic, at least
    ``min_len`` characters; a word in the lists of two or more languages is dropped (its label is ambiguous).
    Returns the words and their language indices, in a deterministic order."""
    try:
        import wordfreq
    except ImportError as err:
        raise SettingError("data.init_args.task 'langid' needs the wordfreq package: "
                           "pip install 'ml-lectures[bench]'") from err  # fmt: skip
    known = set(wordfreq.available_languages())
    unknown = [lang for lang in languages if lang not in known]
    if unknown or len(languages) < 2:
        raise SettingError(f"data.init_args.languages must be >= 2 of wordfreq's languages, got {languages}")
    lists = {lang: {w for w in wordfreq.top_n_list(lang, top_n) if w.isalpha() and len(w) >= min_len}
             for lang in languages}  # fmt: skip
    seen: dict[str, int] = {}
    for words in lists.values():
        for w in words:
            seen[w] = seen.get(w, 0) + 1
    pairs = sorted((w, i) for i, lang in enumerate(languages) for w in lists[lang] if seen[w] == 1)
    return [w for w, _ in pairs], [i for _, i in pairs]


def one_hot_characters(words: list[str], alphabet: list[str]) -> list[torch.Tensor]:
    """Each word as (characters, len(alphabet) + 1) one-hot frames; the last column marks an unknown character."""
    index = {c: i for i, c in enumerate(alphabet)}
    eye = torch.eye(len(alphabet) + 1)
    return [eye[[index.get(c, len(alphabet)) for c in w]] for w in words]


def ordered_motifs(n: int, seed: int, dim: int = 16, min_len: int = 48, max_len: int = 96, period: int = 24,
                   gap: int = 9) -> tuple[list[torch.Tensor], list[int]]:  # fmt: skip
    """The embedded task: noise frames in which an ordered pair of motifs (X, then Y ``gap`` frames later) repeats
    about every ``period`` frames; the class is the ordered pair out of three motifs (AB, BA, AC, CA, BC, CB).

    AB and BA hold the same frames in the same numbers, so a bag of frames (any order-free pooling of the raw
    frames) cannot do better than telling the pair, a third of the task; the order is only visible to an encoder
    that relates frames ``gap`` apart (recurrence, attention with positions, a wide convolution). The informative
    frames are a few among many noise frames, which is where attention pooling helps over the mean.
    """
    g = torch.Generator().manual_seed(seed)
    motifs = torch.nn.functional.normalize(torch.randn(3, dim, generator=g), dim=-1) * 3.0  # (3, F)
    pairs = [(a, b) for a in range(3) for b in range(3) if a != b]  # 6 ordered pairs
    xs, ys = [], []
    for _ in range(n):
        label = int(torch.randint(len(pairs), (1,), generator=g))
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        x = torch.randn(length, dim, generator=g)
        start = int(torch.randint(period, (1,), generator=g))
        for t in range(start, length - gap, period):
            x[t] += motifs[pairs[label][0]]
            x[t + gap] += motifs[pairs[label][1]]
        xs.append(x)
        ys.append(label)
    return xs, ys


def read_hw4(folder: str | Path, setting: str) -> tuple[list[Path], list[int], int, int]:
    """HW4's speaker folder: utterance files, their label ids, the number of speakers and ``n_mels``."""
    root = require_folder(folder, setting)
    meta_path = require_file(root / "metadata.json", f"{setting} file")
    map_path = require_file(root / "mapping.json", f"{setting} file")
    try:
        meta, mapping = json.loads(meta_path.read_text()), json.loads(map_path.read_text())
        speaker2id = mapping["speaker2id"]
        n_mels, speakers = int(meta["n_mels"]), meta["speakers"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataFileError(f"{root}: metadata.json / mapping.json are not HW4's format ({err})") from err
    paths, labels = [], []
    for speaker, utterances in sorted(speakers.items()):
        if speaker not in speaker2id:
            raise DataFileError(f"{map_path}: speaker {speaker!r} of metadata.json has no id in speaker2id")
        for utt in utterances:
            paths.append(root / utt["feature_path"])
            labels.append(int(speaker2id[speaker]))
    num_classes = len(speaker2id)
    bad = [x for x in labels if not 0 <= x < num_classes]
    if bad:
        raise DataFileError(f"{map_path}: speaker ids must be in [0, {num_classes}), got {bad[0]}")
    return paths, labels, num_classes, n_mels


def speaker_names(folder: str | Path, setting: str) -> list[str]:
    """Class id -> speaker name from HW4's ``mapping.json`` (``id2speaker``, else the inverse of ``speaker2id``)."""
    path = require_file(Path(folder) / "mapping.json", f"{setting} file")
    try:
        mapping = json.loads(path.read_text())
        id2speaker = mapping.get("id2speaker") or {str(v): k for k, v in mapping["speaker2id"].items()}
        return [id2speaker[str(i)] for i in range(len(id2speaker))]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise DataFileError(f"{path}: no id2speaker / speaker2id for ids 0..n-1 ({err})") from err


def read_hw4_test(path: Path) -> list[str]:
    """The ``feature_path`` of every utterance of HW4's ``testdata.json``, in file order."""
    try:
        return [str(u["feature_path"]) for u in json.loads(path.read_text())["utterances"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataFileError(
            f'{path}: not HW4\'s testdata.json ({{"utterances": [{{"feature_path": ...}}]}}: {err})'
        ) from err


def _load_utterance(path: Path, n_mels: int) -> torch.Tensor:
    try:
        x = torch.load(require_file(path, "an uttr-*.pt file of metadata.json"), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError) as err:
        raise DataFileError(f"{path}: not a tensor file torch.load(weights_only=True) can read ({err})") from err
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != n_mels or x.shape[0] < 1:
        raise DataFileError(f"{path}: expected a (frames, {n_mels}) tensor, got {getattr(x, 'shape', type(x))}")
    return x.float()


def collate_sequences(items: list[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
    """Pad (frames (T, F), label) pairs: ``x`` (B, T_max, F), ``mask`` (B, T_max) True at real frames, ``y`` (B,)."""
    lengths = torch.tensor([len(x) for x, _ in items])
    x = torch.nn.utils.rnn.pad_sequence([x for x, _ in items], batch_first=True)
    mask = torch.arange(x.shape[1])[None] < lengths[:, None]
    return {"x": x, "mask": mask, "y": torch.tensor([y for _, y in items])}


class _EpochSampler(ResumableSampler):
    """Yields (index, epoch), so the dataset crops by epoch in any worker process."""

    def __iter__(self):
        epoch = self.epoch
        return ((i, epoch) for i in super().__iter__())


class _Segments(Dataset):
    """A random ``segment_len`` crop per item (training), from a generator of (seed, epoch, index)."""

    def __init__(self, xs: list[torch.Tensor], ys: list[int], segment_len: int | None, seed: int) -> None:
        self.xs, self.ys, self.segment_len, self.seed = xs, ys, segment_len, seed

    def __len__(self) -> int:
        return len(self.xs)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        x = self.xs[i]
        if self.segment_len is not None and len(x) > self.segment_len:
            g = random.Random(hash((self.seed, epoch, i)))
            start = g.randrange(len(x) - self.segment_len + 1)
            x = x[start : start + self.segment_len]
        return x, self.ys[i]


class SequenceDataModule(L.LightningDataModule):
    """Labelled feature sequences: HW4's speaker format, or the embedded ordered-motif task."""

    def __init__(
        self,
        data_dir: str | None = None,
        task: str = "motifs",
        languages: list[str] | None = None,
        words_per_language: int = 3000,
        num_sequences: int = 3000,
        segment_len: int | None = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        test_json: str | None = None,
    ) -> None:
        """
        Args:
            data_dir: HW4's folder (``metadata.json``, ``mapping.json``, ``uttr-*.pt``); null: ``task``.
            task: without ``data_dir``: 'motifs' (the embedded ordered-motif task) or 'langid' (language of a word,
                characters as one-hot frames; needs ``wordfreq``).
            languages: langid: wordfreq language codes, one class each (null: en, de, nl, fr, es, pt, it).
            words_per_language: langid: the frequency cut, each language's most frequent words considered.
            num_sequences: size of the embedded task.
            segment_len: frames of the random training segment (HW4: 128); null: whole sequences.
            val_fraction: share of the sequences for validation.
            test_fraction: share of the sequences for test.
            batch_size: training batch size per process.
            eval_batch_size: validation/test batch size per process (default: ``batch_size``).
            num_workers: DataLoader workers.
            seed: the split seed (and the embedded task's and the crops' seed).
            test_json: ``predict``'s utterances without labels, HW4's ``testdata.json`` format (null:
                ``<data_dir>/testdata.json``); ``feature_path`` is relative to the file's folder.
        """
        super().__init__()
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < value < 0.5:
                raise SettingError(f"data.init_args.{name} must be in (0, 0.5), got {value}")
        if segment_len is not None and segment_len < 1:
            raise SettingError(f"data.init_args.segment_len must be >= 1 or null (whole sequences), got {segment_len}")
        if num_sequences < 20:
            raise SettingError(f"data.init_args.num_sequences must be >= 20, got {num_sequences}")
        self.save_hyperparameters()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed, self.segment_len = num_workers, seed, segment_len
        if task not in ("motifs", "langid"):
            raise SettingError(f"data.init_args.task must be 'motifs' or 'langid', got {task!r}")
        self.words: dict[str, list[str]] | None = None
        if data_dir:
            paths, labels, self.num_classes, n_mels = read_hw4(data_dir, "data.init_args.data_dir")
            xs = [_load_utterance(p, n_mels) for p in paths]
        elif task == "langid":
            languages = list(languages or LANGUAGES)
            xs, labels = language_words(languages, words_per_language)
            self.num_classes = len(languages)
        else:
            xs, labels = ordered_motifs(num_sequences, seed)
            self.num_classes = 6
        order = list(range(len(xs)))
        random.Random(seed).shuffle(order)
        n_val, n_test = max(1, round(len(xs) * val_fraction)), max(1, round(len(xs) * test_fraction))
        parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
        self.splits = {k: ([xs[i] for i in v], [labels[i] for i in v]) for k, v in parts.items()}
        if not data_dir and task == "langid":  # characters of the training words only; others are "unknown"
            self.words = {k: v[0] for k, v in self.splits.items()}
            alphabet = sorted({c for w in self.words["train"] for c in w})
            self.splits = {k: (one_hot_characters(w, alphabet), y) for k, (w, y) in self.splits.items()}
        self.input_shape = (self.splits["train"][0][0].shape[1],)
        self.class_names = speaker_names(data_dir, "data.init_args.data_dir") if data_dir else None
        self.predict_ids: list[str] = []

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        data = _Segments(*self.splits["train"], self.segment_len, self.seed)
        sampler = _EpochSampler(len(data), num_replicas=world, rank=rank, seed=self.seed)
        resume_sampler(self.trainer, sampler, self.batch_size)
        return make_loader(data, sampler, self.batch_size, self.num_workers, self.seed, collate_sequences)

    def _eval_loader(self, split: str) -> DataLoader:
        world, rank = self._world()
        data = _Segments(*self.splits[split], None, self.seed)
        sampler = ShardSampler(len(data), world, rank)
        return make_loader(data, sampler, self.eval_batch_size, self.num_workers, self.seed, collate_sequences)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """HW4's test utterances (``testdata.json``), whole, with ``index`` (the row) instead of a label."""
        hp = self.hparams
        if not (hp.test_json or hp.data_dir):
            raise SettingError("predict needs data.init_args.data_dir (HW4's folder with testdata.json) or "
                               "data.init_args.test_json")  # fmt: skip
        if hp.test_json:
            path = require_file(hp.test_json, "data.init_args.test_json")
        else:
            path = require_file(Path(hp.data_dir) / "testdata.json", "data.init_args.data_dir file")
        self.predict_ids = read_hw4_test(path)
        xs = [_load_utterance(path.parent / name, self.input_shape[0]) for name in self.predict_ids]
        data = _Segments(xs, list(range(len(xs))), None, self.seed)
        world, rank = self._world()
        return make_loader(data, ShardSampler(len(data), world, rank), self.eval_batch_size, self.num_workers,
                           self.seed, _collate_rows)  # fmt: skip


def _collate_rows(items: list[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
    """:func:`collate_sequences` with the rows as ``index`` (prediction has no labels)."""
    batch = collate_sequences(items)
    batch["index"] = batch.pop("y")
    return batch
