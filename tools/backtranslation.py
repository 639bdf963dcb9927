"""Back-translation end to end (HW5's strong line; Sennrich, Haddow & Birch 2016, arXiv 1511.06709).

Three runs of our CLI, each in its own folder under ``--out``:

1. ``reverse``: fit the reverse model (target -> source) on the same data with ``data.init_args.reverse: true``
   (the same split: the reverse model never sees the forward model's validation or test pairs).
2. ``translate``: ``predict`` with that model on the monolingual target-language file (``--monolingual``, one
   sentence per line) writes ``reverse/translations.txt``; each line is paired with its monolingual sentence into
   ``synthetic.tsv`` (synthetic source tab real target; empty translations dropped).
3. ``forward``: fit the forward model on the real training pairs plus ``synthetic.tsv``
   (``data.init_args.synthetic_pairs``), with ``--tag``: each synthetic source starts with a tag token (tagged
   back-translation, Caswell et al. 2019, arXiv 1906.06442).

``--step all`` runs the three in order; ``--step reverse|translate|forward`` runs one piece (``translate`` needs
``--reverse-ckpt``, ``forward`` needs ``--synthetic``), so long runs can be scheduled separately. Every other
argument goes to ``cli.py`` unchanged, for all three runs; ``--reverse-args`` adds arguments to the reverse runs
only (e.g. its BLEU tokeniser, since its targets are in the source language)::

    python tools/backtranslation.py --config configs/seq2seq_transformer.yaml \\
        --monolingual mono.zh --out runs/bt --data.init_args.tsv_file pairs.tsv \\
        --data.init_args.columns '[en, zh_tw]' --data.init_args.bleu_tokenize zh \\
        --reverse-args '--data.init_args.bleu_tokenize 13a'

The reverse model's checkpoint is its averaged one when the config averages checkpoints, else its best.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root (cli.py), so it runs from anywhere

__all__ = ["forward_step", "main", "reverse_step", "translate_step", "write_synthetic"]

log = logging.getLogger(__name__)


def reverse_step(cli_args: list[str], out: Path) -> Path:
    """Fit the reverse model into ``out/reverse``; return its checkpoint (averaged, else best, else last)."""
    from cli import run
    from datamodules.errors import SettingError

    cli = run(
        ["fit", *cli_args, "--data.init_args.reverse", "true", "--trainer.default_root_dir", str(out / "reverse")]
    )
    trainer = cli.trainer
    averaged = [cb.written for cb in trainer.callbacks if getattr(cb, "written", None)]  # CheckpointAveraging's
    saved = trainer.checkpoint_callback
    paths = [*averaged, *((saved.best_model_path, saved.last_model_path) if saved is not None else ())]
    found = next((Path(p) for p in paths if p), None)
    if found is None:
        raise SettingError("back-translation needs the reverse model's checkpoint: keep a ModelCheckpoint or "
                           "CheckpointAveraging callback in trainer.callbacks (and no fast_dev_run)")  # fmt: skip
    return found


def translate_step(cli_args: list[str], ckpt: Path, monolingual: Path, out: Path) -> Path:
    """``predict`` with the reverse model on the monolingual file; return the translations file it wrote."""
    from cli import run

    folder = str(out / "reverse")
    cli = run(["predict", *cli_args, "--data.init_args.reverse", "true", "--data.init_args.predict_file",
               str(monolingual), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", folder])  # fmt: skip
    return Path(cli.model.predictions_path)


def write_synthetic(translations: Path, monolingual: Path, out: Path) -> Path:
    """Pair line i of the translations with line i of the monolingual file into a new TSV under ``out``."""
    from datamodules.errors import DataFileError
    from lecture_modules.base import free_name

    sources = translations.read_text(encoding="utf-8").splitlines()
    targets = [line.strip() for line in monolingual.read_text(encoding="utf-8").splitlines()]
    if len(sources) != len(targets):
        raise DataFileError(f"{translations} has {len(sources)} lines but {monolingual} has {len(targets)}")
    rows = [f"{' '.join(s.split())}\t{' '.join(t.split())}\n" for s, t in zip(sources, targets, strict=True)
            if s.strip() and t]  # fmt: skip
    path = out / f"{free_name(out, 'synthetic', ('.tsv',))}.tsv"
    path.write_text("".join(rows), encoding="utf-8")
    log.info("%d synthetic pairs written to %s", len(rows), path)
    return path


def forward_step(cli_args: list[str], synthetic: Path, out: Path, tag: bool) -> Path:
    """Fit the forward model on the real training pairs plus the synthetic ones into ``out/forward``."""
    from cli import run

    folder = out / "forward"
    run(["fit", *cli_args, "--data.init_args.synthetic_pairs", str(synthetic), "--data.init_args.synthetic_tag",
         str(tag).lower(), "--trainer.default_root_dir", str(folder)])  # fmt: skip
    return folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python tools/backtranslation.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="Other arguments go to cli.py.",
        allow_abbrev=False,
    )  # fmt: skip
    parser.add_argument("--step", choices=["all", "reverse", "translate", "forward"], default="all")
    parser.add_argument("--monolingual", type=Path, help="target-language sentences, one per line (all, translate)")
    parser.add_argument("--out", type=Path, help="folder of the three runs (default: a new runs/backtranslation-*)")
    parser.add_argument("--reverse-ckpt", type=Path, help="translate: the reverse model's checkpoint")
    parser.add_argument("--synthetic", type=Path, help="forward: the synthetic pairs (TSV file or folder)")
    parser.add_argument("--tag", action="store_true", help="tag the synthetic sources (tagged back-translation)")
    parser.add_argument("--reverse-args", default="", help="more cli.py arguments for the reverse runs only")
    return parser


def _needs(args: argparse.Namespace) -> str | None:
    """The missing option of the chosen step, as a message, or None."""
    for steps, name in ((("all", "translate"), "monolingual"), (("translate",), "reverse_ckpt"),
                        (("forward",), "synthetic")):  # fmt: skip
        if args.step in steps and getattr(args, name) is None:
            return f"--step {args.step} needs --{name.replace('_', '-')}"
    for name in ("monolingual", "reverse_ckpt", "synthetic"):
        path = getattr(args, name)
        if path is not None and not path.exists():
            return f"--{name.replace('_', '-')} {path} does not exist"
    return None


def run_steps(args: argparse.Namespace, cli_args: list[str]) -> Path:
    """Run the chosen step(s); returns the output folder."""
    from lecture_modules.base import free_name

    out = args.out or Path("runs") / free_name("runs", f"backtranslation-{datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    reverse_args = [*cli_args, *shlex.split(args.reverse_args)]
    ckpt, synthetic = args.reverse_ckpt, args.synthetic
    if args.step in ("all", "reverse"):
        ckpt = reverse_step(reverse_args, out)
        log.info("reverse model: %s", ckpt)
    if args.step in ("all", "translate"):
        translations = translate_step(reverse_args, ckpt, args.monolingual, out)
        synthetic = write_synthetic(translations, args.monolingual, out)
    if args.step in ("all", "forward"):
        forward_step(cli_args, synthetic, out, args.tag)
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse, check, run; a user mistake ends in one ``error:`` line and exit code 2."""
    from datamodules.errors import UserInputError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = _parser()
    args, cli_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if problem := _needs(args):
        sys.stderr.write(f"error: {problem}\n")
        return 2
    try:
        out = run_steps(args, cli_args)
    except (UserInputError, ValueError, TypeError) as exc:
        cause = exc
        while cause is not None and not isinstance(cause, UserInputError):  # jsonargparse wraps __init__ errors
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        sys.stderr.write(f"error: {cause}\n")
        return 2
    log.info("back-translation runs in %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
