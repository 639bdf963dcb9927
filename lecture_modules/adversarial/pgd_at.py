"""PGD adversarial training — lecture 10 (defences): train on the worst case inside the eps-ball.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks"
(arXiv 1706.06083): min_theta E_(x,y) [ max_{||delta||_inf <= eps} L(f_theta(x + delta), y) ]. For a batch (x, y),
:meth:`PGDAdversarialTraining.training_step` does:

1. Pixels: x01 = x * std + mean, undoing the DataModule's standardisation, so eps is a pixel budget in [0, 1].
2. Inner maximisation: x_adv = PGD-k(f_theta, x01, y) from a uniform random start, k = ``steps`` steps of
   alpha = ``step_size`` * eps / k, projected onto the eps-ball and the [0, 1] box (the victim in eval mode; its
   weights are not updated by the attack).
3. Outer minimisation: L = CE(f_theta(normalize(x_adv)), y); one optimiser step on theta.

Validation and test report clean accuracy (``val/acc``) and robust accuracy under a stronger PGD
(``val/robust_acc``: ``eval_steps`` steps, ``eval_restarts`` restarts, at ``eval_epsilon``), always together.
The fast variant (FGSM with a random start, Wong et al. 2020) is :mod:`.fast_at`.

Run: ``python cli.py fit --config configs/pgd_at.yaml``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from datamodules.errors import SettingError
from lecture_modules.adversarial.core import Normalize, pgd
from lecture_modules.base import LectureModule
from lecture_modules.nets import NetSpec

__all__ = ["PGDAdversarialTraining", "check_budget"]


def check_budget(**settings: float | int | None) -> None:
    """SettingError naming ``model.init_args.<name>`` for a negative budget or fewer than one step/restart."""
    for name, value in settings.items():
        if value is None:
            continue
        if ("steps" in name or "restarts" in name) and value < 1:
            raise SettingError(f"model.init_args.{name} must be >= 1 (an attack takes at least one step), got {value}")
        if ("epsilon" in name or "step_size" in name) and not 0 <= value < float("inf"):
            raise SettingError(
                f"model.init_args.{name} must be a finite number >= 0 (a budget in [0, 1] pixel units), got {value}"
            )


class PGDAdversarialTraining(LectureModule):
    """PGD adversarial training: minimise the loss of PGD examples in an eps-ball (Madry et al., arXiv 1706.06083)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        net: NetSpec = NetSpec(kind="cnn"),
        epsilon: float = 0.3,
        steps: int = 7,
        step_size: float = 2.5,
        random_start: bool = True,
        eval_epsilon: float | None = None,
        eval_steps: int = 10,
        eval_restarts: int = 1,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network: an MLP or a CNN with its widths, batch norm and dropout.
            epsilon: L-inf budget of the training attack, in [0, 1] pixel units (Madry et al.: 0.3 on MNIST).
            steps: PGD steps of the training attack (Madry et al.: 40 on MNIST, 7 on CIFAR-10).
            step_size: the attack's step as a multiple of epsilon / steps (Madry et al.'s rule: 2.5).
            random_start: start the training attack uniformly inside the eps-ball.
            eval_epsilon: budget of the validation/test attack (default: ``epsilon``).
            eval_steps: PGD steps of the validation/test attack (step 2.5 eval_epsilon / eval_steps, random start).
            eval_restarts: random restarts of the validation/test attack (each sample keeps its worst case).
        """
        super().__init__()
        net = NetSpec.of(net, owner="model.init_args.net")
        check_budget(
            epsilon=epsilon,
            steps=steps,
            step_size=step_size,
            eval_epsilon=eval_epsilon,
            eval_steps=eval_steps,
            eval_restarts=eval_restarts,
        )
        self.save_hyperparameters(ignore=["net"])
        self.hparams["net"] = net.as_dict()  # plain data: the checkpoint stays weights_only
        self.net = net.build(input_shape, num_classes)
        # [0, 1] pixels -> the DataModule's standardised inputs; set from the data in setup(), saved with the weights
        self.normalize = Normalize(torch.zeros(input_shape[0]), torch.ones(input_shape[0]))
        self.example_input_array = torch.zeros(2, *input_shape)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc, self.test_acc = (MulticlassAccuracy(num_classes, average="micro") for _ in range(2))
        self.val_robust_acc, self.test_robust_acc = (MulticlassAccuracy(num_classes, average="micro") for _ in range(2))
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H, W) standardised, as the DataModule yields them -> (B, num_classes)

    # ------------------------------------------------------------------ the algorithm (Madry et al., in order)
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]  # (B, C, H, W) standardised, (B,)
        x01 = self.normalize.inverse(x)  # step 1: (B, C, H, W) pixels in [0, 1]
        x_adv = self.inner_maximisation(x01, y)  # step 2: (B, C, H, W), ||x_adv - x01||_inf <= eps
        logits = self(self.normalize(x_adv))  # step 3: (B, K)
        loss = self.combine_losses({"adv_ce": F.cross_entropy(logits, y)})
        self.train_acc.update(logits.detach(), y)
        self.log("train/adv_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def inner_maximisation(self, x01: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """PGD-k from a random start (global RNG: part of exact resume) with step ``step_size`` eps / k."""
        hp = self.hparams
        return pgd(
            self.net,
            x01,
            y,
            eps=hp.epsilon,
            steps=hp.steps,
            alpha=hp.step_size * hp.epsilon / hp.steps,
            random_start=hp.random_start,
            normalize=self.normalize,
        )

    # ------------------------------------------------------------------ evaluation: clean and robust, together
    def robust_examples(self, x01: torch.Tensor, y: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The evaluation attack: PGD at ``eval_epsilon`` with its own generator seeded by the batch index, so the
        reported robust accuracy does not depend on the training RNG (and resumed runs report the same)."""
        hp = self.hparams
        generator = torch.Generator().manual_seed(batch_idx)
        eps = hp.epsilon if hp.eval_epsilon is None else hp.eval_epsilon
        return pgd(
            self.net, x01, y, eps=eps, steps=hp.eval_steps, restarts=hp.eval_restarts, normalize=self.normalize,
            generator=generator,
        )  # fmt: skip

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x, y = batch[0], batch[1]
        self.log_accuracy_and_loss(stage, self(x), y)  # clean: stage/acc, stage/loss
        x_adv = self.robust_examples(self.normalize.inverse(x), y, batch_idx)
        with torch.no_grad():
            robust = getattr(self, f"{stage}_robust_acc")
            robust.update(self(self.normalize(x_adv)), y)
        self.log(f"{stage}/robust_acc", robust, on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).argmax(dim=-1)

    # ------------------------------------------------------------------ pixel space from the data
    def setup(self, stage: str) -> None:
        """Take the DataModule's standardisation (mean, std), so budgets are in [0, 1] pixels."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        stats = getattr(datamodule, "pixel_stats", None) if datamodule is not None else None
        if stats is None:
            if datamodule is not None and not hasattr(datamodule, "pixel_stats"):
                rank_zero_warn(
                    f"{type(datamodule).__name__} does not say how it standardises images (no pixel_stats): the "
                    "batches are taken as [0, 1] pixels, so epsilon is only a pixel budget if they are."
                )
            return
        mean, std = stats
        self.normalize.mean.copy_(mean.reshape(self.normalize.mean.shape))
        self.normalize.std.copy_(std.reshape(self.normalize.std.shape))
