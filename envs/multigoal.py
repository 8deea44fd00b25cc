"""MultiGoal: a point mass starts at the centre of an arena; K goals lie around it on a circle.

Reaching any goal (within ``reach_radius``) ends the episode as a success, and the goal reached is the mode;
the time limit ends it as a failure and is tight enough that wandering between goals costs the episode. The
default goals sit at 0, 194, 120 and 268 degrees: their directions weighted by the default demonstration
weights 0.4 / 0.3 / 0.2 / 0.1 sum to zero (|sum| < 0.006, the widest minimum gap, 74 degrees, on a 2-degree
grid), so the demonstrations' average action at the start is zero and a unimodal policy stalls there.
The observation is ``(x, y, vx, vy)``: which goal the demonstrator picked is never observed.

Dynamics: v <- v + dt * (max_accel * a - damping * v), p <- p + dt * v, positions kept inside the arena.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from envs.batched import BatchedSingleEnv, BatchedTask, BatchedVectorEnv, counter_uniform


@dataclass(frozen=True)
class MultiGoalParams:
    goal_angles: tuple[float, ...] = (0.0, 194.0, 120.0, 268.0)  # degrees; see the module docstring
    goal_distance: float = 1.0  # goals on a circle of this radius around the start
    reach_radius: float = 0.15
    arena_half_width: float = 1.5
    start_range: float = 0.05  # start ~ U(-r, r)^2
    dt: float = 0.1
    max_accel: float = 2.0  # action 1 means this many m/s^2
    damping: float = 2.0  # 1/s
    max_steps: int = 15  # the expert needs 12-14 steps: a policy that hesitates at the start runs out of time

    @property
    def num_goals(self) -> int:
        return len(self.goal_angles)

    def goals(self) -> list[tuple[float, float]]:
        """Goal positions (x, y) on the circle, in the order of ``goal_angles``."""
        r = self.goal_distance
        return [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a))) for a in self.goal_angles]


def goal_names(params: MultiGoalParams) -> list[str]:
    """Goals named by their direction in degrees (counter-clockwise from east)."""
    return [f"{a:g} deg" for a in params.goal_angles]


class MultiGoalState(NamedTuple):
    pos: torch.Tensor  # (N, 2) float32
    vel: torch.Tensor  # (N, 2) float32
    t: torch.Tensor  # (N,) int64
    reached: torch.Tensor  # (N,) int64 goal reached, -1 before
    seed: torch.Tensor  # (N,) int64
    episode: torch.Tensor  # (N,) int64


class MultiGoalTask(BatchedTask):
    params: MultiGoalParams

    def __init__(self, params: MultiGoalParams):
        if params.num_goals < 2:
            raise ValueError(f"num_goals must be at least 2, got {params.num_goals}")
        super().__init__(params)
        self._goals = torch.tensor(params.goals(), dtype=torch.float32)  # (K, 2)

    def goals(self, device: torch.device) -> torch.Tensor:
        if self._goals.device != device:
            self._goals = self._goals.to(device)
        return self._goals

    def reset_state(self, seed, episode):
        p = self.params
        u = counter_uniform(seed, episode, torch.arange(1, 3, device=seed.device)[:, None])  # (2, N)
        pos = ((2.0 * u - 1.0) * p.start_range).T.contiguous()  # (N, 2)
        zeros = torch.zeros_like(seed)
        return MultiGoalState(pos, torch.zeros_like(pos), zeros.clone(), zeros - 1, seed.clone(), episode.clone())

    def observe(self, state):
        return torch.cat([state.pos, state.vel], dim=-1)  # (N, 4)

    def _info(self, state, success):
        return {"success": success, "mode": state.reached}

    def fresh_info(self, state):
        return {k: v.clone() for k, v in self._info(state, torch.zeros_like(state.t, dtype=torch.bool)).items()}

    def step_state(self, state, action):
        p = self.params
        a = action.to(state.pos.dtype).clamp(-1.0, 1.0)  # (N, 2)
        vel = state.vel + p.dt * (p.max_accel * a - p.damping * state.vel)
        pos = (state.pos + p.dt * vel).clamp(-p.arena_half_width, p.arena_half_width)
        t = state.t + 1
        dist = torch.linalg.vector_norm(pos[:, None, :] - self.goals(pos.device), dim=-1)  # (N, K)
        nearest_dist, nearest = dist.min(dim=1)
        success = nearest_dist < p.reach_radius
        reached = torch.where(success, nearest, state.reached)
        terminated = success
        truncated = (t >= p.max_steps) & ~terminated
        reward = success.float() - 0.01  # a step costs a little; a goal is worth one
        new = MultiGoalState(pos, vel, t, reached, state.seed, state.episode)
        return new, self.observe(new), reward, terminated, truncated, self._info(new, success)

    def observation_space(self):
        p = self.params
        v_max = p.max_accel / p.damping  # the terminal speed per axis
        high = np.array([p.arena_half_width] * 2 + [v_max * 1.5] * 2, dtype=np.float32)
        return gym.spaces.Box(-high, high, dtype=np.float32)

    def action_space(self):
        return gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def metadata(self):
        p = self.params
        return {
            "mode_names": goal_names(p),
            "figure": {
                "xy": [0, 1],
                "circles": [[gx, gy, p.reach_radius] for gx, gy in p.goals()],
                "xlim": [-p.arena_half_width, p.arena_half_width],
                "ylim": [-p.arena_half_width, p.arena_half_width],
            },
        }

    def position(self, state):
        return float(state.pos[0, 0]), float(state.pos[0, 1])

    def render_frame(self, path, state, size: int = 300):
        p = self.params
        img = np.full((size, size, 3), (235, 235, 235), dtype=np.uint8)
        lo, hi = -p.arena_half_width, p.arena_half_width
        coords = (np.arange(size) + 0.5) / size * (hi - lo) + lo
        X, Y = np.meshgrid(coords, coords[::-1])
        for gx, gy in p.goals():
            img[(X - gx) ** 2 + (Y - gy) ** 2 < p.reach_radius**2] = (60, 160, 60)
        if len(path) > 0:
            c = np.clip(((path[:, 0] - lo) / (hi - lo) * size).astype(int), 0, size - 1)
            r = np.clip(((hi - path[:, 1]) / (hi - lo) * size).astype(int), 0, size - 1)
            img[r, c] = (40, 40, 200)
            img[max(r[-1] - 3, 0) : r[-1] + 4, max(c[-1] - 3, 0) : c[-1] + 4] = (200, 30, 30)
        return img


class MultiGoalEnv(BatchedSingleEnv):
    """Single MultiGoal environment: observations (4,) float32, actions (2,) in [-1, 1]."""

    def __init__(self, render_mode: str | None = None, params: MultiGoalParams | None = None, **overrides: Any):
        super().__init__(MultiGoalTask(params or MultiGoalParams(**overrides)), render_mode)


class MultiGoalVectorEnv(BatchedVectorEnv):
    """N MultiGoal environments as torch tensors on ``device`` (see BatchedVectorEnv)."""

    def __init__(
        self,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        render_mode: str | None = None,
        params: MultiGoalParams | None = None,
        **overrides: Any,
    ):
        super().__init__(MultiGoalTask(params or MultiGoalParams(**overrides)), num_envs, device, render_mode)
