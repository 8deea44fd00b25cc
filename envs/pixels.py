"""Pixel versions of the driving tasks: the same dynamics, seen through a top-down camera that follows the car.

``TreeAvoidPixels-v0`` and ``SlalomPixels-v0`` wrap TreeAvoid's and Slalom's batched task: reset, step and
auto-reset are theirs, only the observation differs. The camera is drawn with tensor ops on the state's device
(no OpenGL): each pixel's centre is mapped to road coordinates around the car and tested against the road, the
trees and the finish line, so the single env (a batch of one) and the torch twin draw the same pixels, and GPU
rollouts stay on the GPU. Channels: red the trees, green the road, blue the finish line and the car; each pixel
holds the share of its area an object covers (antialiased).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from envs.batched import BatchedSingleEnv, BatchedTask, BatchedVectorEnv
from envs.slalom import SlalomParams, SlalomTask
from envs.tree_avoid import TreeAvoidParams, TreeAvoidTask


@dataclass(frozen=True)
class Camera:
    size: int = 32  # pixels per side (measured: benchmarks/speed.py --tables pixels)
    metres: float = 4.0  # width (and length) of road seen
    behind: float = 0.5  # metres of road behind the car in view; the rest lies ahead
    car_radius: float = 0.12  # the car's dot


class Scene(NamedTuple):
    car_x: torch.Tensor  # (N,)
    car_y: torch.Tensor  # (N,)
    discs: torch.Tensor  # (N, K, 3): the trees' x, y and radius
    road_half_width: float
    finish_y: float


def draw(camera: Camera, scene: Scene) -> torch.Tensor:
    """(N, 3, S, S) uint8 images, channels first (as the encoders read them: each channel is written whole, where
    an (S, S, 3) layout interleaves them at twice the cost); row 0 is the far edge of the view (ahead), column 0
    the left.

    Antialiased, as a camera integrates the light over each pixel: a pixel holds the share of its area that
    each object covers (to first order in the distance of the pixel's centre from the object's edge). With hard
    0/1 pixels, where the car stands within a 12.5 cm pixel would be invisible, while the expert's swerve leaves
    less than that to spare; the shares carry it (measured in docs/results.md, "Camera observations").
    Each mask is computed at the fewest dimensions it depends on (the road per column, the finish line per
    row, the car once: it sits at the same place in every view) and written into its channel in place.
    """
    S, device = camera.size, scene.car_x.device
    res = camera.metres / S
    centres = (torch.arange(S, device=device, dtype=torch.float32) + 0.5) * res  # (S,) metres from an edge
    across = centres - camera.metres / 2  # (S,) each column's lateral offset from the car
    ahead = centres.flip(0) - camera.behind  # (S,) each row's forward offset from the car
    wx = scene.car_x[:, None] + across  # (N, S) lateral road coordinate, per column
    wy = scene.car_y[:, None] + ahead  # (N, S) forward road coordinate, per row
    # Shares are kept in units of 1/255 plus 0.5, so that the uint8 conversion (which truncates) rounds them.
    dx = wx[:, None, None, :] - scene.discs[:, :, 0, None, None]  # (N, K, 1, S)
    dy = wy[:, None, :, None] - scene.discs[:, :, 1, None, None]  # (N, K, S, 1)
    radius = scene.discs[:, :, 2, None, None]  # (N, K, 1, 1)
    # r - d = (r^2 - d^2) / (r + d) ~ (r^2 - d^2) / 2r near the edge, where the share is neither 0 nor 1
    scale = 255 / (2 * radius * res)  # (N, K, 1, 1)
    column = (radius * radius - dx * dx) * scale + 128  # (N, K, 1, S)
    trees = (column - dy * dy * scale).clamp_(0.5, 255.5)  # (N, K, S, S): the one full-size pass per tree
    trees = trees[:, 0] if trees.shape[1] == 1 else trees.amax(dim=1)  # (N, S, S)
    road = ((scene.road_half_width - wx.abs()) / res + 0.5).clamp_(0, 1)  # (N, S) share
    finish = (1.5 - (wy - scene.finish_y).abs() / res).clamp_(0, 1) * 255 + 0.5  # (N, S)
    car = ((camera.car_radius - (across[None, :] ** 2 + ahead[:, None] ** 2).sqrt()) / res + 0.5).clamp(0, 1)
    image = torch.empty(trees.shape[0], 3, S, S, dtype=torch.uint8, device=device)  # (N, 3, S, S)
    image[:, 0] = trees
    # the road where no tree stands: road * (255 - tree) in units of 1/255, + 0.5
    image[:, 1] = torch.addcmul((road * 255.5 + 0.5)[:, None, :], road[:, None, :], trees, value=-1.0)
    image[:, 2] = torch.maximum(finish[:, :, None], car * 255 + 0.5)
    return image


class PixelTask(BatchedTask):
    """A task's dynamics with the camera as its observation; ``state_observation`` is the state the expert reads."""

    def __init__(self, base: BatchedTask, scene: Callable[[Any], Scene], camera: Camera | None = None):
        super().__init__(base.params)
        self.base, self.scene, self.camera = base, scene, camera or Camera()

    def reset_state(self, seed, episode):
        return self.base.reset_state(seed, episode)

    def autoreset_state(self, done, stepped, out=None):
        return self.base.autoreset_state(done, stepped, out)

    def step_state(self, state, action):
        state, _, reward, terminated, truncated, info = self.base.step_state(state, action)
        return state, self.observe(state), reward, terminated, truncated, info

    def observe(self, state) -> torch.Tensor:
        return draw(self.camera, self.scene(state))

    def state_observation(self, state) -> torch.Tensor:
        return self.base.observe(state)

    def fresh_info(self, state):
        return self.base.fresh_info(state)

    def observation_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(0, 255, (3, self.camera.size, self.camera.size), np.uint8)

    def action_space(self):
        return self.base.action_space()

    def metadata(self) -> dict[str, Any]:
        # the path figure reads (x, y) from observation dims: pixels here, so the figure hints are left out
        return {k: v for k, v in self.base.metadata().items() if k != "figure"}

    def render_frame(self, path, state):
        return self.base.render_frame(path, state)

    def position(self, state):
        return self.base.position(state)


def tree_avoid_scene(params: TreeAvoidParams) -> Callable[[Any], Scene]:
    def scene(state) -> Scene:
        tree = torch.stack(
            [state.tree_x, torch.full_like(state.x, params.tree_y), torch.full_like(state.x, params.tree_radius)], -1
        )  # (N, 3)
        return Scene(state.x, state.y, tree[:, None, :], params.road_half_width, params.finish_y)

    return scene


def slalom_scene(task: SlalomTask) -> Callable[[Any], Scene]:
    p = task.params

    def scene(state) -> Scene:
        ys = task.tree_ys(state.x.device)[None, :].expand_as(state.tree_x)  # (N, k)
        discs = torch.stack([state.tree_x, ys, torch.full_like(state.tree_x, p.tree_radius)], -1)  # (N, k, 3)
        return Scene(state.x, state.y, discs, p.road_half_width, p.finish_y)

    return scene


def tree_avoid_pixels(params: TreeAvoidParams | None = None, **overrides: Any) -> PixelTask:
    params = params or TreeAvoidParams(**overrides)
    return PixelTask(TreeAvoidTask(params), tree_avoid_scene(params))


def slalom_pixels(params: SlalomParams | None = None, **overrides: Any) -> PixelTask:
    base = SlalomTask(params or SlalomParams(**overrides))
    return PixelTask(base, slalom_scene(base))


class TreeAvoidPixelsEnv(BatchedSingleEnv):
    """TreeAvoid seen through the camera: observations (3, 32, 32) uint8."""

    def __init__(self, render_mode: str | None = None, **overrides: Any):
        super().__init__(tree_avoid_pixels(**overrides), render_mode)


class TreeAvoidPixelsVectorEnv(BatchedVectorEnv):
    def __init__(self, num_envs: int = 1, device: str | torch.device = "cpu", render_mode=None, **overrides: Any):
        super().__init__(tree_avoid_pixels(**overrides), num_envs, device, render_mode)


class SlalomPixelsEnv(BatchedSingleEnv):
    """Slalom seen through the camera: observations (3, 32, 32) uint8."""

    def __init__(self, render_mode: str | None = None, **overrides: Any):
        super().__init__(slalom_pixels(**overrides), render_mode)


class SlalomPixelsVectorEnv(BatchedVectorEnv):
    def __init__(self, num_envs: int = 1, device: str | torch.device = "cpu", render_mode=None, **overrides: Any):
        super().__init__(slalom_pixels(**overrides), num_envs, device, render_mode)
