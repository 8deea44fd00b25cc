"""Conditional flow matching (rectified flow): an ODE that carries N(0, I) noise to the action distribution.

A velocity field v(x, t | s) is trained on straight paths x_t = (1 - t) x_0 + t x_1 from noise x_0 ~ N(0, I) to
normalised demonstration actions x_1, regressing v(x_t, t | s) onto x_1 - x_0 (Lipman et al. 2023; Liu et al.
2023, rectified flow; the action head of pi0). Acting integrates dx/dt = v from a fresh x_0 with ``steps``
Euler steps: the noise x_0 picks the mode, the ODE adds none.

Likelihood: the change of variables along the ODE, log p_1(x_1) = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt,
integrated backwards from the action with ``nll_steps`` midpoint steps and the exact divergence (one backward
pass per action dimension: cheap for small action spaces). It is the density of the flow ODE (exact up to the
integration error that shrinks with ``nll_steps``); the Euler sampler with few steps draws from a nearby
distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from lvm_policy.nets import mlp
from lvm_policy.policies.base import Policy, PolicyConfig, register_policy

TIME_FEATURES = 8  # sinusoid frequencies of the time embedding


def time_embedding(t: torch.Tensor) -> torch.Tensor:
    """(B, 1 + 2F) features of times t (B, 1) in [0, 1]: t and sin / cos at F octave-spaced frequencies."""
    freqs = math.pi * 2.0 ** torch.arange(TIME_FEATURES, device=t.device, dtype=t.dtype)  # (F,)
    angles = t * freqs  # (B, F)
    return torch.cat([t, torch.sin(angles), torch.cos(angles)], dim=-1)


@dataclass
class FlowConfig(PolicyConfig):
    hidden_dim: int = 256
    """width of every hidden layer of the velocity field"""
    num_layers: int = 3
    """hidden layers of the velocity field"""
    steps: int = 10
    """Euler steps of the sampling ODE"""
    nll_steps: int = 32
    """midpoint steps of the likelihood ODE"""

    def validate(self) -> None:
        super().validate()
        if self.steps < 1 or self.nll_steps < 1:
            raise ValueError(f"steps and nll_steps must be >= 1, got {self.steps}, {self.nll_steps}")


@register_policy
class FlowPolicy(Policy):
    name = "flow"
    # the per-step class and the same with the default lvm's chunks (H = 8, Ta = 4)
    benchmark_rows: ClassVar[dict[str, dict]] = {"flow": {}, "flow-chunk": {"action_horizon": 8, "action_steps": 4}}
    config_class = FlowConfig
    low_noise_differs = False

    def __init__(self, obs_dim: int, act_dim: int, config: FlowConfig | None = None, **kw):
        super().__init__(obs_dim, act_dim, config or FlowConfig(), **kw)
        c = self.config
        D = self.chunk_dim  # the flow runs over the whole chunk (H * A numbers)
        self.velocity_net = mlp(self.in_dim + D + 1 + 2 * TIME_FEATURES, D, c.hidden_dim, c.num_layers)

    def velocity(self, obs_n: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v(x, t | s): obs_n (B, O), x (B, A), t (B, 1) -> (B, A)."""
        return self.velocity_net(torch.cat([obs_n, x, time_embedding(t)], dim=-1))

    def _loss(self, obs_n, act, mask=None):
        # The chunk's density does not factorise over its actions: padded actions (the last one repeated) are
        # trained on, as in Diffusion Policy, and the mask is not used.
        x1 = self.normalize_act(act)  # (B, H * A)
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0], 1, device=x1.device)
        xt = (1.0 - t) * x0 + t * x1
        loss = (self.velocity(obs_n, xt, t) - (x1 - x0)).pow(2).sum(-1).mean() / self.horizon
        return loss, {"flow_mse": loss}

    def integrate(self, obs_n: torch.Tensor, x0: torch.Tensor, steps: int) -> torch.Tensor:
        """Euler integration of dx/dt = v(x, t | s) from t = 0 to 1: x0 (B, A) -> x1 (B, A)."""
        x, dt = x0, 1.0 / steps
        t = torch.zeros(x0.shape[0], 1, device=x0.device, dtype=x0.dtype)
        for _ in range(steps):
            x = x + dt * self.velocity(obs_n, x, t)
            t = t + dt
        return x

    def _sample(self, obs_n, n):
        B = obs_n.shape[0]
        obs_rep = obs_n.repeat_interleave(n, dim=0)  # (B*n, O)
        x = self.integrate(obs_rep, torch.randn(B * n, self.chunk_dim, device=obs_n.device), self.config.steps)
        return self.denormalize_act(x).reshape(B, n, self.chunk_dim)

    def _mode(self, obs_n):
        # The ODE injects no noise; its start x_0 is the mode choice and is still drawn (documented low-noise).
        return self._sample(obs_n, 1)[:, 0]

    # ------------------------------------------------------------------------------------ likelihood
    def _velocity_and_divergence(self, obs_n, x, t):
        """v (B, A) and its exact divergence sum_j dv_j/dx_j (B,), with one backward pass per dimension."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = self.velocity(obs_n, x, t)
            div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
            for j in range(self.chunk_dim):
                (g,) = torch.autograd.grad(v[:, j].sum(), x, retain_graph=j < self.chunk_dim - 1)
                div = div + g[:, j]
        return v.detach(), div.detach()

    def log_density_normalized(self, obs_n: torch.Tensor, x1: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """(B,) log p_1(x1 | s) of normalised actions by the backward change-of-variables ODE (midpoint rule)."""
        steps = steps or self.config.nll_steps
        x, dt = x1, 1.0 / steps
        t = torch.ones(x1.shape[0], 1, device=x1.device, dtype=x1.dtype)
        integral = torch.zeros(x1.shape[0], device=x1.device, dtype=x1.dtype)  # int_0^1 div v dt
        for _ in range(steps):
            v1, _ = self._velocity_and_divergence(obs_n, x, t)
            x_mid, t_mid = x - 0.5 * dt * v1, t - 0.5 * dt
            v_mid, div_mid = self._velocity_and_divergence(obs_n, x_mid, t_mid)
            x, t = x - dt * v_mid, t - dt
            integral = integral + dt * div_mid
        log_p0 = -0.5 * (x.pow(2).sum(-1) + self.chunk_dim * math.log(2.0 * math.pi))
        return log_p0 - integral

    def _log_prob(self, obs_n, act):
        return self.log_density_normalized(obs_n, self.normalize_act(act)) + self.act_log_jacobian()
