"""Proximal policy optimisation (PPO-clip) — lecture 12 (Schulman et al. 2017, arXiv 1707.06347).

For each rollout of T steps of N environments collected with pi_old = pi_theta, :meth:`PPO.training_step` does:

1. Snapshot: log pi_old(a_t | s_t), V_old(s_t) and V(s'_t) of the rollout, without gradients.
2. Advantages: GAE(gamma, lambda) (arXiv 1506.02438) and critic targets G_t = A_t + V_old(s_t).
3. ``update_epochs`` passes over the T*N samples in ``num_minibatches`` shuffled minibatches, each:
   a. advantages normalised over the minibatch (``normalize_advantage``);
   b. clipped surrogate L_clip = -mean min(rho A, clip(rho, 1 +- ``clip_coef``) A), rho = pi_theta / pi_old;
   c. critic loss 0.5 (V - G)^2, clipped around V_old with ``clip_value`` (optional);
   d. loss = L_clip + ``value_coef`` L_V - ``entropy_coef`` H(pi_theta); gradient norm clipped to
      ``max_grad_norm``; one optimiser step.
   ``target_kl`` stops the passes early once the approximate KL of a minibatch exceeds it.

Orthogonal initialisation is ``model.init_args.agent.orthogonal_init``. Run: ``python cli.py fit --config
configs/ppo.yaml``
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from lecture_modules.base import bad_setting
from lecture_modules.rl import core
from lecture_modules.rl.agent import RLLecture, check_non_negative, check_unit_interval

__all__ = ["PPO"]


class PPO(RLLecture):
    """PPO: clipped surrogate, GAE, minibatch epochs and an entropy bonus (arXiv 1707.06347, lecture 12)."""

    def __init__(
        self,
        gae_lambda: float = 0.95,
        update_epochs: int = 4,
        num_minibatches: int = 4,
        clip_coef: float = 0.2,
        clip_value: float | None = None,
        normalize_advantage: bool = True,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        max_grad_norm: float | None = 0.5,
        target_kl: float | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            gae_lambda: GAE's lambda in [0, 1].
            update_epochs: passes over each rollout.
            num_minibatches: minibatches per pass (the rollout's T*N samples split evenly).
            clip_coef: the surrogate's clip range epsilon (> 0).
            clip_value: clip the critic's change around V_old to this range (null: no value clipping).
            normalize_advantage: standardise the advantages in every minibatch.
            value_coef: weight of the critic's loss.
            entropy_coef: weight of the entropy bonus.
            max_grad_norm: clip the global gradient norm to this (null: no clipping).
            target_kl: stop a rollout's passes once a minibatch's approximate KL exceeds this (null: never).
        """
        super().__init__(**kwargs)
        check_unit_interval(gae_lambda=gae_lambda)
        for name, value in (("update_epochs", update_epochs), ("num_minibatches", num_minibatches)):
            if value < 1:
                raise bad_setting(name, value, ">= 1")
        for name, value in (("clip_coef", clip_coef), ("clip_value", clip_value), ("max_grad_norm", max_grad_norm)):
            if value is not None and not value > 0:
                raise bad_setting(name, value, "> 0" + ("" if name == "clip_coef" else " or null"))
        check_non_negative(value_coef=value_coef, entropy_coef=entropy_coef)
        self.automatic_optimization = False  # several optimiser steps per rollout
        self.agent = self.build_agent(critic=True)

    # ------------------------------------------------------------------ the algorithm, in the paper's order
    def training_step(self, dataloader_iter: Iterator) -> None:
        hp = self.hparams
        batch = self.next_rollout(dataloader_iter)  # (T, N) tensors, collected now with pi_old = pi_theta
        obs, actions = self.flat(batch)  # (B, obs_dim), (B,) with B = T*N
        with torch.no_grad():  # step 1
            old_log_probs = self.agent.dist(obs).log_prob(actions)  # (B,)
            old_values, next_values = self.values_of(batch)  # (T, N), (T, N)
            rewards, term, trunc = batch["rewards"], batch["terminated"], batch["truncated"]
            advantages = core.gae(rewards, old_values, next_values, term, trunc, hp.gamma, hp.gae_lambda)  # step 2
            returns = (advantages + old_values).flatten()  # (B,)
            advantages, old_values = advantages.flatten(), old_values.flatten()
        samples = obs.shape[0]
        size = max(1, samples // hp.num_minibatches)
        for _ in range(hp.update_epochs):  # step 3
            order = torch.randperm(samples, device=self.device)  # global torch RNG: restored on resume
            for start in range(0, samples - size + 1, size):
                idx = order[start : start + size]
                kl = self.update(obs[idx], actions[idx], old_log_probs[idx], advantages[idx], returns[idx],
                                 old_values[idx])  # fmt: skip
                if hp.target_kl is not None and kl > hp.target_kl:
                    break
            else:
                continue
            break  # target_kl reached: no more passes over this rollout
        self.log_step_means()  # the rollout's mean loss terms, ratio, clip fraction and KL

    def update(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        old_values: torch.Tensor,
    ) -> float:
        """Steps 3a-3d on one minibatch; returns its approximate KL(pi_old || pi_theta) before the step."""
        hp = self.hparams
        if hp.normalize_advantage:
            advantages = core.normalize_advantages(advantages)  # 3a
        dist = self.agent.dist(obs)
        policy_loss, stats = core.ppo_clipped_loss(dist.log_prob(actions), old_log_probs, advantages, hp.clip_coef)
        values = self.agent.value(obs)  # (b,)
        terms = {
            "policy": policy_loss,  # 3b
            "value": hp.value_coef * core.value_loss(values, returns, old_values, hp.clip_value),  # 3c
        }
        if hp.entropy_coef > 0:
            terms["entropy"] = -hp.entropy_coef * dist.entropy().mean()
        loss = self.step_loss(terms, stats)  # 3d
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        if hp.max_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=hp.max_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        return float(stats["approx_kl"])
