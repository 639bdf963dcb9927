"""Advantage actor-critic (A2C) — lecture 12: the synchronous version of Mnih et al. 2016 (arXiv 1602.01783).

For each short rollout of T steps of N environments collected with pi_theta, :meth:`A2C.training_step` does:

1. Values: V(s_t) with gradients and V(s'_t) of every true next state (the final observation where an episode
   ended, so a time-limit truncation is bootstrapped and a termination is not).
2. Advantages: with ``gae_lambda`` set, GAE(gamma, lambda) (Schulman et al. 2016, arXiv 1506.02438) and critic
   targets A + V; with ``gae_lambda: null``, n-step returns G^(n)_t (``n_steps``) and A = G^(n) - V(s_t).
3. Loss: -mean A log pi(a|s) + ``value_coef`` 0.5 (V - target)^2 - ``entropy_coef`` H(pi); one optimiser step
   (gradient clipping: ``trainer.gradient_clip_val``).

Run: ``python cli.py fit --config configs/a2c.yaml``
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from lecture_modules.base import bad_setting
from lecture_modules.rl import core
from lecture_modules.rl.agent import RLLecture, check_non_negative, check_unit_interval

__all__ = ["A2C"]


class A2C(RLLecture):
    """Synchronous advantage actor-critic with n-step returns or GAE (Mnih et al., arXiv 1602.01783, lecture 12)."""

    def __init__(
        self,
        gae_lambda: float | None = 1.0,
        n_steps: int = 5,
        normalize_advantage: bool = False,
        value_coef: float = 0.5,
        entropy_coef: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            gae_lambda: GAE's lambda in [0, 1] (1: Monte-Carlo to the rollout's end, SB3's default); null uses
                n-step returns instead.
            n_steps: steps before bootstrapping when ``gae_lambda`` is null.
            normalize_advantage: standardise the advantages over each rollout.
            value_coef: weight of the critic's loss.
            entropy_coef: weight of the entropy bonus.
        """
        super().__init__(**kwargs)
        if gae_lambda is not None:
            check_unit_interval(gae_lambda=gae_lambda)
        if n_steps < 1:
            raise bad_setting("n_steps", n_steps, ">= 1")
        check_non_negative(value_coef=value_coef, entropy_coef=entropy_coef)
        self.agent = self.build_agent(critic=True)

    def training_step(self, dataloader_iter: Iterator) -> torch.Tensor:
        hp = self.hparams
        batch = self.next_rollout(dataloader_iter)  # (T, N) tensors, collected now with pi_theta
        values, next_values = self.values_of(batch)  # step 1: (T, N), (T, N)
        rewards, term, trunc = batch["rewards"], batch["terminated"], batch["truncated"]
        if hp.gae_lambda is not None:  # step 2
            advantages = core.gae(rewards, values.detach(), next_values, term, trunc, hp.gamma, hp.gae_lambda)
            targets = advantages + values.detach()
        else:
            targets = core.n_step_returns(rewards, next_values, term, trunc, hp.gamma, hp.n_steps)
            advantages = targets - values.detach()
        advantages = advantages.flatten()  # (T*N,)
        if hp.normalize_advantage:
            advantages = core.normalize_advantages(advantages)
        obs, actions = self.flat(batch)
        dist = self.agent.dist(obs)
        terms = {  # step 3
            "policy": core.policy_gradient_loss(dist.log_prob(actions), advantages),
            "value": hp.value_coef * core.value_loss(values, targets),
        }
        if hp.entropy_coef > 0:
            terms["entropy"] = -hp.entropy_coef * dist.entropy().mean()
        return self.combine_losses(terms)
