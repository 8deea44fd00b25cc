"""The latent-variable policy, trained by variational behavioural cloning (a conditional VAE).

    pi(a | s) = integral pi(a | s, z) p(z | s) dz

Encoder q(z | s, a) = N(mu_q, diag var_q), decoder pi(a | s, z) = N(mu(s, z), diag sigma(s, z)^2), prior
p(z | s) the fixed N(0, I) (``standard``), a learned state-conditioned Gaussian (``gaussian``) or a learned
state-conditioned mixture of Gaussians (``mixture``, the default; cf. the VampPrior, Tomczak & Welling 2018).
Training maximises the ELBO (Kingma & Welling 2014; Sohn et al. 2015):

    ELBO(s, a) = E_{z ~ q(z|s,a)} [log pi(a | s, z)] - beta * KL(q(z | s, a) || p(z | s)),

with z = mu_q + sigma_q * eps (reparameterisation). The KL is in closed form for the Gaussian priors; for the
mixture it has none and is estimated at the same reparameterised sample, log q(z|s,a) - log p(z|s). beta
rises linearly from 0 during a warm-up, and ``free_bits`` optionally stops the KL of a dimension from being
pushed below a floor.

Pitfalls made visible in the logs: posterior collapse (``kl`` -> 0, ``active_dims`` -> 0: the decoder ignores
z and averages the modes again) and prior holes (prior samples that land between the regions the encoder uses
and decode to the average of the modes). The decoder's standard deviation is bounded in action units
(``min_std``, ``max_std``) so that it cannot explain two modes as one wide Gaussian without z. On TreeAvoid
the holes are what break the Gaussian priors: the encoder gives the two sides two narrow, distant codes at the
decision point, a unimodal prior must cover both and puts much of its mass between them. A mixture prior can
put one component on each code.
Episode scope (``latent_scope="episode"``): one z per demonstration episode, "the demonstrator's intention".
The encoder q(z | tau) pools per-step features of the normalised (s_t, a_t) of the whole episode (a masked mean,
then a linear head), the prior p(z | s_0) is the same state-conditioned prior evaluated at the episode's first
state, and the decoder pi(a_t | s_t, z) is shared by every step. Training maximises the sequence ELBO

    ELBO(tau) = E_{z ~ q(z|tau)} [ sum_t log pi(a_t | s_t, z) ] - beta * KL(q(z | tau) || p(z | s_0))

on minibatches of ``segment_batch`` whole episodes (the training loop asks ``segments_per_batch()``); the loss
is -ELBO divided by the number of actions in the minibatch, so its scale matches the step scope's. At test time
z ~ p(z | s_0) is drawn at each episode's first step and held until ``reset(mask)`` ends that episode. The
held-out NLL is the IWAE bound on log pi(a_0..T | s_0..T) of whole held-out episodes over their length.

Step scope: at test time z ~ p(z | s), drawn every step or once per episode and held (``hold_latent``); z = 0 is
never used because it is exactly the point between two symmetric modes. ``log_prob`` is the importance-weighted bound
(IWAE, Burda et al. 2016) with K samples from q, a lower bound on log pi(a | s) that tightens as K grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch

from lvm_policy.nets import bounded_log_std, categorical_sample, diag_gaussian_kl, diag_gaussian_log_prob, mlp
from lvm_policy.policies.base import Policy, PolicyConfig, register_policy

EPISODE_BETA = 0.2  # default KL weight of the episode scope (see LatentConfig.beta)


@dataclass
class LatentConfig(PolicyConfig):
    latent_dim: int = 2
    """dimension of z"""
    prior: Literal["standard", "gaussian", "mixture"] = "mixture"
    """p(z|s): the textbook fixed N(0, I), a learned state-conditioned Gaussian, or a learned mixture of Gaussians"""
    prior_components: int = 8
    """components of the mixture prior"""
    latent_scope: Literal["step", "episode"] = "step"
    """step: q(z|s,a), z redrawn every step (a per-step mixture); episode: q(z|episode), z drawn at reset, held"""
    segment_batch: int = 32
    """episode scope: whole demonstration episodes per minibatch (Slalom, 1 thread: 16 -> 20 ms a step,
    32 -> 38 ms, 64 -> 81 ms; 32 keeps 6,000 steps near the 3-minute budget)"""
    hold_latent: bool = False
    """step scope: draw z once per episode (at its first step) and keep it; False redraws it from p(z|s) every step"""
    beta: float | None = None
    """KL weight after the warm-up; default 1 (the true ELBO) for the step scope and 0.2 for the episode scope, where
    beta = 1 blurs the two sides' codes into one prior component and prior draws between them swerve too late
    (measured on TreeAvoid and coupled Slalom: README, "The episode latent's beta")"""
    beta_warmup_steps: int = 500
    """training steps over which beta rises linearly from 0 to its final value"""
    free_bits: float = 0.0
    """per-dimension KL floor in nats (0 disables it)"""
    min_std: float = 0.02
    """floor of the decoder's standard deviation (in half widths of the action box: action units on [-1, 1])"""
    max_std: float = 0.1
    """ceiling of the decoder's standard deviation (half widths of the box): without z it cannot cover two modes, and a
    narrow range keeps it from settling on one wide Gaussian for a mode (measured on the toy problem)"""
    min_log_var: float = -12.0
    """clamp of the encoder's and prior's log-variance, for numerical health"""
    max_log_var: float = 4.0
    """upper clamp of the encoder's and prior's log-variance"""
    iwae_samples: int = 64
    """K of the importance-weighted bound reported by log_prob"""
    prior_scale: float = 1.0
    """acting only: factor on the prior components' standard deviations when z is drawn (1 samples p(z|s); 0 plays
    a drawn component's mean), a probe for prior holes (README, "The episode latent's beta")"""

    def validate(self) -> None:
        super().validate()
        if self.latent_dim < 1 or self.iwae_samples < 1 or self.beta_warmup_steps < 0 or self.prior_components < 1:
            raise ValueError("latent_dim, iwae_samples, prior_components must be >= 1 and beta_warmup_steps >= 0")
        if self.prior not in ("standard", "gaussian", "mixture"):
            raise ValueError(f"prior must be standard, gaussian or mixture, got {self.prior!r}")
        if (self.beta is not None and self.beta < 0) or self.free_bits < 0:
            raise ValueError(f"beta and free_bits must be >= 0, got {self.beta}, {self.free_bits}")
        if self.latent_scope not in ("step", "episode") or self.segment_batch < 1:
            raise ValueError(f"latent_scope must be step or episode and segment_batch >= 1, got {self.latent_scope}")
        if not 0 < self.min_std <= self.max_std:
            raise ValueError(f"need 0 < min_std <= max_std, got {self.min_std}, {self.max_std}")
        if self.prior_scale < 0:
            raise ValueError(f"prior_scale must be >= 0, got {self.prior_scale}")

    @property
    def final_beta(self) -> float:
        """beta after the warm-up: the option, or its scope's default."""
        if self.beta is not None:
            return self.beta
        return EPISODE_BETA if self.latent_scope == "episode" else 1.0

    def effective(self) -> LatentConfig:
        return replace(self, beta=self.final_beta)


@register_policy
class LatentPolicy(Policy):
    name = "lvm"
    config_class = LatentConfig

    def __init__(self, obs_dim: int, act_dim: int, config: LatentConfig | None = None, **kw):
        super().__init__(obs_dim, act_dim, config or LatentConfig(), **kw)
        c = self.config
        dz = c.latent_dim
        if c.latent_scope == "episode":  # per-step features, pooled over the episode, then a linear head
            self.encoder = mlp(obs_dim + act_dim, c.hidden_dim, c.hidden_dim, c.num_layers)
            self.encoder_head = torch.nn.Linear(c.hidden_dim, 2 * dz)
        else:
            self.encoder = mlp(obs_dim + act_dim, 2 * dz, c.hidden_dim, c.num_layers)
        self.decoder = mlp(obs_dim + dz, 2 * act_dim, c.hidden_dim, c.num_layers)
        K = c.prior_components if c.prior == "mixture" else 1
        self.prior = None if c.prior == "standard" else mlp(obs_dim, K * (1 + 2 * dz), c.hidden_dim, c.num_layers)
        self.beta_now = c.final_beta if c.beta_warmup_steps == 0 else 0.0
        self._held_z: torch.Tensor | None = None  # (N, dz) latent held for the current episode
        self._held_valid: torch.Tensor | None = None  # (N,) bool: does _held_z belong to this episode?

    # ------------------------------------------------------------------------------- distributions
    def _clamp(self, log_var):
        return log_var.clamp(self.config.min_log_var, self.config.max_log_var)

    def posterior(self, obs_n, act_n):
        mean, log_var = self.encoder(torch.cat([obs_n, act_n], -1)).chunk(2, -1)  # (B, dz) each
        return mean, self._clamp(log_var)

    def prior_params(self, obs_n):
        """Mixture weights (B, K) as log-probabilities, means and log-variances (B, K, dz); K = 1 unless mixture."""
        B, dz = obs_n.shape[0], self.config.latent_dim
        if self.prior is None:
            zeros = obs_n.new_zeros(B, 1, dz)
            return obs_n.new_zeros(B, 1), zeros, zeros
        out = self.prior(obs_n)
        K = out.shape[-1] // (1 + 2 * dz)
        log_w = torch.log_softmax(out[:, :K], dim=-1)
        mean = out[:, K : K + K * dz].reshape(B, K, dz)
        log_var = self._clamp(out[:, K + K * dz :].reshape(B, K, dz))
        return log_w, mean, log_var

    def prior_log_prob(self, z, prior):
        """log p(z|s) for z (B, S, dz) under prior params from prior_params: (B, S)."""
        log_w, mean, log_var = prior
        comp = diag_gaussian_log_prob(z[:, :, None], mean[:, None], 0.5 * log_var[:, None])  # (B, S, K)
        return torch.logsumexp(log_w[:, None] + comp, dim=-1)

    def kl(self, mu_q, lv_q, z, prior):
        """Per-dimension closed-form KL (B, dz) for a Gaussian prior; for the mixture, the one-sample estimate
        log q(z|s,a) - log p(z|s) at the reparameterised z (B, 1) (no closed form exists)."""
        log_w, mean, log_var = prior
        if mean.shape[1] == 1:
            return diag_gaussian_kl(mu_q, lv_q, mean[:, 0], log_var[:, 0])
        log_q = diag_gaussian_log_prob(z, mu_q, 0.5 * lv_q)
        return (log_q - self.prior_log_prob(z[:, None], prior)[:, 0])[:, None]

    def decode(self, obs_n, z):
        """Decoder mean and log-std in normalised action space; obs_n (..., O), z (..., dz) -> (..., A) each."""
        mean, raw = self.decoder(torch.cat([obs_n, z], -1)).chunk(2, -1)
        # The bounds are in action units (half widths of the box): a cap in normalised units would be below the
        # noise of a dimension that is nearly constant, and z would be forced to encode that noise.
        log_scale = self.act_log_half_width() - torch.log(self.act_std)  # (A,)
        return mean, bounded_log_std(raw, self.config.min_std, self.config.max_std) + log_scale

    # ------------------------------------------------------------------------------------ training
    def on_train_step(self, step: int) -> None:
        c = self.config
        beta = c.final_beta
        self.beta_now = beta * min(1.0, step / c.beta_warmup_steps) if c.beta_warmup_steps > 0 else beta

    def _loss(self, obs_n, act, mask=None):
        if self.config.latent_scope == "episode":
            if mask is None:  # single transitions: segments of length one
                obs_n, act, mask = obs_n[:, None], act[:, None], torch.ones(act.shape[0], 1, device=act.device)
            return self._segment_loss(obs_n, act, mask)
        act_n = self.normalize_act(act)
        mu_q, lv_q = self.posterior(obs_n, act_n)
        z = mu_q + torch.exp(0.5 * lv_q) * torch.randn_like(mu_q)  # reparameterised sample (B, dz)
        mean, log_std = self.decode(obs_n, z)
        recon = diag_gaussian_log_prob(act_n, mean, log_std).mean()  # E_q log pi(a|s,z), one sample
        kl_dims = self.kl(mu_q, lv_q, z, self.prior_params(obs_n)).mean(0)  # (dz,), or (1,) for the mixture
        kl_term = kl_dims.clamp_min(self.config.free_bits).sum() if self.config.free_bits > 0 else kl_dims.sum()
        loss = -recon + self.beta_now * kl_term
        kl = kl_dims.sum()
        # Active units (Burda et al. 2016): dimensions whose posterior mean varies across the batch; a collapsed
        # posterior has none and the decoder ignores z.
        active = (mu_q.detach().var(0) > 0.01).sum()
        return loss, {
            "recon": recon,
            "kl": kl,
            "beta": torch.full((), self.beta_now, device=kl.device),
            "nll_elbo": -recon + kl - self.act_log_jacobian(),
            "active_dims": active,
        }

    # --------------------------------------------------------------------------------- likelihoods
    def elbo(self, obs: torch.Tensor, act: torch.Tensor, samples: int = 1) -> torch.Tensor:
        """(B,) ELBO (beta = 1) of raw actions, Monte Carlo over ``samples`` draws of z."""
        obs_n, act_n = self.normalize_obs(obs), self.normalize_act(act)
        mu_q, lv_q = self.posterior(obs_n, act_n)
        z = mu_q[:, None] + torch.exp(0.5 * lv_q)[:, None] * torch.randn(
            mu_q.shape[0], samples, mu_q.shape[1], device=mu_q.device
        )  # (B, S, dz)
        mean, log_std = self.decode(obs_n[:, None].expand(-1, samples, -1), z)
        recon = diag_gaussian_log_prob(act_n[:, None], mean, log_std).mean(1)  # (B,)
        prior = self.prior_params(obs_n)
        if prior[1].shape[1] == 1:  # Gaussian prior: the KL in closed form
            kl = diag_gaussian_kl(mu_q, lv_q, prior[1][:, 0], prior[2][:, 0]).sum(-1)
        else:  # mixture prior: Monte Carlo over the same samples, exact in expectation
            log_q = diag_gaussian_log_prob(z, mu_q[:, None], 0.5 * lv_q[:, None])  # (B, S)
            kl = (log_q - self.prior_log_prob(z, prior)).mean(1)
        return recon - kl + self.act_log_jacobian()

    def iwae(self, obs_n: torch.Tensor, act: torch.Tensor, k: int) -> torch.Tensor:
        """(B,) log (1/K) sum_k pi(a|s,z_k) p(z_k|s) / q(z_k|s,a), z_k ~ q: a bound on log pi(a|s)."""
        act_n = self.normalize_act(act)
        mu_q, lv_q = self.posterior(obs_n, act_n)
        std_q = torch.exp(0.5 * lv_q)
        z = mu_q[:, None] + std_q[:, None] * torch.randn(
            mu_q.shape[0], k, mu_q.shape[1], device=mu_q.device
        )  # (B, K, dz)
        log_q = diag_gaussian_log_prob(z, mu_q[:, None], 0.5 * lv_q[:, None])  # (B, K)
        log_p = self.prior_log_prob(z, self.prior_params(obs_n))  # (B, K)
        mean, log_std = self.decode(obs_n[:, None].expand(-1, k, -1), z)
        log_lik = diag_gaussian_log_prob(act_n[:, None], mean, log_std)  # (B, K)
        return torch.logsumexp(log_lik + log_p - log_q, dim=1) - math.log(k) + self.act_log_jacobian()

    def _log_prob(self, obs_n, act):
        if self.config.latent_scope == "episode":  # each transition as a segment of length one (see module doc)
            ones = torch.ones(act.shape[0], 1, device=act.device)
            return self.segment_iwae(obs_n[:, None], act[:, None], ones, self.config.iwae_samples)
        return self.iwae(obs_n, act, self.config.iwae_samples)

    # ------------------------------------------------------------------------------ episode scope
    def segments_per_batch(self) -> int | None:
        return self.config.segment_batch if self.config.latent_scope == "episode" else None

    def segment_posterior(self, obs_n: torch.Tensor, act_n: torch.Tensor, mask: torch.Tensor):
        """q(z | tau): obs_n (B, T, O), act_n (B, T, A), mask (B, T) -> mean, log-variance (B, dz) each."""
        h = torch.nn.functional.mish(self.encoder(torch.cat([obs_n, act_n], -1)))  # (B, T, H)
        w = mask.to(h.dtype)[..., None]
        pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, H) masked mean over the episode
        mean, log_var = self.encoder_head(pooled).chunk(2, -1)
        return mean, self._clamp(log_var)

    def segment_log_lik(self, obs_n, act_n, mask, z):
        """sum_t log pi(a_t | s_t, z) per segment: obs_n (B, T, O), act_n (B, T, A), z (B, S, dz) -> (B, S)."""
        B, T, _ = obs_n.shape
        S = z.shape[1]
        zt = z[:, :, None, :].expand(B, S, T, z.shape[-1])  # (B, S, T, dz)
        mean, log_std = self.decode(obs_n[:, None].expand(B, S, T, obs_n.shape[-1]), zt)
        per_step = diag_gaussian_log_prob(act_n[:, None], mean, log_std)  # (B, S, T)
        return (per_step * mask[:, None].to(per_step.dtype)).sum(-1)

    def sequence_elbo_terms(self, obs_n, act, mask, z=None):
        """(log-likelihood (B,), KL estimate (B,), z (B, dz)) of whole segments in normalised units; z drawn
        from q(z | tau) by reparameterisation unless given."""
        act_n = self.normalize_act(act)
        mu_q, lv_q = self.segment_posterior(obs_n, act_n, mask)
        if z is None:
            z = mu_q + torch.exp(0.5 * lv_q) * torch.randn_like(mu_q)  # (B, dz)
        log_lik = self.segment_log_lik(obs_n, act_n, mask, z[:, None])[:, 0]  # (B,)
        kl = self.kl(mu_q, lv_q, z, self.prior_params(obs_n[:, 0])).sum(-1)  # (B,) prior at s_0
        return log_lik, kl, z, mu_q

    def _segment_loss(self, obs_n, act, mask):
        log_lik, kl, _, mu_q = self.sequence_elbo_terms(obs_n, act, mask)
        steps = mask.sum().clamp_min(1)
        loss = -(log_lik - self.beta_now * kl).sum() / steps  # per action, like the step scope
        return loss, {
            "recon": log_lik.sum() / steps,
            "kl": kl.mean(),
            "beta": torch.full((), self.beta_now, device=kl.device),
            "nll_elbo": -(log_lik - kl).sum() / steps - self.act_log_jacobian(),
            "active_dims": (mu_q.detach().var(0) > 0.01).sum(),
        }

    def segment_iwae(self, obs_n: torch.Tensor, act: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
        """(B,) log (1/K) sum_k prod_t pi(a_t|s_t,z_k) p(z_k|s_0) / q(z_k|tau), z_k ~ q(z|tau), raw actions: a
        lower bound on the log-likelihood of each whole segment, tightening with K."""
        act_n = self.normalize_act(act)
        mu_q, lv_q = self.segment_posterior(obs_n, act_n, mask)
        z = mu_q[:, None] + torch.exp(0.5 * lv_q)[:, None] * torch.randn(
            mu_q.shape[0], k, mu_q.shape[1], device=mu_q.device
        )  # (B, K, dz)
        log_q = diag_gaussian_log_prob(z, mu_q[:, None], 0.5 * lv_q[:, None])  # (B, K)
        log_p = self.prior_log_prob(z, self.prior_params(obs_n[:, 0]))  # (B, K)
        log_lik = self.segment_log_lik(obs_n, act_n, mask, z)  # (B, K)
        steps = mask.sum(1).to(log_lik.dtype)
        return torch.logsumexp(log_lik + log_p - log_q, dim=1) - math.log(k) + steps * self.act_log_jacobian()

    def segment_log_prob(self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) IWAE bound (``iwae_samples``) on the log-likelihood of whole segments of raw observations."""
        return self.segment_iwae(self.normalize_obs(obs), act, mask, self.config.iwae_samples)

    # ------------------------------------------------------------------------------------- acting
    def _prior_sample(self, obs_n, n):
        log_w, mean, log_var = self.prior_params(obs_n)
        B, K, dz = mean.shape
        k = categorical_sample(log_w, n) if K > 1 else log_w.new_zeros(B, n, dtype=torch.long)
        idx = k[..., None].expand(B, n, dz)
        mu, lv = mean.gather(1, idx), log_var.gather(1, idx)  # (B, n, dz)
        return mu + self.config.prior_scale * torch.exp(0.5 * lv) * torch.randn_like(mu)

    def _sample(self, obs_n, n):
        z = self._prior_sample(obs_n, n)
        mean, log_std = self.decode(obs_n[:, None].expand(-1, n, -1), z)
        return self.denormalize_act(mean + log_std.exp() * torch.randn_like(mean))

    def _writable_held_state(self) -> None:
        """``predict`` runs in inference mode; a held latent made there is cloned before a normal-mode update."""
        if self._held_z is not None and self._held_z.is_inference() and not torch.is_inference_mode_enabled():
            self._held_z, self._held_valid = self._held_z.clone(), self._held_valid.clone()

    def reset(self, mask: torch.Tensor | None = None) -> None:
        if mask is None or self._held_valid is None or mask.shape != self._held_valid.shape:
            self._held_z, self._held_valid = None, None
        else:  # in place, so that a captured CUDA graph sees the update
            self._writable_held_state()
            self._held_valid.logical_and_(~mask.to(self._held_valid.device))

    def _acting_latent(self, obs_n):
        """(B, dz): a fresh prior draw, or the one held since the episode's first step (no host sync)."""
        z_new = self._prior_sample(obs_n, 1)[:, 0]
        if not (self.config.hold_latent or self.config.latent_scope == "episode"):
            return z_new
        B = obs_n.shape[0]
        if self._held_z is None or self._held_z.shape[0] != B or self._held_z.device != z_new.device:
            self._held_z, self._held_valid = z_new.clone(), torch.ones(B, dtype=torch.bool, device=z_new.device)
            return z_new
        self._writable_held_state()
        self._held_z.copy_(torch.where(self._held_valid[:, None], self._held_z, z_new))
        self._held_valid.fill_(True)
        return self._held_z

    def _act(self, obs_n, deterministic):
        mean, log_std = self.decode(obs_n, self._acting_latent(obs_n))
        a_n = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        return self.denormalize_act(a_n)
