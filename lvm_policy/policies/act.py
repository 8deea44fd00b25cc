"""ACT's conditional VAE over action chunks (Zhao et al. 2023, "Action Chunking with Transformers"), state-only.

An encoder q(z | window, chunk) = N(mu, diag sigma^2), the fixed prior N(0, I), and a deterministic decoder
chunk = f(window, z) trained by L1 reconstruction:

    loss = || f(window, z) - chunk ||_1  +  kl_weight * KL(q(z | window, chunk) || N(0, I)),   z ~ q (reparameterised)

with ACT's KL weight 10 and, at test time, z = 0, the prior's mean (``test_latent="zero"``; ``"prior"`` draws
z ~ N(0, I) instead, the probe of what z = 0 does to the modes). With z = 0 the policy is deterministic given the
window: on demonstrations with two ways of doing a task it plays one of them, or the average of both.

Networks: MLPs, not ACT's transformer encoder-decoder. The inputs here are a few state numbers per observation,
with no image tokens to attend over, and the MLPs every other class uses keep the comparison about the objective
(ELBO with a learned prior against ACT's L1 CVAE with z = 0); the chunk is the decoder's flat output.
Chunks past an episode's end are masked out of the L1 term, as in ACT (its ``is_pad``).

ACT's decoder is deterministic: it defines no density over actions, so the held-out NLL is NaN (as for BeT). The
temporal ensembling of the paper is the shared ``temporal_ensemble`` option (m = 0.01 with ``action_steps`` 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from lvm_policy.nets import diag_gaussian_kl, mlp
from lvm_policy.policies.base import Policy, PolicyConfig, register_policy


@dataclass
class ACTConfig(PolicyConfig):
    hidden_dim: int = 256
    """width of every hidden layer of the encoder and the decoder"""
    num_layers: int = 3
    """hidden layers of the encoder and the decoder"""
    action_horizon: int = 8
    """H: actions per chunk (ACT's 100 is two seconds of a 50 Hz robot; measured on these tasks: docs/results.md)"""
    action_steps: int = 8
    """Ta: actions executed before the next prediction (ACT without temporal ensembling plays the whole chunk)"""
    latent_dim: int = 32
    """dimension of z (ACT: 32)"""
    kl_weight: float = 10.0
    """weight of the KL term (ACT: 10)"""
    test_latent: Literal["zero", "prior"] = "zero"
    """z at test time: ACT's z = 0, or a draw from the prior N(0, I)"""

    def validate(self) -> None:
        super().validate()
        if self.latent_dim < 1 or self.kl_weight < 0:
            raise ValueError(f"latent_dim must be >= 1 and kl_weight >= 0, got {self.latent_dim}, {self.kl_weight}")
        if self.test_latent not in ("zero", "prior"):
            raise ValueError(f"test_latent must be zero or prior, got {self.test_latent!r}")


@register_policy
class ACTPolicy(Policy):
    name = "act"
    config_class = ACTConfig
    has_density = False
    low_noise_differs = False  # acting is deterministic given z; low noise changes nothing
    # compare_baselines rows: ACT as published (z = 0), with temporal ensembling, and with z drawn from the prior
    benchmark_rows: ClassVar[dict[str, dict]] = {
        "act": {},
        "act-ensemble": {"action_steps": 1, "temporal_ensemble": 0.01},
        "act-prior-z": {"test_latent": "prior"},
    }

    def __init__(self, obs_dim: int, act_dim: int, config: ACTConfig | None = None, **kw):
        super().__init__(obs_dim, act_dim, config or ACTConfig(), **kw)
        c = self.config
        self.encoder = mlp(self.in_dim + self.chunk_dim, 2 * c.latent_dim, c.hidden_dim, c.num_layers)
        self.decoder = mlp(self.in_dim + c.latent_dim, self.chunk_dim, c.hidden_dim, c.num_layers)

    def _loss(self, obs_n, act, mask=None):
        act_n, keep = self.normalize_act(act), self.dim_mask(mask)  # (B, H * A) each
        seen = act_n if keep is None else act_n * keep  # the encoder reads padded actions as zeros (ACT's is_pad)
        mean, log_var = self.encoder(torch.cat([obs_n, seen], -1)).chunk(2, -1)  # (B, dz) each
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        l1 = (self.decoder(torch.cat([obs_n, z], -1)) - act_n).abs()  # (B, H * A)
        l1 = l1.mean() if keep is None else (l1 * keep).sum() / keep.sum()
        kl = diag_gaussian_kl(mean, log_var, torch.zeros_like(mean), torch.zeros_like(log_var)).sum(-1).mean()
        return l1 + self.config.kl_weight * kl, {"l1": l1, "kl": kl}

    def _decode(self, obs_n, n: int) -> torch.Tensor:
        """(B, n, H * A) raw chunks, z = 0 or z ~ N(0, I) by ``test_latent``."""
        B, dz = obs_n.shape[0], self.config.latent_dim
        z = obs_n.new_zeros(B, n, dz)
        if self.config.test_latent == "prior":
            z = torch.randn_like(z)
        return self.denormalize_act(self.decoder(torch.cat([obs_n[:, None].expand(-1, n, -1), z], -1)))

    def _sample(self, obs_n, n):
        return self._decode(obs_n, n)

    def _mode(self, obs_n):
        return self._decode(obs_n, 1)[:, 0]

    def _log_prob(self, obs_n, act):
        return torch.full((obs_n.shape[0],), float("nan"), device=obs_n.device)
