"""Environments written the way a user writes one, outside the package: registered by an entry-point string,
Dict observations, an action box other than [-1, 1], and the mode convention in their infos.

``UserFork-v0``: a point starts at the origin; two goals at (-1, 1) and (1, 1); reaching either (within 0.2) is
a success and its index is the mode. Driving straight up (the average of the two ways) reaches neither.
``UserForkFailStep-v0`` / ``UserForkFailReset-v0`` raise on their 3rd step / 2nd reset, and
``UserForkNoLimit-v0`` has no time limit: they test the evaluator's handling of a user's bad env.
``UserCameraFork-v0`` is the same task seen only through a 24 x 24 grey camera (uint8, H x W x C), and
``UserCameraDictFork-v0`` through a channels-first camera beside the elapsed time in a Dict.
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


class CameraForkEnv(ForkEnv):
    """The fork seen from above: the goals grey, the point white, on a 24 x 24 grid over [-1.5, 1.5] x [-0.5, 1.5]."""

    size = 24

    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Box(0, 255, (self.size, self.size, 1), np.uint8)

    def _pixel(self, xy: np.ndarray) -> tuple[int, int]:
        col = int(np.clip((xy[0] + 1.5) / 3.0 * self.size, 0, self.size - 2))
        row = int(np.clip((1.5 - xy[1]) / 2.0 * self.size, 0, self.size - 2))
        return row, col

    def camera(self) -> np.ndarray:
        img = np.zeros((self.size, self.size, 1), np.uint8)
        for goal in GOALS:
            r, c = self._pixel(goal)
            img[r : r + 2, c : c + 2] = 120
        r, c = self._pixel(self.pos)
        img[r : r + 2, c : c + 2] = 255
        return img

    def _obs(self):
        return self.camera()


class CameraDictForkEnv(CameraForkEnv):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Dict(
            {
                "camera": gym.spaces.Box(0, 255, (1, self.size, self.size), np.uint8),
                "time": gym.spaces.Box(0.0, np.inf, (1,), np.float32),
            }
        )

    def _obs(self):
        return {"camera": self.camera().transpose(2, 0, 1).copy(), "time": np.array([self.t * self.dt], np.float32)}


def scripted_action(obs: dict, goal: int, rng: np.random.Generator) -> np.ndarray:
    """A proportional controller toward the chosen goal, with noise."""
    delta = GOALS[goal] - obs["position"]
    return np.clip(3.0 * delta + rng.normal(0, 0.1, 2), -2.0, 2.0).astype(np.float32)


for _id, _cls, _limit in (
    ("UserFork-v0", "ForkEnv", 40),
    ("UserForkFailStep-v0", "FailStepEnv", 40),
    ("UserForkFailReset-v0", "FailResetEnv", 40),
    ("UserForkNoLimit-v0", "ForkEnv", None),
    ("UserCameraFork-v0", "CameraForkEnv", 40),
    ("UserCameraDictFork-v0", "CameraDictForkEnv", 40),
):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=f"tests.user_env:{_cls}", max_episode_steps=_limit)
