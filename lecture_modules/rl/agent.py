"""The shell shared by lecture 12's methods: the actor-critic network spec and the Lightning plumbing.

* :class:`AgentSpec` (``model.init_args.agent``): an MLP actor pi(a|s) and, when the method needs one, a separate MLP
  critic V(s); tanh or ReLU; CleanRL's orthogonal initialisation as a switch (hidden gain sqrt 2, actor output 0.01,
  critic output 1, biases 0).
* :class:`RLLecture`: hands the sampling and greedy policies to :class:`datamodules.rollouts.RolloutDataModule` at
  ``setup``; reads one rollout per training step through ``dataloader_iter`` (so it is collected with the current
  weights); logs ``rollout/return``, ``rollout/episodes``, ``rollout/env_steps``; evaluates greedy episodes as
  ``val/return`` / ``test/return`` and reports HW12's bracket at the end of ``test``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.distributions import Categorical
from torchmetrics import MeanMetric

from datamodules.errors import SettingError
from lecture_modules.base import LectureModule, bad_setting, figure_dir, free_name
from lecture_modules.nets import Spec
from lecture_modules.rl.core import RunningMeanStd, hw12_bracket, linear_decay
from lecture_modules.rl.video import record_episode, write_gif

__all__ = ["ActorCritic", "AgentSpec", "RLLecture", "check_non_negative", "check_unit_interval", "return_curve"]


def check_unit_interval(**settings: float) -> None:
    """SettingError naming ``model.init_args.<name>`` for a value outside [0, 1] (gamma, lambda)."""
    for name, value in settings.items():
        if not 0.0 <= value <= 1.0:
            raise bad_setting(name, value, "in [0, 1]")


def check_non_negative(**settings: float) -> None:
    """SettingError naming ``model.init_args.<name>`` for a negative (or NaN) value (loss weights)."""
    for name, value in settings.items():
        if not value >= 0:
            raise bad_setting(name, value, ">= 0")


@dataclass(frozen=True)
class AgentSpec(Spec):
    """The actor (and critic) networks.

    Attributes:
        widths: hidden units of each MLP layer (actor and critic alike).
        activation: ``tanh`` (CleanRL's and SB3's default for PPO/A2C) or ``relu``.
        orthogonal_init: orthogonal weights (gain sqrt 2; 0.01 for the actor's output, 1 for the critic's), zero
            biases; false keeps PyTorch's default initialisation.
    """

    widths: list[int] = field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu"] = "tanh"
    orthogonal_init: bool = True

    def validate(self, owner: str = "agent") -> None:
        if not self.widths or min(self.widths) < 1:
            raise bad_setting(f"{owner}.widths", self.widths, "a non-empty list of positive widths")
        if self.activation not in ("tanh", "relu"):
            raise bad_setting(f"{owner}.activation", self.activation, "'tanh' or 'relu'")

    def as_dict(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "activation": self.activation, "orthogonal_init": self.orthogonal_init}

    def mlp(self, inputs: int, outputs: int, output_gain: float) -> nn.Sequential:
        """[Linear -> activation] per width -> Linear(outputs)."""
        act = nn.Tanh if self.activation == "tanh" else nn.ReLU
        layers: list[nn.Module] = []
        width = inputs
        for hidden in self.widths:
            layers += [self._init(nn.Linear(width, hidden), math.sqrt(2)), act()]
            width = hidden
        layers.append(self._init(nn.Linear(width, outputs), output_gain))
        return nn.Sequential(*layers)

    def _init(self, layer: nn.Linear, gain: float) -> nn.Linear:
        if self.orthogonal_init:
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)
        return layer


class ActorCritic(nn.Module):
    """pi(a|s) as logits (B, A) and, with ``critic=True``, V(s) (B,) from a separate network."""

    def __init__(self, spec: AgentSpec, obs_dim: int, num_actions: int, critic: bool) -> None:
        """
        Args:
            spec: widths, activation and initialisation of both networks.
            obs_dim: size of one observation.
            num_actions: number of discrete actions.
            critic: build the critic V(s) too.
        """
        super().__init__()
        self.actor = spec.mlp(obs_dim, num_actions, output_gain=0.01)
        self.critic = spec.mlp(obs_dim, 1, output_gain=1.0) if critic else None

    def dist(self, obs: torch.Tensor) -> Categorical:
        return Categorical(logits=self.actor(obs))  # obs (B, obs_dim) -> pi(. | s) over (B, A)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        if self.critic is None:
            raise RuntimeError("this method has no critic")
        return self.critic(obs).squeeze(-1)  # (B,)


class RLLecture(LectureModule):
    """The shared shell of lecture 12's methods (not a lecture itself): a method calls :meth:`build_agent`."""

    def __init__(
        self,
        num_classes: int = 2,
        input_shape: tuple[int, ...] = (4,),
        agent: AgentSpec = AgentSpec(),
        gamma: float = 0.99,
        normalize_obs: bool = False,
        anneal_lr: bool = False,
        video_episodes: int = 1,
    ) -> None:
        """
        Args:
            num_classes: number of discrete actions (linked from the DataModule by the CLI).
            input_shape: shape of one observation (linked from the DataModule by the CLI).
            agent: the actor and critic networks.
            gamma: discount factor in [0, 1].
            normalize_obs: standardise observations with their running mean and variance (updated from every
                training rollout, frozen in evaluation, saved in the checkpoint; clipped to +-10).
            anneal_lr: scale the learning rate linearly from its configured value towards 0 over the run's rollouts.
            video_episodes: greedy episodes rendered as GIFs under the run folder (and logged to W&B) at the end of
                ``fit``; 0 turns the videos off.
        """
        super().__init__()
        agent = AgentSpec.of(agent, owner="agent")
        if num_classes < 2:
            raise bad_setting("num_classes", num_classes, ">= 2 actions (the CLI links it from the environment)")
        if len(input_shape) != 1:
            raise bad_setting("input_shape", input_shape, "a flat observation (D,) (linked from the environment)")
        check_unit_interval(gamma=gamma)
        if video_episodes < 0:
            raise bad_setting("video_episodes", video_episodes, ">= 0 (0: no videos)")
        self.save_hyperparameters(ignore=["agent"])
        self.hparams["agent"] = agent.as_dict()  # plain data: the checkpoint stays weights_only
        self.agent: ActorCritic | None = None
        # only when on, so the default state_dict (and its seeded initial weights) is unchanged
        self.obs_norm = RunningMeanStd(tuple(input_shape)) if normalize_obs else None
        self.rollout_return, self.val_return, self.test_return = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_length, self.test_length = MeanMetric(), MeanMetric()
        self.history: list[tuple[int, float]] = []  # (env steps of all ranks, val/return) of this process's run
        self._test_episodes: list[tuple[float, list[int]]] = []  # (total reward, actions) of each test episode
        self._step_terms: dict[str, list[torch.Tensor]] = {}  # loss terms of this rollout's gradient steps
        self._step_stats: dict[str, list[torch.Tensor]] = {}  # their statistics (PPO's ratio, KL, clip fraction)

    def build_agent(self, critic: bool) -> ActorCritic:
        """The actor and, with ``critic``, the critic, as ``hparams.agent`` describes them."""
        hp = self.hparams
        return ActorCritic(AgentSpec.of(hp.agent), hp.input_shape[0], hp.num_classes, critic=critic)

    # ------------------------------------------------------------------ observation normalisation
    def observe(self, obs: torch.Tensor) -> torch.Tensor:
        """What the networks see: ``obs`` standardised with the running statistics (``normalize_obs``), else as is."""
        return obs if self.obs_norm is None else self.obs_norm(obs)

    def update_obs_stats(self, obs: torch.Tensor) -> None:
        """Merge a rollout's raw observations (B, obs_dim) into the running statistics, summed over ranks (so every
        rank keeps the same statistics)."""
        obs = obs.double()
        moments = torch.cat([obs.sum(0), (obs**2).sum(0), obs.new_tensor([obs.shape[0]])])
        moments = self.trainer.strategy.reduce(moments, reduce_op="sum")
        d = obs.shape[1]
        self.obs_norm.update_from_moments(moments[:d], moments[d : 2 * d], moments[2 * d])

    # ------------------------------------------------------------------ policies handed to the DataModule
    @torch.no_grad()
    def sample_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """a ~ pi(. | s) for (N, obs_dim) observations (global torch RNG: restored on resume)."""
        return self.agent.dist(self.observe(obs.to(self.device))).sample()

    @torch.no_grad()
    def greedy_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """argmax_a pi(a | s): the deterministic policy of evaluation."""
        return self.agent.actor(self.observe(obs.to(self.device))).argmax(dim=-1)

    @torch.no_grad()
    def seeded_actions(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """a ~ pi(. | s) drawn from ``generator`` (a CPU generator) only: HW12's sampled test actions."""
        probs = self.agent.dist(self.observe(obs.to(self.device))).probs.cpu()  # (N, A)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "attach_policy"):
            raise SettingError(
                f"data.class_path must be datamodules.rollouts.RolloutDataModule for {type(self).__name__} (it "
                f"collects the rollouts with the lecture's policy), got {type(datamodule).__name__}"
            )
        datamodule.attach_policy(sample=self.sample_actions, greedy=self.greedy_actions, seeded=self.seeded_actions)

    # ------------------------------------------------------------------ one rollout per step
    def next_rollout(self, dataloader_iter: Iterator) -> dict[str, torch.Tensor]:
        """The next rollout, collected now with the current weights, on this module's device; logs ``rollout/*``."""
        batch = next(dataloader_iter)
        batch = batch[0] if isinstance(batch, tuple) else batch  # Lightning yields (batch, batch_idx, dl_idx)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        self.log_rollout(batch)
        if self.obs_norm is not None:  # the statistics absorb the rollout before it is learnt from
            self.update_obs_stats(batch["obs"].flatten(0, 1))
        if self.hparams.anneal_lr:
            self.anneal_learning_rate()
        return batch

    def anneal_learning_rate(self) -> None:
        """``anneal_lr``: lr = configured lr x (1 - k / K) for rollout k of the run's K (``trainer.max_epochs`` x
        rollouts per epoch), recomputed from the counters, so a resumed run follows the same schedule."""
        trainer, datamodule = self.trainer, self.trainer.datamodule
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise SettingError(
                f"trainer.max_epochs must be set (>= 1) with model.init_args.anneal_lr true (the schedule ends at the "
                f"run's last rollout), got {trainer.max_epochs}"
            )
        rollout = datamodule.env_steps // (datamodule.rollout_steps * datamodule.num_envs) - 1
        factor = linear_decay(rollout, trainer.max_epochs * trainer.num_training_batches)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
        self.log("train/lr", trainer.optimizers[0].param_groups[0]["lr"])

    def log(self, name: str, value: Any, *args: Any, batch_size: int | None = None, **kwargs: Any) -> None:
        """``LightningModule.log`` with ``batch_size`` 1 unless given: with ``training_step(self, dataloader_iter)``
        Lightning cannot infer it, and the shared ``combine_losses`` does not pass one (a loss is one value)."""
        super().log(name, value, *args, batch_size=1 if batch_size is None else batch_size, **kwargs)

    def step_loss(self, terms: dict[str, torch.Tensor], stats: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """One gradient step's loss for methods that take several per rollout (PPO, DQN): the terms summed (stopping
        on a non-finite one), kept with ``stats`` for :meth:`log_step_means`. Logging every minibatch through
        ``self.log`` cost about 1 ms a call, half of PPO's time on CartPole, so the means are logged once a rollout.
        """
        self.check_finite(terms)
        for store, values in ((self._step_terms, terms), (self._step_stats, stats or {})):
            for name, value in values.items():
                store.setdefault(name, []).append(value.detach())
        return torch.stack(list(terms.values())).sum()

    def log_step_means(self) -> None:
        """The rollout's mean loss terms (``train/loss``, ``train/loss_<term>`` through ``combine_losses``) and
        statistics (``train/<name>``) over its gradient steps; nothing when it took none."""
        if self._step_terms:
            self.combine_losses({name: torch.stack(v).mean() for name, v in self._step_terms.items()})
        for name, values in self._step_stats.items():
            self.log(f"train/{name}", torch.stack(values).mean())
        self._step_terms, self._step_stats = {}, {}

    def log_rollout(self, batch: dict[str, torch.Tensor]) -> None:
        datamodule = self.trainer.datamodule
        world = self.trainer.world_size
        if batch["episode_returns"].numel():
            self.rollout_return.update(batch["episode_returns"])
        kw = {"batch_size": batch["rewards"].numel()}
        self.log("rollout/return", self.rollout_return, on_step=False, on_epoch=True, prog_bar=True, **kw)
        self.log("rollout/env_steps", float(datamodule.env_steps * world), on_step=True, on_epoch=False, **kw)
        episodes = torch.tensor(float(datamodule.episodes), device=self.device)
        self.log("rollout/episodes", episodes, on_step=True, on_epoch=False, sync_dist=True, reduce_fx="sum", **kw)

    def flat(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(T*N, obs_dim) observations as the networks see them (:meth:`observe`) and (T*N,) actions."""
        return self.observe(batch["obs"].flatten(0, 1)), batch["actions"].flatten(0, 1)

    def values_of(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """V(s_t) with gradients and V(s'_t) without, both (T, N)."""
        t, n = batch["rewards"].shape
        values = self.agent.value(self.observe(batch["obs"].flatten(0, 1))).view(t, n)
        with torch.no_grad():
            next_values = self.agent.value(self.observe(batch["next_obs"].flatten(0, 1))).view(t, n)
        return values, next_values

    # ------------------------------------------------------------------ evaluation: greedy episodes
    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        ret, length = getattr(self, f"{stage}_return"), getattr(self, f"{stage}_length")
        ret.update(batch["return"])
        length.update(batch["length"])
        self.log(f"{stage}/return", ret, on_epoch=True, prog_bar=stage == "val", batch_size=1)
        self.log(f"{stage}/episode_length", length, on_epoch=True, batch_size=1)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")
        self._test_episodes.append((float(batch["return"].sum()), batch["actions"].tolist()))

    def on_test_epoch_start(self) -> None:
        self._test_episodes = []

    def on_validation_end(self) -> None:
        value = self.trainer.callback_metrics.get("val/return")
        if value is not None and not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            self.history.append((self.trainer.datamodule.env_steps * self.trainer.world_size, float(value)))

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        if self.history:
            self.log_figure("val/return_curve", return_curve(self.history, type(self).__name__))
        if self.hparams.video_episodes and not self.trainer.fast_dev_run:
            self.log_videos()

    def run_dir(self) -> Path:
        """The run's folder (the W&B run's files folder, else the logger's or the trainer's root): what a run writes
        goes under it."""
        return figure_dir(self.trainer).parent

    def log_videos(self) -> list[Path]:
        """``video_episodes`` greedy episodes (validation seeds) as GIFs under ``<run>/videos``, logged to W&B as
        ``val/episode_video``."""
        from lightning.pytorch.loggers import WandbLogger

        datamodule, out_dir = self.trainer.datamodule, self.run_dir() / "videos"
        out_dir.mkdir(parents=True, exist_ok=True)
        paths, captions = [], []
        for i in range(self.hparams.video_episodes):
            frames, fps, total, length = record_episode(
                datamodule.env_id, datamodule.policy(greedy=True), datamodule.val_seed + i,
                datamodule.max_episode_steps,
            )  # fmt: skip
            stem = f"episode{i}-step{self.trainer.global_step}"
            paths.append(write_gif(frames, out_dir / f"{free_name(out_dir, stem, ('.gif',))}.gif", fps))
            captions.append(f"seed {datamodule.val_seed + i}: return {total:.1f}, {length} steps")
            rank_zero_info(f"episode video {paths[-1]} ({captions[-1]}, {len(frames)} frames)")
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_video("val/episode_video", [str(p) for p in paths], step=self.trainer.global_step,
                                 caption=captions, format=["gif"] * len(paths))  # fmt: skip
        return paths

    def on_test_epoch_end(self) -> None:
        """HW12's report: the mean total reward of the test episodes, its grading bracket, and the homework's action
        list (the actions of every test episode) as JSON under ``<run>/hw12``."""
        mean = float(self.test_return.compute())
        self.last_test_bracket = hw12_bracket(mean)
        returns = ", ".join(f"{total:.1f}" for total, _ in self._test_episodes)
        path = self.export_actions() if self.trainer.is_global_zero else None
        rank_zero_info(
            f"HW12 protocol: mean total reward {mean:.1f} (episodes: {returns}), bracket {self.last_test_bracket}"
            + (f"; actions written to {path}" if path else "")
        )

    def export_actions(self) -> Path:
        """The test episodes' actions as plain JSON (never overwriting an earlier export): the environment, the
        seed, each episode's total reward and its list of actions."""
        datamodule, out_dir = self.trainer.datamodule, self.run_dir() / "hw12"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{free_name(out_dir, 'actions', ('.json',))}.json"
        export = {
            "env_id": datamodule.env_id, "test_seed": datamodule.test_seed,
            "returns": [total for total, _ in self._test_episodes],
            "actions": [actions for _, actions in self._test_episodes],
        }  # fmt: skip
        path.write_text(json.dumps(export))
        self.last_actions_path = path
        return path


def return_curve(history: list[tuple[int, float]], title: str):
    """Greedy evaluation return against environment steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps, returns = zip(*history, strict=True)
    ax.plot(steps, returns, marker="o", markersize=3)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("val/return (greedy)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig
