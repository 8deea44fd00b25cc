"""Evaluation through ordinary gymnasium environments and stable-baselines3's ``evaluate_policy``.

The slow path a user would write themselves: one numpy ``predict`` call per step. It exists to show that a
saved policy works with the field's tools, and to cross-check the batched evaluator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from lvm_policy.errors import ConfigError
from lvm_policy.evaluate import EVAL_SEED, Rollouts, summarize
from lvm_policy.policies.base import Policy


def rollout_gym(policy: Policy, episodes: int, seed: int = EVAL_SEED, deterministic: bool = False) -> Rollouts:
    """Play ``episodes`` episodes in ``gym.make("TreeAvoid-v0")`` through SB3's evaluate_policy."""
    from stable_baselines3.common.evaluation import evaluate_policy

    import envs  # noqa: F401  (registration)

    env = gym.make("TreeAvoid-v0")
    env.reset(seed=seed)  # seeds the episode stream; evaluate_policy resets without a seed after this
    outcomes: dict[str, list] = {
        k: [] for k in ("success", "collision", "off_road", "side", "switches", "x_at_tree", "tree_x", "length")
    }

    def record(locals_: dict[str, Any], _globals: dict[str, Any]) -> None:
        if locals_["dones"][0]:
            info = locals_["infos"][0]
            outcomes["success"].append(bool(info["success"]))
            outcomes["collision"].append(bool(info["collision"]))
            outcomes["off_road"].append(bool(info["off_road"]))
            outcomes["side"].append(int(info["side"]))
            outcomes["switches"].append(int(info["switches"]))
            outcomes["x_at_tree"].append(float(info.get("x_at_tree", float("nan"))))
            outcomes["tree_x"].append(float(info["terminal_observation"][2]))
            outcomes["length"].append(int(locals_["current_lengths"][0]))

    torch.manual_seed(seed)
    policy.reset()
    evaluate_policy(policy, env, n_eval_episodes=episodes, deterministic=deterministic, callback=record, warn=False)
    as_tensor = {
        "success": torch.bool,
        "collision": torch.bool,
        "off_road": torch.bool,
        "side": torch.int64,
        "switches": torch.int64,
        "x_at_tree": torch.float32,
        "tree_x": torch.float32,
        "length": torch.int64,
    }
    return Rollouts(**{k: torch.tensor(outcomes[k][:episodes], dtype=dt) for k, dt in as_tensor.items()})


def evaluate_gym(policy: Policy, reference: dict | None, episodes: int, deterministic: bool = False) -> dict[str, Any]:
    return summarize(rollout_gym(policy, episodes, deterministic=deterministic), reference)


def record_video(
    policy: Policy, path: Path, episodes: int = 4, seed: int = EVAL_SEED, deterministic: bool = False
) -> None:
    """Write a gif (or an mp4 when imageio-ffmpeg is installed) of a few episodes, rendered without a display."""
    import imageio.v2 as imageio

    import envs  # noqa: F401

    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"--video must end in .gif or .mp4, got {path.name}")
    env = gym.make("TreeAvoid-v0", render_mode="rgb_array")
    frames = []
    torch.manual_seed(seed)
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        policy.reset()
        done = False
        frames.append(env.render())
        while not done:
            action, _ = policy.predict(obs, deterministic=deterministic)
            obs, _, term, trunc, _ = env.step(action)
            done = term or trunc
            frames.append(env.render())
        frames += [frames[-1]] * 5  # a short pause on each episode's end
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "writing mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg); use a .gif path"
            ) from None
        imageio.mimsave(path, frames, fps=10)
    else:
        imageio.mimsave(path, frames, duration=0.1, loop=0)
