"""Running a lecture config in the benchmark's own process, exactly as ``python cli.py fit`` would, quietly."""

from __future__ import annotations

from pathlib import Path

from cli import LectureCLI, run

REPO = Path(__file__).resolve().parents[1]
# One CPU process, no logger, checkpoints, progress bar or model summary: the scripts print their own tables.
QUIET = [
    "--trainer.logger",
    "false",
    "--trainer.callbacks=[]",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "1",
]


def fit(config: str, *overrides: str, root: Path) -> LectureCLI:
    """``python cli.py fit --config configs/<config> <overrides>`` in this process."""
    args = ["fit", "--config", str(REPO / "configs" / config), *QUIET, "--trainer.default_root_dir", str(root)]
    return run([*args, *overrides])


def fit_and_test(config: str, *overrides: str, root: Path) -> LectureCLI:
    """:func:`fit`, then test on the test split."""
    cli = fit(config, *overrides, root=root)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return cli


def mnist_args(root: str) -> list[str]:
    """Data overrides that read MNIST's IDX files from ``root`` at 28x28 in batches of 128."""
    return [
        "--data.init_args.source",
        "datamodules.sources.IDXSource",
        "--data.init_args.source.root",
        root,
        "--data.init_args.image_size",
        "28",
        "--data.init_args.batch_size",
        "128",
    ]
