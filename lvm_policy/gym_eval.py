"""Evaluation through one ordinary gymnasium env and stable-baselines3's ``evaluate_policy``, and videos.

The slow path a user would write themselves: one ``predict`` call per step on the env's native observations.
It shows that a saved policy works with the field's tools, and cross-checks the batched engines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec

from lvm_policy.errors import ConfigError, EnvError
from lvm_policy.evaluate import EVAL_SEED
from lvm_policy.policies.base import Policy
from lvm_policy.rollout import Episodes, _scalar, check_policy_fits, env_spec_of, mode_names_of, time_limit


def rollout_sb3(
    policy: Policy,
    env: str | EnvSpec,
    episodes: int,
    seed: int = EVAL_SEED,
    deterministic: bool = False,
    max_episode_steps: int | None = None,
) -> Episodes:
    """Play ``episodes`` episodes in ``gym.make(env)`` through SB3's evaluate_policy; outcomes from the infos."""
    from stable_baselines3.common.evaluation import evaluate_policy

    spec = env_spec_of(env)
    single = gym.make(spec, max_episode_steps=time_limit(spec, max_episode_steps))
    check_policy_fits(policy, single.observation_space, single.action_space, spec.id)
    _, info0 = single.reset(seed=seed)  # seeds the episode stream; evaluate_policy resets without a seed after
    keys = [k for k, v in info0.items() if _scalar(v) is not None]
    rows: list[dict[str, Any]] = []

    def record(locals_: dict[str, Any], _globals: dict[str, Any]) -> None:
        if locals_["dones"][0]:
            info = locals_["infos"][0]
            row = {k: _scalar(info[k]) for k in keys if k in info}
            rows.append(dict(row, ret=float(locals_["current_rewards"][0]), length=int(locals_["current_lengths"][0])))

    torch.manual_seed(seed)
    policy.reset()
    evaluate_policy(policy, single, n_eval_episodes=episodes, deterministic=deterministic, callback=record, warn=False)
    rows = rows[:episodes]
    info = {}
    for k in keys:
        v = torch.tensor([r.get(k, float("nan")) for r in rows], dtype=torch.float64)
        kind = np.asarray(info0[k]).dtype.kind
        info[k] = v.nan_to_num(0) > 0.5 if kind == "b" else v.nan_to_num(-1).long() if kind in "iu" else v
    success = info.pop("success", None)
    return Episodes(
        success=success,
        ret=torch.tensor([r["ret"] for r in rows], dtype=torch.float64),
        length=torch.tensor([r["length"] for r in rows]),
        info=info,
        mode_names=mode_names_of(single.unwrapped),
        engine="sb3-evaluate_policy",
    )


def record_video(
    policy: Policy,
    env: str | EnvSpec,
    path: Path,
    episodes: int = 4,
    seed: int = EVAL_SEED,
    deterministic: bool = False,
) -> None:
    """Write a gif (or an mp4 when imageio-ffmpeg is installed) of a few episodes, rendered without a display."""
    import imageio.v2 as imageio

    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"--video must end in .gif or .mp4, got {path.name}")
    spec = env_spec_of(env)
    try:
        single = gym.make(spec, render_mode="rgb_array", max_episode_steps=time_limit(spec, None))
    except Exception as exc:  # noqa: BLE001  an env without rgb_array rendering
        raise EnvError(f"environment {spec.id} cannot render rgb_array frames ({type(exc).__name__})") from None
    frames = []
    torch.manual_seed(seed)
    for e in range(episodes):
        obs, _ = single.reset(seed=seed + e)
        policy.reset()
        done = False
        frames.append(single.render())
        while not done:
            action, _ = policy.predict(obs, deterministic=deterministic)
            obs, _, term, trunc, _ = single.step(action)
            done = term or trunc
            frames.append(single.render())
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
