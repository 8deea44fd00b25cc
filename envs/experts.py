"""A scripted, bimodal TreeAvoid demonstrator that drives the single and the batched env alike.

Once per episode it picks the side to pass the tree on, preferring the wider side: with the tree's offset
u = tree_x / tree_offset_range in [-1, 1], it goes left with probability

    p_left(u) = left_prob + offset_gain * u * min(left_prob, 1 - left_prob),

which stays in [0, 1] and, since u is uniform and symmetric, averages exactly to ``left_prob``.
It keeps its lane, then, at a decision line just late enough for the farthest pass, swerves decisively (a
saturating proportional controller) to a point beside the tree, passes it and drifts back to the lane centre.
Small Gaussian noise is added to its actions. Hesitating between the two sides at the swerve point is fatal,
which is what makes the task a test of multimodal imitation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from envs.tree_avoid import TreeAvoidParams


@dataclass(frozen=True)
class ExpertConfig:
    left_prob: float = 0.5  # overall probability of passing the tree on the left
    offset_gain: float = 0.5  # how strongly the tree's offset tilts the choice toward the wider side
    noise: float = 0.05  # standard deviation of the Gaussian action noise
    clearance: float = 0.1  # lateral gap kept between the car and the tree's edge
    # The passing line is reached this far (forward) before the tree's front row; negative: after it, which the
    # round tree allows. No slack is left for hesitation.
    margin: float = -0.1
    pass_distance: float = 0.35  # keep the passing line until this far beyond the tree's centre
    swerve_gain: float = 8.0  # proportional gain while swerving (saturates: decisive; gain * dt < 1: no overshoot)
    lane_gain: float = 1.5  # proportional gain toward the lane centre otherwise (smooth)
    cruise_throttle: float = 0.5
    swerve_throttle: float = 1.0  # and speed up through it: the throttle matters too

    def __post_init__(self):
        if not 0.0 <= self.left_prob <= 1.0:
            raise ValueError(f"left_prob must lie in [0, 1], got {self.left_prob}")
        if not 0.0 <= self.offset_gain <= 1.0:
            raise ValueError(f"offset_gain must lie in [0, 1], got {self.offset_gain}")
        if not (self.noise >= 0.0 and np.isfinite(self.noise)):
            raise ValueError(f"noise must be a finite number >= 0, got {self.noise}")


class TreeAvoidExpert:
    """Batched scripted expert. ``reset(obs, mask)`` draws sides, ``act(obs)`` returns (N, 2) actions."""

    def __init__(
        self,
        params: TreeAvoidParams | None = None,
        config: ExpertConfig | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.params = params or TreeAvoidParams()
        self.config = config or ExpertConfig()
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.side_sign: torch.Tensor | None = None  # (N,) -1 left, +1 right

    def left_probability(self, tree_x: torch.Tensor) -> torch.Tensor:
        """(N,) probability of choosing the left side given the tree's lateral position (N,)."""
        c = self.config
        u = (tree_x / self.params.tree_offset_range).clamp(-1.0, 1.0)
        return c.left_prob + c.offset_gain * u * min(c.left_prob, 1.0 - c.left_prob)

    def decision_y(self) -> float:
        """Forward position where the swerve starts (the same in every episode)."""
        p, c = self.params, self.config
        forward_speed = p.min_forward_speed + (c.swerve_throttle + 1.0) * 0.5 * (
            p.max_forward_speed - p.min_forward_speed
        )
        farthest = p.tree_radius + c.clearance + p.tree_offset_range + 0.01  # lateral distance, worst case
        return p.tree_y - p.tree_radius - c.margin - forward_speed * farthest / p.max_lateral_speed

    def reset(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Draw a side for each environment of obs (N, 3) where mask (N,) is true (all when None)."""
        p_left = self.left_probability(obs[:, 2])
        u = torch.rand(p_left.shape, generator=self.generator, device=self.device)
        sign = torch.where(u < p_left, -1.0, 1.0)
        if self.side_sign is None or mask is None or self.side_sign.shape != sign.shape:
            self.side_sign = sign
        else:
            self.side_sign = torch.where(mask, sign, self.side_sign)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """(N, 2) actions in [-1, 1] for observations (N, 3)."""
        if self.side_sign is None:
            raise RuntimeError("call reset(obs) before act(obs)")
        p, c = self.params, self.config
        x, y, tree_x = obs[:, 0], obs[:, 1], obs[:, 2]
        pass_x = tree_x + self.side_sign * (p.tree_radius + c.clearance)
        # One decision line for every episode: the last point from which the farthest passing line is still
        # reached at full lateral speed before the tree's front. Nothing before it shows the side to be taken.
        swerving = (y >= self.decision_y()) & (y < p.tree_y + c.pass_distance)
        target = torch.where(swerving, pass_x, torch.zeros_like(x))
        gain = torch.where(swerving, c.swerve_gain, c.lane_gain)
        lateral = (gain * (target - x) / p.max_lateral_speed).clamp(-1.0, 1.0)
        throttle = torch.where(swerving, c.swerve_throttle, c.cruise_throttle)
        action = torch.stack([lateral, throttle], dim=-1)  # (N, 2)
        noise = torch.randn(action.shape, generator=self.generator, device=self.device) * c.noise
        return (action + noise).clamp(-1.0, 1.0)

    # numpy convenience for the single gymnasium env
    def reset_single(self, obs: np.ndarray) -> None:
        self.reset(torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(1, -1))

    def act_single(self, obs: np.ndarray) -> np.ndarray:
        a = self.act(torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(1, -1))
        return a[0].cpu().numpy()


# ---------------------------------------------------------------------------------------------------------
# Slalom: TreeAvoid's swerve at every tree
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlalomExpertConfig(ExpertConfig):
    coupling: str = "independent"  # "independent": each tree's side drawn on its own; "same": one side per episode

    def __post_init__(self):
        super().__post_init__()
        if self.coupling not in ("independent", "same"):
            raise ValueError(f"coupling must be 'independent' or 'same', got {self.coupling!r}")


class SlalomExpert:
    """Batched scripted Slalom driver: TreeAvoid's expert at each tree in turn.

    Each tree's side is drawn with TreeAvoid's p_left of that tree's offset (the wider side preferred), from a
    uniform number drawn at reset; with ``coupling="same"`` one side, drawn from the first tree's offset, is used
    at every tree, so only the routes "LL..L" and "RR..R" occur. The expert reads each tree's offset from the
    observation while it approaches it and remembers it while passing.
    """

    def __init__(self, params, config: SlalomExpertConfig | None = None, seed: int = 0, device="cpu"):
        self.params = params
        self.config = config or SlalomExpertConfig()
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.tree_ys = torch.tensor(params.tree_ys, device=self.device)  # (k,)
        self.u: torch.Tensor | None = None  # (N, k) uniforms deciding each tree's side
        self.first_sign: torch.Tensor | None = None  # (N,) the side of every tree when coupled
        self.tree_x: torch.Tensor | None = None  # (N,) offset of the tree being approached or passed
        p, c = params, self.config
        swerve_speed = p.min_forward_speed + (c.swerve_throttle + 1.0) * 0.5 * (
            p.max_forward_speed - p.min_forward_speed
        )
        farthest = p.tree_radius + c.clearance + p.tree_offset_range + 0.01
        self.decision_distance = p.tree_radius + c.margin + swerve_speed * farthest / p.max_lateral_speed

    def left_probability(self, tree_x: torch.Tensor) -> torch.Tensor:
        c = self.config
        u = (tree_x / self.params.tree_offset_range).clamp(-1.0, 1.0)
        return c.left_prob + c.offset_gain * u * min(c.left_prob, 1.0 - c.left_prob)

    def reset(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        N, k = obs.shape[0], self.params.num_trees
        u = torch.rand((N, k), generator=self.generator, device=self.device)
        first = torch.where(u[:, 0] < self.left_probability(obs[:, 2]), -1.0, 1.0)
        if self.u is None or mask is None or self.u.shape[0] != N:
            self.u, self.first_sign, self.tree_x = u, first, obs[:, 2].clone()
        else:
            self.u = torch.where(mask[:, None], u, self.u)
            self.first_sign = torch.where(mask, first, self.first_sign)
            self.tree_x = torch.where(mask, obs[:, 2], self.tree_x)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        if self.u is None:
            raise RuntimeError("call reset(obs) before act(obs)")
        p, c, k = self.params, self.config, self.params.num_trees
        x, y = obs[:, 0], obs[:, 1]
        target = (y[:, None] >= self.tree_ys + c.pass_distance).sum(1)  # tree being approached or passed
        row_ahead = (y[:, None] >= self.tree_ys).sum(1)  # the tree the observation shows
        self.tree_x = torch.where(target == row_ahead, obs[:, 2], self.tree_x)
        t = target.clamp(max=k - 1)
        tree_y = self.tree_ys[t]
        if c.coupling == "same":
            sign = self.first_sign
        else:
            u = self.u.gather(1, t[:, None])[:, 0]
            sign = torch.where(u < self.left_probability(self.tree_x), -1.0, 1.0)
        pass_x = self.tree_x + sign * (p.tree_radius + c.clearance)
        swerving = (target < k) & (y >= tree_y - self.decision_distance) & (y < tree_y + c.pass_distance)
        goal = torch.where(swerving, pass_x, torch.zeros_like(x))
        gain = torch.where(swerving, c.swerve_gain, c.lane_gain)
        lateral = (gain * (goal - x) / p.max_lateral_speed).clamp(-1.0, 1.0)
        throttle = torch.where(swerving, c.swerve_throttle, c.cruise_throttle)
        action = torch.stack([lateral, throttle], dim=-1)
        noise = torch.randn(action.shape, generator=self.generator, device=self.device) * c.noise
        return (action + noise).clamp(-1.0, 1.0)


# ---------------------------------------------------------------------------------------------------------
# MultiGoal: one goal per episode, weighted
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MultiGoalExpertConfig:
    goal_probs: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)  # probability of each goal (deliberately unequal)
    noise: float = 0.05  # standard deviation of the Gaussian action noise
    position_gain: float = 3.0  # a = clip(kp (goal - p) - kd v): critically damped with the env's damping
    velocity_gain: float = 0.3

    def __post_init__(self):
        probs = np.asarray(self.goal_probs, dtype=np.float64)
        if probs.ndim != 1 or len(probs) < 2 or (probs < 0).any() or abs(probs.sum() - 1.0) > 1e-6:
            raise ValueError(f"goal_probs must be at least 2 non-negative numbers summing to 1, got {self.goal_probs}")
        if not (self.noise >= 0.0 and np.isfinite(self.noise)):
            raise ValueError(f"noise must be a finite number >= 0, got {self.noise}")


class MultiGoalExpert:
    """Batched scripted MultiGoal driver: draws a goal per episode with ``goal_probs`` and drives to it."""

    def __init__(self, params, config: MultiGoalExpertConfig | None = None, seed: int = 0, device="cpu"):
        self.params = params
        self.config = config or MultiGoalExpertConfig()
        if len(self.config.goal_probs) != params.num_goals:
            raise ValueError(f"goal_probs has {len(self.config.goal_probs)} entries for {params.num_goals} goals")
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.goals = torch.tensor(params.goals(), dtype=torch.float32, device=self.device)  # (K, 2)
        self.probs = torch.tensor(self.config.goal_probs, dtype=torch.float32, device=self.device)
        self.goal: torch.Tensor | None = None  # (N,) chosen goal

    def reset(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        g = torch.multinomial(self.probs.expand(obs.shape[0], -1), 1, generator=self.generator)[:, 0]
        keep = self.goal is not None and mask is not None and self.goal.shape == g.shape
        self.goal = torch.where(mask, g, self.goal) if keep else g

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        if self.goal is None:
            raise RuntimeError("call reset(obs) before act(obs)")
        c = self.config
        pos, vel = obs[:, :2], obs[:, 2:4]
        action = (c.position_gain * (self.goals[self.goal] - pos) - c.velocity_gain * vel).clamp(-1.0, 1.0)
        noise = torch.randn(action.shape, generator=self.generator, device=self.device) * c.noise
        return (action + noise).clamp(-1.0, 1.0)
