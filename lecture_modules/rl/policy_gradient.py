"""Policy gradient — lecture 12, built the way the lecture builds it, the advantage A_t as one switch.

For each rollout of T steps of N environments collected with the current policy pi_theta,
:meth:`PolicyGradient.training_step` does:

1. Advantage A_t of each (s_t, a_t), by ``advantage``:
   * ``cumulative`` (version 1): G_t = r_t + r_{t+1} + ... to the episode's end;
   * ``discounted`` (version 2, REINFORCE, Williams 1992): G'_t = r_t + gamma r_{t+1} + gamma^2 r_{t+2} + ...;
   * ``baseline`` (version 3): G'_t - b, b the mean of G' over the rollout;
   * ``mc_critic`` (version 3.5): G'_t - V(s_t), V learnt by regression on G' (a Monte-Carlo critic);
   * ``td_critic`` (version 4, advantage actor-critic): r_t + gamma V(s_{t+1}) - V(s_t), V learnt on that target.
2. Optionally standardise A over the rollout (``normalize_advantage``, off by default: the lecture's estimators
   as written; standardising subtracts the mean, so it makes version 3 the same as version 2).
3. Loss: -mean A_t log pi(a_t | s_t)  (+ ``value_coef`` x the critic's squared error, - ``entropy_coef`` x entropy);
   one optimiser step.

Versions 1-3 have no critic: an episode still running at the rollout's end adds only the rewards seen (make
rollouts at least one episode long: ``data.init_args.rollout_steps``); with a critic it is bootstrapped with V.
Version 4 bootstraps from its own critic, so it needs many small updates (short rollouts), as A2C makes them.

Run: ``python cli.py fit --config configs/policy_gradient.yaml``
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch

from lecture_modules.base import bad_setting
from lecture_modules.rl import core
from lecture_modules.rl.agent import RLLecture, check_non_negative

__all__ = ["ADVANTAGES", "PolicyGradient"]

ADVANTAGES = ("cumulative", "discounted", "baseline", "mc_critic", "td_critic")
Advantage = Literal["cumulative", "discounted", "baseline", "mc_critic", "td_critic"]


class PolicyGradient(RLLecture):
    """Policy gradient, the advantage as lecture 12 builds it: versions 1, 2, 3, 3.5, 4 (REINFORCE is version 2)."""

    def __init__(
        self,
        advantage: Advantage = "baseline",
        normalize_advantage: bool = False,
        value_coef: float = 0.5,
        entropy_coef: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            advantage: the lecture's version: cumulative (gamma 1 whatever ``gamma`` says), discounted, baseline,
                mc_critic or td_critic.
            normalize_advantage: standardise the advantages over each rollout (mean 0, std 1); this subtracts a
                mean itself, so with it version 3 (``baseline``) is version 2.
            value_coef: weight of the critic's squared error (mc_critic, td_critic).
            entropy_coef: weight of the entropy bonus (0: none).
        """
        super().__init__(**kwargs)
        if advantage not in ADVANTAGES:
            raise bad_setting("advantage", advantage, f"one of {', '.join(ADVANTAGES)}")
        check_non_negative(value_coef=value_coef, entropy_coef=entropy_coef)
        self.agent = self.build_agent(critic=advantage in ("mc_critic", "td_critic"))

    # ------------------------------------------------------------------ the algorithm, in the lecture's order
    def training_step(self, dataloader_iter: Iterator) -> torch.Tensor:
        batch = self.next_rollout(dataloader_iter)  # (T, N) tensors, collected now with pi_theta
        obs, actions = self.flat(batch)  # (T*N, obs_dim), (T*N,)
        advantages, critic_loss = self.advantages(batch)  # step 1: (T, N)
        advantages = advantages.flatten()  # (T*N,)
        if self.hparams.normalize_advantage:
            advantages = core.normalize_advantages(advantages)  # step 2
        dist = self.agent.dist(obs)
        terms = {"policy": core.policy_gradient_loss(dist.log_prob(actions), advantages)}  # step 3
        if critic_loss is not None:
            terms["value"] = self.hparams.value_coef * critic_loss
        if self.hparams.entropy_coef > 0:
            terms["entropy"] = -self.hparams.entropy_coef * dist.entropy().mean()
        return self.combine_losses(terms)

    def advantages(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A_t (T, N), without gradient, and the critic's loss (None without a critic)."""
        kind, gamma = self.hparams.advantage, self.hparams.gamma
        rewards, term, trunc = batch["rewards"], batch["terminated"], batch["truncated"]
        if kind in ("cumulative", "discounted", "baseline"):
            returns = core.discounted_returns(rewards, term, trunc, 1.0 if kind == "cumulative" else gamma)
            return (returns - returns.mean() if kind == "baseline" else returns), None
        values, next_values = self.values_of(batch)  # (T, N) with gradient, (T, N) without
        if kind == "mc_critic":
            target = core.discounted_returns(rewards, term, trunc, gamma, next_values=next_values)
        else:  # td_critic: the one-step TD target
            target = core.n_step_returns(rewards, next_values, term, trunc, gamma, n=1)
        return (target - values).detach(), core.value_loss(values, target)
