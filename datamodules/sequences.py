"""Sequence-classification DataModule (HW4): variable-length feature sequences (B, T, F) and one label each.

Sources: ``data_dir`` in HW4's format (``metadata.json``: ``{"n_mels": F, "speakers": {name: [{"feature_path":
"uttr-*.pt", "mel_len": T}, ...]}}``, ``mapping.json``: ``{"speaker2id": {name: id}}``, and one (T, F) float tensor
per ``uttr-*.pt``, read with ``torch.load(weights_only=True)``), else the embedded task (:func:`ordered_motifs`).
Utterances are shuffled with ``seed`` and split train / val / test by ``val_fraction`` / ``test_fraction``.

As HW4 does, training takes a random ``segment_len``-frame segment of each sequence (shorter ones whole; the crop
comes from a generator seeded by ``seed``, the epoch and the index, so it is resumable and DDP-consistent);
validation and test see whole sequences, padded in the batch with a mask (True at real frames).

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

__all__ = ["SequenceDataModule", "collate_sequences", "ordered_motifs", "read_hw4"]

SPLITS = ("train", "val", "test")


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
        num_sequences: int = 3000,
        segment_len: int | None = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        """
        Args:
            data_dir: HW4's folder (``metadata.json``, ``mapping.json``, ``uttr-*.pt``); null: the embedded task.
            num_sequences: size of the embedded task.
            segment_len: frames of the random training segment (HW4: 128); null: whole sequences.
            val_fraction: share of the sequences for validation.
            test_fraction: share of the sequences for test.
            batch_size: training batch size per process.
            eval_batch_size: validation/test batch size per process (default: ``batch_size``).
            num_workers: DataLoader workers.
            seed: the split seed (and the embedded task's and the crops' seed).
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
        if data_dir:
            paths, labels, self.num_classes, n_mels = read_hw4(data_dir, "data.init_args.data_dir")
            xs = [_load_utterance(p, n_mels) for p in paths]
        else:
            xs, labels = ordered_motifs(num_sequences, seed)
            self.num_classes, n_mels = 6, xs[0].shape[1]
        self.input_shape = (n_mels,)
        order = list(range(len(xs)))
        random.Random(seed).shuffle(order)
        n_val, n_test = max(1, round(len(xs) * val_fraction)), max(1, round(len(xs) * test_fraction))
        parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
        self.splits = {k: ([xs[i] for i in v], [labels[i] for i in v]) for k, v in parts.items()}

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
