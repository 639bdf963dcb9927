"""Shared test helpers: repository paths, in-process and subprocess CLI runs, small test-only lectures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch

from cli import LectureCLI, run
from lecture_modules.classification import Classification

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
CLASSIFICATION = str(CONFIGS / "classification.yaml")
SMOKE = str(CONFIGS / "trainer" / "smoke.yaml")
CPU = str(CONFIGS / "trainer" / "cpu.yaml")

# Small, quick settings for end-to-end runs on 2 CPU cores.
QUICK = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# `fit` of the classification config on one CPU process.
FIT_CPU = ["fit", "--config", CPU, "--config", CLASSIFICATION, *QUICK]
# `fit` of the classification config for 2 batches (configs/trainer/smoke.yaml).
SMOKE_FIT = ["fit", "--config", CLASSIFICATION, "--config", SMOKE]


def run_cli(*args: str) -> LectureCLI:
    """Run the CLI in this process (like ``python cli.py ...``) and return the LectureCLI object."""
    return run(list(args))


def run_cli_parse_only(*args: str) -> LectureCLI:
    """Parse ``args`` (no subcommand) and instantiate the model and data with the config's seed, without training;
    no logger, no callbacks."""
    return run([*args, "--trainer.logger", "false", "--trainer.callbacks", "[]"], run=False)


def run_cli_subprocess(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run ``python cli.py ...`` as a separate process (needed for DDP, which re-launches the script)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
    )


def with_checkpoints(dirpath: Path) -> list[str]:
    """CLI arguments that add a ``ModelCheckpoint`` writing into ``dirpath``."""
    return [
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.dirpath",
        str(dirpath),
    ]


def optimised_params(trainer: L.Trainer) -> set[int]:
    """Ids of the tensors the trainer's first optimiser updates."""
    return {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}


def crash_after_checkpoint(args: list[str], step: int, root: Path) -> Path:
    """Run ``args`` (a ``fit`` command) until a checkpoint is written at global step ``step``, then crash as a
    preempted job would; returns that checkpoint."""
    import pytest

    with pytest.raises(SimulatedCrash):
        run_cli(
            *args,
            "--trainer.default_root_dir",
            str(root),
            *with_checkpoints(root),
            "--trainer.callbacks.every_n_train_steps",
            str(step),
            "--trainer.callbacks.save_top_k",
            "-1",
            "--trainer.callbacks+=tests.helpers.CrashAtStep",
            "--trainer.callbacks.step",
            str(step),
        )
    [ckpt] = root.glob(f"*step={step}.ckpt")
    return ckpt


def state_dict_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class MetricsDump(L.Callback):
    """Writes each rank's final validation metrics to ``<out_dir>/<stage>-rank<r>.json`` (test-only)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def _dump(self, trainer: L.Trainer, stage: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        (self.out_dir / f"{stage}-rank{trainer.global_rank}.json").write_text(json.dumps(metrics))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._dump(trainer, trainer.state.fn.value)


class CrashAtStep(L.Callback):
    """Simulates a preemption: raises once ``global_step`` reaches ``step`` (after that step's checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise SimulatedCrash(f"simulated crash at step {trainer.global_step}")


class SimulatedCrash(RuntimeError):
    pass


class NaNAfterSteps(Classification):
    """Test-only lecture whose 'blowup' loss term turns NaN at global step ``nan_at``."""

    def __init__(self, num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 8, 8), nan_at: int = 3) -> None:
        super().__init__(num_classes=num_classes, input_shape=input_shape)
        self.nan_at = nan_at

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        ce = torch.nn.functional.cross_entropy(self(x), y)
        blowup = ce * (float("nan") if self.global_step >= self.nan_at else 0.0)
        return self.combine_losses({"ce": ce, "blowup": blowup})


def digits_8x8() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits as images (N, 1, 8, 8) in [0, 1] and labels (N,): the raw data of the small
    models that the attribution and attack tests train in a second."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0, torch.tensor(digits.target)
