"""Behaviour Transformer-style k-means bins (Shafiullah et al. 2022), with single-step state input.

The demonstration actions (normalised, training split) are clustered by k-means into ``num_bins`` centres c_j
(k-means++ initialisation, Lloyd iterations, seeded by ``kmeans_seed``; the centres are a buffer of the policy,
saved in its checkpoint). The network predicts, from the state, logits over the bins and one offset o_j(s) per
bin; an action is a = c_j + o_j(s) with j ~ Cat(softmax(logits)). Training: focal loss (Lin et al. 2017,
gamma = ``focal_gamma``) on the bin of each demonstration action, plus ``offset_weight`` times the squared error
of that bin's offset (BeT's multi-task offset loss: only the true bin's offset is trained).

BeT's policy is a categorical over points (centre + offset): it has no density in the continuous action space,
so its held-out NLL is not defined and is reported as NaN (``has_density = False``), not omitted silently.
The transformer over a history window is left out: on these tasks the state is Markov (docs/policies.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.nn import functional as F  # noqa: N812

from lvm_policy.nets import categorical_sample, mlp
from lvm_policy.policies.base import Policy, PolicyConfig, register_policy


@dataclass
class BeTConfig(PolicyConfig):
    num_bins: int = 64
    """k of k-means: bins over the demonstration actions (TreeAvoid seed 0, success: k = 8 0.976, 16 0.963, 32 0.989,
    64 0.992, 128 0.994; docs/results.md, "BeT's bins")"""
    focal_gamma: float = 2.0
    """focusing parameter of the focal loss on the bins (0: cross-entropy)"""
    offset_weight: float = 1.0
    """weight of the offset's squared error (normalised action units)"""
    kmeans_seed: int = 0
    """seed of the k-means initialisation"""

    def validate(self) -> None:
        super().validate()
        if self.num_bins < 1 or self.focal_gamma < 0 or self.offset_weight < 0:
            raise ValueError("num_bins must be >= 1 and focal_gamma, offset_weight >= 0")


@register_policy
class BeTPolicy(Policy):
    name = "bet"
    # the per-step class and the same with the default lvm's chunks (H = 8, Ta = 4)
    benchmark_rows: ClassVar[dict[str, dict]] = {"bet": {}, "bet-chunk": {"action_horizon": 8, "action_steps": 4}}
    config_class = BeTConfig
    has_density = False
    low_noise_differs = False

    def __init__(self, obs_dim: int, act_dim: int, config: BeTConfig | None = None, **kw):
        super().__init__(obs_dim, act_dim, config or BeTConfig(), **kw)
        c = self.config
        # With H > 1 the bins are k-means centres of whole chunks (H * A numbers), like VQ-BeT's chunk tokens.
        self.net = mlp(self.in_dim, c.num_bins * (1 + self.chunk_dim), c.hidden_dim, c.num_layers)
        self.register_buffer("centres", torch.zeros(c.num_bins, self.chunk_dim))  # normalised action units

    @torch.no_grad()
    def fit_normalizer(self, obs: torch.Tensor, act: torch.Tensor, chunks: torch.Tensor | None = None) -> None:
        """Normalisers, then the k-means bins of the normalised training chunks (N, H * A) (the actions when H = 1)."""
        super().fit_normalizer(obs, act)
        self.fit_chunk_centres(self.centres, act, chunks, self.config.kmeans_seed)

    def _heads(self, obs_n):
        K, A = self.config.num_bins, self.chunk_dim
        out = self.net(obs_n)
        return out[:, :K], out[:, K:].reshape(-1, K, A)  # logits (B, K), offsets (B, K, A)

    def _loss(self, obs_n, act, mask=None):
        # Chunks past an episode's end repeat its last action (as their k-means centres do); the mask is unused.
        act_n = self.normalize_act(act)
        logits, offsets = self._heads(obs_n)
        target = torch.cdist(act_n, self.centres).argmin(dim=1)  # (B,) the action's bin
        log_p = torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0]
        focal = -((1 - log_p.exp()).pow(self.config.focal_gamma) * log_p).mean()
        pred = offsets.gather(1, target[:, None, None].expand(-1, 1, self.chunk_dim))[:, 0]  # (B, H * A)
        offset_mse = F.mse_loss(pred, act_n - self.centres[target])
        loss = focal + self.config.offset_weight * offset_mse
        return loss, {"focal": focal, "offset_mse": offset_mse}

    def _sample(self, obs_n, n):
        logits, offsets = self._heads(obs_n)
        B, K, A = offsets.shape
        j = categorical_sample(logits, n)  # (B, n)
        off = offsets.gather(1, j[..., None].expand(B, n, A))  # (B, n, A)
        return self.denormalize_act(self.centres[j] + off)

    def _mode(self, obs_n):
        # The bin is still drawn; centre + offset is already noise-free, so low noise equals sampling.
        return self._sample(obs_n, 1)[:, 0]

    def _log_prob(self, obs_n, act):
        return torch.full((obs_n.shape[0],), float("nan"), device=obs_n.device)
