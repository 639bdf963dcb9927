"""Pure pieces of lecture 12's algorithms: returns, advantages and the policy losses, tested without a Trainer.

Every function takes a rollout laid out as (T, N): T time steps of N environments, as
:class:`datamodules.rollouts.RolloutDataModule` collects it. Two kinds of episode end matter:

* ``terminated`` (the MDP ended: the pole fell): nothing follows, the value of the next state is 0.
* ``truncated`` (a time limit, or the rollout's end): the episode goes on beyond what we saw, so the return is
  *bootstrapped* with the critic's estimate ``next_values`` = V(s'_t) of the true next state s'_t (the final
  observation before an automatic reset). Without a critic, ``next_values`` is zero and a cut episode's return is
  the sum of the rewards seen.

The last step of a rollout is always treated as a cut: the returns of step T-1 never read beyond the rollout.

DQN's pieces (:class:`ReplayBuffer`, :func:`dqn_targets`, :func:`td_loss`, :func:`soft_update`,
:func:`linear_schedule`) work on single transitions (s, a, r, s', terminated) instead: a truncated transition
bootstraps from max_a Q(s', a) like any other, a terminated one does not.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "HW12_BRACKETS",
    "ReplayBuffer",
    "RunningMeanStd",
    "discounted_returns",
    "dqn_targets",
    "gae",
    "hw12_bracket",
    "linear_decay",
    "linear_schedule",
    "n_step_returns",
    "normalize_advantages",
    "policy_gradient_loss",
    "ppo_clipped_loss",
    "soft_update",
    "td_loss",
    "value_loss",
]


def _cuts(terminated: torch.Tensor, truncated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(continues, bootstraps) as floats (T, N): continues_t = 1 when step t+1 is in the same episode; bootstraps_t
    = 1 when the return of step t continues with V(s'_t) (truncated, or the rollout's last step, not terminated)."""
    term, trunc = terminated.float(), truncated.float().clone()
    trunc[-1] = 1.0  # the rollout's end cuts every episode still running
    done = torch.clamp(term + trunc, max=1.0)
    return 1.0 - done, trunc * (1.0 - term)


def discounted_returns(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    next_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reward-to-go G'_t = r_t + gamma r_{t+1} + ... up to the episode's end (lecture versions 1 and 2).

    Args:
        rewards: (T, N) rewards r_t.
        terminated: (T, N) bool, the episode ended at step t (no bootstrap).
        truncated: (T, N) bool, the episode was cut at step t (bootstrap with ``next_values``).
        gamma: discount in [0, 1]; 1 gives the lecture's cumulative reward G_t (version 1).
        next_values: (T, N) V(s'_t) of the true next state, or None (no critic: a cut return adds nothing).

    Returns:
        (T, N) returns.
    """
    continues, bootstraps = _cuts(terminated, truncated)
    nv = torch.zeros_like(rewards) if next_values is None else next_values
    returns = torch.zeros_like(rewards)
    future = torch.zeros_like(rewards[0])  # G'_{t+1} of the same episode
    for t in reversed(range(rewards.shape[0])):
        future = rewards[t] + gamma * (continues[t] * future + bootstraps[t] * nv[t])
        returns[t] = future
    return returns


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438).

    delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t);  A_t = delta_t + gamma lam (1 - done_t) A_{t+1}.
    lam = 0 is the one-step TD advantage (lecture version 4); lam = 1 is the Monte-Carlo return minus V(s_t).

    Args:
        rewards: (T, N) rewards.
        values: (T, N) V(s_t).
        next_values: (T, N) V(s'_t) of the true next state (the final observation where the episode ended).
        terminated: (T, N) bool.
        truncated: (T, N) bool.
        gamma: discount.
        lam: GAE's lambda in [0, 1].

    Returns:
        (T, N) advantages; the critic's target is advantages + values.
    """
    continues, _ = _cuts(terminated, truncated)
    deltas = rewards + gamma * (1.0 - terminated.float()) * next_values - values  # (T, N)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * continues[t] * running
        advantages[t] = running
    return advantages


def n_step_returns(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    n: int,
) -> torch.Tensor:
    """n-step returns G^(n)_t = r_t + ... + gamma^(k-1) r_{t+k-1} + gamma^k V(s'_{t+k-1}), k = min(n, steps to the
    episode's end or the rollout's end); no bootstrap after a termination (A2C, Mnih et al. 2016, arXiv 1602.01783).

    Args:
        rewards: (T, N) rewards.
        next_values: (T, N) V(s'_t).
        terminated: (T, N) bool.
        truncated: (T, N) bool.
        gamma: discount.
        n: steps before bootstrapping (1: the TD target r_t + gamma V(s'_t)).

    Returns:
        (T, N) returns.
    """
    continues, _ = _cuts(terminated, truncated)
    alive = (1.0 - terminated.float()) * next_values  # V(s'_t), 0 after a termination
    horizon = rewards.shape[0]
    returns = torch.zeros_like(rewards)
    for t in range(horizon):
        acc, discount, open_ = torch.zeros_like(rewards[0]), 1.0, torch.ones_like(rewards[0])
        for k in range(min(n, horizon - t)):
            acc = acc + open_ * discount * rewards[t + k]
            last = k == n - 1 or t + k == horizon - 1
            stop = torch.ones_like(open_) if last else 1.0 - continues[t + k]  # the bootstrap happens at this step
            acc = acc + open_ * stop * discount * gamma * alive[t + k]
            open_ = open_ * (1.0 - stop)
            discount *= gamma
        returns[t] = acc
    return returns


def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(A - mean A) / (std A + eps) over the whole batch."""
    if advantages.numel() < 2:
        return advantages - advantages.mean()
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def policy_gradient_loss(log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-mean_t A_t log pi(a_t | s_t): its gradient is the policy-gradient estimate mean_t A_t grad log pi (the
    advantages are constants here, so no gradient reaches a critic through them)."""
    return -(advantages.detach() * log_probs).mean()


def ppo_clipped_loss(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, arXiv 1707.06347), as a loss to minimise.

    L = -mean min(rho A, clip(rho, 1 - clip, 1 + clip) A) with rho = pi(a|s) / pi_old(a|s).

    Returns:
        The loss and statistics: ``ratio`` (mean rho), ``clip_fraction`` (share of samples clipped) and
        ``approx_kl`` (mean of (rho - 1) - log rho, an unbiased estimate of KL(pi_old || pi)).
    """
    log_ratio = log_probs - old_log_probs.detach()
    ratio = log_ratio.exp()
    adv = advantages.detach()
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * adv
    loss = -torch.min(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {
            "ratio": ratio.mean(),
            "clip_fraction": ((ratio - 1.0).abs() > clip).float().mean(),
            "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    targets: torch.Tensor,
    old_values: torch.Tensor | None = None,
    clip: float | None = None,
) -> torch.Tensor:
    """0.5 mean (V - target)^2; with ``clip``, PPO's clipped variant max((V - G)^2, (V_old + clip(V - V_old) - G)^2)
    that keeps the critic near the values the rollout was collected with."""
    targets = targets.detach()
    squared = (values - targets) ** 2
    if clip is not None and old_values is not None:
        old = old_values.detach()
        clipped = old + torch.clamp(values - old, -clip, clip)
        squared = torch.max(squared, (clipped - targets) ** 2)
    return 0.5 * squared.mean()


# HW12's grading brackets of the mean total reward over its 5 test episodes (seed 543).
HW12_BRACKETS = ("< 0", "0-99", "100-199", "200-240", ">= 241")


def hw12_bracket(mean_reward: float) -> str:
    """The HW12 bracket of a mean total reward: ``< 0``, ``0-99``, ``100-199``, ``200-240`` or ``>= 241``."""
    if mean_reward < 0:
        return HW12_BRACKETS[0]
    if mean_reward < 100:
        return HW12_BRACKETS[1]
    if mean_reward < 200:
        return HW12_BRACKETS[2]
    if mean_reward < 241:
        return HW12_BRACKETS[3]
    return HW12_BRACKETS[4]


# ------------------------------------------------------------------------------------------------------- DQN
class ReplayBuffer:
    """A ring buffer of transitions (s, a, r, s', terminated) as plain CPU tensors, sampled uniformly.

    Its :meth:`state_dict` holds tensors and ints only (the filled part), so it travels in a ``weights_only``
    checkpoint; :meth:`load_state_dict` restores contents, write position and size exactly.
    """

    KEYS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def __init__(self, capacity: int, obs_dim: int) -> None:
        """
        Args:
            capacity: transitions kept; the oldest is overwritten first once full.
            obs_dim: size of one observation.
        """
        self.capacity, self.obs_dim = capacity, obs_dim
        self.obs = torch.zeros(capacity, obs_dim)  # (C, D)
        self.actions = torch.zeros(capacity, dtype=torch.long)  # (C,)
        self.rewards = torch.zeros(capacity)  # (C,)
        self.next_obs = torch.zeros(capacity, obs_dim)  # (C, D)
        self.terminated = torch.zeros(capacity, dtype=torch.bool)  # (C,)
        self.pos, self.size = 0, 0

    def __len__(self) -> int:
        return self.size

    def add(self, **transitions: torch.Tensor) -> None:
        """Append B transitions given as ``obs`` (B, D), ``actions`` (B,), ``rewards`` (B,), ``next_obs`` (B, D),
        ``terminated`` (B,) (truncation is not stored: a truncated transition bootstraps like a running one)."""
        count = transitions["actions"].shape[0]
        idx = (self.pos + torch.arange(count)) % self.capacity  # (B,) wraps around
        for key in self.KEYS:
            getattr(self, key)[idx] = transitions[key].detach().to("cpu", getattr(self, key).dtype)
        self.pos = (self.pos + count) % self.capacity
        self.size = min(self.size + count, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions drawn uniformly with replacement from the filled part (CleanRL, SB3)."""
        idx = torch.randint(0, self.size, (batch_size,), generator=generator)  # (B,)
        return {key: getattr(self, key)[idx] for key in self.KEYS}

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        state: dict[str, torch.Tensor | int] = {key: getattr(self, key)[: self.size].clone() for key in self.KEYS}
        state.update(pos=self.pos, size=self.size, capacity=self.capacity)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay buffer of capacity {state['capacity']} cannot load into one of {self.capacity}")
        self.pos, self.size = int(state["pos"]), int(state["size"])
        for key in self.KEYS:
            getattr(self, key).zero_()
            getattr(self, key)[: self.size] = state[key]


def dqn_targets(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    next_q_target: torch.Tensor,
    gamma: float,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """TD targets y = r + gamma (1 - terminated) Q_target(s', a*), without gradient.

    DQN (Mnih et al. 2015): a* = argmax_a Q_target(s', a), so y uses max_a Q_target(s', a). Double DQN (van
    Hasselt et al. 2016, arXiv 1509.06461): a* = argmax_a Q_online(s', a), evaluated by the target network.

    Args:
        rewards: (B,) rewards.
        terminated: (B,) bool; a terminated transition adds nothing after r (a truncated one bootstraps).
        next_q_target: (B, A) Q_target(s', .).
        gamma: discount.
        next_q_online: (B, A) Q_online(s', .) for Double DQN; None for DQN.

    Returns:
        (B,) targets.
    """
    chooser = next_q_target if next_q_online is None else next_q_online
    best = chooser.argmax(dim=-1, keepdim=True)  # (B, 1)
    next_value = next_q_target.gather(-1, best).squeeze(-1)  # (B,)
    return (rewards + gamma * (1.0 - terminated.float()) * next_value).detach()


def td_loss(q_taken: torch.Tensor, targets: torch.Tensor, kind: Literal["huber", "mse"] = "huber") -> torch.Tensor:
    """Mean Huber loss (delta 1: Mnih et al.'s error clipping to [-1, 1]) or mean squared error of Q(s, a) - y."""
    targets = targets.detach()
    if kind == "huber":
        return F.smooth_l1_loss(q_taken, targets)
    return F.mse_loss(q_taken, targets)


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """theta_target <- tau theta_online + (1 - tau) theta_target (tau = 1: a hard copy, Mnih et al.)."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o, tau) if tau < 1.0 else t.copy_(o)


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """``start`` at step 0 moving linearly to ``end`` at ``duration``, then ``end`` (epsilon-greedy's schedule)."""
    if duration <= 0:
        return end
    return start + (end - start) * min(1.0, step / duration)


def linear_decay(rollout: int, total: int) -> float:
    """The learning-rate factor of rollout ``rollout`` (0-based) of ``total``: 1 at the first, falling linearly
    towards 0 (1/total at the last; CleanRL's ``frac = 1 - (iteration - 1) / num_iterations``)."""
    return max(0.0, 1.0 - rollout / max(total, 1))


class RunningMeanStd(nn.Module):
    """Running mean and variance of observations (Chan et al.'s parallel update), and the clipped standardisation
    (s - mean) / sqrt(var + eps) that SB3's ``VecNormalize`` and Gymnasium's ``NormalizeObservation`` apply.

    The statistics are buffers (float64), so they travel in the checkpoint with the weights (``weights_only``).
    """

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, eps: float = 1e-8) -> None:
        """
        Args:
            shape: shape of one observation.
            clip: standardised values are clipped to [-clip, clip] (SB3's ``clip_obs``).
            eps: added to the variance before the square root.
        """
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(eps, dtype=torch.float64))  # SB3's epsilon prior count

    @torch.no_grad()
    def update_from_moments(self, total: torch.Tensor, total_sq: torch.Tensor, count: torch.Tensor) -> None:
        """Merge a batch given by its sum, sum of squares (per feature) and size: moments that add over ranks."""
        total, total_sq, count = total.double(), total_sq.double(), count.double()
        batch_mean = total / count
        batch_var = (total_sq / count - batch_mean**2).clamp_min(0.0)
        delta, n = batch_mean - self.mean, self.count + count
        m2 = self.var * self.count + batch_var * count + delta**2 * self.count * count / n
        self.mean.add_(delta * count / n)
        self.var.copy_(m2 / n)
        self.count.copy_(n)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch (B, *shape) of observations."""
        x = x.double()
        self.update_from_moments(x.sum(0), (x**2).sum(0), torch.tensor(float(x.shape[0]), device=x.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / sqrt(var + eps), clipped; in x's dtype."""
        z = (x.double() - self.mean) / torch.sqrt(self.var + self.eps)
        return z.clamp(-self.clip, self.clip).to(x.dtype)
