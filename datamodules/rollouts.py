"""Rollouts from Gymnasium environments as a DataModule: the data of lecture 12 (reinforcement learning).

Design: the data of an RL run depends on the policy being trained, so the lecture hands its policy to the
DataModule (:meth:`RolloutDataModule.attach_policy`, called from the lecture's ``setup``) and every training
"batch" is one rollout collected with the *current* weights by :class:`RolloutDataset`:

* ``num_envs`` copies of ``env_id`` in a Gymnasium ``SyncVectorEnv`` with same-step automatic reset (the true
  final observation of an ended episode is kept as ``next_obs``, so a truncated episode can be bootstrapped);
* a rollout is ``rollout_steps`` steps of every environment: tensors shaped (T, N, ...): ``obs``, ``actions``,
  ``rewards``, ``terminated``, ``truncated``, ``next_obs``, plus the returns and lengths of the episodes that
  ended in it;
* an epoch is ``rollouts_per_epoch`` rollouts and starts from freshly seeded environments (seed
  ``seed + rank * num_envs + i`` for environment i at epoch 0, shifted by ``world_size * num_envs`` per epoch): a
  live environment's internal state cannot be saved in a ``weights_only`` checkpoint, but a run resumed from a
  checkpoint taken at an epoch's end collects exactly what the uninterrupted run collects. Episodes still running
  at an epoch's end are cut there (treated as truncated).

The lecture must read batches with ``training_step(self, dataloader_iter)``: Lightning's default fetcher collects
the next batch before the current step updates the weights, which would collect each rollout with the previous
policy. Validation and test run greedy episodes (:class:`EvalEpisodes`) at fixed seeds; the test default is HW12's
protocol: seed 543, 5 episodes in one environment seeded once. HW12's notebook *samples* its test actions
(``agent.sample(state)`` after ``fix(env, 543)``, which also seeds torch); ``hw12_sample_actions: true`` does that:
the test episodes sample from the lecture's policy with a generator seeded with ``test_seed`` afresh at every test,
so a sampled test is reproducible too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from datamodules.errors import SettingError

__all__ = [
    "EvalEpisodes", "Policy", "RolloutDataModule", "RolloutDataset", "SeededPolicy", "make_env", "run_episodes",
]  # fmt: skip

Policy = Callable[[torch.Tensor], torch.Tensor]
"""obs (N, *obs_shape) float32 -> actions (N,) int64, without gradients."""
SeededPolicy = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""(obs (N, *obs_shape), a CPU generator) -> actions (N,): a sampling policy that draws from the generator only."""

DATA_ARGS = "data.init_args"


def make_env(env_id: str, max_episode_steps: int | None = None, render_mode: str | None = None) -> Any:
    """``gymnasium.make(env_id)``, with :class:`~datamodules.errors.SettingError` naming ``data.init_args.env_id``
    for an unknown id, a continuous action space or a non-vector observation (``render_mode="rgb_array"``: frames
    for videos)."""
    import gymnasium as gym

    try:
        env = gym.make(env_id, max_episode_steps=max_episode_steps, render_mode=render_mode)
    except gym.error.Error as error:
        raise SettingError(
            f"{DATA_ARGS}.env_id must be a registered Gymnasium environment, got {env_id!r} ({error})"
        ) from None
    except (ImportError, ModuleNotFoundError) as error:
        raise SettingError(f"{DATA_ARGS}.env_id {env_id!r} needs a package that is not installed: {error}") from None
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise SettingError(
            f"{DATA_ARGS}.env_id must have a discrete action space (the policies here are categorical), got "
            f"{env_id!r} with {env.action_space}"
        )
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        env.close()
        raise SettingError(
            f"{DATA_ARGS}.env_id must have a flat Box observation space (vector states), got {env_id!r} with "
            f"{env.observation_space}"
        )
    return env


def _as_obs(obs: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(obs), dtype=torch.float32)


def run_episodes(
    env: Any, policy: Policy, seeds: list[int | None], on_step: Callable[[Any], None] | None = None
) -> list[tuple[float, list[int]]]:
    """Run one episode per seed in ``env`` (a seed of None continues the environment's random stream, as HW12's
    notebook does after seeding once); returns (total reward, the actions taken) per episode. ``on_step(env)`` is
    called after every reset and step (to grab a rendered frame)."""
    results = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        total, actions, done = 0.0, [], False
        while not done:
            if on_step is not None:
                on_step(env)
            action = int(policy(_as_obs(obs)[None])[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), bool(terminated or truncated)
            actions.append(action)
        if on_step is not None:
            on_step(env)
        results.append((total, actions))
    return results


class RolloutDataset(IterableDataset):
    """One epoch: ``rollouts_per_epoch`` rollouts of ``rollout_steps`` steps collected with the attached policy."""

    def __init__(self, owner: RolloutDataModule) -> None:
        """
        Args:
            owner: the DataModule that holds the environments, the policy and the counters.
        """
        self.owner = owner

    def __len__(self) -> int:
        return self.owner.rollouts_per_epoch  # a known epoch length: validation runs at each epoch's end

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        owner = self.owner
        envs, obs = owner.start_epoch()
        for _ in range(owner.rollouts_per_epoch):
            rollout, obs = collect(envs, owner.policy(), obs, owner.rollout_steps, owner.episode_tracker)
            owner.env_steps += owner.rollout_steps * owner.num_envs
            owner.episodes += len(rollout["episode_returns"])
            yield rollout


class EpisodeTracker:
    """Running total reward and length of each environment's current episode."""

    def __init__(self, num_envs: int) -> None:
        """
        Args:
            num_envs: environments tracked side by side.
        """
        self.returns, self.lengths = np.zeros(num_envs), np.zeros(num_envs, dtype=np.int64)

    def step(self, rewards: np.ndarray, done: np.ndarray) -> tuple[list[float], list[int]]:
        self.returns += rewards
        self.lengths += 1
        finished = (self.returns[done].tolist(), self.lengths[done].tolist())
        self.returns[done], self.lengths[done] = 0.0, 0
        return finished


def collect(
    envs: Any, policy: Policy, obs: np.ndarray, steps: int, tracker: EpisodeTracker
) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """``steps`` steps of every environment of ``envs`` with ``policy``; returns the rollout and the last obs."""
    buffers: dict[str, list] = {k: [] for k in ("obs", "actions", "rewards", "terminated", "truncated", "next_obs")}
    episode_returns, episode_lengths = [], []
    for _ in range(steps):
        obs_t = _as_obs(obs)  # (N, obs_dim)
        actions = policy(obs_t).cpu()  # (N,)
        next_obs, rewards, terminated, truncated, info = envs.step(actions.numpy())
        true_next = np.array(next_obs, copy=True)
        done = np.logical_or(terminated, truncated)
        for i in np.flatnonzero(done):  # same-step reset: the episode's last observation is in info
            true_next[i] = info["final_obs"][i]
        finished = tracker.step(np.asarray(rewards, dtype=np.float64), done)
        episode_returns += finished[0]
        episode_lengths += finished[1]
        for key, value in zip(buffers, (obs_t, actions, rewards, terminated, truncated, true_next), strict=True):
            buffers[key].append(value)
        obs = next_obs
    rollout = {
        "obs": torch.stack(buffers["obs"]),  # (T, N, obs_dim)
        "actions": torch.stack(buffers["actions"]).long(),  # (T, N)
        "rewards": torch.as_tensor(np.stack(buffers["rewards"]), dtype=torch.float32),  # (T, N)
        "terminated": torch.as_tensor(np.stack(buffers["terminated"])),  # (T, N) bool
        "truncated": torch.as_tensor(np.stack(buffers["truncated"])),  # (T, N) bool
        "next_obs": _as_obs(np.stack(buffers["next_obs"])),  # (T, N, obs_dim)
        "episode_returns": torch.tensor(episode_returns, dtype=torch.float32),  # (E,)
        "episode_lengths": torch.tensor(episode_lengths, dtype=torch.float32),  # (E,)
    }
    return rollout, obs


class EvalEpisodes(IterableDataset):
    """Evaluation episodes, greedy or sampled: yields one ``{"return", "length", "actions"}`` per episode
    (``actions``: (L,) int64, the homework's action list), every rank the same ones."""

    def __init__(
        self, owner: RolloutDataModule, seed: int, episodes: int, seed_each: bool, sampled: bool = False
    ) -> None:
        """
        Args:
            owner: the DataModule that names the environment and holds the policies.
            seed: seed of the first episode (and, with ``sampled``, of the actions' generator).
            episodes: episodes to run.
            seed_each: reset episode i with seed + i; otherwise seed the first reset only (HW12's notebook).
            sampled: sample the actions with a generator seeded with ``seed`` (HW12's notebook) instead of greedy.
        """
        self.owner, self.seed, self.episodes, self.seed_each = owner, seed, episodes, seed_each
        self.sampled = sampled

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        seeds = [self.seed + i if self.seed_each else (self.seed if i == 0 else None) for i in range(self.episodes)]
        policy = self.owner.seeded_policy(self.seed) if self.sampled else self.owner.policy(greedy=True)
        env = make_env(self.owner.env_id, self.owner.max_episode_steps)
        try:
            results = run_episodes(env, policy, seeds)
        finally:
            env.close()
        for total, actions in results:
            yield {
                "return": torch.tensor([total]),
                "length": torch.tensor([float(len(actions))]),
                "actions": torch.tensor(actions, dtype=torch.int64),
            }


class RolloutDataModule(L.LightningDataModule):
    """Rollouts of a Gymnasium environment with a discrete action space, collected with the lecture's policy."""

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        num_envs: int = 4,
        rollout_steps: int = 128,
        rollouts_per_epoch: int = 10,
        seed: int | None = None,
        max_episode_steps: int | None = None,
        val_episodes: int = 5,
        val_seed: int = 10_000,
        test_episodes: int = 5,
        test_seed: int = 543,
        hw12_sample_actions: bool = False,
    ) -> None:
        """
        Args:
            env_id: a Gymnasium id with a discrete action space and vector observations (CartPole-v1: no download).
            num_envs: environments stepped together on each rank (a SyncVectorEnv).
            rollout_steps: steps of every environment per rollout (one training batch: rollout_steps x num_envs).
            rollouts_per_epoch: rollouts per epoch; every epoch starts from freshly seeded environments.
            seed: environment seed; None takes the run's seed_everything value (else 0).
            max_episode_steps: time limit of an episode (None: the environment's own, 500 for CartPole-v1).
            val_episodes: greedy episodes per validation, seeds val_seed, val_seed + 1, ...
            val_seed: seed of the first validation episode.
            test_episodes: greedy test episodes in one environment seeded once with test_seed (HW12: 5).
            test_seed: seed of the test environment (HW12: 543).
            hw12_sample_actions: the test episodes sample their actions from the policy (HW12's notebook) with a
                generator seeded with ``test_seed`` at every test, instead of taking the greedy action.
        """
        super().__init__()
        for name, value in (("num_envs", num_envs), ("rollout_steps", rollout_steps)):
            if value < 1:
                raise SettingError(f"{DATA_ARGS}.{name} must be >= 1, got {value}")
        for name, value in (("rollouts_per_epoch", rollouts_per_epoch), ("val_episodes", val_episodes)):
            if value < 1:
                raise SettingError(f"{DATA_ARGS}.{name} must be >= 1, got {value}")
        if test_episodes < 1:
            raise SettingError(f"{DATA_ARGS}.test_episodes must be >= 1, got {test_episodes}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise SettingError(f"{DATA_ARGS}.max_episode_steps must be >= 1 or null, got {max_episode_steps}")
        env = make_env(env_id, max_episode_steps)
        self.num_classes = int(env.action_space.n)  # linked into the lecture: the number of actions
        self.input_shape = tuple(int(d) for d in env.observation_space.shape)  # linked: the observation's shape
        env.close()
        self.env_id, self.num_envs, self.rollout_steps = env_id, num_envs, rollout_steps
        self.rollouts_per_epoch, self.max_episode_steps = rollouts_per_epoch, max_episode_steps
        self.seed = seed
        self.val_episodes, self.val_seed, self.test_episodes, self.test_seed = (
            val_episodes, val_seed, test_episodes, test_seed,
        )  # fmt: skip
        self.hw12_sample_actions = hw12_sample_actions
        self.epoch, self.env_steps, self.episodes = 0, 0, 0  # counters of this rank, saved in checkpoints
        self.envs: Any = None
        self.episode_tracker = EpisodeTracker(num_envs)
        self._policies: dict[bool, Policy] = {}
        self._seeded: SeededPolicy | None = None

    # ------------------------------------------------------------------ the lecture's policy
    def attach_policy(self, sample: Policy, greedy: Policy, seeded: SeededPolicy | None = None) -> None:
        """Called by the lecture at ``setup``: ``sample`` collects the rollouts, ``greedy`` plays evaluation,
        ``seeded`` (optional) samples the test actions from a given generator (``hw12_sample_actions``)."""
        self._policies = {False: sample, True: greedy}
        self._seeded = seeded

    def seeded_policy(self, seed: int) -> Policy:
        """The attached sampling policy drawing from a CPU generator seeded with ``seed`` now (reproducible)."""
        if self._seeded is None:
            raise SettingError(
                f"{DATA_ARGS}.hw12_sample_actions needs a lecture that samples with a given generator; the attached "
                "one does not (set it to false)"
            )
        generator, seeded = torch.Generator().manual_seed(seed), self._seeded
        return lambda obs: seeded(obs, generator)

    def policy(self, greedy: bool = False) -> Policy:
        if not self._policies:
            raise RuntimeError(
                "RolloutDataModule has no policy: the lecture must call datamodule.attach_policy(...) in setup()"
            )
        return self._policies[greedy]

    # ------------------------------------------------------------------ environments
    @property
    def rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def base_seed(self) -> int:
        if self.seed is not None:
            return self.seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def env_seeds(self, epoch: int) -> list[int]:
        """Seeds of this rank's environments at ``epoch``: distinct across ranks, environments and epochs."""
        rank, world = self.rank_and_world
        start = self.base_seed() + (epoch * world + rank) * self.num_envs
        return [start + i for i in range(self.num_envs)]

    def start_epoch(self) -> tuple[Any, np.ndarray]:
        """Build the vector environment once, reset it with this epoch's seeds; returns it and the first obs."""
        from gymnasium.vector import AutoresetMode, SyncVectorEnv

        if self.envs is None:
            env_fns = [lambda: make_env(self.env_id, self.max_episode_steps) for _ in range(self.num_envs)]
            self.envs = SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)
        obs, _ = self.envs.reset(seed=self.env_seeds(self.epoch))
        self.episode_tracker = EpisodeTracker(self.num_envs)
        self.epoch += 1
        return self.envs, obs

    def teardown(self, stage: str) -> None:
        if self.envs is not None:
            self.envs.close()
            self.envs = None

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        return DataLoader(RolloutDataset(self), batch_size=None, num_workers=0)  # the policy lives in this process

    def val_dataloader(self) -> DataLoader:
        episodes = EvalEpisodes(self, self.val_seed, self.val_episodes, seed_each=True)
        return DataLoader(episodes, batch_size=None, num_workers=0)

    def test_dataloader(self) -> DataLoader:
        episodes = EvalEpisodes(self, self.test_seed, self.test_episodes, seed_each=False,
                                sampled=self.hw12_sample_actions)  # fmt: skip
        return DataLoader(episodes, batch_size=None, num_workers=0)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, int]:
        """Counters only (plain ints): the next epoch's seeds follow from ``epoch``."""
        return {"epoch": self.epoch, "env_steps": self.env_steps, "episodes": self.episodes}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.epoch, self.env_steps, self.episodes = (int(state_dict[k]) for k in ("epoch", "env_steps", "episodes"))
