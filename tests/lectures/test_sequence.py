"""Self-attention and the Transformer (lectures 4-5): invariants of attention, decoding, scores; the lectures."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lecture_modules.sequence import attention as att
from lecture_modules.sequence import core
from lecture_modules.sequence.models import Seq2SeqSpec
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

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------ attention
@pytest.mark.parametrize("masks", ["none", "padding", "causal"])
def test_our_attention_matches_torch_multihead_attention_with_the_same_weights(masks):
    torch.manual_seed(0)
    d, h = 16, 4
    ours, theirs = att.MultiHeadAttention(d, h).eval(), nn.MultiheadAttention(d, h, batch_first=True).eval()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(3, 5, d)
    key_mask = att.padding_mask(torch.tensor([5, 3, 1]), 5) if masks == "padding" else None
    attn_mask = att.causal_mask(5) if masks == "causal" else None
    out, weights = ours(x, key_mask=key_mask, attn_mask=attn_mask, need_weights=True)
    fast, none = ours(x, key_mask=key_mask, attn_mask=attn_mask)
    ref, ref_w = theirs(
        x,
        x,
        x,
        key_padding_mask=None if key_mask is None else ~key_mask,
        attn_mask=None if attn_mask is None else ~attn_mask,
    )  # torch: True means "masked"
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(fast, ref, atol=1e-5) and none is None
    assert torch.allclose(weights.mean(1), ref_w, atol=1e-6)  # torch averages the heads
    assert torch.allclose(weights.sum(-1), torch.ones(3, h, 5))


def _encoder(positional: str, **kw) -> att.TransformerEncoder:
    torch.manual_seed(0)
    return att.TransformerEncoder(vocab_size=11, d_model=16, heads=2, layers=2, d_ff=32, dropout=0.0,
                                  positional=positional, **kw).eval()  # fmt: skip


@pytest.mark.parametrize("positional", att.POSITIONAL)
def test_under_the_causal_mask_outputs_at_t_do_not_depend_on_inputs_after_t(positional):
    encoder = _encoder(positional)
    x = torch.randint(0, 11, (2, 7))
    y = x.clone()
    y[:, 4:] = (y[:, 4:] + 3) % 11  # change the future from position 4 on
    causal = att.causal_mask(7)
    out_x = encoder.layers[0](encoder.embed_tokens(x), attn_mask=causal)[0]
    out_y = encoder.layers[0](encoder.embed_tokens(y), attn_mask=causal)[0]
    assert torch.allclose(out_x[:, :4], out_y[:, :4], atol=1e-6)
    assert not torch.allclose(out_x[:, 4:], out_y[:, 4:], atol=1e-3)  # the test has teeth


@pytest.mark.parametrize("positional", att.POSITIONAL)
def test_padding_does_not_change_the_outputs_at_real_positions(positional):
    encoder = _encoder(positional)
    x = torch.randint(1, 11, (1, 4))
    alone, _ = encoder(x, torch.ones(1, 4, dtype=torch.bool))
    padded = torch.cat([x, torch.randint(1, 11, (1, 3))], dim=1)  # garbage after the real tokens
    out, _ = encoder(padded, att.padding_mask(torch.tensor([4]), 7))
    assert torch.allclose(out[:, :4], alone, atol=1e-5)


def test_rope_scores_depend_only_on_the_relative_offset():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m: int, n: int) -> float:
        return (att.apply_rope(q, torch.tensor([m])) * att.apply_rope(k, torch.tensor([n]))).sum().item()

    assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-5) == pytest.approx(score(3, 0), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)
    rotated = att.apply_rope(q, torch.tensor([7]))
    assert rotated.norm().item() == pytest.approx(q.norm().item(), rel=1e-5)  # a rotation keeps the length


def test_sinusoidal_encodings_are_deterministic_bounded_and_distinct():
    pe = att.sinusoidal_encoding(200, 32)
    assert torch.equal(pe, att.sinusoidal_encoding(200, 32)) and pe.abs().max() <= 1.0
    assert torch.equal(att.sinusoidal_encoding(5, 32, offset=10), pe[10:15])
    assert torch.allclose(pe[0, 0::2], torch.zeros(16)) and torch.allclose(pe[0, 1::2], torch.ones(16))
    assert torch.cdist(pe, pe).add(torch.eye(200)).min() > 0.1  # no two positions share an encoding


@pytest.mark.parametrize("positional", att.POSITIONAL)
def test_cached_incremental_decoding_equals_the_full_causal_pass(positional):
    torch.manual_seed(0)
    decoder = att.TransformerDecoder(vocab_size=9, d_model=16, heads=2, layers=2, d_ff=32, dropout=0.0,
                                     positional=positional).eval()  # fmt: skip
    memory, mask = torch.randn(2, 5, 16), att.padding_mask(torch.tensor([5, 2]), 5)
    tokens = torch.randint(0, 9, (2, 6))
    full, _ = decoder(tokens, memory, mask)
    cache = decoder.new_cache()
    steps = [decoder(tokens[:, t : t + 1], memory, mask, cache=cache)[0] for t in range(6)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5) and cache.length == 6


# ------------------------------------------------------------------------------------------------ decoding
class TableDecoder:
    """A toy StepDecoder whose next-token distribution is a fixed random function of the whole prefix."""

    def __init__(self, vocab: int, seed: int) -> None:
        self.vocab, self.seed = vocab, seed

    def logp(self, prefix: tuple[int, ...]) -> torch.Tensor:
        g = torch.Generator().manual_seed(hash((self.seed, prefix)) % (2**31))
        return (3 * torch.randn(self.vocab, generator=g)).log_softmax(0)

    def start(self, src, src_mask):
        return [()] * src.shape[0]

    def step(self, tokens, state):
        state = [(*p, int(t)) for p, t in zip(state, tokens, strict=True)]
        return torch.stack([self.logp(p) for p in state]), state

    def reorder(self, state, index):
        return [state[i] for i in index.tolist()]


def _exhaustive(model: TableDecoder, eos: int, max_len: int, alpha: float) -> list[int]:
    best, best_score = None, -math.inf
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(model.vocab), repeat=n):
            if eos in seq[:-1] or (n < max_len and seq[-1] != eos):
                continue  # a hypothesis ends at its first EOS, or at max_len
            logp = sum(model.logp((0, *seq[:i]))[tok].item() for i, tok in enumerate(seq))
            if logp / core.length_penalty(n, alpha) > best_score:
                best, best_score = list(seq), logp / core.length_penalty(n, alpha)
    return best


def test_beam_one_is_greedy_decoding():
    src, mask = torch.zeros(6, 3, dtype=torch.long), torch.ones(6, 3, dtype=torch.bool)
    for seed in range(3):
        model = TableDecoder(vocab=5, seed=seed)
        greedy = core.greedy_decode(model, src, mask, bos=0, eos=1, max_len=6)
        assert core.beam_search(model, src, mask, bos=0, eos=1, max_len=6, beam=1, alpha=0.6) == greedy


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_beam_as_wide_as_all_hypotheses_finds_the_exhaustive_optimum(alpha):
    src, mask = torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool)
    found_better_than_greedy = False
    for seed in range(6):
        model = TableDecoder(vocab=4, seed=seed)
        [beam] = core.beam_search(model, src, mask, bos=0, eos=1, max_len=4, beam=4**4, alpha=alpha)
        assert beam == _exhaustive(model, eos=1, max_len=4, alpha=alpha)
        found_better_than_greedy |= beam != core.greedy_decode(model, src, mask, bos=0, eos=1, max_len=4)[0]
    assert found_better_than_greedy  # the tables are hard enough for greedy decoding to miss the optimum


# ------------------------------------------------------------------------------------------------ losses, scores
def test_label_smoothing_zero_is_cross_entropy_and_otherwise_matches_torch():
    torch.manual_seed(0)
    logits, target = torch.randn(10, 7), torch.tensor([1, 2, 0, 0, 3, 6, 5, 0, 4, 2])
    pad = 0
    for eps in (0.0, 0.1):
        ours = core.label_smoothed_nll(logits, target, eps, ignore_index=pad)
        ref = F.cross_entropy(logits, target, ignore_index=pad, label_smoothing=eps)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    assert core.label_smoothed_nll(logits, target, 0.1, pad) != pytest.approx(
        core.label_smoothed_nll(logits, target, 0.0, pad).item()
    )


def test_inverse_sqrt_warms_up_linearly_then_decays_as_one_over_sqrt_step():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = core.InverseSqrtLR(opt, warmup_steps=4)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and lrs[15] == pytest.approx(math.sqrt(4 / 16))


def test_scheduled_sampling_replaces_gold_tokens_with_predictions_at_its_rate():
    gold, pred = torch.zeros(200, 50, dtype=torch.long), torch.ones(200, 50, dtype=torch.long)
    assert torch.equal(core.scheduled_sampling_inputs(gold, pred, 0.0), gold)
    mixed = core.scheduled_sampling_inputs(gold, pred, 0.25, torch.Generator().manual_seed(0))
    assert (mixed[:, 0] == 0).all() and mixed[:, 1:].float().mean().item() == pytest.approx(0.25, abs=0.01)


def test_bleu_and_chrf_of_a_corpus_against_itself_are_100():
    zh = ["這是一個測試。", "翻譯品質用 BLEU 衡量"]
    assert core.bleu(zh, zh, tokenize="zh") == pytest.approx(100.0) and core.chrf(zh, zh) == pytest.approx(100.0)
    assert core.bleu(["the cat sat on the mat"], ["a dog sat on a log"]) < 50
    assert core.sentence_bleu("K AE1 T", "K AE1 T", tokenize="none") == pytest.approx(100.0)


def test_a_seq2seq_spec_names_the_setting_it_refuses():
    from datamodules.errors import SettingError

    with pytest.raises(SettingError, match=r"model\.init_args\.net\.d_model must be divisible by .*heads \(3\)"):
        Seq2SeqSpec.of({"d_model": 16, "heads": 3})
    with pytest.raises(SettingError, match=r"model\.init_args\.net\.positional must be one of"):
        Seq2SeqSpec.of({"positional": "alibi"})


# ------------------------------------------------------------------------------------------------ the lectures
TRANSFORMER, RNN = str(CONFIGS / "seq2seq_transformer.yaml"), str(CONFIGS / "seq2seq_rnn.yaml")
OFFLINE = ["--trainer.logger", "false", *QUICK]
TINY = ["--data.init_args.limit_pairs", "300", "--data.init_args.batch_size", "32", "--model.init_args.net.d_model",
        "32", "--model.init_args.net.d_ff", "64", "--model.init_args.net.max_len", "24"]  # fmt: skip


@pytest.mark.parametrize("config", [TRANSFORMER, RNN], ids=["transformer", "rnn"])
def test_seq2seq_configs_run_and_log_bleu_attention_maps_and_the_bleu_curve(config, tmp_path):
    cli = run_cli("fit", "--config", config, "--config", SMOKE, *TINY, "--trainer.default_root_dir", str(tmp_path))
    metrics = cli.trainer.callback_metrics
    assert {"train/loss", "val/loss", "val/bleu", "val/chrf"} <= set(metrics)
    assert 0.0 <= float(metrics["val/bleu"]) <= 100.0
    assert list(tmp_path.rglob("val_attention-step*.png")) and list(tmp_path.rglob("val_bleu_curve-step*.png"))
    assert cli.model.hparams.net["kind"] == ("rnn" if config == RNN else "transformer")
    assert type(cli.model).__name__ == ("RNNAttentionSeq2Seq" if config == RNN else "Seq2Seq")


def test_offline_wandb_run_has_bleu_the_attention_figure_and_the_translation_table(tmp_path):
    from tests.wandb_reader import read_run

    run_cli("fit", "--config", TRANSFORMER, "--config", CPU, *QUICK, *TINY, "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "3", "--trainer.callbacks=[]",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"))  # fmt: skip
    [log_file] = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    logged = {key for row in read_run(log_file)["history"] for key in row}
    assert {"val/bleu", "val/chrf"} <= logged, logged
    for media in ("val/attention", "val/bleu_curve", "val/translations"):  # logged as nested media records
        assert f"{media}/_type" in logged, logged
    types = {row["val/translations/_type"] for row in read_run(log_file)["history"] if "val/translations/_type" in row}
    assert types == {"table-file"}
    assert list((log_file.parent / "files" / "figures").glob("val_attention-*.png"))


def test_test_stage_decodes_with_the_beam_and_scheduled_sampling_trains(tmp_path):
    args = ["--config", TRANSFORMER, "--config", CPU, *OFFLINE, *TINY, "--trainer.callbacks=[]",
            "--trainer.max_epochs", "1", "--model.init_args.scheduled_sampling", "0.3", "--model.init_args.beam", "3",
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    cli = run_cli("fit", *args)
    [result] = cli.trainer.test(cli.model, datamodule=cli.datamodule)
    assert {"test/bleu", "test/chrf", "test/loss"} <= set(result)


def test_predict_translates_ted2020_test_raw_en_line_by_line_into_the_run_folder(tmp_path):
    from tests.datamodules.test_translation import _ted2020

    ted = _ted2020(tmp_path / "ted")
    args = ["--config", TRANSFORMER, "--config", CPU, *OFFLINE, *TINY, "--trainer.callbacks=[]",
            "--data.init_args.ted2020_dir", str(ted), "--data.init_args.vocab_size", "40",
            "--model.init_args.beam", "2", "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    run_cli("predict", *args)
    run_cli("predict", *args)  # a second run never overwrites the first's file
    first, second = (tmp_path / "run" / name for name in ("translations.txt", "translations-1.txt"))
    lines = first.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len((ted / "test.raw.en").read_text().splitlines()) == 5 and second.exists()
    assert (tmp_path / "run" / "sentencepiece" / "target.model").exists()


def test_an_interrupted_run_resumes_to_the_weights_and_averaged_snapshots_of_an_uninterrupted_one(tmp_path):
    """Scheduled sampling and dropout draw from the global RNG and the averaging callback keeps end-of-epoch
    snapshots: the checkpoint carries both, so the resumed run ends bit-identical."""
    base = ["fit", "--config", TRANSFORMER, "--config", CPU, *OFFLINE, *TINY, "--trainer.max_epochs", "2",
            "--model.init_args.scheduled_sampling", "0.2", "--trainer.limit_val_batches", "1"]  # fmt: skip
    full = run_cli(*base, "--trainer.default_root_dir", str(tmp_path / "full"))
    reference = {k: v.clone() for k, v in full.model.state_dict().items()}
    ckpt = crash_after_checkpoint(base, 12, tmp_path / "ckpt")  # epoch 2 of 9 batches each, mid-epoch
    resumed = run_cli(*base, "--seed_everything", "123", "--trainer.default_root_dir", str(tmp_path / "resumed"),
                      "--ckpt_path", str(ckpt))  # fmt: skip
    assert resumed.trainer.global_step == full.trainer.global_step == 18
    assert state_dict_equal(resumed.model.state_dict(), reference), "resumed weights differ from the full run"
    assert resumed.model.bleu_history == full.model.bleu_history and len(full.model.bleu_history) == 2
    assert list((tmp_path / "full").rglob("averaged.ckpt"))  # the callback wrote the averaged weights
    loaded = torch.load(ckpt, weights_only=True)
    assert loaded["hyper_parameters"]["net"]["kind"] == "transformer"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.init_args.net.heads", "3"], r"model\.init_args\.net\.d_model must be divisible by"),
        (["--model.init_args.beam", "0"], r"model\.init_args\.beam must be >= 1"),
        (["--model.init_args.net.kind", "lstm"], r"net\.kind"),
        (["--model.init_args.label_smoothing", "1.0"], r"model\.init_args\.label_smoothing must be in \[0, 1\)"),
        (["--data.init_args.ted2020_dir", "/nonexistent/ted"], r"data\.init_args\.ted2020_dir does not exist"),
        (["--data.init_args.tsv_file", "/nonexistent.tsv"], r"data\.init_args\.tsv_file does not exist"),
    ],
)
def test_bad_settings_end_in_one_line_naming_them(args, message, capsys):
    from cli import main

    assert main(["fit", "--config", TRANSFORMER, "--config", SMOKE, *args]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(message, errors[0]) and "Traceback" not in err, err[-2000:]


@pytest.mark.slow
def test_ddp_two_ranks_report_the_same_corpus_bleu(tmp_path):
    import json

    result = run_cli_subprocess(
        "fit", "--config", TRANSFORMER, "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp",
        "--trainer.devices", "2", *OFFLINE, *TINY, "--trainer.max_epochs", "1", "--trainer.callbacks=[]",
        "--trainer.callbacks+=tests.helpers.MetricsDump", "--trainer.callbacks.out_dir", str(tmp_path / "dump"),
        "--trainer.default_root_dir", str(tmp_path), cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / "dump" / f"fit-rank{r}.json").read_text()) for r in (0, 1))
    assert {"val/bleu", "val/chrf", "val/loss"} <= set(rank0) and rank0 == rank1


# ------------------------------------------------------------------------------------------------ classification
SPEAKER, CONFORMER = str(CONFIGS / "speaker_transformer.yaml"), str(CONFIGS / "speaker_conformer.yaml")


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "transformer", "conformer"])
def test_every_encoder_ignores_padding_frames(kind):
    from lecture_modules.sequence.encoders import EncoderSpec, SequenceEncoder

    torch.manual_seed(0)
    encoder = SequenceEncoder(EncoderSpec.of({"kind": kind, "d_model": 16, "heads": 2, "d_ff": 32, "kernel_size": 3,
                                              "dropout": 0.0}), input_dim=5).eval()  # fmt: skip
    x = torch.randn(1, 6, 5)
    alone = encoder(x, torch.ones(1, 6, dtype=torch.bool))
    padded = torch.cat([x, 100 * torch.randn(1, 4, 5)], dim=1)
    out = encoder(padded, att.padding_mask(torch.tensor([6]), 10))
    assert torch.allclose(out[:, :6], alone, atol=1e-5)


def test_attention_pooling_weights_only_real_frames_and_mean_pooling_is_masked():
    from lecture_modules.sequence.encoders import AttentionPooling, masked_mean

    h, mask = torch.randn(2, 5, 4), att.padding_mask(torch.tensor([5, 2]), 5)
    pooled, weights = AttentionPooling(4)(h, mask)
    assert torch.allclose(pooled, (weights[:, :, None] * h).sum(1))
    assert torch.allclose(weights.sum(-1), torch.ones(2)) and (weights[1, 2:] == 0).all()
    assert torch.allclose(masked_mean(h, mask)[1], h[1, :2].mean(0))


def test_am_softmax_subtracts_the_margin_from_the_true_class_only_in_training():
    from lecture_modules.sequence.encoders import AMSoftmaxHead

    head = AMSoftmaxHead(4, 3, margin=0.35, scale=30.0)
    z, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    plain, margined = head(z), head(z, y)
    diff = plain - margined
    assert torch.allclose(diff.gather(1, y[:, None]), torch.full((5, 1), 30 * 0.35), atol=1e-5)
    assert torch.allclose(diff.sum(1), torch.full((5,), 30 * 0.35), atol=1e-5)  # other classes unchanged
    assert plain.abs().max() <= 30.0 + 1e-4


@pytest.mark.parametrize("config", [SPEAKER, CONFORMER], ids=["transformer", "conformer"])
def test_speaker_configs_run_and_plot_a_confusion_matrix(config, tmp_path):
    cli = run_cli("fit", "--config", config, "--config", SMOKE, "--data.init_args.num_sequences", "200",
                  "--trainer.default_root_dir", str(tmp_path))  # fmt: skip
    assert {"train/loss", "val/loss", "val/acc"} <= set(cli.trainer.callback_metrics)
    assert list(tmp_path.rglob("val_confusion_matrix-step*.png"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.init_args.net.kind", "wavenet"], r"model\.init_args\.net\.kind.*'wavenet'"),
        (["--model.init_args.pooling", "max"], r"model\.init_args\.pooling must be 'mean' or 'attention'"),
        (["--data.init_args.data_dir", "/nonexistent/hw4"], r"data\.init_args\.data_dir does not exist"),
    ],
)
def test_bad_classification_settings_end_in_one_line(args, message, capsys):
    from cli import main

    assert main(["fit", "--config", SPEAKER, "--config", SMOKE, *args]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(message, errors[0]) and "Traceback" not in err, err[-2000:]
