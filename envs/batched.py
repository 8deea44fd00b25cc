"""The two gymnasium faces of a task whose dynamics are pure batched tensor functions.

A task writes its dynamics once, on states whose fields carry a leading batch dimension (N,):

    reset_state(seed (N,), episode (N,)) -> state          step_state(state, action (N, A)) ->
    autoreset_state(done, stepped, out) -> state             (state, obs, reward, terminated, truncated, info)
    observe(state) -> obs (N, O)                            fresh_info(state) -> info of a new episode

:class:`BatchedSingleEnv` (``gym.make``) calls them with a batch of one and numpy in and out;
:class:`BatchedVectorEnv` (``gym.make_vec(..., vectorization_mode="vector_entry_point", device=...)``) keeps N
states as torch tensors on a device and auto-resets finished environments in the same step
(``AutoresetMode.SAME_STEP``, the episode's last observation in ``info["final_obs"]``). Both therefore agree
to the bit. Starts come from :func:`counter_uniform` of (seed, episode index), so environment i of the
vector env after ``reset(seed=s)`` plays the episodes of a single env after ``reset(seed=s + i)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

MASK32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------------------
# Counter-based randomness: an episode's start depends only on (seed, episode index), never on the batch
# size or on the order in which environments finish, so the single and the batched env draw the same starts.
# ---------------------------------------------------------------------------------------------------------
def _hash32(v: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (lowbias32) on int64 tensors holding values in [0, 2^32)."""
    v = v & MASK32
    v = v ^ (v >> 16)
    v = (v * 0x7FEB352D) & MASK32  # int64 products wrap; the low 32 bits stay exact
    v = v ^ (v >> 15)
    v = (v * 0x846CA68B) & MASK32
    v = v ^ (v >> 16)
    return v


def counter_uniform(seed: torch.Tensor, counter: torch.Tensor, stream: int | torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) float32 numbers that are a pure function of (seed, counter, stream). Shapes broadcast,
    so a (S, 1) tensor of streams draws S numbers per environment in one pass (one op per stage, not S)."""
    h = _hash32(seed + 0x9E3779B9 * stream)
    h = _hash32(h ^ _hash32(counter + 0x85EBCA6B))
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))  # 24 bits: exact in float32


def segment_hits_disc(x0, y0, x1, y1, cx, cy, r) -> torch.Tensor:
    """(N,) bool: does the segment (x0, y0)-(x1, y1) pass within r of (cx, cy)? Catches fast fly-throughs."""
    dx, dy = x1 - x0, y1 - y0
    seg2 = (dx * dx + dy * dy).clamp_min(1e-12)
    s = (((cx - x0) * dx + (cy - y0) * dy) / seg2).clamp(0.0, 1.0)
    px, py = x0 + s * dx - cx, y0 + s * dy - cy
    return px * px + py * py < r * r


def where_state(done: torch.Tensor, fresh: NamedTuple, stepped: NamedTuple, out: NamedTuple | None) -> NamedTuple:
    """Field by field ``torch.where(done, fresh, stepped)``; with ``out`` written into out's tensors, so their
    storage is kept (a CUDA graph captured on them keeps reading the live state)."""
    fields = {}
    for name in stepped._fields:
        f, s = getattr(fresh, name), getattr(stepped, name)
        d = done.reshape(done.shape + (1,) * (s.dim() - 1))
        fields[name] = torch.where(d, f, s, out=None if out is None else getattr(out, name))
    return type(stepped)(**fields)


def to_python(info: dict[str, torch.Tensor]) -> dict[str, bool | int | float]:
    """Python scalars of a batch-of-one info (the same keys every step: Minari records them)."""
    return {k: v[0].item() for k, v in info.items()}


class BatchedTask:
    """What both envs need of a task; a task's module subclasses it with its params and dynamics."""

    def __init__(self, params: Any):
        self.params = params

    def reset_state(self, seed: torch.Tensor, episode: torch.Tensor) -> NamedTuple:
        raise NotImplementedError

    def step_state(self, state: NamedTuple, action: torch.Tensor):
        raise NotImplementedError

    def observe(self, state: NamedTuple) -> torch.Tensor:
        raise NotImplementedError

    def fresh_info(self, state: NamedTuple) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def autoreset_state(self, done: torch.Tensor, stepped: NamedTuple, out: NamedTuple | None = None) -> NamedTuple:
        """The next episode of each environment's seed where done, else ``stepped`` (see :func:`where_state`)."""
        fresh = self.reset_state(stepped.seed, stepped.episode + 1)
        return where_state(done, fresh, stepped, out)

    def metadata(self) -> dict[str, Any]:
        """What the task adds to its envs' metadata (mode_names, figure hints), merged by both env classes."""
        return {}

    def observation_space(self) -> gym.spaces.Box:
        raise NotImplementedError

    def action_space(self) -> gym.spaces.Box:
        raise NotImplementedError

    def render_frame(self, path: np.ndarray, state: NamedTuple) -> np.ndarray:
        """(H, W, 3) uint8 picture of environment 0 of ``state`` and the path (P, 2) it drove."""
        raise NotImplementedError

    def position(self, state: NamedTuple) -> tuple[float, float]:
        """Environment 0's (x, y) for the rendered path."""
        raise NotImplementedError


class BatchedSingleEnv(gym.Env):
    """A task's single gymnasium env: its batched functions with a batch of one, numpy in and out."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: BatchedTask, render_mode: str | None = None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.task = task
        self.params = task.params
        self.metadata = {**type(self).metadata, **task.metadata()}
        self.render_mode = render_mode
        self.observation_space = task.observation_space()
        self.action_space = task.action_space()
        self._seed = int(np.random.SeedSequence().generate_state(1)[0])  # unseeded: fresh entropy
        self._episode = -1
        self._state: NamedTuple | None = None
        self._path: list[tuple[float, float]] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._seed, self._episode = int(seed) & MASK32, -1
        self._episode += 1
        self._state = self.task.reset_state(
            torch.tensor([self._seed], dtype=torch.int64), torch.tensor([self._episode])
        )
        self._path = [self.task.position(self._state)]
        return self.task.observe(self._state)[0].numpy(), to_python(self.task.fresh_info(self._state))

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        a = torch.as_tensor(np.asarray(action, dtype=np.float32).reshape(1, -1))
        self._state, obs, reward, terminated, truncated, info = self.task.step_state(self._state, a)
        self._path.append(self.task.position(self._state))
        return obs[0].numpy(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), to_python(info)

    def render(self):
        if self.render_mode != "rgb_array" or self._state is None:
            return None
        return self.task.render_frame(np.asarray(self._path, dtype=np.float32), self._state)


class BatchedVectorEnv(VectorEnv):
    """N environments of a task stepped together as torch tensors on ``device``.

    Takes and returns tensors on its device. Finished environments are reset in the same step
    (``AutoresetMode.SAME_STEP``): the returned observation is the new episode's first, and
    ``info["final_obs"]`` holds the last observation of the episode that ended; ``info["done"]`` is
    terminated | truncated. Environment i of ``reset(seed=s)`` plays the same episodes as the single env after
    ``reset(seed=s + i)``.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self, task: BatchedTask, num_envs: int = 1, device: str | torch.device = "cpu", render_mode: str | None = None
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.task = task
        self.params = task.params
        self.metadata = {**type(self).metadata, **task.metadata()}
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.render_mode = render_mode
        self.single_observation_space = task.observation_space()
        self.single_action_space = task.action_space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.state: NamedTuple | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        seeds = (torch.arange(self.num_envs, dtype=torch.int64, device=self.device) + int(seed)) & MASK32
        self.state = self.task.reset_state(seeds, torch.zeros_like(seeds))
        return self.task.observe(self.state), self.task.fresh_info(self.state)

    def step(self, actions: torch.Tensor):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        actions = torch.as_tensor(actions, device=self.device).detach()  # actions are data: no graph through the env
        stepped, obs, reward, terminated, truncated, info = self.task.step_state(self.state, actions)
        done = terminated | truncated
        # In place: the state tensors keep their storage from one reset to the next.
        self.state = self.task.autoreset_state(done, stepped, out=self.state)
        info = dict(info, final_obs=obs, done=done)
        return self.task.observe(self.state), reward, terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array" or self.state is None:
            return None
        # The first environment, with its current position only (the batched env keeps no path history).
        return self.task.render_frame(np.array([self.task.position(self.state)], dtype=np.float32), self.state)
