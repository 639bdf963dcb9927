"""TranslationDataModule: the embedded word -> phonemes task and the real formats (HW5's TED2020 raw files, aligned
text files, a TSV), on fixtures written here; SentencePiece models trained on the training split only."""

from __future__ import annotations

import pytest
import torch

from datamodules.errors import DataFileError, DataPathError, SettingError
from datamodules.translation import TranslationDataModule
from datamodules.translation_sources import BOS, EOS, PAD, cmudict_pairs

_NOUNS = zip(["cat", "dog", "box", "car"] * 15, ["mat", "log", "bed", "road"] * 15)
EN = [f"the {w} is on the {v} number {i}" for i, (w, v) in enumerate(_NOUNS)]
ZH = [
    f"{w}在{v}上第{i}號" for i, (w, v) in enumerate(zip(["貓", "狗", "盒", "車"] * 15, ["墊", "木", "床", "路"] * 15))
]


def _ted2020(folder):
    folder.mkdir()
    (folder / "train_dev.raw.en").write_text("\n".join(EN) + "\n", encoding="utf-8")
    (folder / "train_dev.raw.zh").write_text("\n".join(ZH) + "\n", encoding="utf-8")
    (folder / "test.raw.en").write_text("\n".join(EN[:5]) + "\n", encoding="utf-8")
    return folder


def test_the_embedded_task_is_words_to_phonemes_split_by_the_seed():
    pairs = dict(cmudict_pairs(None, 0))
    assert pairs["tough"] == "T AH F" and pairs["though"] == "DH OW" and pairs["through"] == "TH R UW"
    dm = TranslationDataModule(limit_pairs=400, seed=3)
    assert [len(dm.pairs[s]) for s in ("train", "val", "test")] == [360, 20, 20]
    assert dm.pairs == TranslationDataModule(limit_pairs=400, seed=3).pairs
    assert dm.pairs["val"] != TranslationDataModule(limit_pairs=400, seed=4).pairs["val"]
    words = [set(w for w, _ in dm.pairs[s]) for s in ("train", "val", "test")]
    assert not (words[0] & words[1]) and not (words[0] & words[2])
    assert dm.bleu_tokenize == "none" and dm.input_shape == (dm.source_tok.size,)


def test_batches_are_padded_with_bos_inputs_and_eos_targets():
    dm = TranslationDataModule(limit_pairs=200, batch_size=8)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    src, tgt_in, tgt_out = batch["src"], batch["tgt_in"], batch["tgt_out"]
    assert (tgt_in[:, 0] == BOS).all() and torch.equal(batch["src_mask"], src != PAD)
    for i, row in enumerate(batch["index"].tolist()):
        word, phonemes = dm.pairs["val"][row]
        length = int((tgt_out[i] != PAD).sum())
        assert tgt_out[i, length - 1] == EOS and torch.equal(tgt_in[i, 1:length], tgt_out[i, : length - 1])
        assert dm.target_tok.decode(tgt_out[i, : length - 1].tolist()) == phonemes
        assert dm.source_tok.decode(src[i].tolist()) == word


def test_ted2020_files_train_sentencepiece_on_the_training_split_into_the_run_folder(tmp_path):
    dm = TranslationDataModule(ted2020_dir=str(_ted2020(tmp_path / "ted")), vocab_size=40, val_fraction=0.1,
                               test_fraction=0.1)  # fmt: skip
    assert dm.bleu_tokenize == "zh" and dm.num_classes == dm.target_tok.size <= 40
    train_text = "".join(t for _, t in dm.pairs["train"])
    assert all(p.strip("▁") == "" or p.strip("▁") in train_text or p.startswith("<") for p in
               dm.target_tok.pieces(range(dm.target_tok.size)))  # fmt: skip
    dm._write_models(tmp_path / "run" / "sentencepiece")
    assert (tmp_path / "run" / "sentencepiece" / "target.model").read_bytes() == dm.target_tok.model_proto
    state = dm.state_dict()
    again = TranslationDataModule(ted2020_dir=str(tmp_path / "ted"), vocab_size=40, val_fraction=0.1,
                                  test_fraction=0.1)  # fmt: skip
    again.load_state_dict(state)  # the same data trains the same SentencePiece models
    other = TranslationDataModule(ted2020_dir=str(tmp_path / "ted"), vocab_size=36, val_fraction=0.1,
                                  test_fraction=0.1)  # fmt: skip
    with pytest.raises(SettingError, match="SentencePiece model differs"):
        other.load_state_dict(state)


def test_aligned_files_and_a_tsv_give_the_same_pairs(tmp_path):
    (tmp_path / "a.en").write_text("\n".join(EN), encoding="utf-8")
    (tmp_path / "a.zh").write_text("\n".join(ZH), encoding="utf-8")
    rows = "".join(f"{i}\t{z}\t{e}\n" for i, (e, z) in enumerate(zip(EN, ZH)))
    (tmp_path / "p.tsv").write_text("id\tzh\ten\n" + rows, encoding="utf-8")
    common = dict(source_tokenizer="space", target_tokenizer="char")
    files = TranslationDataModule(source_file=str(tmp_path / "a.en"), target_file=str(tmp_path / "a.zh"), **common)
    tsv = TranslationDataModule(tsv_file=str(tmp_path / "p.tsv"), columns=["en", "zh"], **common)
    assert files.pairs == tsv.pairs and files.bleu_tokenize == "13a"


def test_bad_data_names_the_file_or_setting(tmp_path):
    (tmp_path / "a.en").write_text("one\ntwo\n", encoding="utf-8")
    (tmp_path / "a.zh").write_text("一\n", encoding="utf-8")
    (tmp_path / "p.tsv").write_text("en\tzh\nhello\n", encoding="utf-8")
    with pytest.raises(DataPathError, match=r"data\.init_args\.ted2020_dir does not exist"):
        TranslationDataModule(ted2020_dir=str(tmp_path / "missing"))
    (tmp_path / "ted").mkdir()
    with pytest.raises(DataPathError, match=r"ted2020_dir file train_dev\.raw\.en does not exist"):
        TranslationDataModule(ted2020_dir=str(tmp_path / "ted"))
    with pytest.raises(DataFileError, match=r"a\.en has 2 lines but .*a\.zh has 1"):
        TranslationDataModule(source_file=str(tmp_path / "a.en"), target_file=str(tmp_path / "a.zh"))
    with pytest.raises(SettingError, match=r"source_file and data\.init_args\.target_file go together"):
        TranslationDataModule(source_file=str(tmp_path / "a.en"))
    with pytest.raises(DataFileError, match=r"p\.tsv line 2: 1 column\(s\), need 2"):
        TranslationDataModule(tsv_file=str(tmp_path / "p.tsv"), columns=["en", "zh"])
    with pytest.raises(DataFileError, match=r"lacks the columns \['en', 'zh_tw'\]"):
        TranslationDataModule(tsv_file=str(tmp_path / "p.tsv"), columns=["en", "zh_tw"])
    with pytest.raises(SettingError, match=r"data\.init_args\.val_fraction must be in \(0, 0\.5\), got 0\.0"):
        TranslationDataModule(val_fraction=0.0)


def test_a_saved_hugging_face_translation_dataset_is_read_by_languages(tmp_path):
    import datasets

    rows = [{"translation": {"en": e, "zh": z}} for e, z in zip(EN, ZH)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    common = dict(source_tokenizer="space", target_tokenizer="char")
    dm = TranslationDataModule(hf_dataset=str(tmp_path / "hf"), columns=["en", "zh"], **common)
    assert sorted(p for split in dm.pairs.values() for p in split) == sorted(zip(EN, ZH))
    with pytest.raises(SettingError, match=r"data\.init_args\.columns must name the source and target"):
        TranslationDataModule(hf_dataset=str(tmp_path / "hf"), **common)
    with pytest.raises(DataFileError, match=r"row 0: no \['en', 'de'\]"):
        TranslationDataModule(hf_dataset=str(tmp_path / "hf"), columns=["en", "de"], **common)


def test_synthetic_pairs_go_to_the_training_split_only(tmp_path):
    (tmp_path / "a.en").write_text("\n".join(EN), encoding="utf-8")
    (tmp_path / "a.zh").write_text("\n".join(ZH), encoding="utf-8")
    (tmp_path / "bt.tsv").write_text("a synthetic source\t合成的\nanother one\t另一個\n", encoding="utf-8")
    common = dict(source_file=str(tmp_path / "a.en"), target_file=str(tmp_path / "a.zh"), source_tokenizer="space",
                  target_tokenizer="char")  # fmt: skip
    plain = TranslationDataModule(**common)
    more = TranslationDataModule(synthetic_pairs=str(tmp_path / "bt.tsv"), **common)
    assert more.pairs["train"] == [*plain.pairs["train"], ("a synthetic source", "合成的"), ("another one", "另一個")]
    assert more.pairs["val"] == plain.pairs["val"] and more.pairs["test"] == plain.pairs["test"]
    tagged = TranslationDataModule(synthetic_pairs=str(tmp_path), synthetic_tag=True, **common)  # a folder of *.tsv
    assert tagged.pairs["train"] == more.pairs["train"] and tagged.input_shape == (tagged.source_tok.size + 1,)
    tagged.setup()
    real = {row: src for src, _, row in tagged._encoded["train"]}
    n = tagged.real_train
    assert all(src[0] == tagged.tag for row, src in real.items() if row >= n) and len(real) - n == 2
    assert all(tagged.tag not in src for row, src in real.items() if row < n)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError, match=r"no \*\.tsv files"):
        TranslationDataModule(synthetic_pairs=str(tmp_path / "empty"), **common)


def test_reverse_swaps_the_sides_and_keeps_the_split():
    forward, reverse = TranslationDataModule(limit_pairs=200), TranslationDataModule(limit_pairs=200, reverse=True)
    for split in ("train", "val", "test"):
        assert reverse.pairs[split] == [(t, s) for s, t in forward.pairs[split]]
    assert reverse.bleu_tokenize == "char" and forward.bleu_tokenize == "none"
    assert reverse.num_classes == forward.input_shape[0] and reverse.input_shape == (forward.num_classes,)


def test_a_monolingual_share_of_the_training_split_is_held_out_from_training():
    full, held = (
        TranslationDataModule(limit_pairs=400),
        TranslationDataModule(limit_pairs=400, monolingual_fraction=0.5),
    )
    assert held.pairs["val"] == full.pairs["val"] and held.pairs["test"] == full.pairs["test"]
    assert len(held.pairs["monolingual"]) == len(held.pairs["train"]) == 180
    assert held.pairs["monolingual"] + held.pairs["train"] == full.pairs["train"]
    with pytest.raises(SettingError, match=r"data\.init_args\.monolingual_fraction must be in \[0, 1\), got 1\.0"):
        TranslationDataModule(limit_pairs=400, monolingual_fraction=1.0)
