"""Sequence-to-sequence translation — lecture 5 / HW5: an encoder-decoder trained with teacher forcing.

Sutskever et al. 2014 (arXiv 1409.3215), Bahdanau et al. 2015 (arXiv 1409.0473: the RNN with attention, HW5's
simple baseline) and Vaswani et al. 2017 (arXiv 1706.03762: the Transformer). For a batch of source x and target
y = (y_1 .. y_T), :meth:`Seq2Seq.training_step` does:

1. Decoder inputs: BOS y_1 .. y_{T-1} (teacher forcing). With ``scheduled_sampling`` p > 0 (Bengio et al. 2015,
   arXiv 1506.03099, in the two-pass form of arXiv 1906.07651), a first pass without gradient predicts every
   position, and each input token after BOS becomes that prediction with probability p: the model trains on its
   own mistakes (exposure bias).
2. Forward: logits = decoder(inputs | encoder(x)) (B, T, V), every position at once.
3. Loss: label-smoothed cross-entropy (Szegedy et al. 2016) against y_1 .. y_T EOS, padding ignored; one optimiser
   step (the YAML's optimiser, Vaswani's inverse-square-root warm-up from ``lr_scheduler``).

Validation decodes greedily and logs corpus BLEU and chrF (sacrebleu; ``val/bleu``, ``val/chrf``) next to the
teacher-forced loss; test decodes with beam search and the GNMT length penalty (``test/bleu``); ``predict``
writes ``translations.txt`` (one line per source line: HW5's hand-in for ``test.raw.en``). At the end of
fitting, the lecture plots cross-attention (and the Transformer's encoder self-attention) for validation
examples and BLEU over training, and logs a W&B table of sample translations. Checkpoint averaging is a
callback (:mod:`callbacks.checkpoint_averaging`).

Run: ``python cli.py fit --config configs/seq2seq_transformer.yaml`` (or ``configs/seq2seq_rnn.yaml``)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric

from lecture_modules.base import LectureModule, bad_setting, free_name
from lecture_modules.sequence.core import (
    CorpusScore,
    beam_search,
    gather_rows,
    greedy_decode,
    label_smoothed_nll,
    scheduled_sampling_inputs,
    sentence_bleu,
)
from lecture_modules.sequence.models import Seq2SeqSpec

__all__ = ["Seq2Seq"]

PAD, BOS, EOS = 0, 1, 2  # the DataModule's id layout (datamodules.translation_sources)


class Seq2Seq(LectureModule):
    """Transformer translation (arXiv 1706.03762, HW5): teacher forcing, label smoothing, beam search, BLEU."""

    def __init__(
        self,
        num_classes: int = 64,
        input_shape: tuple[int, ...] = (64,),
        net: Seq2SeqSpec = Seq2SeqSpec(),
        label_smoothing: float = 0.1,
        scheduled_sampling: float = 0.0,
        beam: int = 5,
        length_penalty: float = 1.0,
        samples: int = 8,
    ) -> None:
        """
        Args:
            num_classes: target vocabulary size (linked from the DataModule by the CLI).
            input_shape: (source vocabulary size,) (linked from the DataModule by the CLI).
            net: the encoder-decoder: kind ('transformer' or 'rnn') and sizes.
            label_smoothing: smoothing mass eps in [0, 1) (Vaswani et al. and fairseq's HW5 recipe: 0.1).
            scheduled_sampling: probability p in [0, 1) of feeding the model's own prediction instead of the gold
                token (0: pure teacher forcing).
            beam: beam width of test decoding (1: greedy).
            length_penalty: GNMT's alpha in ((5 + |y|) / 6)^alpha for the beam's ranking (0: raw log-probability).
            samples: validation examples in the attention figure and the W&B translation table.
        """
        super().__init__()
        net = Seq2SeqSpec.of(net, owner="net")
        self._check(num_classes, input_shape, label_smoothing, scheduled_sampling, beam, length_penalty, samples)
        self.save_hyperparameters(ignore=["net"])
        self.hparams["net"] = net.as_dict()  # plain data: the checkpoint stays weights_only
        self.net = net.build(src_vocab=input_shape[0], tgt_vocab=num_classes)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.bleu_history: list[tuple[int, float]] = []
        self._examples: dict[str, Any] | None = None

    @staticmethod
    def _check(num_classes, input_shape, label_smoothing, scheduled_sampling, beam, length_penalty, samples) -> None:
        if num_classes < 5 or len(input_shape) != 1 or input_shape[0] < 5:
            raise bad_setting("num_classes/input_shape", (num_classes, input_shape),
                              "vocabulary sizes >= 5 (the CLI links them from the data's tokenisers)")  # fmt: skip
        for name, value in (("label_smoothing", label_smoothing), ("scheduled_sampling", scheduled_sampling)):
            if not 0.0 <= value < 1.0:
                raise bad_setting(name, value, "in [0, 1)")
        if beam < 1:
            raise bad_setting("beam", beam, ">= 1 (1 is greedy decoding)")
        if length_penalty < 0:
            raise bad_setting("length_penalty", length_penalty, ">= 0")
        if samples < 0:
            raise bad_setting("samples", samples, ">= 0")

    def forward(self, src, src_mask, tgt_in, need_weights: bool = False):
        return self.net(src, src_mask, tgt_in, need_weights)  # (B, S), (B, S), (B, T) -> (B, T, V), maps

    # ------------------------------------------------------------------ the algorithm (in the docstring's order)
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        src, src_mask, tgt_out = batch["src"], batch["src_mask"], batch["tgt_out"]  # (B, S), (B, S), (B, T)
        tgt_in = self.decoder_inputs(src, src_mask, batch["tgt_in"])  # step 1: (B, T)
        logits, _ = self(src, src_mask, tgt_in)  # step 2: (B, T, V)
        loss = label_smoothed_nll(logits.flatten(0, 1), tgt_out.flatten(), self.hparams.label_smoothing, PAD)
        return self.combine_losses({"ce": loss})  # step 3

    def decoder_inputs(self, src, src_mask, gold_in) -> torch.Tensor:
        """Teacher forcing, or scheduled sampling's mix of gold tokens and the model's own predictions."""
        p = self.hparams.scheduled_sampling
        if p <= 0:
            return gold_in
        with torch.no_grad():
            predictions = self(src, src_mask, gold_in)[0].argmax(-1)  # (B, T): prediction for position t + 1
        return scheduled_sampling_inputs(gold_in, predictions, p)  # global RNG: part of exact resume

    # ------------------------------------------------------------------ evaluation: loss, decoding, BLEU
    def setup(self, stage: str) -> None:
        tokenize = getattr(self._datamodule(), "bleu_tokenize", None) or "13a"  # the data knows its language
        for split in ("val", "test"):
            setattr(self, f"{split}_bleu", CorpusScore("bleu", tokenize).to(self.device))
            setattr(self, f"{split}_chrf", CorpusScore("chrf").to(self.device))
        self.bleu_tokenize = tokenize

    def _datamodule(self):
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def decode(self, src, src_mask, beam: int = 1) -> list[list[int]]:
        """Token ids of the translations (EOS dropped): greedy for ``beam`` 1, else beam search; at most
        2 S + 10 tokens for a source of S tokens (fairseq's max_len_a S + max_len_b), and ``net.max_len``."""
        max_len = min(self.hparams.net["max_len"], 2 * src.shape[1] + 10)
        if beam == 1:
            out = greedy_decode(self.net, src, src_mask, bos=BOS, eos=EOS, max_len=max_len)
        else:
            out = beam_search(self.net, src, src_mask, bos=BOS, eos=EOS, max_len=max_len, beam=beam,
                              alpha=self.hparams.length_penalty)  # fmt: skip
        return [ids[:-1] if ids and ids[-1] == EOS else ids for ids in out]

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        logits, _ = self(batch["src"], batch["src_mask"], batch["tgt_in"])
        loss = label_smoothed_nll(logits.flatten(0, 1), batch["tgt_out"].flatten(), 0.0, PAD)
        getattr(self, f"{stage}_loss").update(loss, weight=int((batch["tgt_out"] != PAD).sum()))
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), on_epoch=True, prog_bar=stage == "val")
        dm = self._datamodule()
        if dm is None:
            return
        hyp_ids = self.decode(batch["src"], batch["src_mask"], beam=1 if stage == "val" else self.hparams.beam)
        texts = dm.texts(stage, batch["index"])
        hyps = [dm.target_tok.decode(ids) for ids in hyp_ids]
        refs = [ref for _, ref in texts]
        for name in ("bleu", "chrf"):
            metric = getattr(self, f"{stage}_{name}")
            metric.update(hyps, refs)
            self.log(f"{stage}/{name}", metric, on_epoch=True, prog_bar=name == "bleu")
        if stage == "val" and batch_idx == 0 and self.hparams.samples:
            self._examples = self._keep_examples(batch, hyp_ids, hyps, texts)

    def _keep_examples(self, batch, hyp_ids, hyps, texts) -> dict[str, Any]:
        n = min(self.hparams.samples, len(hyps))
        return {"src": batch["src"][:n].cpu(), "mask": batch["src_mask"][:n].cpu(), "hyp_ids": hyp_ids[:n],
                "rows": [(s, r, h) for (s, r), h in zip(texts[:n], hyps[:n], strict=True)]}  # fmt: skip

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_predict_epoch_start(self) -> None:
        self._predictions: list[tuple[int, str]] = []
        self.predictions_path: Path | None = None

    def predict_step(self, batch, batch_idx: int) -> None:
        """Translate with the test beam; the rows and texts are collected and written once the epoch ends."""
        hyp_ids = self.decode(batch["src"], batch["src_mask"], beam=self.hparams.beam)
        tok = self._datamodule().target_tok
        self._predictions += [(int(r), tok.decode(ids)) for r, ids in zip(batch["index"], hyp_ids, strict=True)]

    def on_predict_epoch_end(self) -> None:
        """Write ``translations.txt`` in the run folder, one line per source line in file order (HW5's hand-in);
        under DDP the ranks' rows are gathered first. Never overwrites."""
        rows = gather_rows(self._predictions)
        if self.trainer.is_global_zero:
            folder = Path(self.trainer.default_root_dir)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{free_name(folder, 'translations', ('.txt',))}.txt"
            path.write_text("".join(f"{text}\n" for _, text in sorted(rows)), encoding="utf-8")
            self.predictions_path = path  # back-translation's tool reads it
            rank_zero_info(f"{len(rows)} translations written to {path}")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking and "val/bleu" in self.trainer.callback_metrics:
            self.bleu_history.append((self.global_step, float(self.trainer.callback_metrics["val/bleu"])))

    # ------------------------------------------------------------------ figures and the translation table
    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero or self._examples is None:
            return
        from lecture_modules.sequence.figures import attention_figure, bleu_figure

        dm = self._datamodule()
        ex = self._examples
        maps = self.attention_maps(ex["src"], ex["mask"], ex["hyp_ids"])
        self.log_figure("val/attention", attention_figure(maps, ex, dm.source_tok, dm.target_tok))
        if self.bleu_history:
            self.log_figure("val/bleu_curve", bleu_figure(self.bleu_history))
        self.log_translation_table(ex["rows"])

    @torch.no_grad()
    def attention_maps(self, src, mask, hyp_ids) -> list[dict[str, torch.Tensor | None]]:
        """Per example, the last layer's head-averaged cross-attention (T, S) and encoder self-attention (S, S)
        when the model decodes its own translation (teacher-forced on the hypothesis)."""
        was_training, out = self.training, []
        self.eval()
        for i, ids in enumerate(hyp_ids):
            length = int(mask[i].sum())
            s = src[i : i + 1, :length].to(self.device)
            tgt = torch.tensor([[BOS, *ids]], device=self.device)
            _, maps = self(s, torch.ones_like(s, dtype=torch.bool), tgt, need_weights=True)
            enc = maps["encoder"][-1][0].mean(0).cpu() if maps["encoder"] else None
            out.append({"cross": maps["cross"][-1][0].mean(0).cpu(), "encoder": enc})
        self.train(was_training)
        return out

    def log_translation_table(self, rows: list[tuple[str, str, str]]) -> None:
        """A W&B table (source, reference, hypothesis, sentence BLEU) when a W&B logger is attached."""
        from lightning.pytorch.loggers import WandbLogger

        data = [[s, r, h, round(sentence_bleu(h, r, self.bleu_tokenize), 2)] for s, r, h in rows]
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="val/translations", columns=["source", "reference", "hypothesis", "sentence_bleu"],
                                 data=data, step=self.global_step)  # fmt: skip

    # ------------------------------------------------------------------ checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["bleu_history"] = [[int(s), float(b)] for s, b in self.bleu_history]  # plain data

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.bleu_history = [(int(s), float(b)) for s, b in checkpoint.get("bleu_history", [])]
