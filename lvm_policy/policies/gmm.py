"""Mixture density network: pi(a | s) = sum_k w_k(s) N(a; mu_k(s), diag sigma_k(s)^2).

log pi(a | s) = logsumexp_k [log w_k(s) + log N(a; mu_k(s), sigma_k(s))] (Bishop 1994). Scales are floored,
so a component cannot shrink onto one demonstration and send the likelihood to infinity; a negative
training NLL is then normal. Low-noise acting (robomimic's ``low_noise_eval``): draw a component by its
weight and play its mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from lvm_policy.nets import bounded_log_std, categorical_sample, diag_gaussian_log_prob, mlp
from lvm_policy.policies.base import Policy, PolicyConfig, register_policy


@dataclass
class GMMConfig(PolicyConfig):
    num_components: int = 5
    """number of mixture components K"""
    min_std: float = 0.01
    """floor of every component's standard deviation (normalised action units)"""
    max_std: float = 2.0
    """ceiling of every component's standard deviation"""

    def validate(self) -> None:
        super().validate()
        if self.num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {self.num_components}")


@register_policy
class GMMPolicy(Policy):
    name = "gmm"
    # the per-step class and the same with the default lvm's chunks (H = 8, Ta = 4)
    benchmark_rows: ClassVar[dict[str, dict]] = {"gmm": {}, "gmm-chunk": {"action_horizon": 8, "action_steps": 4}}
    config_class = GMMConfig

    def __init__(self, obs_dim: int, act_dim: int, config: GMMConfig | None = None, **kw):
        super().__init__(obs_dim, act_dim, config or GMMConfig(), **kw)
        c = self.config
        self.net = mlp(self.in_dim, c.num_components * (1 + 2 * self.chunk_dim), c.hidden_dim, c.num_layers)

    def _mixture(self, obs_n):
        K, A = self.config.num_components, self.chunk_dim  # A: the chunk's H * A numbers
        out = self.net(obs_n)  # (B, K * (1 + 2A))
        logits = out[:, :K]  # (B, K)
        mean = out[:, K : K + K * A].reshape(-1, K, A)  # (B, K, A)
        log_std = bounded_log_std(out[:, K + K * A :].reshape(-1, K, A), self.config.min_std, self.config.max_std)
        return torch.log_softmax(logits, dim=-1), mean, log_std

    def _log_prob_n(self, obs_n, act_n, dim_mask=None):
        # With a mask, each component's density of the kept actions only: the mixture's exact marginal.
        log_w, mean, log_std = self._mixture(obs_n)
        dm = None if dim_mask is None else dim_mask[:, None, :]
        comp = diag_gaussian_log_prob(act_n[:, None, :], mean, log_std, dm)  # (B, K)
        return torch.logsumexp(log_w + comp, dim=-1)  # (B,)

    def _log_prob(self, obs_n, act):
        return self._log_prob_n(obs_n, self.normalize_act(act)) + self.act_log_jacobian()

    def _loss(self, obs_n, act, mask=None):
        log_p = self._log_prob_n(obs_n, self.normalize_act(act), self.dim_mask(mask))  # (B,)
        # per action, so that the loss's scale does not grow with H
        nll = -log_p.mean() / self.horizon if mask is None else -log_p.sum() / mask.sum()
        return nll, {"nll": nll}

    def _draw(self, obs_n, n, noise: bool):
        log_w, mean, log_std = self._mixture(obs_n)
        B, K, A = mean.shape
        k = categorical_sample(log_w, n)  # (B, n)
        idx = k[..., None].expand(B, n, A)
        mu = mean.gather(1, idx)  # (B, n, A)
        if noise:
            mu = mu + log_std.gather(1, idx).exp() * torch.randn_like(mu)
        return self.denormalize_act(mu)

    def _sample(self, obs_n, n):
        return self._draw(obs_n, n, noise=True)

    def _mode(self, obs_n):
        return self._draw(obs_n, 1, noise=False)[:, 0]
