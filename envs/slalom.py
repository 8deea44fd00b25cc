"""Slalom: the TreeAvoid car passes k trees in a row; each can be passed on either side, so there are 2^k routes.

Trees stand at y = first_tree_y + i * tree_spacing (i < k), each with its own random lateral offset; the
spacing lets a driver return to the lane centre before the next decision. The observation is
``(car_x, car_y, x offset of the next tree to pass, distance to its row)`` and never reveals which sides were
taken earlier: a policy without memory cannot know them. Hitting a tree or leaving the road is a failure;
crossing the finish line a success.

Mode convention (see :mod:`envs`): ``info["mode"]`` is -1 until the last tree's row is crossed, then the route
id, bit i (from the most significant) set when tree i was passed on the right; ``metadata["mode_names"]`` names
routes like ``"LRL"``. ``info["switches"]`` counts changes of course while approaching a tree.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from envs.batched import BatchedSingleEnv, BatchedTask, BatchedVectorEnv, counter_uniform, segment_hits_disc
from envs.tree_avoid import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT


@dataclass(frozen=True)
class SlalomParams:
    """Physical constants (metres, seconds); the car and a tree are TreeAvoid's."""

    num_trees: int = 3
    dt: float = 0.1
    road_half_width: float = 1.0
    start_x_range: float = 0.1
    first_tree_y: float = 3.0
    tree_spacing: float = 3.5  # the expert is back within 0.02 of the lane centre before the next decision line
    tree_radius: float = 0.3
    tree_offset_range: float = 0.05
    finish_after: float = 2.0  # the finish line lies this far beyond the last tree
    max_lateral_speed: float = 1.0
    min_forward_speed: float = 0.25
    max_forward_speed: float = 1.25
    max_steps: int = 250  # about twice the expert's episode
    approach_distance: float = 1.5

    @property
    def tree_ys(self) -> list[float]:
        return [self.first_tree_y + i * self.tree_spacing for i in range(self.num_trees)]

    @property
    def finish_y(self) -> float:
        return self.tree_ys[-1] + self.finish_after


def route_names(num_trees: int) -> list[str]:
    """Names of the 2^k routes, indexed by route id (bit set = right)."""
    return ["".join(p) for p in itertools.product("LR", repeat=num_trees)]


class SlalomState(NamedTuple):
    x: torch.Tensor  # (N,) float32
    y: torch.Tensor  # (N,) float32
    tree_x: torch.Tensor  # (N, k) float32 lateral offsets of the trees
    t: torch.Tensor  # (N,) int64
    sides: torch.Tensor  # (N, k) int64 SIDE_* of each tree row crossing, SIDE_NONE before
    heading: torch.Tensor  # (N,) int64 side the car last headed for at the next tree (-1, +1, 0 not yet)
    switches: torch.Tensor  # (N,) int64
    seed: torch.Tensor  # (N,) int64
    episode: torch.Tensor  # (N,) int64


class SlalomTask(BatchedTask):
    params: SlalomParams

    def __init__(self, params: SlalomParams):
        if params.num_trees < 1:
            raise ValueError(f"num_trees must be at least 1, got {params.num_trees}")
        super().__init__(params)
        self._tree_ys = torch.tensor(params.tree_ys)  # (k,) CPU; moved once per device

    def tree_ys(self, device: torch.device) -> torch.Tensor:
        if self._tree_ys.device != device:
            self._tree_ys = self._tree_ys.to(device)
        return self._tree_ys

    # -------------------------------------------------------------------------------------------- dynamics
    def reset_state(self, seed, episode):
        p, k = self.params, self.params.num_trees
        streams = torch.arange(1, k + 2, device=seed.device)[:, None]  # (k+1, 1): car, then one per tree
        u = counter_uniform(seed, episode, streams)  # (k+1, N)
        x0 = (2.0 * u[0] - 1.0) * p.start_x_range
        tree_x = ((2.0 * u[1:] - 1.0) * p.tree_offset_range).T.contiguous()  # (N, k)
        zeros = torch.zeros_like(seed)
        return SlalomState(
            x=x0,
            y=torch.zeros_like(x0),
            tree_x=tree_x,
            t=zeros.clone(),
            sides=torch.full_like(tree_x, SIDE_NONE, dtype=torch.int64),
            heading=zeros.clone(),
            switches=zeros.clone(),
            seed=seed.clone(),
            episode=episode.clone(),
        )

    def _next_tree(self, y: torch.Tensor) -> torch.Tensor:
        """(N,) index of the next tree whose row is not crossed yet (k when all are)."""
        return (y[:, None] >= self.tree_ys(y.device)).sum(1)

    def observe(self, state):
        """(N, 4): car x, car y, the next tree's offset and the distance to its row (0 and the distance to the
        finish line after the last tree). The distance makes the approach to every tree look alike."""
        nxt = self._next_tree(state.y)
        k = self.params.num_trees
        idx = nxt.clamp(max=k - 1)
        next_x = torch.where(nxt < k, state.tree_x.gather(1, idx[:, None])[:, 0], 0.0)
        next_y = torch.where(nxt < k, self.tree_ys(state.y.device)[idx], self.params.finish_y)
        return torch.stack([state.x, state.y, next_x, next_y - state.y], dim=-1)

    def _mode(self, sides: torch.Tensor) -> torch.Tensor:
        k = self.params.num_trees
        weights = 2 ** torch.arange(k - 1, -1, -1, device=sides.device)  # (k,) most significant bit first
        route = ((sides == SIDE_RIGHT).long() * weights).sum(1)
        return torch.where((sides != SIDE_NONE).all(1), route, -1)

    def _info(self, state, success, collision, off_road):
        return {
            "success": success,
            "collision": collision,
            "off_road": off_road,
            "switches": state.switches,
            "mode": self._mode(state.sides),
        }

    def fresh_info(self, state):
        no = torch.zeros_like(state.x, dtype=torch.bool)
        return {k: v.clone() for k, v in self._info(state, no, no, no).items()}

    def step_state(self, state, action):
        p = self.params
        tree_ys = self.tree_ys(state.x.device)  # (k,)
        a = action.to(state.x.dtype).clamp(-1.0, 1.0)
        vx = a[:, 0] * p.max_lateral_speed
        vy = p.min_forward_speed + (a[:, 1] + 1.0) * 0.5 * (p.max_forward_speed - p.min_forward_speed)
        x, y, t = state.x + vx * p.dt, state.y + vy * p.dt, state.t + 1

        # Side of each tree: fixed when the path first crosses its row, from the interpolated crossing point.
        crossing = (state.y[:, None] < tree_ys) & (y[:, None] >= tree_ys)  # (N, k)
        frac = (tree_ys - state.y[:, None]) / (y - state.y)[:, None]
        x_cross = state.x[:, None] + frac * (x - state.x)[:, None]
        side_now = torch.where(x_cross < state.tree_x, SIDE_LEFT, SIDE_RIGHT)
        sides = torch.where(crossing, side_now, state.sides)

        # Dithering, as in TreeAvoid, toward the next tree; the heading starts afresh after each tree.
        nxt = self._next_tree(y)
        k = p.num_trees
        idx = nxt.clamp(max=k - 1)[:, None]
        next_y = tree_ys[idx[:, 0]]
        next_x = state.tree_x.gather(1, idx)[:, 0]
        passed_one = crossing.any(1)
        time_to_tree = (next_y - y) / vy
        predicted = x + vx * time_to_tree - next_x
        heading_now = torch.where(predicted < -p.tree_radius, -1, torch.where(predicted > p.tree_radius, 1, 0))
        approaching = (nxt < k) & (next_y - y > 0) & (next_y - y <= p.approach_distance) & (heading_now != 0)
        old_heading = torch.where(passed_one, 0, state.heading)
        switched = approaching & (old_heading != 0) & (heading_now != old_heading)
        switches = state.switches + switched.long()
        heading = torch.where(approaching, heading_now, old_heading)

        hits = segment_hits_disc(
            state.x[:, None], state.y[:, None], x[:, None], y[:, None], state.tree_x, tree_ys, p.tree_radius
        )  # (N, k)
        collision = hits.any(1)
        off_road = (x.abs() > p.road_half_width) & ~collision
        success = (y >= p.finish_y) & ~collision & ~off_road
        terminated = collision | off_road | success
        truncated = (t >= p.max_steps) & ~terminated
        reward = (y - state.y) + success.float() - (collision | off_road).float()
        new = SlalomState(x, y, state.tree_x, t, sides, heading, switches, state.seed, state.episode)
        return new, self.observe(new), reward, terminated, truncated, self._info(new, success, collision, off_road)

    # ------------------------------------------------------------------------------------------- spaces
    def observation_space(self):
        p = self.params
        margin = p.max_forward_speed * p.dt + 0.5
        w = p.road_half_width + margin
        ahead = max(p.first_tree_y, p.tree_spacing, p.finish_after) + margin
        low = np.array([-w, -margin, -p.tree_offset_range, -margin], dtype=np.float32)
        high = np.array([w, p.finish_y + margin, p.tree_offset_range, ahead], dtype=np.float32)
        return gym.spaces.Box(low, high, dtype=np.float32)

    def action_space(self):
        return gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def metadata(self):
        p = self.params
        return {
            "mode_names": route_names(p.num_trees),
            "figure": {
                "xy": [0, 1],
                "circles": [[0.0, ty, p.tree_radius] for ty in p.tree_ys],
                "hlines": [p.finish_y],
                "xlim": [-1.2, 1.2],
                "ylim": [-0.1, p.finish_y + 0.2],
            },
        }

    # ------------------------------------------------------------------------------------------ rendering
    def position(self, state):
        return float(state.x[0]), float(state.y[0])

    def render_frame(self, path, state, width: int = 200, height: int = 600):
        p = self.params
        img = np.full((height, width, 3), (70, 150, 70), dtype=np.uint8)
        x_lo, x_hi = -p.road_half_width - 0.2, p.road_half_width + 0.2
        y_lo, y_hi = -0.2, p.finish_y + 0.3
        cols = (np.arange(width) + 0.5) / width * (x_hi - x_lo) + x_lo
        rows = y_hi - (np.arange(height) + 0.5) / height * (y_hi - y_lo)
        X, Y = np.meshgrid(cols, rows)
        img[np.abs(X) <= p.road_half_width] = (110, 110, 110)
        img[np.abs(Y - p.finish_y) < 0.03] = (240, 240, 240)
        for ty, tx in zip(p.tree_ys, state.tree_x[0].tolist()):
            img[(X - tx) ** 2 + (Y - ty) ** 2 < p.tree_radius**2] = (30, 90, 30)
        if len(path) > 0:
            r = np.clip(((y_hi - path[:, 1]) / (y_hi - y_lo) * height).astype(int), 0, height - 1)
            c = np.clip(((path[:, 0] - x_lo) / (x_hi - x_lo) * width).astype(int), 0, width - 1)
            img[r, c] = (250, 210, 40)
            img[max(r[-1] - 4, 0) : r[-1] + 5, max(c[-1] - 3, 0) : c[-1] + 4] = (200, 30, 30)
        return img


class SlalomEnv(BatchedSingleEnv):
    """Single Slalom environment: observations (4,) float32, actions (2,) in [-1, 1]."""

    def __init__(self, render_mode: str | None = None, params: SlalomParams | None = None, **overrides: Any):
        super().__init__(SlalomTask(params or SlalomParams(**overrides)), render_mode)


class SlalomVectorEnv(BatchedVectorEnv):
    """N Slalom environments as torch tensors on ``device`` (see BatchedVectorEnv)."""

    def __init__(
        self,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        render_mode: str | None = None,
        params: SlalomParams | None = None,
        **overrides: Any,
    ):
        super().__init__(SlalomTask(params or SlalomParams(**overrides)), num_envs, device, render_mode)
