"""TreeAvoid: a top-down driving task whose demonstrations are bimodal.

The car drives up a straight road; a tree stands ahead near the lane centre. Passing it on the left or on
the right are both correct; driving between the two (what a unimodal policy does when it averages the
demonstrations) is not.

The dynamics are written once, as pure functions of tensors with a leading batch dimension
(:func:`reset_state`, :func:`step_state`). :class:`TreeAvoidEnv` (the gymnasium env) calls them with a batch
of one; :class:`TreeAvoidVectorEnv` keeps a batch of states on a torch device and auto-resets finished
environments with ``torch.where``. Both therefore agree to the bit.

Coordinates: x is lateral (negative = left), y is forward. Action: ``(lateral, throttle)`` in [-1, 1]^2.
Observation: ``(car_x, car_y, tree_x)``; which side the demonstrator picked is never observed.

Mode convention (see :mod:`envs`): ``info["mode"]`` is -1 until the path crosses the tree row, then 0 (left) or
1 (right); ``info["context"]`` is the tree's offset (the demonstrator prefers the wider side);
``info["outcome"]`` is where the path crossed the tree row (0 before); ``info["switches"]`` counts dithering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from envs.batched import BatchedSingleEnv, BatchedTask, BatchedVectorEnv, counter_uniform, segment_hits_disc

__all__ = ["TreeAvoidEnv", "TreeAvoidParams", "TreeAvoidVectorEnv", "counter_uniform", "reset_state", "step_state"]

SIDE_NONE, SIDE_LEFT, SIDE_RIGHT = 0, 1, 2
SIDE_NAMES = ("none", "left", "right")
MODE_NAMES = ("left", "right")  # mode id = side - 1 once the tree row is crossed, -1 before


@dataclass(frozen=True)
class TreeAvoidParams:
    """Physical constants of the task (lengths in metres, times in seconds)."""

    dt: float = 0.1  # integration step
    road_half_width: float = 1.0  # |x| beyond this is off the road
    start_x_range: float = 0.1  # car starts at x ~ U(-r, r), y = 0
    tree_y: float = 3.0  # the tree's forward position
    tree_radius: float = 0.3  # a collision is any point of the path inside this disc
    tree_offset_range: float = 0.05  # tree_x ~ U(-r, r)
    finish_y: float = 5.0  # crossing this line is a success
    max_lateral_speed: float = 1.0  # lateral action 1 means this many m/s
    min_forward_speed: float = 0.25  # throttle -1
    max_forward_speed: float = 1.25  # throttle +1
    max_steps: int = 100  # time limit (truncation): about twice the expert's episode
    approach_distance: float = 1.5  # dithering is counted while tree_y - y lies in (0, this]

    @property
    def obs_dim(self) -> int:
        return 3


class TreeAvoidState(NamedTuple):
    """The whole state of a batch of environments; every field has a leading batch dimension (N,)."""

    x: torch.Tensor  # (N,) float32 lateral position
    y: torch.Tensor  # (N,) float32 forward position
    tree_x: torch.Tensor  # (N,) float32 lateral position of the tree
    t: torch.Tensor  # (N,) int64 steps taken this episode
    side: torch.Tensor  # (N,) int64 SIDE_* of the tree row crossing, SIDE_NONE before
    x_at_tree: torch.Tensor  # (N,) float32 x where the path crossed the tree row (NaN before)
    heading: torch.Tensor  # (N,) int64 side the car last headed for (-1 left, +1 right, 0 not yet)
    switches: torch.Tensor  # (N,) int64 changes from a course clear on one side to one clear on the other
    seed: torch.Tensor  # (N,) int64 seed of this environment's stream of episodes
    episode: torch.Tensor  # (N,) int64 episodes started from this seed (counter for the reset noise)


# ---------------------------------------------------------------------------------------------------------
# The dynamics, once.
# ---------------------------------------------------------------------------------------------------------
def observe(state: TreeAvoidState) -> torch.Tensor:
    """(N, 3) float32 observation: car x, car y, tree x."""
    return torch.stack([state.x, state.y, state.tree_x], dim=-1)


def _start(params: TreeAvoidParams, seed: torch.Tensor, episode: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # (2, 1): car, tree. arange runs on the device; a tensor built from a Python list would be a host-to-device
    # copy inside a captured CUDA graph.
    streams = torch.arange(1, 3, device=seed.device)[:, None]
    u_car, u_tree = counter_uniform(seed, episode, streams)  # (N,) each
    x0 = (2.0 * u_car - 1.0) * params.start_x_range
    tree_x = (2.0 * u_tree - 1.0) * params.tree_offset_range
    return x0, tree_x


# What a fresh episode holds besides its random start; reset_state and autoreset_state both read it.
_FRESH_CONSTANTS = {"y": 0.0, "t": 0, "side": SIDE_NONE, "x_at_tree": float("nan"), "heading": 0, "switches": 0}


def reset_state(params: TreeAvoidParams, seed: torch.Tensor, episode: torch.Tensor | None = None) -> TreeAvoidState:
    """Fresh episodes for a batch of seeds (N,) int64; ``episode`` (N,) int64 counts resets of each seed."""
    if episode is None:
        episode = torch.zeros_like(seed)
    x0, tree_x = _start(params, seed, episode)
    # Every field gets its own storage: autoreset_state updates a state in place.
    c = _FRESH_CONSTANTS
    return TreeAvoidState(
        x=x0,
        y=torch.full_like(x0, c["y"]),
        tree_x=tree_x,
        t=torch.full_like(seed, c["t"]),
        side=torch.full_like(seed, c["side"]),
        x_at_tree=torch.full_like(x0, c["x_at_tree"]),
        heading=torch.full_like(seed, c["heading"]),
        switches=torch.full_like(seed, c["switches"]),
        seed=seed.clone(),
        episode=episode.clone(),
    )


def autoreset_state(
    params: TreeAvoidParams, done: torch.Tensor, stepped: TreeAvoidState, out: TreeAvoidState | None = None
) -> TreeAvoidState:
    """Per environment, the next episode of its seed where done (N,) is true, else ``stepped``.

    Equal to ``torch.where(done, reset_state(seed, episode + 1), stepped)`` field by field, without
    materialising the constant fields. With ``out`` every field is written into out's tensors (``stepped`` may
    share them), so their storage is kept: a CUDA graph captured on them keeps reading the live state.
    """

    def where(name: str, fresh: torch.Tensor) -> torch.Tensor:
        old = getattr(stepped, name)
        return torch.where(done, fresh, old, out=None if out is None else getattr(out, name))

    def fill(name: str, constant: float) -> torch.Tensor:
        # A Python number, not a 0-dim CPU tensor: torch.where copies a CPU tensor to the device (a host sync,
        # and an error inside CUDA-graph capture, found on an H100); masked_fill passes the number to the kernel.
        old = getattr(stepped, name)
        if out is None:
            return old.masked_fill(done, constant)
        dst = getattr(out, name)
        if dst is not old:
            dst.copy_(old)
        return dst.masked_fill_(done, constant)

    episode = where("episode", stepped.episode + 1)
    x0, tree_x = _start(params, stepped.seed, episode)  # used only where done
    fields = {k: fill(k, c) for k, c in _FRESH_CONSTANTS.items()}
    seed = stepped.seed if out is None or out.seed is stepped.seed else out.seed.copy_(stepped.seed)
    return TreeAvoidState(x=where("x", x0), tree_x=where("tree_x", tree_x), **fields, seed=seed, episode=episode)


def episode_info(
    state: TreeAvoidState, success: torch.Tensor, collision: torch.Tensor, off_road: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The info dict of a batch of states, (N,) tensors under the same keys at reset and on every step.

    Besides the package's mode convention (success, mode, context, outcome, switches) it keeps TreeAvoid's own
    keys: collision, off_road (bool), side (SIDE_*).
    """
    return {
        "success": success,
        "collision": collision,
        "off_road": off_road,
        "side": state.side,
        "switches": state.switches,
        "mode": torch.where(state.side == SIDE_NONE, -1, state.side - 1),
        # a copy: the batched twin resets tree_x in place, and the info must keep the episode that ended
        "context": state.tree_x.clone(),
        # 0 until known (NaN would make gymnasium's determinism check fail: NaN != NaN)
        "outcome": torch.where(state.side == SIDE_NONE, 0.0, state.x_at_tree),
    }


def fresh_info(state: TreeAvoidState) -> dict[str, torch.Tensor]:
    """The info of episodes that have just started (nothing has happened yet)."""
    no = torch.zeros_like(state.x, dtype=torch.bool)
    return {k: v.clone() for k, v in episode_info(state, no, no, no).items()}  # the state changes in place


def step_state(
    params: TreeAvoidParams, state: TreeAvoidState, action: torch.Tensor
) -> tuple[TreeAvoidState, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Advance a batch of states by one step.

    Args:
        action: (N, 2) float, clipped to [-1, 1]: lateral speed command and throttle.
    Returns:
        (state, obs (N, 3), reward (N,), terminated (N,) bool, truncated (N,) bool, info) with info from
        :func:`episode_info`.
    """
    p = params
    a = action.to(state.x.dtype).clamp(-1.0, 1.0)
    vx = a[:, 0] * p.max_lateral_speed  # (N,)
    vy = p.min_forward_speed + (a[:, 1] + 1.0) * 0.5 * (p.max_forward_speed - p.min_forward_speed)  # (N,)
    x = state.x + vx * p.dt
    y = state.y + vy * p.dt
    t = state.t + 1

    # Side of the tree: fixed when the path first crosses the tree row, from the interpolated crossing point.
    crossing = (state.y < p.tree_y) & (y >= p.tree_y)
    frac = (p.tree_y - state.y) / (y - state.y)
    x_cross = state.x + frac * (x - state.x)
    side_now = torch.where(x_cross < state.tree_x, SIDE_LEFT, SIDE_RIGHT)
    side = torch.where(crossing, side_now, state.side)
    x_at_tree = torch.where(crossing, x_cross, state.x_at_tree)

    # Dithering: the side the car heads for is where its current velocity would carry it at the tree row, once
    # that point is clear of the tree (|offset| > radius); a course into the tree keeps the previous heading.
    time_to_tree = (p.tree_y - y) / vy
    predicted = x + vx * time_to_tree - state.tree_x
    heading_now = torch.where(predicted < -p.tree_radius, -1, torch.where(predicted > p.tree_radius, 1, 0))
    approaching = (p.tree_y - y > 0) & (p.tree_y - y <= p.approach_distance) & (heading_now != 0)
    switched = approaching & (state.heading != 0) & (heading_now != state.heading)
    switches = state.switches + switched.long()
    heading = torch.where(approaching, heading_now, state.heading)

    collision = segment_hits_disc(state.x, state.y, x, y, state.tree_x, torch.full_like(x, p.tree_y), p.tree_radius)
    off_road = (x.abs() > p.road_half_width) & ~collision
    success = (y >= p.finish_y) & ~collision & ~off_road
    terminated = collision | off_road | success
    truncated = (t >= p.max_steps) & ~terminated

    reward = (y - state.y) + success.float() - (collision | off_road).float()  # progress, +1 finish, -1 crash
    new_state = TreeAvoidState(x, y, state.tree_x, t, side, x_at_tree, heading, switches, state.seed, state.episode)
    info = episode_info(new_state, success, collision, off_road)
    return new_state, observe(new_state), reward, terminated, truncated, info


def _observation_space(params: TreeAvoidParams) -> gym.spaces.Box:
    # Bounds a little beyond what the dynamics can reach in one step past the edges.
    margin = params.max_forward_speed * params.dt + 0.5
    w = params.road_half_width + margin
    low = np.array([-w, -margin, -params.tree_offset_range], dtype=np.float32)
    high = np.array([w, params.finish_y + margin, params.tree_offset_range], dtype=np.float32)
    return gym.spaces.Box(low, high, dtype=np.float32)


ACTION_SPACE = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------
# Rendering (numpy only: no display needed)
# ---------------------------------------------------------------------------------------------------------
def render_frame(
    params: TreeAvoidParams, path: np.ndarray, tree_x: float, width: int = 240, height: int = 400
) -> np.ndarray:
    """(H, W, 3) uint8 picture of the road, the tree, the finish line and the path (P, 2) so far."""
    p = params
    img = np.full((height, width, 3), (70, 150, 70), dtype=np.uint8)  # grass
    x_lo, x_hi = -p.road_half_width - 0.2, p.road_half_width + 0.2
    y_lo, y_hi = -0.2, p.finish_y + 0.3
    cols = (np.arange(width) + 0.5) / width * (x_hi - x_lo) + x_lo  # (W,)
    rows = y_hi - (np.arange(height) + 0.5) / height * (y_hi - y_lo)  # (H,)
    X, Y = np.meshgrid(cols, rows)
    img[np.abs(X) <= p.road_half_width] = (110, 110, 110)
    img[np.abs(Y - p.finish_y) < 0.03] = (240, 240, 240)
    img[(X - tree_x) ** 2 + (Y - p.tree_y) ** 2 < p.tree_radius**2] = (30, 90, 30)

    def to_pixel(px, py):
        return (
            np.clip(((y_hi - py) / (y_hi - y_lo) * height).astype(int), 0, height - 1),
            np.clip(((px - x_lo) / (x_hi - x_lo) * width).astype(int), 0, width - 1),
        )

    if len(path) > 0:
        # Dense samples along the path so that it draws as a line.
        s = np.linspace(0, len(path) - 1, num=max(2, 8 * len(path)))
        px = np.interp(s, np.arange(len(path)), path[:, 0])
        py = np.interp(s, np.arange(len(path)), path[:, 1])
        r, c = to_pixel(px, py)
        img[r, c] = (250, 210, 40)
        r, c = to_pixel(path[-1:, 0], path[-1:, 1])
        img[max(r[0] - 4, 0) : r[0] + 5, max(c[0] - 3, 0) : c[0] + 4] = (200, 30, 30)  # the car
    return img


class TreeAvoidTask(BatchedTask):
    """TreeAvoid's dynamics for the two env classes of :mod:`envs.batched`."""

    params: TreeAvoidParams

    def reset_state(self, seed, episode):
        return reset_state(self.params, seed, episode)

    def step_state(self, state, action):
        return step_state(self.params, state, action)

    def autoreset_state(self, done, stepped, out=None):
        return autoreset_state(self.params, done, stepped, out)

    def observe(self, state):
        return observe(state)

    def fresh_info(self, state):
        return fresh_info(state)

    def observation_space(self):
        return _observation_space(self.params)

    def action_space(self):
        return ACTION_SPACE

    def position(self, state):
        return float(state.x[0]), float(state.y[0])

    def render_frame(self, path, state):
        return render_frame(self.params, path, float(state.tree_x[0]))

    def metadata(self):
        p = self.params
        # for lvm_policy's path figures: (x, y) are observation dims 0 and 1; the tree (at its mean offset) and
        # the finish line behind them
        figure = {
            "xy": [0, 1],
            "circles": [[0.0, p.tree_y, p.tree_radius]],
            "hlines": [p.finish_y],
            "xlim": [-1.2, 1.2],
            "ylim": [-0.1, p.finish_y + 0.2],
        }
        return {"mode_names": list(MODE_NAMES), "figure": figure}


class TreeAvoidEnv(BatchedSingleEnv):
    """Single TreeAvoid environment with numpy observations (float32, shape (3,)) and actions (2,)."""

    def __init__(self, render_mode: str | None = None, params: TreeAvoidParams | None = None, **overrides: Any):
        super().__init__(TreeAvoidTask(params or TreeAvoidParams(**overrides)), render_mode)


class TreeAvoidVectorEnv(BatchedVectorEnv):
    """N TreeAvoid environments stepped together as torch tensors on ``device`` (see BatchedVectorEnv)."""

    def __init__(
        self,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        render_mode: str | None = None,
        params: TreeAvoidParams | None = None,
        **overrides: Any,
    ):
        super().__init__(TreeAvoidTask(params or TreeAvoidParams(**overrides)), num_envs, device, render_mode)
