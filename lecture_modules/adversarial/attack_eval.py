"""Attack evaluation — lecture 10 / HW10: white-box, transfer and ensemble attacks on trained classifiers.

The lecture's experiment, RobustBench-style (clean and robust accuracy, the attack and its budget, always together):

1. The zoo: ``victims`` and ``proxies`` are checkpoints of any registered classifier lecture (rebuilt with
   :func:`lecture_modules.checkpoints.load_lecture`, frozen; default victim: the shipped digits CNN,
   ``builtin:digits_cnn``), or small networks trained here by ``fit`` on the clean data (seconds on the digits).
2. White box (``test``): every attack of ``attacks`` (FGSM, I-FGSM, PGD, MI-FGSM, DI2-FGSM at each L-inf budget of
   ``epsilons``; PGD-L2 and C&W at each of ``l2_epsilons``) against the first victim: robust accuracy, and after
   rounding the adversarial images to uint8 PNG pixels; a robust-accuracy-versus-eps figure and perturbation
   examples.
3. Black box (``test``): ``transfer_attack`` crafted on each proxy, and on their ensemble (``ensemble``: logit or
   loss averaging), at ``epsilon``, scored on every victim: the transfer matrix (rows: proxies, columns: victims).
4. Defences (``test``): each of ``defences`` (``jpeg:<quality>``, ``bit_depth:<bits>``, ``median:<kernel>``) in
   front of the first victim: clean accuracy, PGD through the masked gradient, and PGD with BPDA (Athalye et al.
   2018): the adaptive attack that the defence must be judged by.

``predict`` is HW10's hand-in: ``transfer_attack`` crafted on the proxies (their ensemble when several) at
``epsilon`` for every image of a folder (``datamodules/attack_folder.py``), rounded to 8-bit pixels within the
budget and written as PNGs under the same relative names, plus a ``.tgz``, in the run folder
(``callbacks/adversarial_image_writer.py``).

Every attack success rate is reported next to its robust accuracy: of the images the victim classifies correctly,
the fraction the attack flips (``targeted``: the fraction it moves onto the target class y + 1 mod K).

``fit`` trains the zoo's own networks and validates clean accuracy (``val/acc``, first victim), PGD white-box
robust accuracy (``val/robust_acc``) and transfer accuracy from the proxy ensemble (``val/transfer_acc``) at
``epsilon``. Budgets are [0, 1] pixel units, applied through the DataModule's standardisation.

Run: ``python cli.py fit --config configs/attack_eval.yaml`` then ``python cli.py test --config
configs/attack_eval.yaml --ckpt_path <the run's last.ckpt>`` (or ``test`` alone when every model is a checkpoint);
HW10: ``python cli.py predict --config configs/attack_hw10.yaml --data.init_args.root <folder> --model.init_args.proxies
'[{name: a, path: a.ckpt}, ...]'``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import Metric

from datamodules.errors import SettingError
from lecture_modules.adversarial.core import (
    ATTACKS,
    Ensemble,
    Normalize,
    attack_success,
    pgd,
    quantize_uint8,
    to_uint8_within,
    within_budget,
)
from lecture_modules.adversarial.defences import DEFENCES, InputTransformDefence, make_defence
from lecture_modules.adversarial.pgd_at import check_budget
from lecture_modules.adversarial.report import examples_figure, robustness_curve_figure, transfer_figure
from lecture_modules.base import LectureModule
from lecture_modules.checkpoints import load_classifier
from lecture_modules.nets import NetSpec, Spec

__all__ = ["AttackEvaluation", "ZooSpec"]

DEFAULT_ATTACKS = ("fgsm", "ifgsm", "pgd", "mifgsm", "difgsm", "pgd_l2", "cw")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ZooSpec(Spec):
    """One model of the zoo: a checkpoint (``path``), or a network trained by ``fit`` (``path`` null).

    Attributes:
        name: a short name for metric keys and figures (letters, digits, underscores).
        path: a Lightning checkpoint of any registered classifier lecture, or a shipped one (``builtin:digits_cnn``;
            :data:`lecture_modules.checkpoints.BUILTIN_CHECKPOINTS`).
        kind: ``mlp`` or ``cnn``, for a network trained here.
        widths: its hidden units or channels (null: the kind's default).
        mean: per-channel mean, in [0, 1] pixels, of the standardisation the checkpoint was trained with (null: the
            DataModule's); with ``std``. Budgets stay in pixels: the attack sees this model through its own inputs.
        std: per-channel standard deviation of that standardisation (null: the DataModule's); with ``mean``.
    """

    name: str = "victim"
    path: str | None = None
    kind: Literal["mlp", "cnn"] = "cnn"
    widths: list[int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    def validate(self, owner: str = "zoo") -> None:
        if not NAME.match(self.name):
            raise SettingError(f"{owner}.name must be letters, digits and underscores, got {self.name!r}")
        NetSpec(kind=self.kind, widths=self.widths).validate(owner)
        if (self.mean is None) != (self.std is None):
            raise SettingError(f"{owner}: give mean and std together (the checkpoint's standardisation), or neither")
        if self.mean is not None and self.path is None:
            raise SettingError(
                f"{owner}.mean/std are for a checkpoint trained with other statistics; a network trained here "
                "(path null) uses the DataModule's standardisation"
            )
        if self.std is not None and not all(s > 0 for s in self.std):
            raise SettingError(f"{owner}.std must be positive per channel, got {self.std}")

    def standardisation(self, channels: int, owner: str) -> Normalize | None:
        """This model's own input standardisation (None: the DataModule's), checked against the image channels."""
        if self.mean is None:
            return None
        if not len(self.mean) == len(self.std) == channels:
            raise SettingError(
                f"{owner}.mean and .std need one value per image channel ({channels}), got {self.mean} and {self.std}"
            )
        return Normalize(self.mean, self.std)

    def net(self) -> NetSpec:
        return NetSpec(kind=self.kind, widths=self.widths)


class CellAccuracy(Metric):
    """Correct predictions per named cell (attack, budget, victim, ...), summed across processes."""

    full_state_update = False

    def __init__(self, cells: int) -> None:
        super().__init__()
        self.add_state("correct", default=torch.zeros(cells, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(cells, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, cell: int, correct: torch.Tensor) -> None:
        """``correct``: (B,) booleans, one per sample."""
        self.correct[cell] += correct.sum()
        self.total[cell] += len(correct)

    def compute(self) -> torch.Tensor:
        """The fraction per cell; NaN for a cell that saw no sample (a success rate when no image was right)."""
        return torch.where(self.total > 0, self.correct.float() / self.total.clamp_min(1).float(), float("nan"))


class AttackEvaluation(LectureModule):
    """Adversarial attack evaluation: white-box, transfer and ensemble attacks on classifiers, and defences (HW10)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        victims: list[ZooSpec] | None = None,
        proxies: list[ZooSpec] | None = None,
        attacks: list[str] | None = None,
        epsilons: list[float] | None = None,
        l2_epsilons: list[float] | None = None,
        epsilon: float = 0.1,
        steps: int = 10,
        restarts: int = 1,
        transfer_attack: str = "mifgsm",
        ensemble: Literal["logits", "loss"] = "logits",
        targeted: bool = False,
        cw_steps: int = 100,
        defences: list[str] | None = None,
        examples: int = 4,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            victims: the attacked models (columns of the transfer matrix); null: the shipped digits CNN; ``[]``: none
                (``predict`` only: HW10's victims are hidden).
            proxies: the models transfer attacks are crafted on (rows of the transfer matrix); null: none.
            attacks: white-box attacks run by ``test`` (null: all of fgsm, ifgsm, pgd, mifgsm, difgsm, pgd_l2, cw).
            epsilons: L-inf budgets of the robust-accuracy curves, [0, 1] pixels (null: 0, 0.02, 0.05, 0.1, 0.2).
            l2_epsilons: L2 budgets of the curves of pgd_l2 and cw (null: 0, 0.5, 1, 2).
            epsilon: the headline L-inf budget: ``val/robust_acc``, ``test/robust_acc`` and the transfer matrix.
            steps: steps of the iterative attacks (step size eps / steps; PGD: 2.5 eps / steps).
            restarts: random restarts of PGD.
            transfer_attack: the attack crafted on the proxies (an L-inf attack of ``attacks``' names).
            ensemble: how the proxy ensemble is attacked: averaged ``logits`` or averaged ``loss``.
            targeted: the attacks aim at class y + 1 mod ``num_classes`` instead of away from y (the defences' attacks
                stay untargeted); success rates count the images moved onto that class.
            cw_steps: Adam iterations of C&W per binary-search round (5 rounds).
            defences: input transforms put in front of the first victim by ``test``: ``jpeg:<quality>``,
                ``bit_depth:<bits>``, ``median:<kernel>``.
            examples: test images shown in the perturbation-examples figure.
            optimizer: optimiser factory for the networks ``fit`` trains (a factory, not a top-level ``optimizer:``
                section: a zoo of checkpoints alone has no parameters to build an optimiser over).
        """
        super().__init__()
        victims = (
            [ZooSpec(name="digits_cnn", path="builtin:digits_cnn")]
            if victims is None
            else [ZooSpec.of(v, owner=f"model.init_args.victims[{i}]") for i, v in enumerate(victims)]
        )
        proxies = [ZooSpec.of(p, owner=f"model.init_args.proxies[{i}]") for i, p in enumerate(proxies or [])]
        attacks = list(DEFAULT_ATTACKS if attacks is None else attacks)
        epsilons = [0.0, 0.02, 0.05, 0.1, 0.2] if epsilons is None else list(epsilons)
        epsilons = sorted({*epsilons, epsilon})  # the headline budget is always on the curve
        l2_epsilons = [0.0, 0.5, 1.0, 2.0] if l2_epsilons is None else list(l2_epsilons)
        self._validate(victims, proxies, attacks, epsilons, l2_epsilons, transfer_attack, defences or [])
        for role, specs in (("victims", victims), ("proxies", proxies)):
            for i, spec in enumerate(specs):
                spec.standardisation(input_shape[0], owner=f"model.init_args.{role}[{i}]")
        check_budget(epsilon=epsilon, steps=steps, restarts=restarts, cw_steps=cw_steps)
        self.save_hyperparameters(ignore=["victims", "proxies", "optimizer"])
        self.optimizer_factory = optimizer
        self.hparams.update(
            victims=[v.as_dict() for v in victims], proxies=[p.as_dict() for p in proxies], attacks=attacks,
            epsilons=epsilons, l2_epsilons=l2_epsilons, defences=list(defences or []),
        )  # fmt: skip
        self.victim_specs, self.proxy_specs = victims, proxies
        # Networks trained here are submodules (optimised, saved); checkpoints are loaded, frozen, kept outside.
        self.trained = nn.ModuleDict(
            {s.name: s.net().build(input_shape, num_classes) for s in victims + proxies if s.path is None}
        )
        self._loaded: dict[str, nn.Module] = {}
        self.normalize = Normalize(torch.zeros(input_shape[0]), torch.ones(input_shape[0]))
        self.register_buffer("fitted", torch.tensor(False))  # the trained networks have seen at least one step
        self.example_input_array = torch.zeros(2, *input_shape)
        self.cells = self._cells()
        self.val_cells, self.test_cells = CellAccuracy(len(self.cells["val"])), CellAccuracy(len(self.cells["test"]))
        self._examples: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _validate(victims, proxies, attacks, epsilons, l2_epsilons, transfer_attack, defences) -> None:
        names = [s.name for s in victims + proxies]
        if not names:
            raise SettingError("model.init_args.victims and proxies are both empty: there is no model to attack")
        if len(set(names)) != len(names):
            raise SettingError(f"model.init_args.victims and proxies need distinct names, got {names}")
        unknown = [a for a in attacks if a not in ATTACKS]
        if unknown or not attacks:
            raise SettingError(f"model.init_args.attacks: unknown attack(s) {unknown}; known: {', '.join(ATTACKS)}")
        if transfer_attack not in ATTACKS or ATTACKS[transfer_attack][1] != "linf" or transfer_attack == "cw":
            linf = [a for a, (_, n) in ATTACKS.items() if n == "linf"]
            raise SettingError(f"model.init_args.transfer_attack must be one of {linf}, got {transfer_attack!r}")
        for key, values in (("epsilons", epsilons), ("l2_epsilons", l2_epsilons)):
            bad = [e for e in values if not 0 <= e < float("inf")]
            if bad or not values:
                raise SettingError(f"model.init_args.{key} must list budgets >= 0 ([0, 1] pixel units), got {values}")
        for i, text in enumerate(defences):
            name, _, strength = text.partition(":")
            if name not in DEFENCES or not strength.isdigit():
                raise SettingError(
                    f"model.init_args.defences[{i}] is {text!r}; write <name>:<strength> with a name of "
                    f"{', '.join(DEFENCES)} (jpeg:75, bit_depth:4, median:3)"
                )
            try:
                make_defence(name, int(strength))
            except ValueError as exc:
                raise SettingError(f"model.init_args.defences[{i}]: {exc}") from exc

    def _cells(self) -> dict[str, list[str]]:
        """The metric names (without the stage prefix) each stage accumulates, in a fixed order."""
        hp, first = self.hparams, self._first()
        val = ["acc", "robust_acc", "success_rate"]
        val += ["transfer_acc", "transfer_success_rate"] if self.proxy_specs else []
        val += [f"acc_{s.name}" for s in self.victim_specs + self.proxy_specs]
        test = ["acc", "robust_acc", "success_rate"] + [f"acc_{s.name}" for s in self.victim_specs + self.proxy_specs]
        for attack in hp.attacks:  # white box on the first victim
            for eps in hp.epsilons if ATTACKS[attack][1] == "linf" else hp.l2_epsilons:
                test += [f"{m}_{attack}_eps{eps:g}{s}" for m in ("robust_acc", "success_rate") for s in ("", "_uint8")]
        for row in self._transfer_rows():
            test += [f"transfer_{m}_{row}_to_{v.name}" for v in self.victim_specs for m in ("acc", "success_rate")]
        for defence in hp.defences:
            tag = defence.replace(":", "")
            test += [f"defence_{tag}_{first}_{m}" for m in ("acc", "robust_acc_masked", "robust_acc_bpda")]
        return {"val": val, "test": test}

    def _transfer_rows(self) -> list[str]:
        rows = [p.name for p in self.proxy_specs]
        return rows + (["ensemble"] if len(rows) > 1 else [])

    # ------------------------------------------------------------------ the zoo
    def model(self, name: str) -> nn.Module:
        """A zoo model by name (its forward takes the DataModule's standardised inputs)."""
        return self.trained[name] if name in self.trained else self._loaded[name]

    def _first(self) -> str:
        """The first victim (the first proxy when there is no victim: ``predict`` only)."""
        return (self.victim_specs or self.proxy_specs)[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._first())(x)  # (B, C, H, W) -> (B, K): the first victim

    def _labels(self, y: torch.Tensor) -> torch.Tensor:
        """What the attacks aim at: y (untargeted), or the target class y + 1 mod K (``targeted``)."""
        return (y + 1) % self.hparams.num_classes if self.hparams.targeted else y

    def _predict(self, name: str, x01: torch.Tensor) -> torch.Tensor:
        """A zoo model's predictions (B,) on [0, 1] pixels."""
        with torch.no_grad():
            return self.model(name)(self.normalize(x01)).argmax(-1)

    def setup(self, stage: str) -> None:
        """Load the checkpoint models (frozen) and take the DataModule's standardisation."""
        for spec in self.victim_specs + self.proxy_specs:
            if spec.path is not None and spec.name not in self._loaded:
                self._loaded[spec.name] = self._load(spec).to(self.device)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        stats = getattr(datamodule, "pixel_stats", None) if datamodule is not None else None
        if stats is not None:
            self.normalize.mean.copy_(stats[0].reshape(self.normalize.mean.shape))
            self.normalize.std.copy_(stats[1].reshape(self.normalize.std.shape))
        if stage != "predict" and not self.victim_specs:
            raise SettingError(
                f"model.init_args.victims is empty: {stage} scores a victim. Only predict (HW10: write adversarial "
                "images) runs without one."
            )
        if stage == "fit" and not len(self.trained):
            raise SettingError(
                "model.init_args.victims and proxies are all checkpoints: there is nothing to train. Run "
                "`python cli.py test` with this config instead of `fit`."
            )

    def _load(self, spec: ZooSpec) -> nn.Module:
        """A checkpoint (or ``builtin:<name>``) frozen and checked against the data (:func:`load_classifier`), fed its
        own standardisation when its zoo entry states one."""
        hp = self.hparams
        label = f"model {spec.name!r} ({spec.path})"
        model = load_classifier(spec.path, input_shape=hp.input_shape, num_classes=hp.num_classes, label=label)
        own = spec.standardisation(self.hparams.input_shape[0], owner=f"model {spec.name!r}")
        return _Logits(model) if own is None else _Restandardised(_Logits(model), data=self.normalize, own=own)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for model in self._loaded.values():  # device moves reach the frozen models although they are not submodules
            model._apply(fn, recurse)
        return self

    # ------------------------------------------------------------------ fit: the zoo's own networks
    lr_setting = "model.init_args.optimizer.init_args.lr"

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.trained.parameters())

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        self.fitted.fill_(True)
        return self.combine_losses({name: F.cross_entropy(net(x), y) for name, net in self.trained.items()})

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        x01, first = self.normalize.inverse(x), self._first()
        clean = self._clean_accuracy("val", x01, y)
        generator = torch.Generator().manual_seed(batch_idx)
        x_adv = pgd(self.model(first), x01, self._labels(y), eps=self.hparams.epsilon, steps=self.hparams.steps,
                    targeted=self.hparams.targeted, normalize=self.normalize, generator=generator)  # fmt: skip
        self._score("val", "robust_acc", "success_rate", first, x_adv, y, clean[first])
        if self.proxy_specs:
            x_adv = self._transfer_examples([p.name for p in self.proxy_specs], x01, y, batch_idx)
            self._score("val", "transfer_acc", "transfer_success_rate", first, x_adv, y, clean[first])

    def on_validation_epoch_end(self) -> None:
        self._log_cells("val", self.val_cells)

    # ------------------------------------------------------------------ test: the full report
    def on_test_start(self) -> None:
        """After a ``--ckpt_path`` is restored: networks trained by ``fit`` must have been trained."""
        if len(self.trained) and not bool(self.fitted):
            raise SettingError(
                f"networks {list(self.trained)} are trained by fit and these are untrained: run fit first, or test "
                "with --ckpt_path <that run's checkpoint>"
            )

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        x01, hp = self.normalize.inverse(x), self.hparams
        clean = self._clean_accuracy("test", x01, y)
        shown = self._white_box(x01, y, batch_idx, clean[self._first()])
        for row in self._transfer_rows():
            sources = [p.name for p in self.proxy_specs] if row == "ensemble" else [row]
            x_adv = self._transfer_examples(sources, x01, y, batch_idx)
            for v in self.victim_specs:
                keys = (f"transfer_acc_{row}_to_{v.name}", f"transfer_success_rate_{row}_to_{v.name}")
                self._score("test", *keys, v.name, x_adv, y, clean[v.name])
        self._defences(x01, y, batch_idx)
        if batch_idx == 0 and self._examples is None:
            self._examples = {"clean": x01[: hp.examples], "labels": y[: hp.examples]}
            self._examples.update({k: v[: hp.examples] for k, v in shown.items()})

    def _clean_accuracy(self, stage: str, x01: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Log every zoo model's clean accuracy (``acc_<name>``; ``acc``: the first victim); returns their
        predictions by name."""
        metric, cell = self._metric(stage), self.cells[stage].index
        clean = {s.name: self._predict(s.name, x01) for s in self.victim_specs + self.proxy_specs}
        for name, pred in clean.items():
            metric.update(cell(f"acc_{name}"), pred == y)
        metric.update(cell("acc"), clean[self._first()] == y)
        return clean

    def _white_box(self, x01: torch.Tensor, y: torch.Tensor, batch_idx: int, clean: torch.Tensor) -> dict:
        """Every attack at every budget on the first victim, scored (robust accuracy and success rate) before and
        after uint8 rounding; also the per-sample worst case over the L-inf attacks at ``epsilon``
        (``test/robust_acc``, ``test/success_rate``). Returns the adversarial images at ``epsilon`` by attack."""
        hp, victim, cell = self.hparams, self._first(), self.cells["test"].index
        worst = torch.ones_like(y, dtype=torch.bool)  # the victim survives every L-inf attack at epsilon
        fooled = torch.zeros_like(y, dtype=torch.bool)  # some L-inf attack at epsilon succeeded
        shown: dict[str, torch.Tensor] = {}
        for attack in hp.attacks:
            fn, norm = ATTACKS[attack]
            cw = None  # a minimum-norm attack: run once, then scored at each budget
            if attack == "cw":
                cw = fn(self.model(victim), x01, self._labels(y), steps=hp.cw_steps, targeted=hp.targeted,
                        normalize=self.normalize)  # fmt: skip
            for eps in hp.epsilons if norm == "linf" else hp.l2_epsilons:
                if eps == 0:  # every attack returns x itself at eps = 0 (tested): the clean images
                    x_adv = x01
                elif cw is not None:
                    x_adv = within_budget(x01, cw, eps, norm)
                else:
                    x_adv = self._attack(attack, victim, x01, y, eps, batch_idx)
                keys = (f"robust_acc_{attack}_eps{eps:g}", f"success_rate_{attack}_eps{eps:g}")
                correct, succeeded = self._score("test", *keys, victim, x_adv, y, clean)
                self._score("test", *(k + "_uint8" for k in keys), victim, quantize_uint8(x_adv), y, clean)
                if norm == "linf" and eps == hp.epsilon:
                    worst &= correct
                    fooled |= succeeded
                    shown[attack] = x_adv
        self.test_cells.update(cell("robust_acc"), worst)
        self.test_cells.update(cell("success_rate"), fooled[clean == y])
        return shown

    def _attack(self, attack: str, victim: str, x01, y, eps: float, batch_idx: int) -> torch.Tensor:
        fn, norm = ATTACKS[attack]
        kw: dict[str, Any] = {"eps": eps, "normalize": self.normalize, "targeted": self.hparams.targeted}
        if attack != "fgsm":
            kw["steps"] = self.hparams.steps
        if attack in ("pgd", "pgd_l2"):
            kw.update(norm=norm, restarts=self.hparams.restarts, generator=torch.Generator().manual_seed(batch_idx))
        if attack == "difgsm":
            kw["generator"] = torch.Generator().manual_seed(batch_idx)
        return fn(self.model(victim), x01, self._labels(y), **kw)

    def _transfer_examples(self, sources: list[str], x01, y, batch_idx: int) -> torch.Tensor:
        """``transfer_attack`` crafted on one proxy, or on the ensemble of several."""
        hp = self.hparams
        models = [self.model(s) for s in sources]
        proxy = models[0] if len(models) == 1 else Ensemble(models, mode=hp.ensemble)
        fn, _ = ATTACKS[hp.transfer_attack]
        kw: dict[str, Any] = {"eps": hp.epsilon, "normalize": self.normalize, "targeted": hp.targeted}
        if hp.transfer_attack != "fgsm":
            kw["steps"] = hp.steps
        if hp.transfer_attack in ("pgd", "difgsm"):
            kw["generator"] = torch.Generator().manual_seed(batch_idx)
        return fn(proxy, x01, self._labels(y), **kw)

    def _defences(self, x01, y, batch_idx: int) -> None:
        first, cell, hp = self._first(), self.cells["test"].index, self.hparams
        for text in hp.defences:
            name, _, strength = text.partition(":")
            tag = text.replace(":", "")
            transform = make_defence(name, int(strength))
            masked = InputTransformDefence(self.model(first), transform, normalize=self.normalize)
            bpda = InputTransformDefence(self.model(first), transform, normalize=self.normalize, bpda=True)
            with torch.no_grad():
                self.test_cells.update(cell(f"defence_{tag}_{first}_acc"), masked(x01).argmax(-1) == y)
            for mode, model in (("masked", masked), ("bpda", bpda)):
                generator = torch.Generator().manual_seed(batch_idx)
                x_adv = pgd(model, x01, y, eps=hp.epsilon, steps=hp.steps, generator=generator)
                with torch.no_grad():
                    correct = masked(x_adv).argmax(-1) == y
                self.test_cells.update(cell(f"defence_{tag}_{first}_robust_acc_{mode}"), correct)

    def _metric(self, stage: str) -> CellAccuracy:
        return self.val_cells if stage == "val" else self.test_cells

    def _score(self, stage: str, acc_key: str, success_key: str, victim: str, x_adv, y, clean) -> tuple:
        """The victim's accuracy on ``x_adv`` (pixels) into cell ``acc_key``, and the attack's success on the images
        it got right (``clean``: its clean predictions) into ``success_key``; returns (correct, succeeded) (B,)."""
        metric, cell = self._metric(stage), self.cells[stage].index
        pred = self._predict(victim, x_adv)
        succeeded, eligible = attack_success(clean, pred, y, self._labels(y) if self.hparams.targeted else None)
        metric.update(cell(acc_key), pred == y)
        metric.update(cell(success_key), succeeded[eligible])
        return pred == y, succeeded

    # ------------------------------------------------------------------ predict: HW10's hand-in
    def on_predict_start(self) -> None:
        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            raise SettingError(
                "predict returns adversarial images and no callback writes them: add "
                "callbacks.adversarial_image_writer.AdversarialImageWriter to trainer.callbacks "
                "(configs/attack_hw10.yaml does)"
            )
        if not self.proxy_specs:
            raise SettingError("model.init_args.proxies is empty: predict crafts its attack on the proxies")
        if len(self.trained) and not bool(self.fitted):
            raise SettingError(
                f"networks {list(self.trained)} are trained by fit and these are untrained: give every proxy and "
                "victim a path, or predict with --ckpt_path <the fit run's checkpoint>"
            )

    def predict_step(self, batch, batch_idx: int) -> dict[str, Any]:
        """``transfer_attack`` on the proxies' ensemble at ``epsilon``, as the 8-bit images a PNG keeps (within the
        budget of the 8-bit sources); with each zoo model's (clean, adversarial) correctness for the summary."""
        x, y, index = batch[0], batch[1], batch[2]  # (B, C, H, W) standardised, (B,), (B,)
        x01 = self.normalize.inverse(x)
        source = torch.round(x01 * 255.0)  # the 8-bit source pixels (exact: the DataModule's images are uint8)
        x_adv = self._transfer_examples([p.name for p in self.proxy_specs], x01, y, batch_idx)
        images = to_uint8_within(x_adv, source, self.hparams.epsilon)  # (B, C, H, W) uint8
        written = images.float() / 255.0
        correct = {
            s.name: (self._predict(s.name, x01) == y, self._predict(s.name, written) == y)
            for s in self.proxy_specs + self.victim_specs
        }
        return {"images": images, "index": index, "correct": correct}

    def on_test_epoch_end(self) -> None:
        values = self._log_cells("test", self.test_cells)
        self._test_figures(values)

    # ------------------------------------------------------------------ reporting
    def _log_cells(self, stage: str, metric: CellAccuracy) -> dict[str, float]:
        values = dict(zip(self.cells[stage], metric.compute().tolist()))  # synced across processes
        metric.reset()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name in ("acc", "robust_acc"))
        return values

    def _test_figures(self, values: dict[str, float]) -> None:
        if self._trainer is None or not self.trainer.is_global_zero:
            return
        hp, first = self.hparams, self._first()
        curves = {}
        for attack in hp.attacks:
            norm = ATTACKS[attack][1]
            budgets = hp.epsilons if norm == "linf" else hp.l2_epsilons
            curves[attack] = (norm, budgets, [values[f"robust_acc_{attack}_eps{e:g}"] for e in budgets])
        self.log_figure("test/robust_acc_vs_eps", robustness_curve_figure(curves, f"white-box attacks on {first}"))
        rows = self._transfer_rows()
        if rows:
            columns = [v.name for v in self.victim_specs]
            matrix = torch.tensor([[values[f"transfer_acc_{r}_to_{c}"] for c in columns] for r in rows])
            title = f"victim accuracy under {hp.transfer_attack}, eps {hp.epsilon:g}"
            self.log_figure("test/transfer_matrix", transfer_figure(matrix, rows, columns, title))
            self._log_table(rows, columns, matrix)
        if self._examples is not None and len(self._examples) > 2:
            self._example_figure(first)

    def _example_figure(self, first: str) -> None:
        ex = self._examples
        model = self.model(first)
        adversarial = {k: v for k, v in ex.items() if k not in ("clean", "labels")}
        with torch.no_grad():
            preds = {k: model(self.normalize(v)).argmax(-1) for k, v in {"clean": ex["clean"], **adversarial}.items()}
        gain = 0.5 / max(self.hparams.epsilon, 1e-3)  # a perturbation of eps shows as full contrast
        figure = examples_figure(ex["clean"], adversarial, ex["labels"], preds, gain)
        self.log_figure("test/perturbation_examples", figure)

    def _log_table(self, rows: list[str], columns: list[str], matrix: torch.Tensor) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                data = [[r, *[round(100 * float(v), 2) for v in matrix[i]]] for i, r in enumerate(rows)]
                logger.log_table("test/transfer_table", columns=["proxy", *columns], data=data)
        lines = [
            f"{r}: " + ", ".join(f"{c} {100 * float(v):.1f}" for c, v in zip(columns, matrix[i]))
            for i, r in enumerate(rows)
        ]
        rank_zero_info("transfer matrix (victim accuracy %, rows: proxies): " + "; ".join(lines))


class _Logits(nn.Module):
    """A loaded lecture as a plain classifier: ``forward`` is its ``logits`` (the contract for other lectures)."""

    def __init__(self, lecture: LectureModule) -> None:
        super().__init__()
        self.lecture = lecture

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lecture.logits(x)


class _Restandardised(nn.Module):
    """A zoo model trained on inputs standardised with its own statistics (``own``), fed the DataModule's inputs:
    ``model((x * data.std + data.mean - own.mean) / own.std)``. The map is affine, with no clamp, so gradients with
    respect to the pixels reach every pixel (a clamped round trip would zero them at the black and white ends)."""

    def __init__(self, model: nn.Module, *, data: Normalize, own: Normalize) -> None:
        super().__init__()
        self.model, self.data, self.own = model, data, own

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x * self.data.std + self.data.mean - self.own.mean) / self.own.std)
