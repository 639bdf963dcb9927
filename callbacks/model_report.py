"""Model size and CPU latency, reported once per fit (the compression lectures' "what did we gain" numbers)."""

from __future__ import annotations

import copy

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lecture_modules.nets import measure_latency

__all__ = ["ModelReport"]


class ModelReport(L.Callback):
    """Logs parameter counts at the start of fit and CPU latency per batch at its end (rank zero).

    The networks come from ``pl_module.report_modules()`` when the lecture defines it (for distillation: the
    student and each teacher), else the whole module. The input is ``pl_module.example_input_array`` repeated to
    each batch size. Metrics: ``model/<name>_params`` and ``model/<name>_cpu_ms_b<batch size>``; the results also
    stay in ``self.results`` for scripts.
    """

    def __init__(self, batch_sizes: list[int] | None = None, repeats: int = 20, warmup: int = 3) -> None:
        """
        Args:
            batch_sizes: batch sizes to time (default: [1, 64]).
            repeats: timed calls per network and batch size (the median is reported).
            warmup: untimed calls first.
        """
        self.batch_sizes = batch_sizes or [1, 64]
        if min(self.batch_sizes) < 1 or repeats < 1 or warmup < 0:
            raise ValueError(
                f"ModelReport needs batch sizes >= 1, repeats >= 1 and warmup >= 0; got {self.batch_sizes}, "
                f"{repeats}, {warmup}"
            )
        self.repeats, self.warmup = repeats, warmup
        self.results: dict[str, float] = {}

    @staticmethod
    def _modules(pl_module: L.LightningModule) -> dict[str, nn.Module]:
        report = getattr(pl_module, "report_modules", None)
        return report() if callable(report) else {"model": pl_module}

    def _log(self, trainer: L.Trainer, metrics: dict[str, float]) -> None:
        self.results.update(metrics)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            params = {
                f"model/{n}_params": float(sum(p.numel() for p in m.parameters()))
                for n, m in self._modules(pl_module).items()
            }
            self._log(trainer, params)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        example = getattr(pl_module, "example_input_array", None)
        if not trainer.is_global_zero or not isinstance(example, torch.Tensor):
            return
        metrics, lines = {}, []
        for name, module in self._modules(pl_module).items():
            on_cpu = all(p.device.type == "cpu" for p in module.parameters())
            if not on_cpu:
                if isinstance(module, L.LightningModule):
                    continue  # a module attached to the trainer is not copied; time its networks instead
                module = copy.deepcopy(module).cpu()
            for b in self.batch_sizes:
                x = example[:1].cpu().expand(b, *example.shape[1:]).contiguous()
                ms = 1000.0 * measure_latency(module, x, self.repeats, self.warmup)
                metrics[f"model/{name}_cpu_ms_b{b}"] = ms
                lines.append(f"  {name:<10} batch {b:>4}: {ms:8.3f} ms")
        self._log(trainer, metrics)
        rank_zero_info(f"CPU latency per batch (median of {self.repeats}):\n" + "\n".join(lines))
