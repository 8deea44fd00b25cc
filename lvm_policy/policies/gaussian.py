"""Unimodal diagonal Gaussian behavioural cloning: the reference that averages the modes.

pi(a | s) = N(a; mu(s), diag sigma(s)^2), trained by maximum likelihood. On bimodal demonstrations mu(s)
sits between the modes, so its mean action (``deterministic=True``) drives into the tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lvm_policy.nets import bounded_log_std, diag_gaussian_log_prob, mlp
from lvm_policy.policies.base import Policy, PolicyConfig, register_policy


@dataclass
class GaussianConfig(PolicyConfig):
    min_std: float = 0.01
    """floor of the standard deviation (normalised action units)"""
    max_std: float = 2.0
    """ceiling of the standard deviation (normalised action units)"""


@register_policy
class GaussianPolicy(Policy):
    name = "gaussian"
    config_class = GaussianConfig

    def __init__(self, obs_dim: int, act_dim: int, config: GaussianConfig | None = None, **kw):
        super().__init__(obs_dim, act_dim, config or GaussianConfig(), **kw)
        c = self.config
        self.net = mlp(self.in_dim, 2 * self.chunk_dim, c.hidden_dim, c.num_layers)

    def _dist(self, obs_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(obs_n).chunk(2, dim=-1)  # (B, H * A) each, normalised action space
        return mean, bounded_log_std(raw, self.config.min_std, self.config.max_std)

    def _log_prob(self, obs_n, act):
        mean, log_std = self._dist(obs_n)
        return diag_gaussian_log_prob(self.normalize_act(act), mean, log_std) + self.act_log_jacobian()

    def _loss(self, obs_n, act, mask=None):
        mean, log_std = self._dist(obs_n)
        log_p = diag_gaussian_log_prob(self.normalize_act(act), mean, log_std, self.dim_mask(mask))  # (B,)
        nll = -log_p.mean() / self.horizon if mask is None else -log_p.sum() / mask.sum()  # per action
        return nll, {"nll": nll, "std": log_std.exp().mean()}

    def _sample(self, obs_n, n):
        mean, log_std = self._dist(obs_n)
        eps = torch.randn(mean.shape[0], n, mean.shape[1], device=mean.device)  # (B, n, H * A)
        return self.denormalize_act(mean[:, None] + log_std.exp()[:, None] * eps)

    def _mode(self, obs_n):
        return self.denormalize_act(self._dist(obs_n)[0])
