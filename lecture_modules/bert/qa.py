"""BERT extractive question answering — lecture 7 / HW7 (BERT: Devlin et al. 2019, arXiv 1810.04805; SQuAD:
Rajpurkar et al. 2016, arXiv 1606.05250; DRCD: Shao et al. 2018, arXiv 1806.00920).

The encoder reads ``[CLS] question [SEP] paragraph window [SEP]``; two learned vectors score every token as the
answer's start and end. Long paragraphs are split into overlapping windows; evaluation keeps each question's
n-best spans per batch (never all logits), merges them across windows and processes, writes SQuAD-format
predictions and reports exact match and F1.

Run: ``python cli.py fit --config configs/bert_qa.yaml``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from lecture_modules.base import bad_setting, figure_dir, free_name
from lecture_modules.bert.common import BertFineTuning
from lecture_modules.bert.qa_core import CandidatePool, nbest_spans, squad_scores

__all__ = ["BertQA", "gather_pool", "write_predictions"]


def gather_pool(pool: CandidatePool) -> CandidatePool:
    """Every process's candidates merged into one pool (identical on all ranks); a no-op on one process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return pool
    states: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, pool.state())
    merged = CandidatePool(pool.n_best)
    for state in states:
        merged.merge(state)
    return merged


def write_predictions(predictions: dict[str, str], out_dir: Path, stem: str) -> Path:
    """Write ``{question id: answer}`` (SQuAD's prediction format) as ``out_dir/stem.json``; never overwrites."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{free_name(out_dir, stem, ('.json',))}.json"
    path.write_text(json.dumps(predictions, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


class BertQA(BertFineTuning):
    """BERT extractive QA: start/end scores over paragraph windows, n-best post-processing, EM/F1 (lecture 7)."""

    task = "qa"

    def __init__(
        self, n_best: int = 20, max_answer_length: int = 30, write_predictions: bool = True, **kwargs: Any
    ) -> None:
        """
        Args:
            n_best: start and end candidates per window, and spans kept per question while evaluating.
            max_answer_length: longest answer, in tokens.
            write_predictions: write each evaluation's predictions as SQuAD JSON into the run directory.
            **kwargs: the fine-tuning settings shared with :class:`BertClassification` (:class:`BertFineTuning`:
                the model, AdamW, warm-up, freezing).
        """
        if n_best < 1:
            raise bad_setting("n_best", n_best, ">= 1")
        if max_answer_length < 1:
            raise bad_setting("max_answer_length", max_answer_length, ">= 1")
        super().__init__(**kwargs)
        self.build_backbone()  # two outputs per token: start and end scores
        self.pool = CandidatePool(n_best)
        self.history: list[tuple[int, float, float]] = []  # (step, EM, F1) of each validation

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(**self.model_inputs(batch))
        return out.start_logits, out.end_logits  # (B, L) each

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        start, end = self(batch)
        ce = torch.nn.functional.cross_entropy
        loss = (ce(start.float(), batch["start_positions"]) + ce(end.float(), batch["end_positions"])) / 2
        return self.combine_losses({"span": loss})

    # ------------------------------------------------------------------ streamed evaluation
    def _collect(self, batch: dict[str, Any]) -> None:
        start, end = self(batch)
        spans = nbest_spans(start, end, batch["offsets"], self.hparams.n_best, self.hparams.max_answer_length)
        for example, candidates in zip(batch["examples"], spans, strict=True):
            self.pool.add(example, candidates)

    def _finish(self, stage: str) -> dict[str, float]:
        pool, self.pool = gather_pool(self.pool), CandidatePool(self.hparams.n_best)
        if not len(pool):
            return {}
        predictions = pool.predictions()
        scores = squad_scores(predictions, pool.references())
        self.log(f"{stage}/exact_match", scores["exact_match"], prog_bar=True, sync_dist=True)
        self.log(f"{stage}/f1", scores["f1"], prog_bar=True, sync_dist=True)
        if self.hparams.write_predictions and self.trainer.is_global_zero and not self._dry_run():
            out = figure_dir(self.trainer).parent / "predictions"
            path = write_predictions(predictions, out, f"{stage}_predictions-step{self.global_step}")
            rank_zero_info(f"{stage} predictions ({len(predictions)} questions) written to {path}")
        return scores

    def _dry_run(self) -> bool:
        """Sanity checks and ``fast_dev_run`` write nothing."""
        return bool(self.trainer.sanity_checking or self.trainer.fast_dev_run)

    def on_validation_epoch_start(self) -> None:
        self.pool = CandidatePool(self.hparams.n_best)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        scores = self._finish("val")
        if scores and not self.trainer.sanity_checking:
            self.history.append((self.global_step, scores["exact_match"], scores["f1"]))

    def on_test_epoch_start(self) -> None:
        self.pool = CandidatePool(self.hparams.n_best)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._collect(batch)

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    def on_predict_epoch_start(self) -> None:
        self.pool = CandidatePool(self.hparams.n_best)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._collect(batch)

    def on_predict_epoch_end(self) -> None:
        """``python cli.py predict``: the answers of the test (else validation) questions, as SQuAD JSON."""
        pool, self.pool = gather_pool(self.pool), CandidatePool(self.hparams.n_best)
        if self.trainer.is_global_zero and len(pool):
            out = figure_dir(self.trainer).parent / "predictions"
            path = write_predictions(pool.predictions(), out, f"predictions-step{self.global_step}")
            rank_zero_info(f"predictions ({len(pool)} questions) written to {path}")

    def on_fit_end(self) -> None:
        if self.history and self.trainer.is_global_zero:
            self.log_figure("val/em_f1", history_figure(self.history))


def history_figure(history: list[tuple[int, float, float]]):
    """Validation exact match and F1 against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, em, f1 = zip(*history)
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(steps, em, marker="o", label="exact match")
    ax.plot(steps, f1, marker="s", label="F1")
    ax.set_xlabel("training step")
    ax.set_ylabel("%")
    ax.set_title("validation EM / F1")
    ax.legend()
    return fig
