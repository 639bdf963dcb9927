"""Back-translation end to end on the embedded task (reverse model phonemes -> word, synthetic pairs, forward model
on the union), and HW4's prediction CSV."""

from __future__ import annotations

import random

import pytest
import torch

from datamodules.translation_sources import cmudict_pairs
from tests.helpers import CONFIGS, CPU, QUICK, run_cli
from tools import backtranslation

pytestmark = pytest.mark.usefixtures("one_thread")

TRANSFORMER = str(CONFIGS / "seq2seq_transformer.yaml")
TINY = ["--config", TRANSFORMER, "--config", CPU, "--trainer.logger", "false", *QUICK, "--trainer.max_epochs", "1",
        "--data.init_args.limit_pairs", "300", "--data.init_args.batch_size", "32", "--model.init_args.net.d_model",
        "32", "--model.init_args.net.d_ff", "64", "--model.init_args.net.max_len", "24"]  # fmt: skip


def _monolingual(path, n: int = 40):
    """Phoneme strings of words outside the task's 300 pairs: target-language text without its source."""
    used = {w for w, _ in cmudict_pairs(300, 0)}
    rest = [p for w, p in cmudict_pairs(None, 0) if w not in used]
    path.write_text("\n".join(random.Random(1).sample(rest, n)) + "\n", encoding="utf-8")
    return path


def test_back_translation_trains_reverse_translates_monolingual_text_and_trains_forward_on_the_union(tmp_path):
    mono = _monolingual(tmp_path / "mono.ph")
    out = tmp_path / "bt"
    assert backtranslation.main([*TINY, "--monolingual", str(mono), "--out", str(out), "--tag"]) == 0
    reverse = torch.load(out / "reverse" / "checkpoints" / "averaged.ckpt", weights_only=True)
    assert reverse["datamodule_hyper_parameters"]["reverse"] is True
    words = (out / "reverse" / "translations.txt").read_text(encoding="utf-8").splitlines()
    assert len(words) == 40 and all(" " not in w for w in words)  # phonemes -> one word (characters joined)
    rows = [line.split("\t") for line in (out / "synthetic.tsv").read_text(encoding="utf-8").splitlines()]
    phonemes = mono.read_text(encoding="utf-8").splitlines()
    assert [t for _, t in rows] == [p for p, w in zip(phonemes, words, strict=True) if w]
    forward = torch.load(out / "forward" / "checkpoints" / "last.ckpt", weights_only=True)
    data = forward["datamodule_hyper_parameters"]
    assert data["synthetic_pairs"] == str(out / "synthetic.tsv") and data["synthetic_tag"] and not data["reverse"]
    # the tag is one source id past the real vocabulary: the forward encoder's embedding has one more row
    assert forward["hyper_parameters"]["input_shape"][0] == reverse["hyper_parameters"]["num_classes"] + 1


def test_back_translation_pieces_run_separately_and_name_what_they_miss(tmp_path, capsys):
    mono = _monolingual(tmp_path / "mono.ph", 10)
    assert backtranslation.main([*TINY, "--step", "translate", "--monolingual", str(mono)]) == 2
    assert "error: --step translate needs --reverse-ckpt" in capsys.readouterr().err
    assert backtranslation.main([*TINY, "--step", "forward", "--synthetic", str(tmp_path / "none.tsv")]) == 2
    assert "--synthetic" in capsys.readouterr().err
    bad = tmp_path / "bad.tsv"
    bad.write_text("only one column\n", encoding="utf-8")
    assert backtranslation.main([*TINY, "--step", "forward", "--synthetic", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.tsv line 1: 1 column(s)" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ HW4's submission
SPEAKER, LANGID = str(CONFIGS / "speaker_transformer.yaml"), str(CONFIGS / "langid_transformer.yaml")


def test_hw4_predict_writes_the_submission_csv_with_speaker_names_and_never_overwrites(tmp_path):
    import csv
    import json

    from tests.datamodules.test_sequences import _hw4

    hw4 = _hw4(tmp_path / "hw4")
    names = [f"uttr-test-{i}.pt" for i in range(5)]
    for i, name in enumerate(names):
        torch.save(torch.randn(15 + 7 * i, 40), hw4 / name)
    utterances = [{"feature_path": n, "mel_len": 15 + 7 * i} for i, n in enumerate(names)]
    (hw4 / "testdata.json").write_text(json.dumps({"n_mels": 40, "utterances": utterances}))
    args = ["predict", "--config", SPEAKER, "--config", CPU, "--trainer.logger", "false", *QUICK,
            "--data.init_args.data_dir", str(hw4), "--data.init_args.segment_len", "25",
            "--data.init_args.eval_batch_size", "2", "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    run_cli(*args)
    run_cli(*args)
    first, second = (tmp_path / "run" / name for name in ("predictions.csv", "predictions-1.csv"))
    rows = list(csv.reader(first.open(encoding="utf-8")))
    assert rows[0] == ["Id", "Category"] and [r[0] for r in rows[1:]] == names
    assert {r[1] for r in rows[1:]} <= {"id10000", "id10001", "id10002"} and second.exists()


def test_predict_without_hw4_test_data_names_the_setting(capsys):
    from cli import main

    assert main(["predict", "--config", SPEAKER, "--config", CPU, "--trainer.logger", "false", *QUICK]) == 2
    err = capsys.readouterr().err
    assert "error: predict needs data.init_args.data_dir (HW4's folder with testdata.json)" in err, err[-2000:]


def test_the_language_identification_config_runs(tmp_path):
    from tests.helpers import SMOKE

    cli = run_cli("fit", "--config", LANGID, "--config", SMOKE, "--data.init_args.words_per_language", "200",
                  "--trainer.default_root_dir", str(tmp_path))  # fmt: skip
    assert cli.datamodule.num_classes == 7 and "train/loss" in cli.trainer.callback_metrics
