"""Environments written the way a user writes one, outside the package: registered by an entry-point string,
Dict observations, an action box other than [-1, 1], and the mode convention in their infos.

``UserFork-v0``: a point starts at the origin; two goals at (-1, 1) and (1, 1); reaching either (within 0.2) is
a success and its index is the mode. Driving straight up (the average of the two ways) reaches neither.
``UserForkFailStep-v0`` / ``UserForkFailReset-v0`` raise on their 3rd step / 2nd reset, and
``UserForkNoLimit-v0`` has no time limit: they test the evaluator's handling of a user's bad env.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

GOALS = np.array([[-1.0, 1.0], [1.0, 1.0]], dtype=np.float32)


class ForkEnv(gym.Env):
    metadata = {"render_modes": [], "mode_names": ["left goal", "right goal"]}

    def __init__(self):
        self.observation_space = gym.spaces.Dict(
            {
                "position": gym.spaces.Box(-3.0, 3.0, (2,), np.float32),
                "time": gym.spaces.Box(0.0, np.inf, (1,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)  # velocity, metres per second
        self.dt = 0.1

    def _obs(self):
        return {"position": self.pos.copy(), "time": np.array([self.t * self.dt], np.float32)}

    def _info(self, success: bool, mode: int):
        return {"success": success, "mode": mode}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.05, 0.05, size=2).astype(np.float32)
        self.t = 0
        return self._obs(), self._info(False, -1)

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float32), -2.0, 2.0)
        self.pos = np.clip(self.pos + self.dt * a, -3.0, 3.0).astype(np.float32)
        self.t += 1
        dist = np.linalg.norm(GOALS - self.pos, axis=1)
        reached = int(np.argmin(dist)) if dist.min() < 0.2 else -1
        return self._obs(), -float(dist.min()), reached >= 0, False, self._info(reached >= 0, reached)


class FailStepEnv(ForkEnv):
    def step(self, action):
        if self.t >= 2:
            raise RuntimeError("the simulator lost its contact solver")
        return super().step(action)


class FailResetEnv(ForkEnv):
    resets = 0

    def reset(self, *, seed=None, options=None):
        self.resets += 1
        if self.resets >= 2:
            raise ValueError("the scene file is missing")
        return super().reset(seed=seed, options=options)


def scripted_action(obs: dict, goal: int, rng: np.random.Generator) -> np.ndarray:
    """A proportional controller toward the chosen goal, with noise."""
    delta = GOALS[goal] - obs["position"]
    return np.clip(3.0 * delta + rng.normal(0, 0.1, 2), -2.0, 2.0).astype(np.float32)


for _id, _cls, _limit in (
    ("UserFork-v0", "ForkEnv", 40),
    ("UserForkFailStep-v0", "FailStepEnv", 40),
    ("UserForkFailReset-v0", "FailResetEnv", 40),
    ("UserForkNoLimit-v0", "ForkEnv", None),
):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=f"tests.user_env:{_cls}", max_episode_steps=_limit)
