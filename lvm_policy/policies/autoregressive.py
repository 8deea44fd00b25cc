"""Autoregressive discretisation: each action dimension in B bins, one dimension after the other.

pi(a | s) = prod_j Cat(b_j | s, a_<j) and a_j is uniform inside bin b_j, so the density of a continuous
action is  log pi(a | s) = sum_j [log p(b_j | s, a_<j) - log width_j],  comparable with the continuous
classes. Training feeds the true earlier dimensions (teacher forcing); sampling feeds the sampled ones.
The cost is d heads of B logits instead of B^d joint bins. A chunk of H actions is H * A dimensions in time
order (all of a_t, then a_{t+1}, ...), so the dimensions past an episode's end come last and dropping their
terms from the loss is the exact marginal of the others.
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
        # Head j sees the observation window and the earlier chunk dimensions (scaled to [-1, 1]).
        D = self.chunk_dim
        self.heads = nn.ModuleList(mlp(self.in_dim + j, c.num_bins, c.hidden_dim, c.num_layers) for j in range(D))
        # The binned range: the action box, or for an unbounded dimension the data's range (fit_normalizer).
        self.register_buffer("bin_low", self.act_low.clone())
        self.register_buffer("bin_high", self.act_high.clone())

    @torch.no_grad()
    def fit_normalizer(self, obs: torch.Tensor, act: torch.Tensor, chunks: torch.Tensor | None = None) -> None:
        super().fit_normalizer(obs, act)
        lo, hi = act.min(0).values, act.max(0).values
        margin = 0.05 * (hi - lo).clamp_min(1e-3)
        self.bin_low.copy_(torch.where(torch.isfinite(self.act_low), self.act_low, lo - margin))
        self.bin_high.copy_(torch.where(torch.isfinite(self.act_high), self.act_high, hi + margin))

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(H * A,) low and high of the binned range, once per action of a chunk."""
        return self.bin_low.repeat(self.horizon), self.bin_high.repeat(self.horizon)

    def _unit(self, act: torch.Tensor) -> torch.Tensor:
        """Raw chunks (B, H * A) to [0, 1] within the binned range."""
        low, high = self._range()
        return (act - low) / (high - low)

    def _log_width(self) -> torch.Tensor:
        low, high = self._range()
        return torch.log((high - low) / self.config.num_bins)  # (H * A,)

    def _bins(self, act: torch.Tensor) -> torch.Tensor:
        return (self._unit(act) * self.config.num_bins).long().clamp(0, self.config.num_bins - 1)  # (B, H * A)

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
        return logp - self._log_width().sum()

    def _loss(self, obs_n, act, mask=None):
        bins, smoothing = self._bins(act), self.config.label_smoothing
        logits = self._logits(obs_n, act)
        if mask is None:
            ce = sum(
                nn.functional.cross_entropy(lg, bins[:, j], label_smoothing=smoothing) for j, lg in enumerate(logits)
            )
            log_width = self._log_width().sum()
            if self.horizon > 1:  # per action
                ce, log_width = ce / self.horizon, log_width / self.horizon
            return ce, {"nll": ce + log_width}
        dm = self.dim_mask(mask)  # (B, H * A): the dimensions inside the episode
        ce_of = nn.functional.cross_entropy
        terms = torch.stack(
            [ce_of(lg, bins[:, j], label_smoothing=smoothing, reduction="none") for j, lg in enumerate(logits)], dim=1
        )  # (B, H * A)
        actions = mask.sum()
        ce = (terms * dm).sum() / actions  # per action
        return ce, {"nll": ce + (dm * self._log_width()).sum() / actions}

    def _draw(self, obs_n: torch.Tensor, n: int, jitter: bool) -> torch.Tensor:
        B, nb = obs_n.shape[0], self.config.num_bins
        obs_rep = obs_n.repeat_interleave(n, dim=0)  # (B*n, O)
        prev = obs_rep.new_zeros(B * n, 0)
        for head in self.heads:
            b = categorical_sample(head(torch.cat([obs_rep, prev], -1)), 1)  # (B*n, 1) from logits (B*n, nb)
            offset = torch.rand_like(b, dtype=obs_n.dtype) if jitter else torch.full_like(b, 0.5, dtype=obs_n.dtype)
            prev = torch.cat([prev, 2.0 * (b + offset) / nb - 1.0], dim=-1)
        low, high = self._range()
        act = low + (prev + 1.0) * 0.5 * (high - low)
        return act.reshape(B, n, self.chunk_dim)

    def _sample(self, obs_n, n):
        return self._draw(obs_n, n, jitter=True)

    def _mode(self, obs_n):
        # Low noise: the bins are still drawn (so both sides survive), played at their centres.
        return self._draw(obs_n, 1, jitter=False)[:, 0]
