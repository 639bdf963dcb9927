"""Reinforcement learning (lecture 12): invariants of the pure returns and losses, the rollouts, then the lectures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules.errors import SettingError
from datamodules.rollouts import RolloutDataModule
from lecture_modules.rl import core
from lecture_modules.rl.a2c import A2C
from lecture_modules.rl.dqn import DQN
from lecture_modules.rl.policy_gradient import PolicyGradient
from lecture_modules.rl.ppo import PPO
from tests.helpers import CONFIGS, QUICK, SMOKE, run_cli, run_cli_subprocess, state_dict_equal

RL_CONFIGS = ["policy_gradient", "a2c", "ppo", "dqn"]
LUNAR_CONFIGS = ["policy_gradient_lunarlander", "a2c_lunarlander", "ppo_lunarlander", "dqn_lunarlander"]
NO_VIDEO = ["--model.init_args.video_episodes", "0"]


def _flags(*rows: list[int]) -> list[torch.Tensor]:
    return [torch.tensor(r, dtype=torch.bool)[:, None] for r in rows]  # (T, 1)


# A 4-step trajectory of one environment: step 1 terminates (the pole fell), step 2 is truncated (a time limit), step 3
# is the rollout's last step (a cut). V(s'_t) = 10, 20, 30, 40; gamma = 0.5.
REWARDS = torch.ones(4, 1)
TERM, TRUNC = _flags([0, 1, 0, 0], [0, 0, 1, 0])
NEXT_V = torch.tensor([[10.0], [20.0], [30.0], [40.0]])


# ------------------------------------------------------------------------------------------- returns by hand
def test_discounted_returns_bootstrap_on_truncation_and_the_rollouts_end_but_not_on_termination():
    returns = core.discounted_returns(REWARDS, TERM, TRUNC, 0.5, next_values=NEXT_V)
    # G3 = 1 + .5*40 (cut); G2 = 1 + .5*30 (truncated); G1 = 1 (terminated: V(s') ignored); G0 = 1 + .5*G1
    assert returns.flatten().tolist() == [1.5, 1.0, 16.0, 21.0]
    no_critic = core.discounted_returns(REWARDS, TERM, TRUNC, 0.5)
    assert no_critic.flatten().tolist() == [1.5, 1.0, 1.0, 1.0]
    assert core.discounted_returns(REWARDS, *_flags([0, 0, 0, 0], [0, 0, 0, 0]), 1.0).flatten().tolist() == [4, 3, 2, 1]


def test_gae_matches_hand_computed_values_with_episode_ends():
    values = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    adv = core.gae(REWARDS, values, NEXT_V, TERM, TRUNC, gamma=0.5, lam=0.5)
    # deltas: 1+5-1 = 5, 1+0-2 = -1 (terminated), 1+15-3 = 13, 1+20-4 = 17; A0 = 5 + .25*(-1); A1, A2 end episodes
    assert adv.flatten().tolist() == [4.75, -1.0, 13.0, 17.0]


def test_gae_lambda_one_is_the_bootstrapped_return_minus_v_and_lambda_zero_the_td_error():
    torch.manual_seed(0)
    t, n = 12, 3
    rewards, values = torch.randn(t, n), torch.randn(t, n)
    term, trunc = torch.rand(t, n) < 0.15, torch.rand(t, n) < 0.1
    trunc &= ~term
    next_values = torch.randn(t, n)
    continues = ~(term | trunc)
    next_values[:-1][continues[:-1]] = values[1:][continues[:-1]]  # V(s'_t) = V(s_{t+1}) inside an episode
    returns = core.discounted_returns(rewards, term, trunc, 0.9, next_values=next_values)
    assert torch.allclose(core.gae(rewards, values, next_values, term, trunc, 0.9, 1.0), returns - values, atol=1e-5)
    td = core.n_step_returns(rewards, next_values, term, trunc, 0.9, n=1) - values
    assert torch.allclose(core.gae(rewards, values, next_values, term, trunc, 0.9, 0.0), td, atol=1e-6)
    long = core.n_step_returns(rewards, next_values, term, trunc, 0.9, n=t)
    assert torch.allclose(long, returns, atol=1e-5)  # n >= T: bootstrapped Monte-Carlo returns


def test_n_step_returns_match_hand_computed_values():
    two = core.n_step_returns(REWARDS, NEXT_V, TERM, TRUNC, 0.5, n=2)
    assert two.flatten().tolist() == [1.5, 1.0, 16.0, 21.0]  # the episode ends cut the horizon
    rewards, nv = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[10.0], [20.0], [30.0]])
    no_end = _flags([0, 0, 0], [0, 0, 0])
    # t0: 1 + .5*2 + .25*V(s'_1)=20 -> 7; t1: 2 + .5*3 + .25*30 = 11; t2: 3 + .5*30 = 18 (rollout's end)
    assert core.n_step_returns(rewards, nv, *no_end, 0.5, n=2).flatten().tolist() == [7.0, 11.0, 18.0]


# ------------------------------------------------------------------------------------------------ the losses
def test_policy_gradient_loss_gradient_is_the_score_function_on_a_two_action_bandit():
    theta = torch.tensor([0.3, -0.2], requires_grad=True)
    actions = torch.tensor([0, 1, 1, 0, 1])
    advantages = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.5])
    log_pi = torch.log_softmax(theta, dim=0)[actions]
    (grad,) = torch.autograd.grad(core.policy_gradient_loss(log_pi, advantages), theta)
    pi = torch.softmax(theta.detach(), dim=0)
    score = torch.nn.functional.one_hot(actions, 2).float() - pi  # grad log pi(a) = e_a - pi
    assert torch.allclose(grad, -(advantages[:, None] * score).mean(0), atol=1e-7)


def test_ppo_ratio_is_one_and_clipped_equals_unclipped_on_the_first_minibatch():
    torch.manual_seed(0)
    logits = torch.randn(32, 2, requires_grad=True)
    actions, advantages = torch.randint(0, 2, (32,)), torch.randn(32)
    log_probs = torch.distributions.Categorical(logits=logits).log_prob(actions)
    loss, stats = core.ppo_clipped_loss(log_probs, log_probs.detach(), advantages, clip=0.2)
    assert stats["ratio"].item() == pytest.approx(1.0) and stats["clip_fraction"].item() == 0.0
    assert stats["approx_kl"].item() == pytest.approx(0.0, abs=1e-7)
    assert loss.item() == pytest.approx(-advantages.mean().item(), abs=1e-6)  # min(rho A, clip(rho) A) = A
    (ppo_grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (pg_grad,) = torch.autograd.grad(core.policy_gradient_loss(log_probs, advantages), logits)
    assert torch.allclose(ppo_grad, pg_grad, atol=1e-7)  # at rho = 1 PPO's gradient is the policy gradient
    moved = log_probs.detach() + 0.5  # rho = e^0.5 > 1.2: the positive advantages are clipped
    _, moved_stats = core.ppo_clipped_loss(moved, log_probs.detach(), advantages, clip=0.2)
    assert moved_stats["clip_fraction"].item() == 1.0


def test_the_ppo_module_sees_ratio_one_on_its_first_minibatch():
    torch.manual_seed(0)
    model = PPO()
    obs, actions = torch.randn(16, 4), torch.randint(0, 2, (16,))
    with torch.no_grad():
        old = model.agent.dist(obs).log_prob(actions)
    _, stats = core.ppo_clipped_loss(model.agent.dist(obs).log_prob(actions), old, torch.randn(16), clip=0.2)
    assert stats["ratio"].item() == pytest.approx(1.0) and stats["clip_fraction"].item() == 0.0


def test_clipped_value_loss_keeps_the_critic_near_its_old_values():
    values, old, targets = torch.tensor([3.0]), torch.tensor([0.0]), torch.tensor([0.0])
    assert core.value_loss(values, targets).item() == 4.5
    assert core.value_loss(values, targets, old, clip=1.0).item() == 4.5  # max(9, 1): the pessimistic term
    assert core.value_loss(torch.tensor([-0.5]), torch.tensor([2.0]), old, clip=0.2).item() == pytest.approx(3.125)


def test_hw12_brackets():
    assert [core.hw12_bracket(x) for x in (-5, 0, 99.9, 100, 199.5, 200, 240.9, 241, 300)] == [
        "< 0", "0-99", "0-99", "100-199", "100-199", "200-240", "200-240", ">= 241", ">= 241",
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------------ rollouts
def _collect(seed: int, rollouts: int = 2, **kw) -> list[dict[str, torch.Tensor]]:
    dm = RolloutDataModule(num_envs=3, rollout_steps=40, rollouts_per_epoch=rollouts, seed=seed, **kw)
    generator = torch.Generator().manual_seed(0)
    policy = lambda obs: torch.randint(0, 2, (obs.shape[0],), generator=generator)  # noqa: E731
    dm.attach_policy(sample=policy, greedy=policy)
    return list(dm.train_dataloader())


def test_the_same_seed_gives_the_same_rollouts_and_another_seed_others():
    first, again, other = _collect(0), _collect(0), _collect(3)
    assert all(state_dict_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0]["obs"], other[0]["obs"])
    assert first[0]["obs"].shape == (40, 3, 4) and first[0]["actions"].shape == (40, 3)


def test_next_obs_is_the_true_next_state_even_where_an_episode_ended():
    (rollout,) = _collect(0, rollouts=1, max_episode_steps=15)
    done = rollout["terminated"] | rollout["truncated"]
    assert rollout["truncated"].any() and rollout["terminated"].any()
    inside = ~done[:-1]
    assert torch.equal(rollout["next_obs"][:-1][inside], rollout["obs"][1:][inside])
    # where an episode ended, obs[t+1] is a fresh reset while next_obs[t] is the episode's final state
    assert not torch.equal(rollout["next_obs"][:-1][done[:-1]], rollout["obs"][1:][done[:-1]])
    assert rollout["episode_lengths"].max() <= 15 and len(rollout["episode_returns"]) == int(done.sum())


# ------------------------------------------------------------------------------------------------ bad settings
def test_bad_settings_name_their_config_keys():
    with pytest.raises(SettingError, match=r"data\.init_args\.env_id must be a registered Gymnasium.*'NoSuchEnv-v0'"):
        RolloutDataModule(env_id="NoSuchEnv-v0")
    with pytest.raises(SettingError, match=r"data\.init_args\.env_id must have a discrete action space.*Pendulum"):
        RolloutDataModule(env_id="Pendulum-v1")
    with pytest.raises(SettingError, match=r"data\.init_args\.num_envs must be >= 1, got 0"):
        RolloutDataModule(num_envs=0)
    with pytest.raises(SettingError, match=r"model\.init_args\.gamma must be in \[0, 1\], got 1\.5"):
        PolicyGradient(gamma=1.5)
    with pytest.raises(SettingError, match=r"model\.init_args\.advantage must be one of cumulative, discounted"):
        PolicyGradient(advantage="gae")
    with pytest.raises(SettingError, match=r"model\.init_args\.gae_lambda must be in \[0, 1\]"):
        A2C(gae_lambda=-0.1)
    with pytest.raises(SettingError, match=r"model\.init_args\.clip_coef must be > 0"):
        PPO(clip_coef=0.0)
    with pytest.raises(SettingError, match=r"model\.init_args\.agent\.activation must be 'tanh' or 'relu'"):
        PPO(agent={"activation": "gelu"})
    for lecture in (PolicyGradient, A2C, PPO):  # one check in the shell, every variant
        with pytest.raises(SettingError, match=r"model\.init_args\.entropy_coef must be >= 0, got -0\.1"):
            lecture(entropy_coef=-0.1)
    with pytest.raises(SettingError, match=r"model\.init_args\.video_episodes must be >= 0"):
        DQN(video_episodes=-1)


# ------------------------------------------------------------------------------------------------ the lectures
@pytest.mark.parametrize("name", RL_CONFIGS + LUNAR_CONFIGS)
def test_each_config_fits_a_few_rollouts(name, tmp_path):
    early = ["--model.init_args.learning_starts", "256"] if name == "dqn" else []  # learn within 2 rollouts
    if name in LUNAR_CONFIGS:  # the configs' own rollouts are 5k-16k steps: smaller ones, the settings as shipped
        early = ["--data.init_args.num_envs", "2", "--data.init_args.rollout_steps", "64"]
        early += ["--model.init_args.num_minibatches", "2"] if name.startswith("ppo") else []
    cli = run_cli("fit", "--config", str(CONFIGS / f"{name}.yaml"), "--config", SMOKE, *early,
                  "--trainer.default_root_dir", str(tmp_path))  # fmt: skip
    assert cli.datamodule.env_steps > 0
    assert {"rollout/env_steps", "rollout/episodes", "train/loss"} <= set(cli.trainer.callback_metrics)
    if name.startswith("ppo"):  # the rollout's means over its minibatches
        assert {"train/ratio", "train/approx_kl", "train/clip_fraction"} <= set(cli.trainer.callback_metrics)
    assert torch.isfinite(torch.cat([p.flatten() for p in cli.model.parameters()])).all()


SHORT_PPO = [
    "--config", str(CONFIGS / "ppo.yaml"), *QUICK, "--trainer.logger", "false", *NO_VIDEO,
    "--data.init_args.rollout_steps", "32", "--data.init_args.rollouts_per_epoch", "2",
    "--data.init_args.val_episodes", "1",
]  # fmt: skip


SHORT_DQN = ["--config", str(CONFIGS / "dqn.yaml"), *SHORT_PPO[2:], "--model.init_args.learning_starts", "64",
             "--model.init_args.train_frequency", "16", "--model.init_args.target_update_interval", "3"]  # fmt: skip


@pytest.mark.parametrize("name", ["ppo", "dqn"])
def test_resumed_at_an_epoch_end_ends_with_the_weights_of_an_uninterrupted_run(name, tmp_path):
    short = SHORT_PPO if name == "ppo" else SHORT_DQN

    def fit(epochs: int, root: Path, *extra: str):
        return run_cli("fit", *short, "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir", str(root),
                       *extra)  # fmt: skip

    straight = fit(4, tmp_path / "a")
    fit(2, tmp_path / "b")
    ckpt = tmp_path / "b" / "checkpoints" / "last.ckpt"
    counters = torch.load(ckpt, weights_only=True)["RolloutDataModule"]  # plain data only
    # callbacks.ModelCheckpoint (the configs'): last.ckpt is the final epoch even when val/return did not improve
    epochs = 2
    assert counters["epoch"] == epochs and counters["env_steps"] == epochs * 2 * 32 * 4 and counters["episodes"] > 0
    resumed = fit(4, tmp_path / "b", "--ckpt_path", str(ckpt))
    assert state_dict_equal(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.datamodule.state_dict() == straight.datamodule.state_dict()
    if name == "dqn":  # the replay buffer came back and grew as in the run that never stopped
        buffers = [{k: v for k, v in m.buffer.state_dict().items() if torch.is_tensor(v)} for m in (resumed.model,
                   straight.model)]  # fmt: skip
        assert state_dict_equal(*buffers) and resumed.model.updates == straight.model.updates > 0
    assert list((tmp_path / "a").rglob("val_return_curve-step*.png"))  # the lecture's own figure
    tested = run_cli("test", *short, "--trainer.default_root_dir", str(tmp_path / "c"), "--ckpt_path", str(ckpt))
    assert "test/return" in tested.trainer.callback_metrics and tested.model.last_test_bracket in core.HW12_BRACKETS


NORM_ANNEAL = ["--model.init_args.normalize_obs", "true", "--model.init_args.anneal_lr", "true"]


def test_observation_statistics_and_the_annealed_lr_travel_in_the_checkpoint_and_resume_exactly(tmp_path):
    every_epoch = ["--trainer.callbacks.save_top_k", "-1", "--trainer.max_epochs", "4"]
    straight = run_cli("fit", *SHORT_PPO, *NORM_ANNEAL, *every_epoch, "--trainer.default_root_dir", str(tmp_path / "a"))
    [ckpt] = (tmp_path / "a" / "checkpoints").glob("epoch=1-*.ckpt")  # the end of epoch 2 of 4
    state = torch.load(ckpt, weights_only=True)  # plain tensors: float64 statistics
    assert state["state_dict"]["obs_norm.count"].item() == pytest.approx(2 * 2 * 32 * 4, abs=1e-6)
    group = state["optimizer_states"][0]["param_groups"][0]
    assert group["lr"] == pytest.approx(group["initial_lr"] * (1 - 3 / 8))  # rollout 3 (0-based) of 4 x 2
    assert straight.model.hparams.anneal_lr and straight.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(
        group["initial_lr"] / 8
    )  # the last rollout: 1/K of the configured lr
    resumed = run_cli("fit", *SHORT_PPO, *NORM_ANNEAL, *every_epoch, "--trainer.default_root_dir", str(tmp_path / "b"),
                      "--ckpt_path", str(ckpt))  # fmt: skip
    assert state_dict_equal(resumed.model.state_dict(), straight.model.state_dict())
    # every observation of the run went into the statistics, which match a direct computation's moments
    stats = straight.model.obs_norm
    assert stats.count.item() == pytest.approx(straight.datamodule.env_steps, abs=1e-6)
    before = {k: v.clone() for k, v in stats.state_dict().items()}
    results = straight.trainer.test(straight.model, datamodule=straight.datamodule, verbose=False)
    assert results and state_dict_equal(before, stats.state_dict())  # frozen in evaluation


def test_running_mean_std_merges_batches_like_one_big_batch_and_clips():
    torch.manual_seed(0)
    batches = [torch.randn(n, 3) * torch.tensor([1.0, 5.0, 0.1]) + 2.0 for n in (7, 1, 40)]
    stats = core.RunningMeanStd((3,), clip=5.0)
    for batch in batches:
        stats.update(batch)
    whole = torch.cat(batches).double()
    assert torch.allclose(stats.mean, whole.mean(0), atol=1e-6)
    assert torch.allclose(stats.var, whole.var(0, unbiased=False), rtol=1e-5)
    z = stats(torch.tensor([[2.0, 2.0, 1e6]]))
    assert z[0, 2].item() == 5.0 and z.dtype == torch.float32  # clipped to +-clip, in the input's dtype
    assert [core.linear_decay(k, 4) for k in range(4)] == [1.0, 0.75, 0.5, 0.25]


def test_the_test_episodes_follow_hw12s_protocol_one_environment_seeded_once_with_543():
    import gymnasium as gym

    policy = lambda obs: (obs[:, 2] > 0).long()  # noqa: E731  (push towards the pole's lean)
    dm = RolloutDataModule()
    dm.attach_policy(sample=policy, greedy=policy)
    ours = [(float(e["return"]), float(e["length"])) for e in dm.test_dataloader()]
    env = gym.make("CartPole-v1")
    expected = []
    for i in range(5):
        obs, _ = env.reset(seed=543 if i == 0 else None)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(int(obs[2] > 0))
            total, done = total + reward, terminated or truncated
        expected.append(total)
    assert [r for r, _ in ours] == expected and len(set(expected)) > 1


def _sampled_test(dm: RolloutDataModule) -> list[tuple[float, list[int]]]:
    dm.hw12_sample_actions = True
    return [(float(e["return"]), e["actions"].tolist()) for e in dm.test_dataloader()]


def test_sampled_test_actions_come_from_a_generator_seeded_with_the_test_seed_and_repeat():
    import gymnasium as gym

    probs = torch.tensor([0.5, 0.5])
    greedy = lambda obs: torch.zeros(obs.shape[0], dtype=torch.long)  # noqa: E731
    seeded = lambda obs, g: torch.multinomial(probs.expand(obs.shape[0], 2), 1, generator=g).squeeze(-1)  # noqa: E731
    dm = RolloutDataModule()
    dm.attach_policy(sample=greedy, greedy=greedy, seeded=seeded)
    first, again = _sampled_test(dm), _sampled_test(dm)
    assert first == again  # a fresh generator at every test: reproducible
    assert {a for _, actions in first for a in actions} == {0, 1}  # sampled, not the greedy 0s
    generator, env, expected = torch.Generator().manual_seed(543), gym.make("CartPole-v1"), []
    for i in range(5):  # HW12's notebook: fix(env, 543) seeds the environment once and torch, then samples
        obs, _ = env.reset(seed=543 if i == 0 else None)
        actions, done = [], False
        while not done:
            actions.append(int(seeded(torch.as_tensor(obs)[None], generator)[0]))
            obs, _, terminated, truncated, _ = env.step(actions[-1])
            done = terminated or truncated
        expected.append(actions)
    assert [actions for _, actions in first] == expected
    dm.hw12_sample_actions = False
    assert {a for e in dm.test_dataloader() for a in e["actions"].tolist()} == {0}  # the default: greedy


def test_sampled_test_without_a_seeded_policy_names_the_setting():
    dm = RolloutDataModule(hw12_sample_actions=True)
    policy = lambda obs: torch.zeros(obs.shape[0], dtype=torch.long)  # noqa: E731
    dm.attach_policy(sample=policy, greedy=policy)
    with pytest.raises(SettingError, match=r"data\.init_args\.hw12_sample_actions needs a lecture that samples"):
        list(dm.test_dataloader())


def test_the_lectures_seeded_actions_sample_pi_and_dqns_act_epsilon_greedily_at_epsilon_end():
    torch.manual_seed(0)
    obs = torch.randn(4000, 4)
    pg = PolicyGradient(agent={"orthogonal_init": False})  # larger logits than the 0.01-gain output layer
    actions = pg.seeded_actions(obs, torch.Generator().manual_seed(1))
    again = pg.seeded_actions(obs, torch.Generator().manual_seed(1))
    probs = pg.agent.dist(obs).probs.detach()
    assert torch.equal(actions, again) and not torch.equal(actions, probs.argmax(-1))
    frequency = (actions == 1).float().mean()  # sampled from pi: the frequency of action 1 is its mean probability
    assert frequency.item() == pytest.approx(probs[:, 1].mean().item(), abs=0.03)
    greedy_q, random_q = DQN(epsilon_end=0.0), DQN(epsilon_end=1.0)
    assert torch.equal(greedy_q.seeded_actions(obs, torch.Generator()), greedy_q.greedy_actions(obs))
    uniform = random_q.seeded_actions(obs, torch.Generator().manual_seed(2))
    assert (uniform == 1).float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_test_reports_hw12s_mean_and_bracket_and_exports_each_episodes_actions_without_overwriting(tmp_path, caplog):
    cli = run_cli("fit", *SHORT_PPO, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path))
    exports = []
    for _ in range(2):
        with caplog.at_level(logging.INFO):
            cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
        exports.append(cli.model.last_actions_path)
    assert [p.name for p in exports] == ["actions.json", "actions-1.json"] and exports[0].parent == tmp_path / "hw12"
    export = json.loads(exports[0].read_text())  # plain JSON: environment, seed, returns, action lists
    assert (export["env_id"], export["test_seed"], len(export["actions"])) == ("CartPole-v1", 543, 5)
    mean = float(cli.trainer.callback_metrics["test/return"])
    assert sum(export["returns"]) / 5 == pytest.approx(mean)
    # CartPole pays 1 per step: an episode's total reward is its number of actions
    assert [len(a) for a in export["actions"]] == export["returns"] and {x for a in export["actions"] for x in a} <= {
        0,
        1,
    }
    assert json.loads(exports[1].read_text()) == export  # greedy and seeded: the same episodes again
    assert f"HW12 protocol: mean total reward {mean:.1f}" in caplog.text and core.hw12_bracket(mean) in caplog.text


def test_a_recorded_episode_becomes_a_gif_with_one_frame_per_kept_state(tmp_path):
    from PIL import Image

    from lecture_modules.rl.video import record_episode, write_gif

    policy = lambda obs: (obs[:, 2] > 0).long()  # noqa: E731
    frames, fps, total, length = record_episode("CartPole-v1", policy, seed=0, frame_skip=3, max_width=120)
    states = length + 1  # the reset and every step
    kept = len(set(range(0, states, 3)) | {states - 1})
    assert total == length > 10 and len(frames) == kept and frames[0].shape == (80, 120, 3) and fps == 50 / 3
    gif = Image.open(write_gif(frames, tmp_path / "e.gif", fps))
    assert gif.n_frames == kept and gif.info["duration"] == 60


def test_fit_ends_with_an_episode_gif_in_the_run_folder_logged_to_wandb_offline(tmp_path):
    args = [a for a in SHORT_PPO if a not in NO_VIDEO]
    args = args[: args.index("--trainer.logger")] + args[args.index("--trainer.logger") + 2 :]  # the W&B logger
    cli = run_cli("fit", *args, "--trainer.max_epochs", "1", "--trainer.logger.init_args.save_dir", str(tmp_path))
    run_dir = Path(cli.trainer.logger.experiment.dir)
    [gif] = (run_dir / "videos").glob("episode0-step*.gif")
    assert gif.stat().st_size > 0 and cli.trainer.logger.experiment.settings.mode in ("offline", "dryrun")
    assert list(run_dir.rglob("media/videos/val/episode_video_*.gif"))  # W&B's own copy: logged as a video


class DumpRanks(L.Callback):
    """Test-only: each rank writes its environments' seeds, a CartPole state and its final weights."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        self.out_dir.mkdir(parents=True, exist_ok=True)
        dump = {
            "seeds": dm.env_seeds(0),
            "cartpole_state": [float(x) for x in dm.envs.envs[0].unwrapped.state],
            "weights": torch.cat([p.detach().flatten() for p in pl_module.parameters()]).tolist(),
            "obs_norm": [pl_module.obs_norm.mean.tolist(), pl_module.obs_norm.count.item()],
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(dump))


@pytest.mark.slow
def test_ddp_two_ranks_run_different_environments_and_keep_identical_weights(tmp_path):
    result = run_cli_subprocess(
        "fit", *SHORT_PPO, *NORM_ANNEAL, "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu",
        "--trainer.devices", "2",
        "--trainer.strategy", "ddp", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.callbacks+=tests.lectures.test_rl.DumpRanks", "--trainer.callbacks.out_dir", str(tmp_path / "dump"),
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / "dump" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert set(ranks[0]["seeds"]).isdisjoint(ranks[1]["seeds"])
    assert ranks[0]["cartpole_state"] != ranks[1]["cartpole_state"]  # the environments differ
    assert ranks[0]["weights"] == ranks[1]["weights"]  # the reduced gradients agree: identical updates
    # the observation statistics merge both ranks' rollouts: the same on each, counting every environment step
    assert ranks[0]["obs_norm"] == ranks[1]["obs_norm"] and ranks[0]["obs_norm"][1] == pytest.approx(2 * 2 * 2 * 32 * 4)


# ------------------------------------------------------------------------------------------------ DQN
def _transitions(rewards, terminated, next_obs=None) -> dict[str, torch.Tensor]:
    b = len(rewards)
    return {
        "obs": torch.zeros(b, 4), "actions": torch.zeros(b, dtype=torch.long), "rewards": torch.tensor(rewards),
        "next_obs": torch.ones(b, 4) if next_obs is None else next_obs,
        "terminated": torch.tensor(terminated, dtype=torch.bool),
    }  # fmt: skip


def test_dqn_target_is_max_of_the_target_network_and_double_dqn_evaluates_the_online_argmax_with_it():
    next_q_target = torch.tensor([[1.0, 5.0, 3.0], [2.0, 0.0, 4.0]])
    next_q_online = torch.tensor([[9.0, 0.0, 0.0], [0.0, 7.0, 1.0]])  # argmax 0 and 1
    rewards, term = torch.tensor([1.0, 2.0]), torch.tensor([False, False])
    assert core.dqn_targets(rewards, term, next_q_target, 0.5).tolist() == [1 + 0.5 * 5, 2 + 0.5 * 4]
    double = core.dqn_targets(rewards, term, next_q_target, 0.5, next_q_online=next_q_online)
    assert double.tolist() == [1 + 0.5 * 1, 2 + 0.5 * 0]  # Q_target(s', argmax Q_online(s', .))
    ended = core.dqn_targets(rewards, torch.tensor([True, False]), next_q_target, 0.5)
    assert ended.tolist() == [1.0, 4.0]  # termination: no bootstrap


def test_dqn_loss_uses_the_target_network_and_does_not_update_it():
    torch.manual_seed(0)
    model = DQN(agent={"widths": [8]}, gamma=0.5)
    with torch.no_grad():
        for p in model.q_target.parameters():
            p.add_(torch.randn_like(p))  # the target network now differs from the online one
    before = [p.clone() for p in model.q_target.parameters()]
    sample = _transitions([1.0, 2.0], [False, True], next_obs=torch.randn(2, 4))
    expected = 1.0 + 0.5 * model.q_target(sample["next_obs"][:1]).max().item()
    targets = model.targets(sample)
    assert targets[0].item() == pytest.approx(expected) and targets[1].item() == 2.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.loss_of(sample).backward()
    optimizer.step()
    assert all(p.grad is None and not p.requires_grad for p in model.q_target.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.q_target.parameters(), strict=True))
    assert all(p.grad is not None for p in model.q.parameters())
    core.soft_update(model.q_target, model.q, tau=1.0)
    assert state_dict_equal(model.q_target.state_dict(), model.q.state_dict())


def test_truncation_bootstraps_in_dqn_targets_from_collected_rollouts():
    (rollout,) = _collect(0, rollouts=1, max_episode_steps=15)
    term, trunc = rollout["terminated"].flatten(), rollout["truncated"].flatten()
    assert trunc.any() and term.any()
    next_q = torch.ones(term.numel(), 2)
    targets = core.dqn_targets(torch.zeros_like(next_q[:, 0]), term, next_q, 0.9)
    assert targets[term].eq(0.0).all() and targets[trunc].eq(0.9).all() and targets[~term].eq(0.9).all()


def test_replay_sampling_is_uniform_and_the_buffer_survives_a_weights_only_checkpoint(tmp_path):
    buffer = core.ReplayBuffer(capacity=10, obs_dim=2)
    for start in (0, 6):  # 12 transitions into 10 slots: the first two are overwritten
        idx = torch.arange(start, start + 6).float()
        buffer.add(**_transitions(idx.tolist(), [False] * 6, next_obs=idx[:, None].repeat(1, 2)) | {
            "obs": idx[:, None].repeat(1, 2), "actions": idx.long()})  # fmt: skip
    assert (len(buffer), buffer.pos) == (10, 2) and sorted(buffer.rewards.tolist()) == [float(i) for i in range(2, 12)]
    draws = buffer.sample(20_000, generator=torch.Generator().manual_seed(0))["rewards"]
    counts = torch.bincount(draws.long() - 2, minlength=10).float()
    chi2 = ((counts - 2000) ** 2 / 2000).sum().item()
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom: p = 0.001
    torch.save({"replay_buffer": buffer.state_dict()}, tmp_path / "b.pt")
    restored = core.ReplayBuffer(capacity=10, obs_dim=2)
    restored.load_state_dict(torch.load(tmp_path / "b.pt", weights_only=True)["replay_buffer"])
    assert (restored.pos, restored.size) == (buffer.pos, buffer.size)
    assert all(torch.equal(getattr(restored, k), getattr(buffer, k)) for k in core.ReplayBuffer.KEYS)


def test_epsilon_falls_linearly_then_stays():
    values = [core.linear_schedule(1.0, 0.05, 100, step) for step in (0, 50, 100, 1000)]
    assert values == pytest.approx([1.0, 0.525, 0.05, 0.05])
    assert core.linear_schedule(0.3, 0.1, 0, 0) == 0.1


def test_dqn_bad_settings_name_their_config_keys():
    for kwargs, pattern in (
        ({"buffer_size": 10, "batch_size": 64}, r"model\.init_args\.buffer_size must be >= batch_size \(64\)"),
        ({"epsilon_start": 1.5}, r"model\.init_args\.epsilon_start must be in \[0, 1\]"),
        ({"epsilon_end": -0.1}, r"model\.init_args\.epsilon_end must be in \[0, 1\]"),
        ({"tau": 0.0}, r"model\.init_args\.tau must be in \(0, 1\]"),
        ({"train_frequency": 0}, r"model\.init_args\.train_frequency must be >= 1"),
        ({"learning_starts": 200_000}, r"model\.init_args\.learning_starts must be in \[0, buffer_size"),
        ({"loss": "l1"}, r"model\.init_args\.loss must be 'huber' or 'mse'"),
    ):
        with pytest.raises(SettingError, match=pattern):
            DQN(**kwargs)


def test_dqn_checkpoint_holds_the_replay_buffer_and_loads_weights_only(tmp_path):
    args = ["--config", str(CONFIGS / "dqn.yaml"), *QUICK, "--trainer.logger", "false",
            "--data.init_args.rollout_steps", "16", "--data.init_args.rollouts_per_epoch", "4",
            "--data.init_args.val_episodes", "1", "--model.init_args.learning_starts", "64",
            "--model.init_args.train_frequency", "16", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    cli = run_cli("fit", *args, "--trainer.max_epochs", "2")
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["replay_buffer"]["size"] == 2 * 4 * 16 * 4 == len(cli.model.buffer)
    assert ckpt["dqn_counters"]["updates"] == cli.model.updates == 2 * 4 * 16 * 4 // 16  # learning from step 1
    resumed = run_cli("fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", str(tmp_path / "checkpoints" /
                      "last.ckpt"))  # fmt: skip
    assert torch.equal(resumed.model.buffer.obs, cli.model.buffer.obs) and resumed.model.updates == cli.model.updates
