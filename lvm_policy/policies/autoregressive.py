"""Autoregressive discretisation: each action dimension in B bins, one dimension after the other.

pi(a | s) = prod_j Cat(b_j | s, a_<j) and a_j is uniform inside bin b_j, so the density of a continuous
action is  log pi(a | s) = sum_j [log p(b_j | s, a_<j) - log width_j],  comparable with the continuous
classes. Training feeds the true earlier dimensions (teacher forcing); sampling feeds the sampled ones.
The cost is d heads of B logits instead of B^d joint bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lvm_policy.nets import categorical_sample, mlp
from lvm_policy.policies.base import Policy, PolicyConfig, register_policy


@dataclass
class AutoregressiveConfig(PolicyConfig):
    num_bins: int = 64
    """bins per action dimension, uniform over the action box"""
    label_smoothing: float = 0.0
    """cross-entropy label smoothing (0 keeps the loss an exact NLL)"""

    def validate(self) -> None:
        super().validate()
        if self.num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {self.num_bins}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")


@register_policy
class AutoregressivePolicy(Policy):
    name = "autoregressive"
    config_class = AutoregressiveConfig

    def __init__(self, obs_dim: int, act_dim: int, config: AutoregressiveConfig | None = None, **kw):
        super().__init__(obs_dim, act_dim, config or AutoregressiveConfig(), **kw)
        c = self.config
        # Head j sees the observation and the earlier action dimensions (scaled to [-1, 1]).
        self.heads = nn.ModuleList(mlp(obs_dim + j, c.num_bins, c.hidden_dim, c.num_layers) for j in range(act_dim))
        # The binned range: the action box, or for an unbounded dimension the data's range (fit_normalizer).
        self.register_buffer("bin_low", self.act_low.clone())
        self.register_buffer("bin_high", self.act_high.clone())

    @torch.no_grad()
    def fit_normalizer(self, obs: torch.Tensor, act: torch.Tensor) -> None:
        super().fit_normalizer(obs, act)
        lo, hi = act.min(0).values, act.max(0).values
        margin = 0.05 * (hi - lo).clamp_min(1e-3)
        self.bin_low.copy_(torch.where(torch.isfinite(self.act_low), self.act_low, lo - margin))
        self.bin_high.copy_(torch.where(torch.isfinite(self.act_high), self.act_high, hi + margin))

    def _unit(self, act: torch.Tensor) -> torch.Tensor:
        """Raw actions to [0, 1] within the binned range."""
        return (act - self.bin_low) / (self.bin_high - self.bin_low)

    def _bins(self, act: torch.Tensor) -> torch.Tensor:
        return (self._unit(act) * self.config.num_bins).long().clamp(0, self.config.num_bins - 1)  # (B, A)

    def _logits(self, obs_n: torch.Tensor, act: torch.Tensor) -> list[torch.Tensor]:
        """Teacher-forced logits of every dimension, each (B, num_bins)."""
        prev = 2.0 * self._unit(act) - 1.0
        return [head(torch.cat([obs_n, prev[:, :j]], dim=-1)) for j, head in enumerate(self.heads)]

    def _log_prob(self, obs_n, act):
        bins = self._bins(act)
        logp = sum(
            torch.log_softmax(lg, -1).gather(-1, bins[:, j : j + 1])[:, 0]
            for j, lg in enumerate(self._logits(obs_n, act))
        )
        log_width = torch.log((self.bin_high - self.bin_low) / self.config.num_bins).sum()
        return logp - log_width

    def _loss(self, obs_n, act):
        bins = self._bins(act)
        ce = sum(
            nn.functional.cross_entropy(lg, bins[:, j], label_smoothing=self.config.label_smoothing)
            for j, lg in enumerate(self._logits(obs_n, act))
        )
        log_width = torch.log((self.bin_high - self.bin_low) / self.config.num_bins).sum()
        return ce, {"nll": ce + log_width}

    def _draw(self, obs_n: torch.Tensor, n: int, jitter: bool) -> torch.Tensor:
        B, nb = obs_n.shape[0], self.config.num_bins
        obs_rep = obs_n.repeat_interleave(n, dim=0)  # (B*n, O)
        prev = obs_rep.new_zeros(B * n, 0)
        for head in self.heads:
            b = categorical_sample(head(torch.cat([obs_rep, prev], -1)), 1)  # (B*n, 1) from logits (B*n, nb)
            offset = torch.rand_like(b, dtype=obs_n.dtype) if jitter else torch.full_like(b, 0.5, dtype=obs_n.dtype)
            prev = torch.cat([prev, 2.0 * (b + offset) / nb - 1.0], dim=-1)
        act = self.bin_low + (prev + 1.0) * 0.5 * (self.bin_high - self.bin_low)
        return act.reshape(B, n, self.act_dim)

    def _sample(self, obs_n, n):
        return self._draw(obs_n, n, jitter=True)

    def _mode(self, obs_n):
        # Low noise: the bins are still drawn (so both sides survive), played at their centres.
        return self._draw(obs_n, 1, jitter=False)[:, 0]
