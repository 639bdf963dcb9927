"""Self-attention and the Transformer (lectures 4-5, issue 26): translation BLEU, sequence classification, speed.

Pieces, each written as one JSON file under ``--out-dir`` (``--merge DIR`` prints the markdown tables):

* ``translation``: English -> zh-TW on a TSV of pairs (``--tsv``; the benchmark corpus is
  ``../shared/data/gettext_en_zh_tw/en_zh_tw.tsv``, columns ``en`` and ``zh_tw``). One split for every model: 5%
  validation, 5% test (random, ``--split-seed`` 0), and of the remaining 90% a share ``--mono-fraction`` (default
  0.5) is "monolingual": its English is dropped, its zh-TW is back-translation's monolingual text; the rest is the
  parallel training set. SentencePiece (unigram, ``--vocab`` per side) on the training pairs. Every model trains
  for ``--steps`` optimiser steps (batch 64; not a wall-clock cap), then greedy validation BLEU and test BLEU
  (sacrebleu, ``tokenize='zh'``) and chrF with beam 1 and 5 (length penalty 1.0). Pieces (``--models``), one JSON
  per (model, seed): ``rnn`` (GRU + Bahdanau attention) and ``transformer`` on the parallel set; ``reverse`` (the
  Transformer zh -> en on the parallel set, its BLEU with ``tokenize='13a'``, then its ``--bt-beam`` translations
  of the monolingual zh into ``reverse-seed<S>.synthetic.tsv``); ``bt`` (the Transformer on the parallel set plus
  those synthetic pairs, sources tagged; runs ``reverse`` first when its files are missing, and records the reverse
  model's scores).
* ``classification``: ``--cls-tasks``: the embedded ordered-motif task and language identification of single
  words (``wordfreq``, ``--cls-words`` per language) (:mod:`datamodules.sequences`): LSTM, Transformer and Conformer
  encoders with mean and attention pooling, ``--cls-epochs`` epochs, test accuracy of the epoch with the best
  validation accuracy (HW4's sample keeps that model) and after the last epoch, and the validation curve.
* ``speed``: (1) training tokens per second of our Transformer encoder-decoder against ``torch.nn.Transformer``
  with the same sizes (embeddings, pre-LN, output layer, AdamW), alternating the two in each repetition; (2)
  greedy decoding of the same batch with the key/value cache against recomputing the prefix at every step (and a
  check that both give the same tokens).

    .venv/bin/python benchmarks/sequence.py --part speed --threads 1
    .venv/bin/python benchmarks/sequence.py --part translation --tsv ../shared/data/gettext_en_zh_tw/en_zh_tw.tsv \\
        --models rnn --seeds 0 --steps 1000 --threads 1          # one piece; likewise transformer, reverse, bt
    .venv/bin/python benchmarks/sequence.py --part classification --seeds 0 1 2 --cls-epochs 3 --cls-words 1000
    .venv/bin/python benchmarks/sequence.py --merge runs/bench/sequence
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from torch import nn

from lecture_modules.sequence.models import Seq2SeqSpec, TransformerSeq2Seq

REFERENCE = (
    "HW5 (TED2020 en->zh-TW, BLEU tokenize zh) public-board tiers: simple 18.43 (RNN + attention), medium 24.04 "
    "(Transformer), strong 29.32 (Transformer-base + back-translation). This corpus (software messages) differs: "
    "compare the ordering, not the numbers."
)
TRANSLATION_ORDER = {  # piece name: its label in the summary table, in table order
    "rnn": "RNN (GRU) + Bahdanau attention",
    "transformer": "Transformer",
    "reverse": "reverse Transformer zh -> en (BLEU 13a on English)",
    "bt": "Transformer + back-translation (tagged)",
}
TRANSLATION_MODELS = {  # name: net, peak lr, warm-up steps (the two configs' settings, the Transformer at d 256)
    "rnn": ({"kind": "rnn", "d_model": 256, "layers": 1}, 2e-3, 200),
    "transformer": ({"kind": "transformer", "d_model": 256, "d_ff": 512}, 1e-3, 500),
}
SPEED_SIZES = {"d_model": 256, "heads": 4, "layers": 3, "d_ff": 1024, "dropout": 0.1}


# ------------------------------------------------------------------------------------------------ speed
class TorchTransformer(nn.Module):
    """``torch.nn.Transformer`` with the same embeddings, positions and output layer as ours."""

    def __init__(self, vocab: int, d_model: int, heads: int, layers: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.src_embed, self.tgt_embed = nn.Embedding(vocab, d_model), nn.Embedding(vocab, d_model)
        self.core = nn.Transformer(d_model, heads, layers, layers, d_ff, dropout, batch_first=True, norm_first=True)
        self.output, self.d_model = nn.Linear(d_model, vocab), d_model

    def forward(self, src, src_mask, tgt_in):
        from lecture_modules.sequence.attention import sinusoidal_encoding

        scale = self.d_model**0.5
        s = self.src_embed(src) * scale + sinusoidal_encoding(src.shape[1], self.d_model)
        t = self.tgt_embed(tgt_in) * scale + sinusoidal_encoding(tgt_in.shape[1], self.d_model)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1])
        out = self.core(s, t, tgt_mask=causal, src_key_padding_mask=~src_mask, memory_key_padding_mask=~src_mask,
                        tgt_is_causal=True)  # fmt: skip
        return self.output(out), None


def _train_steps(model, batch, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        logits, _ = model(batch["src"], batch["src_mask"], batch["tgt_in"])
        loss = F.cross_entropy(logits.flatten(0, 1), batch["tgt_out"].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def speed(reps: int, batch_size: int = 32, length: int = 32, vocab: int = 8000, steps: int = 5) -> dict:
    """Training tokens/s ours vs torch.nn.Transformer; greedy decoding ms with and without the KV cache."""
    torch.manual_seed(0)
    ours = TransformerSeq2Seq(vocab, vocab, Seq2SeqSpec(**SPEED_SIZES, norm_first=True))
    theirs = TorchTransformer(vocab, **SPEED_SIZES)
    src = torch.randint(4, vocab, (batch_size, length))
    tgt = torch.randint(4, vocab, (batch_size, length))
    batch = {"src": src, "src_mask": torch.ones_like(src, dtype=torch.bool), "tgt_in": tgt, "tgt_out": tgt}
    _train_steps(ours, batch, 1), _train_steps(theirs, batch, 1)  # warm-up
    times = {"ours": [], "torch": []}
    for _ in range(reps):  # alternate, so both see the same machine load
        times["ours"].append(_train_steps(ours, batch, steps))
        times["torch"].append(_train_steps(theirs, batch, steps))
    tokens = steps * batch_size * length
    row = {f"train tokens/s, {k}": tokens / statistics.median(v) for k, v in times.items()}
    row["train speed ours / torch.nn.Transformer"] = row["train tokens/s, ours"] / row["train tokens/s, torch"]
    row.update(_decode_speed(ours, src[:8], reps, steps=length * 2))
    row["sizes"] = f"d_model {SPEED_SIZES['d_model']}, {SPEED_SIZES['layers']}+{SPEED_SIZES['layers']} layers, " \
                   f"d_ff {SPEED_SIZES['d_ff']}, vocab {vocab}, batch {batch_size} x {length} tokens"  # fmt: skip
    return row


def _greedy_steps(model, src, steps: int) -> tuple[float, torch.Tensor]:
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        state = model.start(src, torch.ones_like(src, dtype=torch.bool))
        tokens, out = torch.full((src.shape[0],), 1), []
        for _ in range(steps):  # a fixed number of steps, EOS ignored: the same work with and without the cache
            logp, state = model.step(tokens, state)
            tokens = logp.argmax(-1)
            out.append(tokens)
    return time.perf_counter() - start, torch.stack(out, 1)


def _decode_speed(model, src, reps: int, steps: int) -> dict:
    times = {True: [], False: []}
    outputs = {}
    for _ in range(reps):
        for cache in (True, False):
            model.use_cache = cache
            seconds, outputs[cache] = _greedy_steps(model, src, steps)
            times[cache].append(seconds)
    model.use_cache = True
    with_cache, without = (1000 * statistics.median(times[c]) for c in (True, False))
    return {
        f"greedy decoding ms ({len(src)} sources x {steps} tokens), KV cache": with_cache,
        f"greedy decoding ms ({len(src)} sources x {steps} tokens), no cache": without,
        "decoding speed-up from the cache": without / with_cache,
        "cache and no cache give the same tokens": float(torch.equal(outputs[True], outputs[False])),
    }


# ------------------------------------------------------------------------------------------------ translation
def _translation_data(args, **kw):
    """The one split of every translation piece: 5% val, 5% test (``--split-seed``), the rest parallel training
    pairs and, ``--mono-fraction`` of it, monolingual zh-TW (English dropped)."""
    from datamodules.translation import TranslationDataModule

    return TranslationDataModule(tsv_file=args.tsv, columns=["en", "zh_tw"], vocab_size=args.vocab,
                                 limit_pairs=args.limit, max_tokens=48, seed=args.split_seed,
                                 monolingual_fraction=args.mono_fraction, **{"bleu_tokenize": "zh", **kw})  # fmt: skip


def _fit(dm, model_name: str, seed: int, args, root: Path):
    """``--steps`` optimiser steps of TRANSLATION_MODELS[model_name] through a Lightning Trainer."""
    from lecture_modules.sequence.core import InverseSqrtLR
    from lecture_modules.sequence.seq2seq import Seq2Seq

    net, lr, warmup = TRANSLATION_MODELS[model_name]
    warmup = warmup if args.warmup is None else args.warmup
    L.seed_everything(seed, verbose=False)
    model = Seq2Seq(num_classes=dm.num_classes, input_shape=dm.input_shape, net={**net, "max_len": 96}, samples=0)
    model.configure_optimizers = lambda: _optim(model, lr, warmup, InverseSqrtLR)
    trainer = L.Trainer(
        max_steps=args.steps, max_epochs=-1, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0, num_sanity_val_steps=0,
        limit_test_batches=-(-args.test_sentences // dm.eval_batch_size), default_root_dir=str(root),
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start
    row = {"optimiser steps": float(trainer.global_step), "epochs (over the training pairs)": trainer.global_step *
           dm.batch_size / len(dm.pairs["train"]), "train minutes": seconds / 60, "seconds per step": seconds /
           max(1, trainer.global_step), "params (M)": sum(p.numel() for p in model.parameters()) / 1e6}  # fmt: skip
    return model, trainer, row


def _scores(model, trainer, dm, prefix: str = "") -> dict:
    """Greedy validation BLEU on the whole validation split; test BLEU/chrF with beam 1 and 5."""
    trainer.limit_val_batches = 1.0
    row = {f"{prefix}val BLEU (greedy)": trainer.validate(model, datamodule=dm, verbose=False)[0]["val/bleu"]}
    for beam in (1, 5):
        model.hparams.beam = beam
        [result] = trainer.test(model, datamodule=dm, verbose=False)
        row[f"{prefix}test BLEU, beam {beam}"] = result["test/bleu"]
        row[f"{prefix}test chrF, beam {beam}"] = result["test/chrf"]
    row[f"{prefix}pairs train/mono/val/test"] = "/".join(str(len(dm.pairs[s])) for s in
                                                         ("train", "monolingual", "val", "test"))  # fmt: skip
    return row


def translation(model_name: str, seed: int, args) -> dict:
    """One piece: ``rnn`` or ``transformer`` on the parallel pairs; ``reverse`` (zh -> en on the parallel pairs,
    then its translations of the monolingual zh into ``reverse-seed<S>.synthetic.tsv``); ``bt`` (the Transformer
    on the parallel plus those synthetic pairs, tagged; runs ``reverse`` first when its files are missing)."""
    root = args.out_dir / f"{model_name}-seed{seed}"
    if model_name == "reverse":
        return reverse_piece(seed, args, root)
    extra = {}
    if model_name == "bt":
        synthetic = args.out_dir / f"reverse-seed{seed}.synthetic.tsv"
        if not synthetic.exists():
            _write_piece(
                args, "translation", "reverse", seed, reverse_piece(seed, args, root.with_name(f"reverse-seed{seed}"))
            )
        reverse = json.loads((args.out_dir / f"translation-reverse-seed{seed}.json").read_text())["row"]
        extra = {f"reverse model: {k}": v for k, v in reverse.items() if "BLEU" in k or "chrF" in k or "synthetic" in k}
        dm = _translation_data(args, synthetic_pairs=str(synthetic), synthetic_tag=True)
    else:
        dm = _translation_data(args)
    model, trainer, row = _fit(dm, "transformer" if model_name == "bt" else model_name, seed, args, root)
    return {**row, **_scores(model, trainer, dm), **extra}


def reverse_piece(seed: int, args, root: Path) -> dict:
    """Train zh -> en on the parallel pairs, score it (BLEU 13a on English), translate the monolingual zh."""
    from tools.backtranslation import write_synthetic

    dm = _translation_data(args, reverse=True, bleu_tokenize="13a")
    model, trainer, row = _fit(dm, "transformer", seed, args, root)
    row.update(_scores(model, trainer, dm))
    mono = root / "monolingual.zh"
    mono.write_text("".join(f"{zh}\n" for _, zh in _translation_data(args).pairs["monolingual"]), encoding="utf-8")
    dm.hparams.predict_file = str(mono)
    model.hparams.beam = args.bt_beam
    start = time.perf_counter()
    trainer.predict(model, datamodule=dm)
    row["synthetic translation minutes"] = (time.perf_counter() - start) / 60
    synthetic = write_synthetic(Path(model.predictions_path), mono, root)
    target = args.out_dir / f"reverse-seed{seed}.synthetic.tsv"
    target.write_bytes(synthetic.read_bytes())
    row["synthetic pairs"] = float(len(synthetic.read_text(encoding="utf-8").splitlines()))
    return row


def _optim(model, lr: float, warmup: int, schedule):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule(optimizer, warmup), "interval": "step"}}


# ------------------------------------------------------------------------------------------------ classification
CLS_ENCODERS = (("lstm", "none", 2), ("transformer", "rope", 2), ("conformer", "rope", 1))  # kind, positions, layers


def classification(task: str, seed: int, args) -> dict:
    """Test accuracy on ``task`` ('motifs': the embedded ordered-motif task; 'langid': the language of a word,
    :mod:`datamodules.sequences`): encoders x poolings, a plain loop on the lecture's parts, the split seed 0."""
    from datamodules.sequences import SequenceDataModule
    from lecture_modules.sequence.classification import SequenceClassifier

    dm = SequenceDataModule(task=task, seed=0, words_per_language=args.cls_words, batch_size=args.cls_batch)
    epochs, row = args.cls_epochs, {}
    for kind, positional, layers in CLS_ENCODERS:
        for pooling in ("mean", "attention"):
            torch.manual_seed(seed)
            model = SequenceClassifier(num_classes=dm.num_classes, input_shape=dm.input_shape, pooling=pooling,
                                       net={"kind": kind, "positional": positional, "layers": layers})  # fmt: skip
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            start, curve, best = time.perf_counter(), [], None
            for epoch in range(epochs):
                model.train()
                loader = dm.train_dataloader()
                loader.sampler.set_epoch(epoch)
                for b in loader:
                    loss = F.cross_entropy(model(b["x"], b["mask"], b["y"]), b["y"])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                curve.append(_accuracy(model, dm.val_dataloader()))
                if best is None or curve[-1] > curve[best[0]]:  # HW4's sample keeps the best model on validation
                    best = (epoch, copy.deepcopy(model.state_dict()))
            last_test = _accuracy(model, dm.test_dataloader())
            model.load_state_dict(best[1])
            name = f"{kind} ({positional} positions), {pooling} pooling"
            row[f"{name}: test acc %"] = _accuracy(model, dm.test_dataloader())
            row[f"{name}: test acc % after the last epoch"] = last_test
            row[f"{name}: best validation epoch"] = float(best[0] + 1)
            row[f"{name}: val acc % per epoch"] = " ".join(f"{a:.1f}" for a in curve)
            row[f"{name}: train seconds"] = time.perf_counter() - start
    row["sequences train/val/test"] = "/".join(str(len(dm.splits[s][1])) for s in ("train", "val", "test"))
    return row


def _accuracy(model, loader) -> float:
    """Accuracy in % of ``model`` over ``loader``'s whole sequences (eval mode; leaves the model in eval mode)."""
    model.eval()
    with torch.no_grad():
        hits = [(model(b["x"], b["mask"]).argmax(1) == b["y"]).float() for b in loader]
    return 100 * torch.cat(hits).mean().item()


# ------------------------------------------------------------------------------------------------ tables
def fmt(values: list, digits: int = 2) -> str:
    if isinstance(values[0], str):  # the same text for every seed, or each seed's in seed order
        return values[0] if len(set(values)) == 1 else " / ".join(values)
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def merge(folder: Path) -> str:
    pieces: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")):
        piece = json.loads(path.read_text())
        pieces.setdefault(piece["part"], []).append(piece)
    lines = []
    for part, runs in sorted(pieces.items()):
        seeds = sorted(r["seed"] for r in runs)
        machines = sorted({f"{r['machine']}, {r['threads']} thread(s), torch {r['torch']}" for r in runs})
        lines += [
            f"## {part} (seeds {seeds})",
            "",
            f"machine: {'; '.join(machines)}",
            "",
            f"args: {runs[0]['args']}",
            "",
        ]
        lines += ["| measurement | value (mean ± std over seeds) |", "|---|---:|"]
        lines += [f"| {key} | {fmt([r['row'][key] for r in runs])} |" for key in runs[0]["row"]]
        lines.append("")
    tasks = {part.split(": ", 1)[1]: runs for part, runs in pieces.items() if part.startswith("classification: ")}
    if tasks:
        lines += [*classification_summary(tasks), ""]
    translation = {part.split(": ", 1)[1]: runs for part, runs in pieces.items() if part.startswith("translation: ")}
    if translation:
        lines += [*translation_summary(translation), "", "Reference: " + REFERENCE, ""]
    return "\n".join(lines)


SUMMARY_COLUMNS = (  # (heading, row key): the translation summary's columns
    ("BLEU greedy", "test BLEU, beam 1"),
    ("BLEU beam 5", "test BLEU, beam 5"),
    ("chrF greedy", "test chrF, beam 1"),
    ("chrF beam 5", "test chrF, beam 5"),
    ("val BLEU", "val BLEU (greedy)"),
    ("train min", "train minutes"),
)


def classification_summary(tasks: dict[str, list[dict]]) -> list[str]:
    """Test accuracy % (mean ± std over seeds) per encoder, a column per (task, pooling); then the mean best
    validation epoch of each cell (the pieces written before best-epoch selection have no such row)."""
    names = [
        key.removesuffix(": test acc %") for key in next(iter(tasks.values()))[0]["row"] if key.endswith(": test acc %")
    ]
    encoders = list(dict.fromkeys(name.split(", ")[0] for name in names))
    columns = [(task, pooling) for task in tasks for pooling in ("mean", "attention")]
    lines = [
        "## classification: summary (test accuracy %, mean ± std over seeds; best validation epoch, mean)",
        "",
        "| encoder | " + " | ".join(f"{task}, {pooling} pooling" for task, pooling in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for encoder in encoders:
        cells = []
        for task, pooling in columns:
            runs = tasks[task]
            key = f"{encoder}, {pooling} pooling"
            cell = fmt([r["row"][f"{key}: test acc %"] for r in runs])
            if f"{key}: best validation epoch" in runs[0]["row"]:
                cell += f" (epoch {statistics.mean(r['row'][f'{key}: best validation epoch'] for r in runs):.1f})"
            cells.append(cell)
        lines.append(f"| {encoder} | " + " | ".join(cells) + " |")
    return lines


def translation_summary(models: dict[str, list[dict]]) -> list[str]:
    """One row per translation model: mean ± std over seeds of the test scores, then each seed's greedy / beam-5
    test BLEU (the results file's table)."""

    lines = [
        "## translation: summary",
        "",
        "| model | seeds | " + " | ".join(h for h, _ in SUMMARY_COLUMNS) + " | per seed: test BLEU greedy / beam 5 |",
        "|---|---|" + "---:|" * len(SUMMARY_COLUMNS) + "---|",
    ]
    order = {name: i for i, name in enumerate(TRANSLATION_ORDER)}
    for name in sorted(models, key=lambda n: (order.get(n, len(order)), n)):
        runs = sorted(models[name], key=lambda r: r["seed"])
        per_seed = "; ".join(
            f"{r['seed']}: {r['row']['test BLEU, beam 1']:.1f} / {r['row']['test BLEU, beam 5']:.1f}" for r in runs
        )
        cells = " | ".join(fmt([r["row"][key] for r in runs], digits=1) for _, key in SUMMARY_COLUMNS)
        label = TRANSLATION_ORDER.get(name, name)
        lines.append(f"| {label} | {', '.join(str(r['seed']) for r in runs)} | {cells} | {per_seed} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["translation", "classification", "speed"], nargs="+", default=["speed"])
    parser.add_argument("--tsv", help="translation pairs (columns en, zh_tw)")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=["rnn", "transformer", "reverse", "bt"],
        default=["rnn", "transformer", "bt"],
        help="translation pieces (bt runs reverse if missing)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--split-seed", type=int, default=0, help="translation: the random split's seed")
    parser.add_argument("--steps", type=int, default=1000, help="translation: optimiser steps per model")
    parser.add_argument(
        "--warmup", type=int, help="translation: warm-up steps for every model (default: TRANSLATION_MODELS' own)"
    )
    parser.add_argument(
        "--mono-fraction",
        type=float,
        default=0.5,
        help="translation: share of the training pairs whose English is dropped (monolingual zh)",
    )
    parser.add_argument("--bt-beam", type=int, default=1, help="beam of the reverse model's synthetic translations")
    parser.add_argument("--vocab", type=int, default=4000, help="SentencePiece vocabulary per side")
    parser.add_argument("--limit", type=int, help="translation: use this many pairs (default: all)")
    parser.add_argument("--test-sentences", type=int, default=100000, help="translation: test on the first N")
    parser.add_argument("--cls-epochs", type=int, default=8, help="classification epochs per model")
    parser.add_argument("--cls-tasks", nargs="+", choices=["motifs", "langid"], default=["motifs", "langid"])
    parser.add_argument("--cls-words", type=int, default=3000, help="langid: most frequent words per language")
    parser.add_argument("--cls-batch", type=int, default=32, help="classification batch size")
    parser.add_argument("--reps", type=int, default=5, help="speed: timed repetitions")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench/sequence"), help="one JSON per piece")
    parser.add_argument("--merge", type=Path, help="only merge the JSON pieces in this folder into markdown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.merge:
        print(merge(args.merge))
        return
    if "translation" in args.part and not args.tsv:
        parser.error("--part translation needs --tsv FILE")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for part in args.part:
            names = {"translation": args.models, "classification": args.cls_tasks}.get(part, [None])
            for name in names:
                _write_piece(args, part, name, seed, run_part(part, name, seed, args))


def _write_piece(args, part: str, name: str | None, seed: int, row: dict) -> None:
    settings = {k: str(v) for k, v in vars(args).items()}
    piece = {"part": part if name is None else f"{part}: {name}", "seed": seed, "machine": cpu_name(),
             "threads": args.threads, "torch": torch.__version__, "args": settings, "row": row}  # fmt: skip
    path = args.out_dir / f"{part}{'' if name is None else '-' + name}-seed{seed}.json"
    path.write_text(json.dumps(piece, indent=1))
    print(f"wrote {path}", flush=True)


def run_part(part: str, name: str | None, seed: int, args) -> dict:
    if part == "speed":
        return speed(args.reps)
    if part == "translation":
        return translation(name, seed, args)
    return classification(name, seed, args)


if __name__ == "__main__":
    main()
