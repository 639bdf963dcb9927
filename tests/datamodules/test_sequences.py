"""SequenceDataModule: the embedded ordered-motif task and HW4's speaker format (a tiny fixture written here)."""

from __future__ import annotations

import json

import pytest
import torch

from datamodules.errors import DataFileError, DataPathError, SettingError
from datamodules.sequences import SequenceDataModule, ordered_motifs


def _hw4(folder, n_mels: int = 40):
    folder.mkdir()
    speakers = {}
    for s in range(3):
        speakers[f"id1000{s}"] = []
        for u in range(8):
            name = f"uttr-{s}-{u}.pt"
            torch.save(torch.randn(20 + 10 * u, n_mels), folder / name)
            speakers[f"id1000{s}"].append({"feature_path": name, "mel_len": 20 + 10 * u})
    (folder / "metadata.json").write_text(json.dumps({"n_mels": n_mels, "speakers": speakers}))
    mapping = {
        "speaker2id": {f"id1000{s}": s for s in range(3)},
        "id2speaker": {str(s): f"id1000{s}" for s in range(3)},
    }
    (folder / "mapping.json").write_text(json.dumps(mapping))
    return folder


def test_the_embedded_task_is_deterministic_and_uses_all_six_ordered_pairs():
    xs, ys = ordered_motifs(120, seed=0)
    again, ys_again = ordered_motifs(120, seed=0)
    assert ys == ys_again and all(torch.equal(a, b) for a, b in zip(xs, again))
    assert set(ys) == set(range(6)) and all(48 <= len(x) <= 96 and x.shape[1] == 16 for x in xs)
    other, _ = ordered_motifs(120, seed=1)
    assert not torch.equal(other[0][:48], xs[0][:48])


def test_training_crops_random_segments_by_epoch_and_evaluation_sees_whole_sequences():
    dm = SequenceDataModule(num_sequences=100, segment_len=30, batch_size=4)
    first = next(iter(dm.train_dataloader()))
    assert first["x"].shape[1] == 30 and first["mask"].all()
    val = next(iter(dm.val_dataloader()))
    lengths = val["mask"].sum(1).tolist()
    xs, _ = dm.splits["val"]
    assert lengths == [len(x) for x in xs[:4]] and torch.equal(val["x"][0, : lengths[0]], xs[0])
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    epoch0 = next(iter(loader))["x"]
    assert torch.equal(epoch0, first["x"])  # the same epoch crops the same way (resume)
    loader.sampler.set_epoch(1)
    assert not torch.equal(next(iter(loader))["x"], epoch0)


def test_hw4_speaker_folders_are_read_with_their_mapping(tmp_path):
    dm = SequenceDataModule(data_dir=str(_hw4(tmp_path / "hw4")), segment_len=25, batch_size=2)
    assert dm.num_classes == 3 and dm.input_shape == (40,)
    assert sum(len(dm.splits[s][0]) for s in ("train", "val", "test")) == 24
    assert next(iter(dm.train_dataloader()))["x"].shape[1:] == (25, 40)


def test_bad_hw4_data_names_the_file(tmp_path):
    folder = _hw4(tmp_path / "hw4")
    torch.save({"not": "a tensor"}, folder / "uttr-0-0.pt")
    with pytest.raises(DataFileError, match=r"uttr-0-0\.pt: expected a \(frames, 40\) tensor"):
        SequenceDataModule(data_dir=str(folder))
    (folder / "uttr-0-1.pt").unlink()
    torch.save(torch.randn(5, 40), folder / "uttr-0-0.pt")
    with pytest.raises(DataPathError, match=r"uttr-0-1\.pt"):
        SequenceDataModule(data_dir=str(folder))
    (folder / "mapping.json").write_text(json.dumps({"speaker2id": {"id10000": 0}}))
    with pytest.raises(DataFileError, match=r"speaker 'id10001' of metadata\.json has no id"):
        SequenceDataModule(data_dir=str(folder))


def test_language_identification_words_are_one_hot_characters_with_one_language_each():
    from datamodules.sequences import language_words

    dm = SequenceDataModule(task="langid", languages=["en", "de", "nl"], words_per_language=300, seed=1)
    words, labels = language_words(["en", "de", "nl"], 300)
    assert len(set(words)) == len(words) and set(labels) == {0, 1, 2} and all(len(w) >= 3 for w in words)
    assert dm.num_classes == 3 and sum(len(dm.words[s]) for s in ("train", "val", "test")) == len(words)
    x, y = dm.splits["val"][0][0], dm.splits["val"][1][0]
    word = dm.words["val"][0]
    assert x.shape == (len(word), dm.input_shape[0]) and torch.equal(x.sum(1), torch.ones(len(word)))
    assert labels[words.index(word)] == y
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape[-1] == dm.input_shape[0] and batch["mask"].any(1).all()


def test_language_identification_names_a_bad_language_and_the_missing_package(monkeypatch):
    with pytest.raises(SettingError, match=r"data\.init_args\.languages must be >= 2 of wordfreq's languages"):
        SequenceDataModule(task="langid", languages=["en", "xx"])
    with pytest.raises(SettingError, match=r"data\.init_args\.task must be 'motifs' or 'langid', got 'words'"):
        SequenceDataModule(task="words")
    monkeypatch.setitem(__import__("sys").modules, "wordfreq", None)
    with pytest.raises(SettingError, match=r"needs the wordfreq package: pip install 'ml-lectures\[bench\]'"):
        SequenceDataModule(task="langid")
