"""Episode videos of lecture 12's policies: rendered ``rgb_array`` frames of a greedy episode, written as a GIF.

Pure pieces, used by :class:`lecture_modules.rl.agent.RLLecture` at the end of ``fit`` (``video_episodes``):
:func:`record_episode` plays one episode and keeps every ``frame_skip``-th frame, downscaled to at most
``max_width`` pixels wide; :func:`write_gif` writes them with Pillow (no moviepy or ffmpeg needed), which W&B logs
as a ``wandb.Video`` from the file's path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.rollouts import Policy, make_env, run_episodes

__all__ = ["record_episode", "write_gif"]


def record_episode(
    env_id: str,
    policy: Policy,
    seed: int,
    max_episode_steps: int | None = None,
    frame_skip: int = 2,
    max_width: int = 300,
) -> tuple[list[np.ndarray], float, float, int]:
    """Play one episode of ``env_id`` with ``policy`` from ``seed``, rendering every ``frame_skip``-th state.

    Returns:
        The frames (H, W, 3) uint8 (the first state, then every ``frame_skip``-th after it, the last state always),
        their rate in frames per second (the environment's ``render_fps`` / ``frame_skip``), the episode's total
        reward and its length in steps.
    """
    from PIL import Image

    env = make_env(env_id, max_episode_steps, render_mode="rgb_array")
    fps = float(env.metadata.get("render_fps", 30)) / frame_skip
    states: list[np.ndarray] = []
    try:
        ((total, actions),) = run_episodes(env, policy, [seed], on_step=lambda e: states.append(e.render()))
    finally:
        env.close()
    keep = sorted({*range(0, len(states), frame_skip), len(states) - 1})  # the final state, whatever the skip
    frames = []
    for i in keep:
        image = Image.fromarray(states[i])
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)), Image.BILINEAR)
        frames.append(np.asarray(image))
    return frames, fps, total, len(actions)


def write_gif(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """Write ``frames`` (H, W, 3) uint8 as a looping GIF at ``fps`` frames per second; returns ``path``."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    duration = max(20, round(1000 / fps))  # ms per frame; browsers treat < 20 ms as 100 ms
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=False)
    return path
