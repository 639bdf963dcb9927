"""ExplainText — lecture 9 / HW9's BERT part: token attributions, attention maps and a token across layers.

The experiment on a checkpoint of a registered BERT classification lecture (rebuilt with
:func:`lecture_modules.checkpoints.load_lecture`, frozen), on the DataModule's test split:

1. Select sentences (``select``): the first ``count``, given ``indices``, or the ``count`` most confident mistakes.
2. Token attributions (:func:`lecture_modules.xai.text.token_attributions`): layer integrated gradients on the
   word embeddings for the predicted class, against the sentence with every word replaced by [PAD] (Sundararajan
   et al. 2017, arXiv 1703.01365); its completeness error.
3. Attention maps per layer and head of the first ``attention_sentences`` sentences (Clark et al. 2019, arXiv
   1906.04341).
4. One token across layers (HW9): the representation of ``pca_token`` (null: [CLS]) in up to ``pca_sentences``
   test sentences, after the embeddings and after each encoder layer, projected per layer on its first two
   principal components and coloured by the sentence's label.

5. The data randomisation test (Adebayo et al. 2018, arXiv 1810.03292) for the token attributions: with a network
   of the checkpoint's architecture trained by ``fit`` on randomised labels, the Spearman rank correlation of its
   token attributions with the checkpoint's, per sentence (signed and absolute).

Everything else is done by ``test``; every process computes the same (few) sentences, rank zero draws them. ``fit``
trains only the randomised-labels network (from a fresh initialisation, labels drawn from each sentence's tokens),
which a later ``test --ckpt_path <that run's checkpoint>`` compares against.

Run: ``python cli.py test --config configs/xai_text.yaml`` (default: the shipped tiny BERT fine-tuned on the embedded
sentiment corpus, ``builtin:tiny_bert_sentiment``; ``make tiny-bert`` re-creates it), or with
``--model.init_args.checkpoint <a bert_classification run's checkpoint>``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.classification import MulticlassAccuracy

from datamodules.errors import CheckpointError, SettingError
from lecture_modules.base import LectureModule, bad_setting, figure_dir, free_name, log_html
from lecture_modules.checkpoints import load_lecture
from lecture_modules.xai import report, text

__all__ = ["ExplainText"]


class ExplainText(LectureModule):
    """Explainable AI for BERT classifiers: token attributions, attention maps, a token's PCA across layers (HW9)."""

    def __init__(
        self,
        num_classes: int = 2,
        checkpoint: str = "builtin:tiny_bert_sentiment",
        model_name_or_path: str = "tiny-bert",
        select: Literal["first", "indices", "mistakes"] = "first",
        count: int = 8,
        indices: list[int] | None = None,
        ig_steps: int = 64,
        ig_internal_batch_size: int = 32,
        attention_sentences: int = 1,
        pca_token: str | None = None,
        pca_sentences: int = 64,
        seed: int = 0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        """
        Args:
            num_classes: number of labels (linked from the DataModule by the CLI).
            checkpoint: the classifier to explain: a checkpoint of a registered BERT classification lecture, or
                ``builtin:tiny_bert_sentiment`` (shipped: the tiny BERT fine-tuned on the embedded sentiment corpus).
            model_name_or_path: the checkpoint's ``model_name_or_path`` (the CLI hands it to the DataModule, which
                tokenises with it); checked against the checkpoint.
            select: which test sentences: the ``first`` ``count``, ``indices``, or the ``count`` most confident
                ``mistakes``.
            count: sentences explained for ``first`` and ``mistakes``.
            indices: test-split indices for ``select: indices``.
            ig_steps: integration steps of the token attributions.
            ig_internal_batch_size: sentences per forward pass inside integrated gradients (bounds memory).
            attention_sentences: selected sentences whose attention maps are drawn (one figure each).
            pca_token: the token followed across layers, as the tokenizer writes it (null: [CLS]).
            pca_sentences: test sentences (those holding the token) whose representations the PCA shows.
            seed: seed of the randomised-labels network's initialisation and of its labels.
            optimizer: optimiser factory of the randomised-labels network that ``fit`` trains.
        """
        super().__init__()
        counts = {"count": count, "ig_steps": ig_steps, "ig_internal_batch_size": ig_internal_batch_size}
        for name, value in {**counts, "pca_sentences": pca_sentences}.items():
            if value < 1:
                raise bad_setting(name, value, ">= 1")
        if attention_sentences < 0:
            raise bad_setting("attention_sentences", attention_sentences, ">= 0")
        if select == "indices" and not indices:
            raise bad_setting("indices", indices, "a non-empty list of test indices when select is 'indices'")
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer_factory = optimizer
        self._frozen: dict[str, LectureModule] = {}  # the checkpoint's lecture (loaded by setup), not a submodule
        self.random_labels: torch.nn.Module | None = None  # built by setup, from the checkpoint's architecture
        self.register_buffer("fitted", torch.tensor(False))
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    @property
    def lecture(self) -> LectureModule:
        """The checkpoint's lecture, frozen (not a submodule), loaded at first use (not in ``__init__``: building
        another lecture while the CLI instantiates this one fails)."""
        if not self._frozen:
            self._frozen["lecture"] = self._load(self.hparams.checkpoint)
        return self._frozen["lecture"]

    @property
    def encoder(self):
        """The checkpoint's ``transformers`` sequence classifier."""
        return self.lecture.model

    def _load(self, checkpoint: str) -> LectureModule:
        try:
            lecture = load_lecture(checkpoint)
        except (FileNotFoundError, ValueError) as exc:
            raise CheckpointError(f"model.init_args.checkpoint ({checkpoint}): {exc}") from exc
        model = getattr(lecture, "model", None)
        if model is None or not hasattr(model, "get_input_embeddings") or not hasattr(model.config, "num_labels"):
            raise CheckpointError(
                f"model.init_args.checkpoint ({checkpoint}) is a {type(lecture).__name__}, not a BERT classifier "
                "(a lecture whose .model is a transformers sequence classifier, e.g. bert_classification)"
            )
        if model.config.num_labels != self.hparams.num_classes:
            raise CheckpointError(
                f"model.init_args.checkpoint ({checkpoint}) has {model.config.num_labels} labels; the data has "
                f"{self.hparams.num_classes}"
            )
        return lecture.eval().requires_grad_(False)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for lecture in self._frozen.values():
            lecture._apply(fn, recurse)  # device moves reach the frozen model although it is not a submodule
        return self

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.lecture.logits(batch)  # (B, num_classes)

    def setup(self, stage: str) -> None:
        """Load the checkpoint and build the randomised-labels network; the data must be tokenised with the
        checkpoint's tokenizer."""
        self.lecture.to(self.device)  # loads the checkpoint
        wanted = self.lecture.hparams.get("model_name_or_path")
        if wanted is not None and wanted != self.hparams.model_name_or_path:
            raise SettingError(
                f"model.init_args.model_name_or_path is {self.hparams.model_name_or_path!r} but the checkpoint's "
                f"model is {wanted!r}: set model.init_args.model_name_or_path: {wanted} (the data is tokenised with it)"
            )
        if self.random_labels is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.hparams.seed + 1000)
                fresh = type(self.encoder)(self.encoder.config)  # the architecture, freshly initialised
            self.random_labels = fresh.to(self.device).train()

    # ------------------------------------------------------------------ fit: the randomised-labels network
    lr_setting = "model.init_args.optimizer.init_args.lr"

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.random_labels.parameters())

    def random_label(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """A label per sentence drawn from its tokens and ``seed`` (the same in every epoch and batch, whatever the
        padding): a multiplicative hash of the token ids at real positions."""
        positions = torch.arange(1, input_ids.shape[1] + 1, device=input_ids.device)
        mixed = (input_ids.long() * 2654435761 + positions * 40503) % (2**31)
        total = (mixed * attention_mask.long()).sum(1) + self.hparams.seed * 12345
        return ((total * 2654435761) % (2**31) >> 7) % self.hparams.num_classes

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        labels = self.random_label(batch["input_ids"], batch["attention_mask"])
        logits = self.random_labels(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"),
        ).logits  # fmt: skip
        self.fitted.fill_(True)
        self.train_acc(logits, labels)
        self.log("train/acc_random_labels", self.train_acc, on_step=False, on_epoch=True)
        return self.combine_losses({"random_labels": F.cross_entropy(logits, labels)})

    # ------------------------------------------------------------------ test
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        with torch.no_grad():
            self.test_acc(self(batch), batch["labels"])
        self.log("test/acc", self.test_acc, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        datamodule = self.trainer.datamodule
        features, collate = datamodule.test_dataloader().dataset, datamodule.collate("test")
        selected = self._select(features, collate)
        rank_zero_info(f"explaining {len(selected)} test sentences: {selected}")
        batch = {k: v.to(self.device) for k, v in collate([features[i] for i in selected]).items()}
        results = self.explain(batch)
        error = (results["delta"].abs() / results["gap"].abs().clamp_min(1e-12)).mean()
        self.log("test/ig_completeness_error", float(error), sync_dist=True)  # equal on every process already
        for key in ("random_labels_spearman", "random_labels_spearman_abs"):
            if key in results:
                self.log(f"test/{key}", float(results[key].nanmean()), sync_dist=True)
        points, explained, groups = self._token_across_layers(features, collate)
        self.log("test/pca_explained_variance_last_layer", float(explained[-1].sum()), sync_dist=True)
        if self.trainer.is_global_zero:
            self._report(batch, selected, results, (points, explained, groups))

    def _select(self, features: list[dict], collate) -> list[int]:
        hp = self.hparams
        if hp.select == "indices":
            bad = [i for i in hp.indices if not 0 <= i < len(features)]
            if bad:
                raise bad_setting("indices", hp.indices, f"indices of the test split (0..{len(features) - 1})")
            return list(hp.indices)
        if hp.select == "first":
            return list(range(min(hp.count, len(features))))
        probs, labels = [], []
        for start in range(0, len(features), 64):
            batch = {k: v.to(self.device) for k, v in collate(features[start : start + 64]).items()}
            with torch.no_grad():
                probs.append(self(batch).softmax(-1).cpu())
            labels.append(batch["labels"].cpu())
        confidence, pred = torch.cat(probs).max(-1)
        wrong = (pred != torch.cat(labels)).nonzero().flatten()
        if not len(wrong):
            raise SettingError("model.init_args.select is 'mistakes' and the model makes no mistake on the test split")
        return wrong[confidence[wrong].argsort(descending=True, stable=True)][: hp.count].tolist()

    def explain(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Steps 2, 3 and 5 for a padded batch: predictions, token attributions, attention maps (N, L, H, T, T),
        and (after ``fit``) the data randomisation similarities (N,)."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        with torch.no_grad():
            probs = self(batch).softmax(-1)  # (N, K)
        target = probs.argmax(-1)
        ig = self._token_attributions(self.encoder, batch, target)
        attention = text.attention_maps(self.encoder, ids, mask)  # (N, L, H, T, T)
        out = {**ig, "pred": target, "prob": probs.max(-1).values, "attention": attention}
        if bool(self.fitted):
            other = self._token_attributions(self.random_labels.eval(), batch, target)["attributions"]
            real = mask.bool() & ~torch.isin(ids, torch.tensor(self._special_ids(), device=ids.device))
            out["random_labels_spearman"] = text.token_spearman(ig["attributions"], other, real)
            out["random_labels_spearman_abs"] = text.token_spearman(ig["attributions"].abs(), other.abs(), real)
        return out

    def _special_ids(self) -> list[int]:
        tokenizer = self.trainer.datamodule.tokenizer
        return [tokenizer.cls_token_id, tokenizer.sep_token_id]

    def _token_attributions(self, model, batch: dict[str, torch.Tensor], target: torch.Tensor) -> dict:
        """Layer integrated gradients of ``model``'s ``target`` logit on its word embeddings, per token."""
        tokenizer = self.trainer.datamodule.tokenizer
        with torch.inference_mode(False), torch.enable_grad():  # Lightning's test loop runs under inference_mode
            return text.token_attributions(
                model, batch["input_ids"].clone(), batch["attention_mask"].clone(), target.clone(),
                special_ids=self._special_ids(), pad_id=tokenizer.pad_token_id,
                token_type_ids=batch["token_type_ids"].clone() if "token_type_ids" in batch else None,
                steps=self.hparams.ig_steps, internal_batch_size=self.hparams.ig_internal_batch_size,
            )  # fmt: skip

    def _token_across_layers(self, features: list[dict], collate) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Step 4: (L + 1, N, 2) projections, (L + 1, 2) explained variance, N label names."""
        tokenizer, hp = self.trainer.datamodule.tokenizer, self.hparams
        token_id = tokenizer.cls_token_id if hp.pca_token is None else tokenizer.convert_tokens_to_ids(hp.pca_token)
        chosen = [i for i, f in enumerate(features) if token_id in f["input_ids"]][: hp.pca_sentences]
        if len(chosen) < 3 or token_id == tokenizer.unk_token_id:
            raise bad_setting("pca_token", hp.pca_token, "a token (as the tokenizer writes it) that at least 3 test "
                              f"sentences hold; found in {len(chosen)}")  # fmt: skip
        batch = {k: v.to(self.device) for k, v in collate([features[i] for i in chosen]).items()}
        states = text.hidden_states(self.encoder, batch["input_ids"], batch["attention_mask"])  # (N, L + 1, T, D)
        position = (batch["input_ids"] == token_id).int().argmax(dim=1)  # its first occurrence in each sentence
        points = states[torch.arange(len(chosen)), :, position].transpose(0, 1).cpu()  # (L + 1, N, D)
        projected, explained = text.layer_pca(points)
        names = getattr(self.trainer.datamodule, "label_names", None) or [str(k) for k in range(hp.num_classes)]
        return projected, explained, [str(names[int(features[i]["labels"])]) for i in chosen]

    def _report(self, batch, selected: list[int], results: dict, pca: tuple) -> None:
        tokenizer = self.trainer.datamodule.tokenizer
        lengths = batch["attention_mask"].sum(1).tolist()
        tokens = [tokenizer.convert_ids_to_tokens(batch["input_ids"][i, :n].tolist()) for i, n in enumerate(lengths)]
        attributions = [results["attributions"][i, :n].cpu() for i, n in enumerate(lengths)]
        labels, preds, probs = batch["labels"].tolist(), results["pred"].tolist(), results["prob"].tolist()
        titles = [f"#{idx} label {labels[i]} pred {preds[i]} ({100 * probs[i]:.0f}%)" for i, idx in enumerate(selected)]
        self.log_figure("test/token_attributions", report.token_figure(tokens, attributions, titles))
        log_html(self.trainer, "test/token_attributions_html", report.token_html(tokens, attributions, titles))
        for i in range(min(self.hparams.attention_sentences, len(selected))):
            n = lengths[i]
            maps = results["attention"][i, :, :, :n, :n].cpu()
            self.log_figure(f"test/attention_{selected[i]}", report.attention_figure(maps, tokens[i]))
        points, explained, groups = pca
        self.log_figure("test/layer_pca", report.layer_pca_figure(points, explained, groups))
        folder = figure_dir(self.trainer).parent
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{free_name(folder, 'explanations_text', ('.pt',))}.pt"
        saved = {"tokens": tokens, "index": torch.tensor(selected), "pca": points, "pca_groups": groups}
        saved.update({k: v.cpu() for k, v in results.items() if k != "attention"})
        torch.save(saved, path)  # tensors, strings and lists: weights_only loads it
        rank_zero_info(f"text explanations saved to {path}")
