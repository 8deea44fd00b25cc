"""A denoising diffusion policy, as in Diffusion Policy's low-dimensional setting (Chi et al. 2023).

DDPM (Ho et al. 2020) with the cosine noise schedule (Nichol & Dhariwal 2021) over ``train_steps`` = 100 steps:
x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps, the network an MLP of (s, x_k, k) with a timestep embedding,
trained by mean squared error on what it predicts: the clean action x_0 (``prediction = "sample"``, the
default) or the noise eps (Diffusion Policy's default). Either is converted to the other where a formula needs
it. Acting runs DDIM (Song et al. 2021) over ``inference_steps`` of the training steps; ``eta`` = 1 (the
default) injects the ancestral noise at each step (with every training step this is DDPM's sampler), ``eta`` = 0
is deterministic given the starting noise (which picks the mode) and is the low-noise acting mode. The predicted
x_0 is clipped to the normalised image of the action box, as Diffusion Policy clips to [-1, 1]. The defaults
were chosen by measurement on TreeAvoid (docs/results.md, "Choosing diffusion's defaults"): with 6,000 training
steps the x_0-predicting network succeeds where the noise-predicting one dithers between the sides.

Likelihood: the variational bound (Ho et al. 2020, eq. 5) on log p(x_0 | s), in nats per action,
  -log p >= E[ KL(q(x_K|x_0) || N(0, I)) + sum_{k=2}^{K} KL(q(x_{k-1}|x_k, x_0) || p(x_{k-1}|x_k))
              - log N(x_0; mu(x_1, 1), beta_1 I) ],
with the reverse variances fixed to the posterior's (beta-tilde), every term a Gaussian KL in closed form,
estimated with one noise draw per step. It is a bound, usually loose, not the exact density: the held-out NLL
of this class is an upper bound on its true NLL. It is loosest for an x_0-predicting network, whose implied
noise (x_k - sqrt(abar_k) x_0) / sqrt(1 - abar_k) divides its error by sqrt(1 - abar_k), small at k = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from lvm_policy.nets import LOG_2PI, mlp
from lvm_policy.policies.base import Policy, PolicyConfig, register_policy
from lvm_policy.policies.flow import TIME_FEATURES, time_embedding


def cosine_alpha_bar(steps: int, s: float = 0.008) -> torch.Tensor:
    """(K,) cumulative products abar_k, k = 1..K, of the cosine schedule; betas clipped to 0.999."""
    t = torch.linspace(0, steps, steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


@dataclass
class DiffusionConfig(PolicyConfig):
    hidden_dim: int = 256
    """width of every hidden layer of the denoiser"""
    num_layers: int = 3
    """hidden layers of the denoiser"""
    train_steps: int = 100
    """diffusion steps K of training (cosine schedule)"""
    inference_steps: int = 10
    """DDIM steps at acting time (a subsequence of the K training steps)"""
    eta: float = 1.0
    """DDIM noise: 0 deterministic given the start noise (the low-noise mode), 1 ancestral (with inference_steps =
    train_steps: DDPM); 1 measured better on TreeAvoid (docs/results.md, "Choosing diffusion's defaults")"""
    prediction: Literal["epsilon", "sample"] = "sample"
    """what the network predicts and is trained on: the clean action x_0 (measured better on TreeAvoid) or the
    noise (Ho et al.; Diffusion Policy's default)"""

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.inference_steps <= self.train_steps:
            steps = (self.inference_steps, self.train_steps)
            raise ValueError(f"need 1 <= inference_steps <= train_steps, got {steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {self.eta}")
        if self.prediction not in ("epsilon", "sample"):
            raise ValueError(f"prediction must be epsilon or sample, got {self.prediction!r}")


@register_policy
class DiffusionPolicy(Policy):
    name = "diffusion"
    config_class = DiffusionConfig
    # diffusion-dp: Diffusion Policy's own low-dimensional configuration (To = 2, H = 16, Ta = 8, noise prediction,
    # DDPM with its 100 training steps at test time), with this package's MLP denoiser in place of its 1-D U-Net.
    benchmark_rows: ClassVar[dict[str, dict]] = {
        "diffusion": {},
        "diffusion-dp": {
            "obs_horizon": 2,
            "action_horizon": 16,
            "action_steps": 8,
            "prediction": "epsilon",
            "inference_steps": 100,
            "eta": 1.0,
        },
    }

    def __init__(self, obs_dim: int, act_dim: int, config: DiffusionConfig | None = None, **kw):
        super().__init__(obs_dim, act_dim, config or DiffusionConfig(), **kw)
        c = self.config
        D = self.chunk_dim  # the diffusion runs over the whole chunk (H * A numbers)
        self.denoiser = mlp(self.in_dim + D + 1 + 2 * TIME_FEATURES, D, c.hidden_dim, c.num_layers)
        abar = cosine_alpha_bar(c.train_steps)
        # Not saved: rebuilt from the config. Index k - 1 holds step k.
        self.register_buffer("alpha_bar", abar.float(), persistent=False)

    def network(self, obs_n: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The denoiser's raw output (eps or x_0, by ``prediction``): obs_n (B, O), x (B, A), k (B,) in 1..K."""
        t = (k.to(x.dtype) / self.config.train_steps)[:, None]
        return self.denoiser(torch.cat([obs_n, x, time_embedding(t)], dim=-1))

    def eps(self, obs_n: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """eps(x_k, k | s) (B, A), whichever quantity the network predicts."""
        out = self.network(obs_n, x, k)
        if self.config.prediction == "epsilon":
            return out
        abar = self.alpha_bar[k - 1][:, None]
        return (x - abar.sqrt() * out) / (1 - abar).sqrt()

    def _x0_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The action box in normalised units (unbounded dimensions: +-inf)."""
        return self.normalize_act(self.chunk_low), self.normalize_act(self.chunk_high)

    def _loss(self, obs_n, act, mask=None):
        # Padded actions (the last one repeated) are trained on, as in Diffusion Policy; the mask is not used.
        x0 = self.normalize_act(act)
        k = torch.randint(1, self.config.train_steps + 1, (x0.shape[0],), device=x0.device)
        abar = self.alpha_bar[k - 1][:, None]
        noise = torch.randn_like(x0)
        xk = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        target = noise if self.config.prediction == "epsilon" else x0
        loss = (self.network(obs_n, xk, k) - target).pow(2).sum(-1).mean() / self.horizon
        return loss, {"eps_mse" if self.config.prediction == "epsilon" else "x0_mse": loss}

    def denoise(self, obs_n: torch.Tensor, x: torch.Tensor, steps: int, eta: float) -> torch.Tensor:
        """DDIM from x_K (B, A) over ``steps`` evenly spaced training steps; returns x_0 (B, A)."""
        K = self.config.train_steps
        # "Leading" spacing as in diffusers' DDIM: steps 1, 1 + r, ..., 1 + (n - 1) r with r = K // n, descending.
        # Starting at k = K itself (abar_K ~ 1e-5 under the cosine schedule) would divide the predicted x_0 by
        # sqrt(abar_K): its small errors, clipped to the box, then pick the mode (measured: shares 0.78 / 0.20 on
        # an even toy problem).
        ratio = K // steps
        ks = [1 + i * ratio for i in reversed(range(steps))]
        lo, hi = self._x0_bounds()
        for i, k in enumerate(ks):
            k_prev = ks[i + 1] if i + 1 < len(ks) else 0
            abar = self.alpha_bar[k - 1]
            abar_prev = self.alpha_bar[k_prev - 1] if k_prev > 0 else torch.ones_like(abar)
            out = self.network(obs_n, x, torch.full((x.shape[0],), k, device=x.device))
            if self.config.prediction == "epsilon":
                out = (x - (1 - abar).sqrt() * out) / abar.sqrt()
            x0 = out.clamp(lo, hi)
            e = (x - abar.sqrt() * x0) / (1 - abar).sqrt()  # consistent with the clipped x0
            sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp_min(0).sqrt()
            x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp_min(0).sqrt() * e
            if eta > 0 and k_prev > 0:
                x = x + sigma * torch.randn_like(x)
        return x

    def _sample(self, obs_n, n):
        B = obs_n.shape[0]
        obs_rep = obs_n.repeat_interleave(n, dim=0)
        x = torch.randn(B * n, self.chunk_dim, device=obs_n.device)
        x = self.denoise(obs_rep, x, self.config.inference_steps, self.config.eta)
        return self.denormalize_act(x).reshape(B, n, self.chunk_dim)

    def _mode(self, obs_n):
        # Low noise: DDIM without injected noise (eta = 0); the start noise, which picks the mode, is drawn.
        x = torch.randn(obs_n.shape[0], self.chunk_dim, device=obs_n.device)
        return self.denormalize_act(self.denoise(obs_n, x, self.config.inference_steps, 0.0))

    # ------------------------------------------------------------------------------------ likelihood
    def variational_bound(self, obs_n: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """(B,) the negative ELBO of normalised actions x0 (B, A), one noise draw per diffusion step."""
        K, A = self.config.train_steps, self.chunk_dim
        abar = self.alpha_bar.double()
        alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])  # (K,) alpha_k
        betas = 1 - alphas
        x0d = x0.double()
        # L_K: KL(N(sqrt(abar_K) x0, (1 - abar_K) I) || N(0, I))
        m, v = abar[-1].sqrt() * x0d, 1 - abar[-1]
        total = 0.5 * (v * A + m.pow(2).sum(-1) - A - A * torch.log(v))
        for k in range(1, K + 1):
            kk = torch.full((x0.shape[0],), k, device=x0.device)
            noise = torch.randn_like(x0)
            xk = abar[k - 1].sqrt().float() * x0 + (1 - abar[k - 1]).sqrt().float() * noise
            e = self.eps(obs_n, xk, kk).double()
            # mean of p(x_{k-1} | x_k) minus the posterior mean, for the eps parameterisation
            diff = betas[k - 1] / ((1 - abar[k - 1]).sqrt() * alphas[k - 1].sqrt()) * (e - noise.double())
            if k == 1:  # L_0: -log N(x0; mu(x_1, 1), beta_1 I), and mu - x0 = -diff
                var = betas[0]
                total = total + 0.5 * (diff.pow(2).sum(-1) / var + A * (torch.log(var) + LOG_2PI))
            else:  # KL between Gaussians with the posterior variance beta-tilde_k
                var = (1 - abar[k - 2]) / (1 - abar[k - 1]) * betas[k - 1]
                total = total + 0.5 * diff.pow(2).sum(-1) / var
        return total.to(x0.dtype)

    def _log_prob(self, obs_n, act):
        return -self.variational_bound(obs_n, self.normalize_act(act)) + self.act_log_jacobian()
