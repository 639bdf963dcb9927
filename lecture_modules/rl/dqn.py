"""Deep Q-network (DQN) and Double DQN — lecture 12 (Mnih et al. 2015, Nature 518; van Hasselt et al. 2016,
arXiv 1509.06461).

For each rollout of T steps of N environments, :meth:`DQN.training_step` does:

1. Act: the rollout is collected epsilon-greedily with the online network Q (a random action with probability
   epsilon, else argmax_a Q(s, a)); epsilon falls linearly from ``epsilon_start`` to ``epsilon_end`` over the first
   ``exploration_steps`` environment steps (all ranks).
2. Store: its T*N transitions (s, a, r, s', terminated) go into the replay buffer (``buffer_size``, oldest
   overwritten first).
3. Learn: once the buffer holds ``learning_starts`` transitions, one gradient step per ``train_frequency``
   transitions collected, each on ``batch_size`` transitions drawn uniformly from the buffer:
   a. TD target y = r + gamma (1 - terminated) Q_target(s', a*), a* = argmax_a Q_target(s', a) (DQN) or
      argmax_a Q(s', a) (``double: true``, Double DQN), without gradient;
   b. loss = Huber(Q(s, a) - y) (``loss``; Huber is the paper's error clipping); gradient norm clipped to
      ``max_grad_norm``; one optimiser step of Q only;
   c. every ``target_update_interval`` gradient steps: theta_target <- tau theta + (1 - tau) theta_target
      (``tau`` 1: the paper's hard copy).

The replay buffer, the step counters and the RNG states travel in the checkpoint (tensors and ints only). Run:
``python cli.py fit --config configs/dqn.yaml``
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, Literal

import torch

from lecture_modules.base import bad_setting
from lecture_modules.rl import core
from lecture_modules.rl.agent import AgentSpec, RLLecture, check_unit_interval

__all__ = ["DQN"]

LOSSES = ("huber", "mse")


class DQN(RLLecture):
    """DQN: replay, a target network, epsilon-greedy; Double DQN as a switch (Mnih et al. 2015, lecture 12)."""

    def __init__(
        self,
        agent: AgentSpec = AgentSpec(widths=[256, 256], activation="relu", orthogonal_init=False),
        double: bool = False,
        buffer_size: int = 100_000,
        batch_size: int = 64,
        learning_starts: int = 1000,
        train_frequency: int = 4,
        target_update_interval: int = 250,
        tau: float = 1.0,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.05,
        exploration_steps: int = 10_000,
        loss: Literal["huber", "mse"] = "huber",
        max_grad_norm: float | None = 10.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            agent: the Q-network Q(s, .): an MLP with one output per action (``agent.widths``, ``agent.activation``).
            double: Double DQN: the online network picks a*, the target network evaluates it.
            buffer_size: transitions kept in the replay buffer on each rank.
            batch_size: transitions per gradient step, drawn uniformly from the buffer.
            learning_starts: transitions in the buffer before the first gradient step.
            train_frequency: transitions collected (on this rank) per gradient step.
            target_update_interval: gradient steps between target-network updates.
            tau: target update theta_target <- tau theta + (1 - tau) theta_target, in (0, 1] (1: a hard copy).
            epsilon_start: exploration rate at the first step, in [0, 1].
            epsilon_end: exploration rate after ``exploration_steps``, in [0, 1].
            exploration_steps: environment steps (all ranks) over which epsilon falls linearly.
            loss: ``huber`` (smooth L1, delta 1) or ``mse`` on Q(s, a) - y.
            max_grad_norm: clip the global gradient norm to this (null: no clipping).
        """
        super().__init__(agent=agent, **kwargs)
        check_unit_interval(epsilon_start=epsilon_start, epsilon_end=epsilon_end)
        positive = ("buffer_size", "batch_size", "train_frequency", "target_update_interval")
        for name in positive:
            if locals()[name] < 1:
                raise bad_setting(name, locals()[name], ">= 1")
        if buffer_size < batch_size:
            raise bad_setting("buffer_size", buffer_size, f">= batch_size ({batch_size})")
        if not 0 <= learning_starts <= buffer_size:
            raise bad_setting("learning_starts", learning_starts, f"in [0, buffer_size ({buffer_size})]")
        if exploration_steps < 0:
            raise bad_setting("exploration_steps", exploration_steps, ">= 0")
        if not 0.0 < tau <= 1.0:
            raise bad_setting("tau", tau, "in (0, 1]")
        if loss not in LOSSES:
            raise bad_setting("loss", loss, "'huber' or 'mse'")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise bad_setting("max_grad_norm", max_grad_norm, "> 0 or null")
        self.automatic_optimization = False  # several gradient steps per rollout
        spec, obs_dim = AgentSpec.of(self.hparams.agent), self.hparams.input_shape[0]
        self.q = spec.mlp(obs_dim, self.hparams.num_classes, output_gain=1.0)  # Q(s, .): (B, obs_dim) -> (B, A)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)  # saved with the weights, never optimised
        self.buffer = core.ReplayBuffer(capacity=buffer_size, obs_dim=obs_dim)  # raw observations
        self.updates, self.pending = 0, 0  # gradient steps so far; transitions not yet paid with a gradient step

    # ------------------------------------------------------------------ the algorithm, in the paper's order
    def training_step(self, dataloader_iter: Iterator) -> None:
        hp = self.hparams
        batch = self.next_rollout(dataloader_iter)  # step 1: (T, N) tensors, collected epsilon-greedily now
        obs, actions = batch["obs"].flatten(0, 1), batch["actions"].flatten()  # (B, obs_dim), (B,) with B = T*N
        self.buffer.add(  # step 2: raw observations, standardised when sampled (``normalize_obs``)
            obs=obs,
            actions=actions,
            rewards=batch["rewards"].flatten(),
            next_obs=batch["next_obs"].flatten(0, 1),
            terminated=batch["terminated"].flatten(),
        )
        updates, self.pending = divmod(self.pending + actions.numel(), hp.train_frequency)
        self.log("train/epsilon", self.epsilon())
        if len(self.buffer) < hp.learning_starts:
            return
        for _ in range(updates):  # step 3
            self.update(self.buffer.sample(hp.batch_size))  # global torch RNG: restored on resume
        self.log_step_means()  # the rollout's mean TD loss

    def update(self, sample: dict[str, torch.Tensor]) -> None:
        """Steps 3a-3c on one sampled minibatch."""
        hp = self.hparams
        loss = self.step_loss({"td": self.loss_of(sample)})  # 3a, 3b
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        if hp.max_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=hp.max_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        self.updates += 1
        if self.updates % hp.target_update_interval == 0:
            core.soft_update(self.q_target, self.q, hp.tau)  # 3c

    def loss_of(self, sample: dict[str, torch.Tensor]) -> torch.Tensor:
        """The TD loss of a minibatch of transitions; its gradient reaches the online network only."""
        sample = {k: v.to(self.device) for k, v in sample.items()}
        sample["obs"], sample["next_obs"] = self.observe(sample["obs"]), self.observe(sample["next_obs"])
        q_taken = self.q(sample["obs"]).gather(-1, sample["actions"][:, None]).squeeze(-1)  # Q(s, a): (b,)
        return core.td_loss(q_taken, self.targets(sample), self.hparams.loss)

    @torch.no_grad()
    def targets(self, sample: dict[str, torch.Tensor]) -> torch.Tensor:
        """y = r + gamma (1 - terminated) Q_target(s', a*) (b,): a* from Q_target (DQN) or from Q (Double DQN)."""
        next_q_target = self.q_target(sample["next_obs"])  # (b, A)
        next_q_online = self.q(sample["next_obs"]) if self.hparams.double else None  # (b, A)
        return core.dqn_targets(sample["rewards"], sample["terminated"], next_q_target, self.hparams.gamma,
                                next_q_online=next_q_online)  # fmt: skip

    # ------------------------------------------------------------------ policies handed to the DataModule
    def epsilon(self) -> float:
        """The exploration rate now: linear in the environment steps of all ranks so far."""
        hp = self.hparams
        trainer = self._trainer
        steps = trainer.datamodule.env_steps * trainer.world_size if trainer is not None else 0
        return core.linear_schedule(hp.epsilon_start, hp.epsilon_end, hp.exploration_steps, steps)

    @torch.no_grad()
    def sample_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """Epsilon-greedy actions (N,) for (N, obs_dim) observations (global torch RNG: restored on resume)."""
        obs = obs.to(self.device)
        greedy = self.q(self.observe(obs)).argmax(dim=-1)  # (N,)
        explore = torch.rand(obs.shape[0], device=self.device) < self.epsilon()  # (N,)
        random = torch.randint(0, self.hparams.num_classes, (obs.shape[0],), device=self.device)  # (N,)
        return torch.where(explore, random, greedy)

    @torch.no_grad()
    def greedy_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """argmax_a Q(s, a): the deterministic policy of evaluation."""
        return self.q(self.observe(obs.to(self.device))).argmax(dim=-1)

    @torch.no_grad()
    def seeded_actions(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """DQN's sampled test actions: epsilon-greedy at ``epsilon_end`` (its policy at the end of exploration), the
        random draws from ``generator`` (a CPU generator) only."""
        greedy = self.greedy_actions(obs).cpu()  # (N,)
        explore = torch.rand(obs.shape[0], generator=generator) < self.hparams.epsilon_end  # (N,)
        random = torch.randint(0, self.hparams.num_classes, (obs.shape[0],), generator=generator)  # (N,)
        return torch.where(explore, random, greedy)

    # ------------------------------------------------------------------ resume: the buffer and the counters
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["replay_buffer"] = self.buffer.state_dict()  # tensors and ints: weights_only
        checkpoint["dqn_counters"] = {"updates": self.updates, "pending": self.pending}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if "replay_buffer" in checkpoint:
            self.buffer.load_state_dict(checkpoint["replay_buffer"])
        counters = checkpoint.get("dqn_counters", {})
        self.updates, self.pending = int(counters.get("updates", 0)), int(counters.get("pending", 0))
