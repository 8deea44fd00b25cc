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

Chunk scope (``latent_scope="chunk"``, the same as "step"): one z per prediction, q(z | window, chunk), p(z | window),
pi(chunk | window, z), where the window is the last ``obs_horizon`` observations and the chunk the next
``action_horizon`` actions (with 1/1 it is the step scope above). Actions past an episode's end are left out of the
reconstruction term (the decoder factorises over them).

Hierarchical scope (``latent_scope="hierarchical"``): both levels. An episode latent z_e with q(z_e | episode) (the
pooled encoder of the episode scope) and prior p(z_e | s_0), held for the episode, and beneath it a chunk latent
z_c with q(z_c | window, chunk, z_e), a learned mixture prior p(z_c | window, z_e) and the decoder
pi(chunk | window, z_c, z_e). On whole episodes (a chunk at every step t),

    ELBO(tau) = E_q [ sum_t log pi(chunk_t | w_t, z_c,t, z_e)
                      - beta * KL(q(z_c,t | w_t, chunk_t, z_e) || p(z_c,t | w_t, z_e)) ]
                - episode_beta * KL(q(z_e | tau) || p(z_e | s_0)),

the mixture KLs estimated at the reparameterised samples. With ``chunk_latent="codebook"`` (the default there) z_c
is discrete: the index k of the nearest of K k-means centres c_k of the training chunks (VQ-BeT's tokens, with BeT's
offsets), with a categorical prior p(k | w, z_e) and the decoder N(chunk; c_k + o_k(w, z_e), diag sigma_k(w, z_e)^2).
The posterior puts all its mass on the nearest k*, so the chunk term is log pi(chunk | w, k*, z_e) + log p(k* | w, z_e),
a bound on the exact marginal log sum_k p(k | w, z_e) pi(chunk | w, k, z_e), which the held-out bound uses. Unlike
the continuous z_c, whose codes for "left" are shared by the chunks before and after a decision line, each code
belongs to one shape of chunk, so the prior's share of a side before the line is not pulled by the chunks after it
(docs/results.md, "Choosing the default lvm"). At test time z_e ~ p(z_e | s_0) is drawn at reset and
held; z_c ~ p(z_c | window, z_e) at every prediction. z_e carries the coupled choices (which side at every tree),
z_c the independent ones (this tree's side). The held-out bound is a nested IWAE: ``iwae_samples`` draws of z_e,
each step's likelihood given z_e estimated by ``CHUNK_IWAE_SAMPLES`` draws of z_c (an unbiased estimate inside
the logarithm, so the result is still a lower bound).

Step scope: at test time z ~ p(z | s), drawn every step or once per episode and held (``hold_latent``); z = 0 is
never used because it is exactly the point between two symmetric modes. ``log_prob`` is the importance-weighted bound
(IWAE, Burda et al. 2016) with K samples from q, a lower bound on log pi(a | s) that tightens as K grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch

from lvm_policy.nets import (
    bounded_log_std,
    categorical_sample,
    diag_gaussian_kl,
    diag_gaussian_log_prob,
    kmeans,
    mish,
    mlp,
)
from lvm_policy.policies.base import Policy, PolicyConfig, register_policy

EPISODE_BETA = 0.2  # default KL weight of the episode scope (see LatentConfig.beta)
# Hierarchical scope: the chunk latent's KL weight (the true ELBO's 1) and the episode latent's. Every step's chunk
# pays for a decision it covers, so a choice costs the chunk level about H times its bits and the episode level once
# times episode_beta: the episode weight sets which choices the episode latent takes. Measured with the codebook
# chunk level on Slalom, seed 0 (docs/results.md, "Choosing the default lvm"): at 0.2 the episode latent also takes
# independent sides and couples them (route TV 0.20); at 12 it drops coupled sides (TV 0.48); 4 keeps both.
HIERARCHICAL_BETA, HIERARCHICAL_EPISODE_BETA = 1.0, 4.0
# The codebook chunk level's prior learns at 3 times the rate once the episode latent has had 2,000 steps to take the
# coupled choices (docs/results.md, "A faster chunk prior, after the episode latent has chosen").
CODEBOOK_PRIOR_LR_SCALE, CODEBOOK_PRIOR_LR_DELAY = 3.0, 2000
CHUNK_IWAE_SAMPLES = 8  # hierarchical scope: inner draws of z_c per step in the held-out bound
PRIOR_REFIT_STEPS = 300  # full-batch Adam steps of the episode prior's refit (refit_episode_prior)
# Share of a prior's draws in holes of the aggregate posterior above which the refit replaces it. Measured on the 12
# default-lvm runs of results/temporal/episode_prior.md: the priors that failed had 0.98-1.00 of their draws in holes,
# the ones that worked 0.10-0.38 (MultiGoal seed 0: 0.72, success 0.987, 0.997 refit).
PRIOR_HOLE_TOLERANCE = 0.5
HOLE_DRAWS = 2000  # prior draws of the hole test (one per training episode, at most this many)


def random_steps(step: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k steps of each episode drawn uniformly without replacement among its real ones: step mask (B, T) ->
    indices (B, k) and whether each is a real step (B, k) (an episode shorter than k leaves picks on padding)."""
    score = torch.where(step.bool(), torch.rand(step.shape, device=step.device), -1.0)  # random scores, top-k
    pick = score.topk(k, dim=1).indices
    return pick, step.gather(1, pick)


def take_steps(x: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
    """x (B, T, ...) at the steps pick (B, K) -> (B, K, ...)."""
    index = pick.reshape(*pick.shape, *([1] * (x.dim() - 2))).expand(*pick.shape, *x.shape[2:])
    return x.gather(1, index)


@dataclass
class LatentConfig(PolicyConfig):
    # runs made before the refit existed had none; before the codebook, every chunk latent was Gaussian
    absent_means: ClassVar[dict] = {
        **PolicyConfig.absent_means,
        "prior_refit": False,
        "chunk_latent": "gaussian",
        "episode_latent": "gaussian",
        "chunk_prior_lr_scale": 1.0,  # one rate for every network before session 14's option
        "chunk_prior_lr_delay": 0,
    }

    latent_dim: int = 2
    """dimension of z"""
    prior: Literal["standard", "gaussian", "mixture"] = "mixture"
    """p(z|s): the textbook fixed N(0, I), a learned state-conditioned Gaussian, or a learned mixture of Gaussians"""
    prior_components: int = 8
    """components of the mixture prior"""
    action_horizon: int = 8
    """H: actions predicted per call (the default lvm's chunk: docs/results.md, "Choosing the default lvm")"""
    action_steps: int = 4
    """Ta: actions executed before the next prediction"""
    latent_scope: Literal["step", "chunk", "episode", "hierarchical"] = "hierarchical"
    """step or chunk (the same): q(z|window, chunk), z redrawn at every prediction; episode: q(z|episode), z drawn at
    reset and held; hierarchical: an episode latent held for the episode and a chunk latent drawn at each prediction"""
    episode_beta: float = HIERARCHICAL_EPISODE_BETA
    """hierarchical scope: KL weight of the episode latent (beta weighs the chunk latent's)"""
    prior_refit: bool = True
    """episode and hierarchical scopes: refit the episode prior p(z_e | s_0) to the training episodes' posteriors before
    each evaluation (``refit_episode_prior``); False keeps the jointly trained prior"""
    segment_steps: int | None = 16
    """hierarchical scope, training: the chunk level's terms of each episode are estimated on this many random steps
    (scaled to the episode's length: unbiased), the episode encoder reading every step; None: every step"""
    episode_steps: int | None = None
    """hierarchical scope, training: each minibatch episode is read at this many random steps (the episode encoder
    pools them; the chunk level's segment_steps are drawn among them, scaled to the episode's length). A random
    subset of steps is a stochastic encoder, so the ELBO stays a bound; it cuts the per-step networks' work, most of
    it the camera encoder's on image observations. None: every step (the refit always reads every step)"""
    chunk_latent: Literal["gaussian", "codebook"] | None = None
    """hierarchical scope: the chunk latent z_c. gaussian: continuous, q(z_c | window, chunk, z_e) and a mixture prior;
    codebook: discrete, the nearest of ``codebook_size`` k-means centres of the training chunks (a deterministic
    posterior, as VQ-BeT's tokens), a categorical prior p(k | window, z_e) and a Gaussian decoder around the centre
    (see ``codebook_terms``). None: codebook in the hierarchical scope (its chunk level learns calibrated choices:
    docs/results.md, "Choosing the default lvm"), gaussian in the others"""
    codebook_size: int = 64
    """chunk_latent codebook: k-means centres of the normalised training chunks (BeT's 64 bins)"""
    episode_latent: Literal["gaussian", "categorical"] | None = None
    """hierarchical scope: the episode latent z_e. gaussian: latent_dim numbers, q(z_e | tau) from an episode encoder
    and a mixture prior p(z_e | s_0); categorical: one of episode_codes codes under a categorical prior p(k | s_0),
    summed over in training (its posterior is exact: no encoder, no gradient estimator; ``_categorical_episode_terms``).
    One clean coupled binary choice costs a categorical z_e log 2 = 0.69 nats of KL; the Gaussian z_e paid about 2.3.
    None: categorical where it applies (the hierarchical scope with the codebook chunk level; docs/results.md, "A
    categorical episode latent"), gaussian elsewhere"""
    episode_codes: int = 4
    """episode_latent categorical: the number of codes (each multiplies the chunk level's training work)"""
    segment_batch: int = 32
    """episode scope: whole demonstration episodes per minibatch (Slalom, 1 thread: 16 -> 20 ms a step,
    32 -> 38 ms, 64 -> 81 ms; 32 keeps 6,000 steps near the 3-minute budget)"""
    hold_latent: bool = False
    """step scope: draw z once per episode (at its first step) and keep it; False redraws it from p(z|s) every step"""
    beta: float | None = None
    """KL weight after the warm-up (of the chunk latent in the hierarchical scope); default 1 (the true ELBO) for
    the step, chunk and hierarchical scopes, 0.2 for the episode scope, where beta = 1 blurs the two sides' codes
    into one prior component and prior draws between them swerve too late (measured on TreeAvoid and coupled
    Slalom: docs/results.md, "The episode latent's beta")"""
    beta_warmup_steps: int = 500
    """training steps over which beta rises linearly from 0 to its final value"""
    episode_beta_warmup_steps: int | None = None
    """hierarchical scope: training steps over which episode_beta rises linearly from 0; None: beta_warmup_steps.
    A longer rise lets the episode latent take a coupled choice before its KL weight makes starting costly"""
    chunk_prior_lr_scale: float | None = None
    """the chunk level's prior learns at this multiple of the learning rate, in its own optimizer group, from step
    ``chunk_prior_lr_delay`` on. None: 3 for the codebook chunk level (a classifier over 64 codes whose rare
    decision states, such as the three-route maze's junction, had not converged at the base rate in 6,000 steps),
    1 elsewhere (docs/results.md, "A faster chunk prior, after the episode latent has chosen")"""
    chunk_prior_lr_delay: int | None = None
    """the chunk prior learns at the base rate until this training step, at ``chunk_prior_lr_scale`` times it from
    then on: the episode latent takes the choices coupled across an episode early in training, before a fast chunk
    prior can take them chunk by chunk (without the delay, 3 lost a coupled Slalom seed). None: 2,000 where the
    scale's default is 3, else 0"""
    decoder_lr_scale: float = 1.0
    """the decoder learns at this multiple of the learning rate, in its own optimizer group (with
    ``chunk_prior_lr_scale``: the chunk prior in a third)"""
    free_bits: float = 0.0
    """per-dimension KL floor in nats (0 disables it)"""
    episode_free_nats: float = 0.0
    """hierarchical scope: the episode KL is weighed as max(its minibatch mean, this) nats per episode, free bits
    for z_e (0 disables it): below the floor the episode encoder learns from the likelihood alone, so a z_e that
    collapsed early can still take a coupled choice"""
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
    a drawn component's mean), a probe for prior holes (docs/results.md, "The episode latent's beta")"""

    def validate(self) -> None:
        super().validate()
        if self.latent_dim < 1 or self.iwae_samples < 1 or self.beta_warmup_steps < 0 or self.prior_components < 1:
            raise ValueError("latent_dim, iwae_samples, prior_components must be >= 1 and beta_warmup_steps >= 0")
        if self.prior not in ("standard", "gaussian", "mixture"):
            raise ValueError(f"prior must be standard, gaussian or mixture, got {self.prior!r}")
        if self.chunk_prior_lr_delay is not None and self.chunk_prior_lr_delay < 0:
            raise ValueError(f"chunk_prior_lr_delay must be >= 0, got {self.chunk_prior_lr_delay}")
        for name, value in (
            ("chunk_prior_lr_scale", self.chunk_prior_rate),
            ("decoder_lr_scale", self.decoder_lr_scale),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if (self.beta is not None and self.beta < 0) or self.free_bits < 0 or self.episode_free_nats < 0:
            raise ValueError(
                f"beta, free_bits and episode_free_nats must be >= 0, got {self.beta}, {self.free_bits}, "
                f"{self.episode_free_nats}"
            )
        if self.latent_scope not in ("step", "chunk", "episode", "hierarchical") or self.segment_batch < 1:
            raise ValueError(
                "latent_scope must be step, chunk, episode or hierarchical and segment_batch >= 1, got "
                f"{self.latent_scope}, {self.segment_batch}"
            )
        for name in ("segment_steps", "episode_steps", "episode_beta_warmup_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if self.episode_beta < 0:
            raise ValueError(f"episode_beta must be >= 0, got {self.episode_beta}")
        if not 0 < self.min_std <= self.max_std:
            raise ValueError(f"need 0 < min_std <= max_std, got {self.min_std}, {self.max_std}")
        if self.prior_scale < 0:
            raise ValueError(f"prior_scale must be >= 0, got {self.prior_scale}")
        if self.chunk_latent not in (None, "gaussian", "codebook") or self.codebook_size < 1:
            raise ValueError(
                f"chunk_latent must be gaussian or codebook and codebook_size >= 1, got {self.chunk_latent!r}, "
                f"{self.codebook_size}"
            )
        if self.chunk_latent == "codebook" and self.latent_scope != "hierarchical":
            raise ValueError(f"chunk_latent codebook needs latent_scope hierarchical, got {self.latent_scope!r}")
        if self.episode_latent not in (None, "gaussian", "categorical") or self.episode_codes < 2:
            raise ValueError(
                f"episode_latent must be gaussian or categorical and episode_codes >= 2, got {self.episode_latent!r}, "
                f"{self.episode_codes}"
            )
        summed = self.latent_scope == "hierarchical" and self.chunk_level == "codebook"  # its chunk sums are shared
        if self.episode_latent == "categorical" and not summed:
            raise ValueError(
                "episode_latent categorical needs latent_scope hierarchical and the codebook chunk latent, got "
                f"{self.latent_scope!r}, {self.chunk_level!r}"
            )

    @property
    def final_beta(self) -> float:
        """beta after the warm-up: the option, or its scope's default."""
        if self.beta is not None:
            return self.beta
        return {"episode": EPISODE_BETA, "hierarchical": HIERARCHICAL_BETA}.get(self.latent_scope, 1.0)

    @property
    def episode_dim(self) -> int:
        """Numbers of the episode latent z_e as the chunk level reads it: latent_dim, or the codes' one-hot."""
        return self.episode_codes if self.episode_level == "categorical" else self.latent_dim

    @property
    def episode_level(self) -> str:
        """The episode latent's kind: the option, or categorical where it applies."""
        if self.episode_latent is not None:
            return self.episode_latent
        summed = self.latent_scope == "hierarchical" and self.chunk_level == "codebook"
        return "categorical" if summed else "gaussian"

    @property
    def chunk_level(self) -> str:
        """The chunk latent's kind: the option, or its scope's default."""
        if self.chunk_latent is not None:
            return self.chunk_latent
        return "codebook" if self.latent_scope == "hierarchical" else "gaussian"

    @property
    def chunk_prior_rate(self) -> float:
        """The chunk prior's multiple of the learning rate: the option, or its chunk level's default."""
        if self.chunk_prior_lr_scale is not None:
            return self.chunk_prior_lr_scale
        return CODEBOOK_PRIOR_LR_SCALE if self._codebook_prior else 1.0

    @property
    def chunk_prior_delay(self) -> int:
        """Training steps before the chunk prior's own rate applies: the option, or its chunk level's default."""
        if self.chunk_prior_lr_delay is not None:
            return self.chunk_prior_lr_delay
        return CODEBOOK_PRIOR_LR_DELAY if self._codebook_prior and self.chunk_prior_lr_scale is None else 0

    @property
    def _codebook_prior(self) -> bool:
        return self.latent_scope == "hierarchical" and self.chunk_level == "codebook"

    def effective(self) -> LatentConfig:
        return replace(
            self,
            beta=self.final_beta,
            chunk_latent=self.chunk_level,
            episode_latent=self.episode_level,
            chunk_prior_lr_scale=self.chunk_prior_rate,
            chunk_prior_lr_delay=self.chunk_prior_delay,
        )


@register_policy
class LatentPolicy(Policy):
    name = "lvm"
    config_class = LatentConfig
    benchmark_rows: ClassVar[dict[str, dict]] = {
        "lvm": {},  # the default: hierarchical latents over chunks
        "lvm-step": {"latent_scope": "step", "action_horizon": 1, "action_steps": 1},  # the per-step policy
        "lvm-episode": {"latent_scope": "episode", "action_horizon": 1, "action_steps": 1},
    }

    def __init__(self, obs_dim: int, act_dim: int, config: LatentConfig | None = None, **kw):
        super().__init__(obs_dim, act_dim, config or LatentConfig(), **kw)
        c = self.config
        dz, W, D = c.latent_dim, self.in_dim, self.chunk_dim  # W: a window's To * O numbers, D: a chunk's H * A
        K = c.prior_components if c.prior == "mixture" else 1

        def prior_net(inputs: int) -> torch.nn.Module | None:
            return None if c.prior == "standard" else mlp(inputs, K * (1 + 2 * dz), c.hidden_dim, c.num_layers)

        # The chunk level's networks read the window and, in the hierarchical scope, the episode latent z_e.
        categorical = c.episode_level == "categorical"
        cond = W + c.episode_dim if c.latent_scope == "hierarchical" else W
        if c.latent_scope in ("episode", "hierarchical"):  # per-step features pooled over the episode, a linear head
            episode_encoder = mlp(W + D, c.hidden_dim, c.hidden_dim, c.num_layers)
            episode_head = torch.nn.Linear(c.hidden_dim, 2 * dz)
        if c.latent_scope == "episode":
            self.encoder, self.encoder_head = episode_encoder, episode_head
        elif c.chunk_level == "gaussian":
            self.encoder = mlp(cond + D, 2 * dz, c.hidden_dim, c.num_layers)
        else:  # codebook: the posterior is the nearest centre
            self.encoder = None
        if c.latent_scope == "hierarchical" and categorical:  # the posterior is exact: no episode encoder
            self.episode_prior = mlp(W, c.episode_codes, c.hidden_dim, c.num_layers)  # logits of p(k | s_0)
        elif c.latent_scope == "hierarchical":
            self.episode_encoder, self.episode_encoder_head = episode_encoder, episode_head
            self.episode_prior = prior_net(W)
        if c.chunk_level == "codebook":  # z_c is a code: the prior is logits, the decoder an offset per code
            self.decoder = mlp(cond, c.codebook_size * 2 * D, c.hidden_dim, c.num_layers)
            self.prior = mlp(cond, c.codebook_size, c.hidden_dim, c.num_layers)
            self.register_buffer("codebook", torch.zeros(c.codebook_size, D))  # normalised chunk units
        else:
            self.decoder = mlp(cond + dz, 2 * D, c.hidden_dim, c.num_layers)
            self.prior = prior_net(cond)
        self.beta_now = c.final_beta if c.beta_warmup_steps == 0 else 0.0
        self._step: int | None = None  # the training step (on_train_step), for the episode weight's own warm-up
        self._held_z: torch.Tensor | None = None  # (N, dz) latent held for the current episode
        self._held_valid: torch.Tensor | None = None  # (N,) bool: does _held_z belong to this episode?
        # Episode posteriors (mean, log-variance (E, dz)) to draw z_e from instead of p(z_e | s_0): a probe for
        # holes in the learned episode prior (scripts/diagnose_episode_prior.py). Not saved with the policy.
        self._episode_bank: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def episode_posteriors(self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor):
        """q(z_e | tau) of whole episodes: windows (E, T, To, O), chunks (E, T, H, A), mask (E, T, H) (as
        ``Windows.gather_episodes`` gives them) -> mean, log-variance (E, dz)."""
        if self.config.episode_level == "categorical":
            raise ValueError("a categorical episode latent has code probabilities, not Gaussian posteriors")
        obs_n = self.normalize_obs(obs.flatten(2))
        step, dm = self._segment_masks(mask)
        level = "episode_encoder" if self.config.latent_scope == "hierarchical" else "encoder"
        return self.segment_posterior(obs_n, self.normalize_act(act.flatten(2)), step, level, dm)

    @torch.no_grad()
    def episode_code_posteriors(self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A categorical episode latent's posterior q(k | tau) of whole episodes (windows (E, T, To, O), chunks
        (E, T, H, A), mask (E, T, H), as ``Windows.gather_episodes`` gives them) -> (E, K): the tempered exact
        posterior that training uses at its final KL weights (``_categorical_episode_terms``), every step read."""
        c = self.config
        if c.latent_scope != "hierarchical" or c.episode_level != "categorical":
            raise ValueError("only a categorical episode latent has code posteriors")
        obs_n = self.normalize_obs(obs.flatten(2))
        *_, q = self.hierarchical_elbo_terms(obs_n, act.flatten(2), mask, weights=(c.final_beta, c.episode_beta))
        return q

    def draw_episode_latents_from(self, bank: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Act with z_e ~ q(z_e | tau_j) of a random episode j of ``bank`` (the aggregate posterior, ignoring the
        start state) instead of the learned prior; None restores the prior."""
        if bank is not None and self.config.latent_scope not in ("episode", "hierarchical"):
            raise ValueError("only the episode and hierarchical scopes have an episode latent")
        if bank is not None and self.config.episode_level == "categorical":
            raise ValueError("a categorical episode latent is drawn from its prior's code probabilities only")
        self._episode_bank = bank

    def refit(self, episodes: Callable[[], Iterable[tuple]], seed: int = 0) -> dict[str, float]:
        """Refit the episode prior to the episodes' posteriors (``refit_episode_prior``); nothing for the other
        scopes."""
        c = self.config
        if not c.prior_refit or c.latent_scope not in ("episode", "hierarchical") or c.prior == "standard":
            return {}
        if c.episode_level == "categorical":  # the exact KL already fits p(k | s_0) to q(k | tau): no holes
            return {}
        return self.refit_episode_prior(episodes(), seed=seed)

    def refit_episode_prior(
        self, episodes: Iterable[tuple], steps: int = PRIOR_REFIT_STEPS, seed: int = 0, force: bool = False
    ) -> dict[str, float]:
        """Ex-post density estimation (Ghosh et al. 2020) of the episode prior: fit p(z_e | s_0) by maximum likelihood
        to draws from the posteriors q(z_e | tau) of ``episodes`` (batches of windows, chunks and mask as
        ``Windows.gather_episodes`` gives them). The fit starts from k-means of the posterior means (weights: the
        clusters' shares, means: their centres, variances: their spread plus the posterior variance) with the start
        state's influence off, and the start state's is learned in ``steps`` full-batch Adam steps.

        The refit replaces the jointly trained prior only where more than ``PRIOR_HOLE_TOLERANCE`` of that prior's
        draws fall into holes (``_hole_share``) and fewer of the refit's do. Where most of the trained prior's draws
        are typical it stays, although the refit gives the posterior draws a higher likelihood: on TreeAvoid, where
        the side share depends on the start state, the refit's draws missed the demonstrations' shares by more
        (mode TV 0.024-0.037 against 0.004-0.022 on three seeds, results/temporal/episode_prior.md). ``force``
        keeps the refit whatever the hole test says.

        Why: trained jointly with the encoder, the mixture can settle on one wide component spanning two narrow,
        distant clusters of codes (components far from every cluster get no gradient: a local optimum of mixture
        fitting), and draws between the clusters decode to neither mode (measured on coupled Slalom:
        results/temporal/episode_prior.md). Returns, to log: the mean log p(z_e | s_0) of held posterior draws and the
        hole share, each for the trained prior and the refit, and whether the refit was kept."""
        c = self.config
        net = self.episode_prior if c.latent_scope == "hierarchical" else self.prior
        means, log_vars, starts = [], [], []
        with torch.no_grad():
            for obs, act, mask in episodes:  # (B, T, To, O), (B, T, H, A), (B, T, H)
                mean, log_var = self.episode_posteriors(obs, act, mask)
                means.append(mean)
                log_vars.append(log_var)
                starts.append(self.normalize_obs(obs[:, 0].flatten(1)))  # (B, W): the prior's input, s_0's window
        mean, log_var, s0 = torch.cat(means), torch.cat(log_vars), torch.cat(starts)  # (E, dz), (E, dz), (E, W)
        gen = torch.Generator(device=mean.device).manual_seed(seed)

        def draws() -> torch.Tensor:  # (E, 1, dz): one z_e ~ q(z_e | tau) per episode
            return (mean + torch.exp(0.5 * log_var) * torch.randn(mean.shape, generator=gen, device=mean.device))[
                :, None
            ]

        held = draws()

        def held_log_lik() -> float:
            with torch.no_grad():
                return float(self.prior_log_prob(held, self.prior_params(s0, net))[:, 0].mean())

        before, current = held_log_lik(), {k: v.clone() for k, v in net.state_dict().items()}
        # k-means start: the output layer's weights zero, its bias the mixture of the clusters
        dz, last = c.latent_dim, net.layers[-1]
        K = last.out_features // (1 + 2 * dz)
        centres = kmeans(mean, K, seed).to(mean)  # (K' <= K, dz)
        assign = torch.cdist(mean, centres).argmin(1)  # (E,)
        counts = torch.bincount(assign, minlength=K).to(mean)  # (K,)
        centres = torch.cat([centres, centres[:1].expand(K - centres.shape[0], dz)])  # unused slots get weight ~0
        spread = torch.zeros_like(centres).index_add_(0, assign, (mean - centres[assign]).pow(2) + log_var.exp())
        var = spread / counts.clamp_min(1)[:, None]  # (K, dz): within-cluster variance of the codes
        log_share = torch.log((counts + 1e-3) / counts.sum())  # (K,)
        bias = torch.cat([log_share, centres.flatten(), self._clamp(var.log()).flatten()])

        def fit() -> tuple[float, dict[str, torch.Tensor]]:  # the k-means start, then maximum likelihood
            with torch.no_grad():
                last.weight.zero_()
                last.bias.copy_(bias)
            opt = torch.optim.Adam(params, lr=1e-3)
            with torch.enable_grad():
                for _ in range(steps):
                    loss = -self.prior_log_prob(draws(), self.prior_params(s0, net))[:, 0].mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            return held_log_lik(), {k: v.clone() for k, v in net.state_dict().items()}

        params = list(net.parameters())
        trainable = [p.requires_grad for p in params]
        try:
            for p in params:
                p.requires_grad_(True)
            candidates = [(before, current), fit()]
        finally:
            for p, flag in zip(params, trainable):
                p.requires_grad_(flag)
        holes = [self._hole_share(net, state, s0, mean, log_var, held[:, 0], gen) for _, state in candidates]
        # the refit replaces the trained prior only where that one's draws fall into holes and the refit's fewer
        kept = int(force or (holes[0] > PRIOR_HOLE_TOLERANCE and holes[1] < holes[0]))
        net.load_state_dict(candidates[kept][1])
        return {
            "prior_log_lik_before": before,
            "prior_log_lik_refit": candidates[1][0],
            "prior_holes_before": holes[0],
            "prior_holes_refit": holes[1],
            "prior_refit_kept": kept,
        }

    @torch.no_grad()
    def _hole_share(self, net, state, s0, mean, log_var, posterior_draws, gen) -> float:
        """Share of draws z ~ p(z | s_0) (one per start state, at most ``HOLE_DRAWS``) less typical of the aggregate
        posterior q(z) = mean_j q(z | tau_j) than 99% of the posteriors' own draws: the prior's mass in holes."""
        net.load_state_dict(state)
        n = min(HOLE_DRAWS, s0.shape[0])
        log_w, mu, lv = self.prior_params(s0[:n], net)  # (n, K), (n, K, dz) each
        k = categorical_sample(log_w, 1, gen)[:, 0]  # (n,)
        pick = k[:, None, None].expand(n, 1, mu.shape[-1])
        z = mu.gather(1, pick)[:, 0] + torch.exp(0.5 * lv.gather(1, pick)[:, 0]) * torch.randn(
            n, mu.shape[-1], generator=gen, device=mu.device
        )  # (n, dz)

        def log_aggregate(x: torch.Tensor) -> torch.Tensor:  # (m, dz) -> (m,) log q(x), in blocks of rows
            parts = [
                torch.logsumexp(diag_gaussian_log_prob(b[:, None], mean[None], 0.5 * log_var[None]), 1)
                for b in x.split(512)
            ]
            return torch.cat(parts) - math.log(mean.shape[0])

        typical = torch.quantile(log_aggregate(posterior_draws[:n]), 0.01)
        return float((log_aggregate(z) < typical).float().mean())

    # ------------------------------------------------------------------------------- distributions
    def _clamp(self, log_var):
        return log_var.clamp(self.config.min_log_var, self.config.max_log_var)

    def posterior(self, obs_n, act_n, dim_mask=None):
        """q(z | window, chunk): mean and log-variance (B, dz). Actions past the episode's end (dim_mask 0) are read
        as zeros, so that the padding carries no information (ACT masks them the same way)."""
        if dim_mask is not None:
            act_n = act_n * dim_mask
        mean, log_var = self.encoder(torch.cat([obs_n, act_n], -1)).chunk(2, -1)  # (B, dz) each
        return mean, self._clamp(log_var)

    def prior_params(self, obs_n, net: torch.nn.Module | None | str = "chunk"):
        """Mixture weights (B, K) as log-probabilities, means and log-variances (B, K, dz); K = 1 unless mixture.
        net: the prior network (default: the per-prediction level's, ``self.prior``; None: N(0, I))."""
        net = self.prior if net == "chunk" else net
        B, dz = obs_n.shape[0], self.config.latent_dim
        if net is None:
            zeros = obs_n.new_zeros(B, 1, dz)
            return obs_n.new_zeros(B, 1), zeros, zeros
        out = net(obs_n)
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
        """Decoder mean and log-std in normalised action space; obs_n (..., O), z (..., dz) -> (..., H * A) each."""
        mean, raw = self.decoder(torch.cat([obs_n, z], -1)).chunk(2, -1)
        return mean, self._decoder_log_std(raw)

    def _decoder_log_std(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw decoder outputs (..., H * A) -> log-stds in normalised units, bounded in action units (half widths of
        the box): a cap in normalised units would be below the noise of a dimension that is nearly constant, and z
        would be forced to encode that noise."""
        log_scale = self.act_log_half_width() - torch.log(self.act_std).repeat(self.horizon)  # (H * A,)
        return bounded_log_std(raw, self.config.min_std, self.config.max_std) + log_scale

    # ------------------------------------------------------------------------------ codebook chunks
    @torch.no_grad()
    def fit_normalizer(self, obs: torch.Tensor, act: torch.Tensor, chunks: torch.Tensor | None = None) -> None:
        """Normalisers, then with ``chunk_latent="codebook"`` the k-means centres of the normalised training chunks
        (N, H, A) (the actions when H = 1), seeded with 0 like BeT's bins."""
        super().fit_normalizer(obs, act, chunks)
        if self.config.chunk_level == "codebook":
            self.fit_chunk_centres(self.codebook, act, chunks, seed=0)

    def code_decode(self, cond: torch.Tensor):
        """The codebook decoder: conditions (B, C) -> code logits (B, K), chunk means (B, K, D) (centre plus a
        per-code offset) and log-stds (B, K, D), normalised units."""
        K, D = self.config.codebook_size, self.chunk_dim
        offset, raw = self.decoder(cond).reshape(-1, K, 2, D).unbind(2)  # (B, K, D) each
        return torch.log_softmax(self.prior(cond), -1), self.codebook + offset, self._decoder_log_std(raw)

    def code_params(self, cond: torch.Tensor, k: torch.Tensor):
        """The decoder's chunk mean and log-std for one code k (N,) per row, normalised units: cond (N, C) -> (N, D)
        each, or cond (N, S, C), S conditions sharing row n's code -> (N, S, D). Only that code's rows of the output
        layer are applied (the output layer has K * 2 * D rows; all of them cost K times the arithmetic and dominated
        a training step of the two-level lvm)."""
        D = self.chunk_dim
        shared = cond if cond.dim() == 3 else cond[:, None]  # (N, S, C)
        h = self.decoder.features(shared)  # (N, S, hidden)
        last = self.decoder.layers[-1]
        if torch.is_grad_enabled() and last.weight.requires_grad:
            out = self._code_rows_by_code(h, k)  # training: no per-row copy of the weights and of their gradient
        else:  # acting: no host sync (CUDA graphs)
            out = self._code_rows_gathered(h, k)
        offset, raw = out.unflatten(-1, (2, D)).unbind(-2)  # (N, S, D) each
        mean, log_std = self.codebook[k][:, None] + offset, self._decoder_log_std(raw)
        return (mean, log_std) if cond.dim() == 3 else (mean[:, 0], log_std[:, 0])

    def _code_rows_gathered(self, h: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The output layer's rows of code k (N,) applied to features h (N, S, hidden) -> (N, S, 2 D), one weight
        block gathered per row (index_select: its gradient is an index_add, faster on the CPU than index_put)."""
        K, D = self.config.codebook_size, self.chunk_dim
        last = self.decoder.layers[-1]
        weight = last.weight.view(K, -1).index_select(0, k).view(-1, 2 * D, h.shape[-1])  # (N, 2 D, hidden)
        bias = last.bias.view(K, 2 * D).index_select(0, k)  # (N, 2 D)
        return torch.baddbmm(bias[:, :, None], weight, h.transpose(1, 2)).transpose(1, 2)  # (N, S, 2 D)

    def _code_rows_by_code(self, h: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The output layer's rows of code k (N,) applied to features h (N, S, hidden) -> (N, S, 2 D), rows grouped
        by code: the rows are sorted into K buckets of M = the largest count (padded with a zero row) and each
        bucket meets its code's weights in one batched matmul, so the weights' gradient is (K, 2 D, hidden) at
        once. Gathering a weight block per row instead writes N blocks forward and N gradient blocks backward
        before an index_add: 1.4x the time of this at N = 512, S = 4 on the CPU (``python benchmarks/speed.py
        --tables codebook``). M is read on the host, so acting, which CUDA graphs capture, does not come here."""
        K, D = self.config.codebook_size, self.chunk_dim
        N, S, hidden = h.shape
        last = self.decoder.layers[-1]
        counts = torch.bincount(k, minlength=K)  # (K,)
        M = int(counts.max())
        order = torch.argsort(k, stable=True)  # (N,) rows sorted by code
        by_code = k[order]
        first = torch.cumsum(counts, 0) - counts  # (K,) each code's first place in the sorted order
        slot = torch.empty_like(k)
        slot[order] = by_code * M + torch.arange(N, device=k.device) - first[by_code]  # (N,) row n's bucket place
        row_of = torch.full((K * M,), N, dtype=torch.long, device=k.device)  # padded places read the zero row N
        row_of[slot] = torch.arange(N, device=k.device)
        padded = torch.cat([h, h.new_zeros(1, S, hidden)]).index_select(0, row_of).view(K, M * S, hidden)
        weight = last.weight.view(K, 2 * D, hidden)
        out = torch.baddbmm(last.bias.view(K, 1, 2 * D), padded, weight.transpose(1, 2))  # (K, M S, 2 D)
        return out.view(K * M, S, 2 * D).index_select(0, slot)  # (N, S, 2 D)

    def codebook_terms(self, cond: torch.Tensor, act_n: torch.Tensor, dim_mask=None):
        """The codebook level's ELBO terms: (log pi(chunk | c, k*), log p(k* | c)), (N,) each, at the nearest centre
        k* of each normalised chunk act_n (N, D) (dim_mask (N, D): its kept dimensions); cond (N, C), or (N, S, C)
        for S conditions of the same chunk (the episode codes of a categorical z_e) -> (N, S) each.
        q(k | chunk) puts all its mass on k*, so its entropy is 0, the KL to the prior is -log p(k* | c), and
        log pi(chunk | c, k*) + log p(k* | c) <= log sum_k p(k | c) pi(chunk | c, k): a bound, like the Gaussian
        level's. The nearest centre is found on the whole chunk, padding included (the centres are of padded chunks
        too); the likelihood counts the kept actions only."""
        k = torch.cdist(act_n, self.codebook).argmin(1)  # (N,) the posterior's code
        mean, log_std = self.code_params(cond, k)  # (N, [S,] D)
        shared = cond.dim() == 3
        x, keep = (act_n[:, None], None if dim_mask is None else dim_mask[:, None]) if shared else (act_n, dim_mask)
        log_lik = diag_gaussian_log_prob(x, mean, log_std, keep)
        log_w = torch.log_softmax(self.prior(cond), -1)  # (N, [S,] K)
        index = k.view(-1, *([1] * (log_w.dim() - 1))).expand(*log_w.shape[:-1], 1)
        return log_lik, log_w.gather(-1, index)[..., 0]

    def codebook_log_lik(self, cond: torch.Tensor, act_n: torch.Tensor, dim_mask=None) -> torch.Tensor:
        """(B,) log pi(chunk | c) = log sum_k p(k | c) pi(chunk | c, k): the codebook level's exact marginal."""
        log_w, mean, log_std = self.code_decode(cond)
        dm = None if dim_mask is None else dim_mask[:, None]
        return torch.logsumexp(log_w + diag_gaussian_log_prob(act_n[:, None], mean, log_std, dm), -1)

    def code_sample(self, cond: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """(B, D) normalised chunks: code k ~ p(k | c), then its decoder mean (and its noise unless deterministic)."""
        k = categorical_sample(torch.log_softmax(self.prior(cond), -1), 1)[:, 0]  # (B,)
        mu, log_std = self.code_params(cond, k)
        return mu if deterministic else mu + log_std.exp() * torch.randn_like(mu)

    # ------------------------------------------------------------------------------------ training
    def on_train_step(self, step: int) -> None:
        c = self.config
        beta = c.final_beta
        self.beta_now = beta * min(1.0, step / c.beta_warmup_steps) if c.beta_warmup_steps > 0 else beta
        self._step = step

    def _loss(self, obs_n, act, mask=None):
        scope = self.config.latent_scope
        if scope in ("episode", "hierarchical"):
            if mask is None:  # single windows: segments of length one
                obs_n, act = obs_n[:, None], act[:, None]
                mask = torch.ones(act.shape[0], 1, device=act.device)
            if scope == "episode":
                return self._segment_loss(obs_n, act, mask)
            return self._hierarchical_loss(obs_n, act, mask)
        act_n, keep = self.normalize_act(act), self.dim_mask(mask)
        mu_q, lv_q = self.posterior(obs_n, act_n, keep)
        z = mu_q + torch.exp(0.5 * lv_q) * torch.randn_like(mu_q)  # reparameterised sample (B, dz)
        mean, log_std = self.decode(obs_n, z)
        # E_q log pi(chunk | window, z), one sample; actions past the episode's end are left out (the decoder
        # factorises over them)
        log_lik = diag_gaussian_log_prob(act_n, mean, log_std, keep)  # (B,)
        recon = log_lik.mean()
        kl_dims = self.kl(mu_q, lv_q, z, self.prior_params(obs_n)).mean(0)  # (dz,), or (1,) for the mixture
        kl_term = kl_dims.clamp_min(self.config.free_bits).sum() if self.config.free_bits > 0 else kl_dims.sum()
        loss = -recon + self.beta_now * kl_term
        kl = kl_dims.sum()
        if self.horizon > 1:  # per action, so that the loss's scale does not grow with H
            actions = self.horizon if mask is None else mask.sum() / mask.shape[0]  # mean actions per chunk
            loss, recon, kl = loss / actions, recon / actions, kl / actions
        # Active units (Burda et al. 2016): dimensions whose posterior mean varies across the batch; a collapsed
        # posterior has none and the decoder ignores z.
        active = (mu_q.detach().var(0) > 0.01).sum()
        per_action_jacobian = self.act_log_jacobian() / self.horizon if self.horizon > 1 else self.act_log_jacobian()
        return loss, {
            "recon": recon,
            "kl": kl,
            "beta": torch.full((), self.beta_now, device=kl.device),
            "nll_elbo": -recon + kl - per_action_jacobian,
            "active_dims": active,
        }

    # --------------------------------------------------------------------------------- likelihoods
    def elbo(self, obs: torch.Tensor, act: torch.Tensor, samples: int = 1) -> torch.Tensor:
        """(B,) ELBO (beta = 1) of raw chunks given windows (flat), Monte Carlo over ``samples`` draws of z."""
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

    def iwae_normalized(self, cond: torch.Tensor, act_n: torch.Tensor, k: int, dim_mask=None) -> torch.Tensor:
        """(B,) log (1/K) sum_k pi(a|c,z_k) p(z_k|c) / q(z_k|c,a), z_k ~ q, for conditions cond (B, C) and
        normalised chunks act_n (B, D): the per-prediction level's bound, in normalised units."""
        mu_q, lv_q = self.posterior(cond, act_n, dim_mask)
        std_q = torch.exp(0.5 * lv_q)
        z = mu_q[:, None] + std_q[:, None] * torch.randn(
            mu_q.shape[0], k, mu_q.shape[1], device=mu_q.device
        )  # (B, K, dz)
        log_q = diag_gaussian_log_prob(z, mu_q[:, None], 0.5 * lv_q[:, None])  # (B, K)
        log_p = self.prior_log_prob(z, self.prior_params(cond))  # (B, K)
        mean, log_std = self.decode(cond[:, None].expand(-1, k, -1), z)
        dm = None if dim_mask is None else dim_mask[:, None]
        log_lik = diag_gaussian_log_prob(act_n[:, None], mean, log_std, dm)  # (B, K)
        return torch.logsumexp(log_lik + log_p - log_q, dim=1) - math.log(k)

    def iwae(self, obs_n: torch.Tensor, act: torch.Tensor, k: int) -> torch.Tensor:
        """(B,) log (1/K) sum_k pi(a|s,z_k) p(z_k|s) / q(z_k|s,a), z_k ~ q: a bound on log pi(a|s)."""
        return self.iwae_normalized(obs_n, self.normalize_act(act), k) + self.act_log_jacobian()

    def _log_prob(self, obs_n, act):
        scope = self.config.latent_scope
        if scope in ("episode", "hierarchical"):  # each window as a segment of length one (see module doc)
            ones = torch.ones(act.shape[0], 1, device=act.device)
            return self.segment_iwae(obs_n[:, None], act[:, None], ones, self.config.iwae_samples)
        return self.iwae(obs_n, act, self.config.iwae_samples)

    # ------------------------------------------------------------------------------ episode scope
    def segments_per_batch(self) -> int | None:
        return self.config.segment_batch if self.config.latent_scope in ("episode", "hierarchical") else None

    def _segment_masks(self, mask: torch.Tensor):
        """A segment's mask (B, T) or (B, T, H) as the step mask (B, T) and the chunk dimensions' mask (B, T, H * A)
        (None with H = 1: the step mask says it all)."""
        if mask.dim() == 2:
            return mask, None
        return mask[..., 0], (self.dim_mask(mask) if self.horizon > 1 else None)

    def _segment_jacobian(self, mask: torch.Tensor) -> torch.Tensor:
        """(B,) log-Jacobian of a segment's raw actions: per action, times its actions inside the episode."""
        step, _ = self._segment_masks(mask)
        if self.horizon == 1 or mask.dim() == 2:  # whole chunks at every step
            return step.sum(1).to(self.act_std.dtype) * self.act_log_jacobian()
        return mask.sum((1, 2)).to(self.act_std.dtype) * self.act_log_jacobian() / self.horizon

    def segment_posterior(
        self, obs_n: torch.Tensor, act_n: torch.Tensor, mask: torch.Tensor, level: str = "encoder", dim_mask=None
    ):
        """q(z | tau): obs_n (B, T, O), act_n (B, T, D), mask (B, T) -> mean, log-variance (B, dz) each. Chunk
        actions past the episode's end (dim_mask (B, T, D) 0) are read as zeros."""
        if dim_mask is not None:
            act_n = act_n * dim_mask
        encoder = getattr(self, level)
        head = getattr(self, f"{level}_head")
        h = mish(encoder(torch.cat([obs_n, act_n], -1)))  # (B, T, hidden)
        w = mask.to(h.dtype)[..., None]
        pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, hidden) masked mean over the episode
        mean, log_var = head(pooled).chunk(2, -1)
        return mean, self._clamp(log_var)

    def segment_log_lik(self, obs_n, act_n, mask, z, dim_mask=None):
        """sum_t log pi(a_t | s_t, z) per segment: obs_n (B, T, O), act_n (B, T, D), z (B, S, dz) -> (B, S)."""
        B, T, _ = obs_n.shape
        S = z.shape[1]
        zt = z[:, :, None, :].expand(B, S, T, z.shape[-1])  # (B, S, T, dz)
        mean, log_std = self.decode(obs_n[:, None].expand(B, S, T, obs_n.shape[-1]), zt)
        dm = None if dim_mask is None else dim_mask[:, None]
        per_step = diag_gaussian_log_prob(act_n[:, None], mean, log_std, dm)  # (B, S, T)
        return (per_step * mask[:, None].to(per_step.dtype)).sum(-1)

    def sequence_elbo_terms(self, obs_n, act, mask, z=None):
        """(log-likelihood (B,), KL estimate (B,), z (B, dz)) of whole segments in normalised units; z drawn
        from q(z | tau) by reparameterisation unless given."""
        step, dm = self._segment_masks(mask)
        act_n = self.normalize_act(act)
        mu_q, lv_q = self.segment_posterior(obs_n, act_n, step, dim_mask=dm)
        if z is None:
            z = mu_q + torch.exp(0.5 * lv_q) * torch.randn_like(mu_q)  # (B, dz)
        log_lik = self.segment_log_lik(obs_n, act_n, step, z[:, None], dm)[:, 0]  # (B,)
        kl = self.kl(mu_q, lv_q, z, self.prior_params(obs_n[:, 0])).sum(-1)  # (B,) prior at s_0
        return log_lik, kl, z, mu_q

    def _actions(self, mask: torch.Tensor) -> torch.Tensor:
        """Actions a segment minibatch's likelihood counts: steps with H = 1, chunk actions inside episodes else."""
        return mask.sum().clamp_min(1)

    def _segment_loss(self, obs_n, act, mask):
        log_lik, kl, _, mu_q = self.sequence_elbo_terms(obs_n, act, mask)
        steps = self._actions(mask)
        jac = self.act_log_jacobian() / self.horizon
        loss = -(log_lik - self.beta_now * kl).sum() / steps  # per action, like the step scope
        return loss, {
            "recon": log_lik.sum() / steps,
            "kl": kl.mean(),
            "beta": torch.full((), self.beta_now, device=kl.device),
            "nll_elbo": -(log_lik - kl).sum() / steps - (self.act_log_jacobian() if self.horizon == 1 else jac),
            "active_dims": (mu_q.detach().var(0) > 0.01).sum(),
        }

    def segment_iwae(self, obs_n: torch.Tensor, act: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
        """(B,) log (1/K) sum_k prod_t pi(a_t|s_t,z_k) p(z_k|s_0) / q(z_k|tau), z_k ~ q(z|tau), raw actions: a
        lower bound on the log-likelihood of each whole segment, tightening with K."""
        if self.config.latent_scope == "hierarchical":
            return self.hierarchical_iwae(obs_n, act, mask, k)
        step, dm = self._segment_masks(mask)
        act_n = self.normalize_act(act)
        mu_q, lv_q = self.segment_posterior(obs_n, act_n, step, dim_mask=dm)
        z = mu_q[:, None] + torch.exp(0.5 * lv_q)[:, None] * torch.randn(
            mu_q.shape[0], k, mu_q.shape[1], device=mu_q.device
        )  # (B, K, dz)
        log_q = diag_gaussian_log_prob(z, mu_q[:, None], 0.5 * lv_q[:, None])  # (B, K)
        log_p = self.prior_log_prob(z, self.prior_params(obs_n[:, 0]))  # (B, K)
        log_lik = self.segment_log_lik(obs_n, act_n, step, z, dm)  # (B, K)
        return torch.logsumexp(log_lik + log_p - log_q, dim=1) - math.log(k) + self._segment_jacobian(mask)

    def segment_log_prob(self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) IWAE bound (``iwae_samples``) on the log-likelihood of whole segments of raw observations: obs
        (B, T, To * O), act (B, T, H * A), mask (B, T) or (B, T, H)."""
        return self.segment_iwae(self.normalize_obs(obs), act, mask, self.config.iwae_samples)

    # ------------------------------------------------------------------------- hierarchical scope
    def _with_episode_latent(self, obs_n: torch.Tensor, z_e: torch.Tensor) -> torch.Tensor:
        """The chunk level's condition: windows (..., O) beside the episode latent (B, dz) -> (..., O + dz)."""
        z = z_e.reshape(z_e.shape[0], *([1] * (obs_n.dim() - 2)), z_e.shape[-1]).expand(*obs_n.shape[:-1], -1)
        return torch.cat([obs_n, z], -1)

    def hierarchical_elbo_terms(
        self,
        obs_n,
        act,
        mask,
        z_e=None,
        z_c=None,
        steps: int | None = None,
        lengths: torch.Tensor | None = None,
        weights: tuple[float, float] = (1.0, 1.0),
        first_obs: torch.Tensor | None = None,
    ):
        """The two-level ELBO's terms per segment, in normalised units: (sum_t log pi (B,), sum_t KL_c (B,),
        KL_e (B,), z_e (B, dz), the episode posterior's mean (B, dz) or its code probabilities (B, K)). obs_n (B, T,
        O), act (B, T, D), mask (B, T) or (B, T, H). z_e (B, dz) and z_c (B, T, dz) are drawn by reparameterisation
        unless given; every KL is estimated at its sample (the mixture priors have no closed form), so for fixed
        latents the ELBO is sum_t [log pi + log p(z_c) - log q(z_c)] + log p(z_e | s_0) - log q(z_e | tau).

        A categorical z_e is summed over instead of drawn (``_categorical_episode_terms``): the terms are then
        expectations under its exact posterior, tempered by ``weights`` = (the chunk KL's weight, the episode KL's
        weight) as the training loss weighs them.

        steps: estimate the sums over t from that many random steps of each episode, scaled by its length over
        the steps drawn (unbiased; the episode encoder still reads every step given); None: every step.
        lengths (B,): the episodes' real lengths when the segments given are already random steps of them
        (``episode_steps``): the sums over t are scaled to those lengths. first_obs (B, O): the episodes' first
        (normalised) observations, which the episode prior p(z_e | s_0) reads, when the segments given do not
        start with them; None: obs_n[:, 0]."""
        s0 = obs_n[:, 0] if first_obs is None else first_obs  # (B, O)
        step, dm = self._segment_masks(mask)
        act_n = self.normalize_act(act)
        categorical = self.config.episode_level == "categorical"
        if not categorical:
            mu_e, lv_e = self.segment_posterior(obs_n, act_n, step, "episode_encoder", dm)
            if z_e is None:
                z_e = mu_e + torch.exp(0.5 * lv_e) * torch.randn_like(mu_e)  # (B, dz)
            log_q_e = diag_gaussian_log_prob(z_e, mu_e, 0.5 * lv_e)  # (B,)
            prior_e = self.prior_params(s0, self.episode_prior)
            kl_e = log_q_e - self.prior_log_prob(z_e[:, None], prior_e)[:, 0]
        log_p_codes = torch.log_softmax(self.episode_prior(s0), -1) if categorical else None  # (B, K)
        scale = None if lengths is None else lengths / step.sum(1).clamp_min(1)  # (B,) length over steps given
        if steps is not None and steps < step.shape[1]:
            pick, valid = random_steps(step, steps)  # (B, K) each
            scale = (step.sum(1) if lengths is None else lengths) / valid.sum(1).clamp_min(1)
            obs_n, act_n, step = take_steps(obs_n, pick), take_steps(act_n, pick), valid
            dm = None if dm is None else take_steps(dm, pick)
            if z_c is not None:
                z_c = take_steps(z_c, pick)
        if categorical:
            return self._categorical_episode_terms(obs_n, act_n, step, dm, scale, log_p_codes, z_e, weights)
        log_lik, kl_c = self._chunk_sums(obs_n, act_n, step, dm, z_e, z_c)
        if scale is not None:
            log_lik, kl_c = log_lik * scale, kl_c * scale
        return log_lik, kl_c, kl_e, z_e, mu_e

    def _chunk_sums(self, obs_n, act_n, step, dm, z_e, z_c=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The chunk level's sum_t log pi and sum_t KL_c over the steps of step (B, T): windows obs_n (B, T, O), chunks
        act_n (B, T, D), their kept dimensions dm (B, T, D) or None, the episode latent z_e (B, dz) -> (B,) each, or
        S episode latents z_e (B, S, dz) -> (B, S) each (the codebook level: each chunk's code found once);
        z_c (B, T, dz) drawn unless given (the Gaussian level)."""
        B, T = step.shape
        flat_act = act_n.reshape(B * T, -1)
        flat_keep = None if dm is None else dm.reshape(B * T, -1)
        w = step.to(act_n.dtype)
        if z_e.dim() == 3:  # (B, S, dz): the conditions (B T, S, O + dz) of each chunk
            S = z_e.shape[1]
            cond = torch.cat(
                [obs_n[:, :, None].expand(B, T, S, obs_n.shape[-1]), z_e[:, None].expand(B, T, S, z_e.shape[-1])], -1
            ).reshape(B * T, S, -1)
            log_lik, log_p_code = self.codebook_terms(cond, flat_act, flat_keep)  # (B T, S) each
            per_step = lambda x: (x.reshape(B, T, S) * w[..., None]).sum(1)  # noqa: E731
            return per_step(log_lik), per_step(-log_p_code)
        cond = self._with_episode_latent(obs_n, z_e).reshape(B * T, -1)  # (B T, O + dz)
        if self.config.chunk_level == "codebook":  # z_c is the nearest code: no draw, KL = -log p(k*)
            log_lik, log_p_code = self.codebook_terms(cond, flat_act, flat_keep)  # (B T,) each
            kl_c = -log_p_code
        else:
            mu_c, lv_c = self.posterior(cond, flat_act, flat_keep)  # (B T, dz)
            if z_c is None:
                z_c = mu_c + torch.exp(0.5 * lv_c) * torch.randn_like(mu_c)
            z_c = z_c.reshape(B * T, -1)
            mean, log_std = self.decode(cond, z_c)
            log_lik = diag_gaussian_log_prob(flat_act, mean, log_std, flat_keep)
            log_q_c = diag_gaussian_log_prob(z_c, mu_c, 0.5 * lv_c)
            kl_c = log_q_c - self.prior_log_prob(z_c[:, None], self.prior_params(cond))[:, 0]  # (B T,)
        return (log_lik.reshape(B, T) * w).sum(1), (kl_c.reshape(B, T) * w).sum(1)

    def _categorical_episode_terms(self, obs_n, act_n, step, dm, scale, log_p, z_e, weights):
        """A categorical episode latent's terms, every code k summed over (K times the chunk level's work; no episode
        encoder and no gradient estimator). With L_k = sum_t [log pi - b KL_c] given code k, the objective
        max_q E_q[L_k] - b_e KL(q || p(. | s_0)) is attained at the tempered exact posterior
        q(k) ∝ p(k | s_0) exp(L_k / b_e), where it equals b_e log sum_k p(k | s_0) exp(L_k / b_e): with b = b_e = 1,
        the chunk level's bound marginalised over z_e exactly. q is held fixed in the gradient (at the maximum the
        gradient through q vanishes), and the terms returned are expectations under it: (E_q sum_t log pi (B,),
        E_q sum_t KL_c (B,), KL(q || p) (B,), q (B, K) as z_e, q (B, K)). Given one-hot codes z_e (B, K): those
        codes' sums and the KL at them, log q(k) - log p(k) with q the untempered posterior (the fixed-latent form of
        the ELBO; it equals the exact log-marginal at every code)."""
        B, K = step.shape[0], log_p.shape[1]
        codes = torch.eye(K, dtype=obs_n.dtype, device=obs_n.device).expand(B, K, K)  # every code's one-hot
        log_lik, kl_c = self._chunk_sums(obs_n, act_n, step, dm, codes)  # (B, K) each
        if scale is not None:
            log_lik, kl_c = log_lik * scale[:, None], kl_c * scale[:, None]
        if z_e is not None:  # the fixed-latent form at the given codes
            log_q = torch.log_softmax(log_p + log_lik - kl_c, -1)
            code = z_e.argmax(-1, keepdim=True)  # (B, 1)

            def pick(x: torch.Tensor) -> torch.Tensor:
                return x.gather(1, code)[:, 0]

            return pick(log_lik), pick(kl_c), pick(log_q) - pick(log_p), z_e, log_q.exp()
        beta, beta_e = weights
        with torch.no_grad():
            q = torch.softmax(log_p + (log_lik - beta * kl_c) / max(beta_e, 1e-3), -1)  # (B, K)
        kl_e = (q * (torch.log(q.clamp_min(1e-30)) - log_p)).sum(-1)  # (B,) exact; trains p(k | s_0) toward q
        return (q * log_lik).sum(-1), (q * kl_c).sum(-1), kl_e, q, q

    def hierarchical_elbo(self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor, z_e=None, z_c=None):
        """(B,) the two-level ELBO (beta = 1 at both levels) of raw segments, a bound on log pi(actions | states)."""
        log_lik, kl_c, kl_e, _, _ = self.hierarchical_elbo_terms(self.normalize_obs(obs), act, mask, z_e, z_c)
        return log_lik - kl_c - kl_e + self._segment_jacobian(mask)

    def loss(
        self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        drawn = self.steps_drawn_first() if mask is not None else None
        if drawn is None:
            return super().loss(obs, act, mask)
        # Whole episodes (B, T, ...): keep the steps drawn before any network (the camera encoder included) reads
        # them, and remember the episodes' lengths, action counts and first observations (the episode prior's).
        obs, act = self._flat(obs, act, 2)
        step, _ = self._segment_masks(mask)
        lengths, actions = step.sum(1), self._actions(mask)  # (B,), ()
        first = obs[:, 0]  # (B, O)
        if drawn < step.shape[1]:
            pick, _ = random_steps(step, drawn)  # (B, K)
            obs, act, mask = take_steps(obs, pick), take_steps(act, pick), take_steps(mask, pick)
        loss, logs = self._hierarchical_loss(
            self.normalize_obs(obs), act, mask, lengths, actions, first_obs=self.normalize_obs(first)
        )
        return loss, self._logged(loss, logs)

    def steps_drawn_first(self) -> int | None:
        """How many steps of each minibatch episode the hierarchical loss draws before its networks read any:
        ``episode_steps`` where set; else, for a categorical episode latent (which no encoder reads: only its
        prior reads s_0), the chunk level's ``segment_steps``, the only steps its terms read, drawn as they would
        be after encoding every step (the same random draw, so on states the same numbers, and on images the
        camera encoder runs on segment_steps images of an episode, not all of them). None: every step is read."""
        c = self.config
        if c.latent_scope != "hierarchical":
            return None
        if c.episode_steps is not None:
            return c.episode_steps
        return c.segment_steps if c.episode_level == "categorical" else None

    def _hierarchical_loss(self, obs_n, act, mask, lengths=None, actions=None, first_obs=None):
        weights = (self.beta_now, self._episode_beta_now())
        log_lik, kl_c, kl_e, _, mu_e = self.hierarchical_elbo_terms(
            obs_n, act, mask, steps=self.config.segment_steps, lengths=lengths, weights=weights, first_obs=first_obs
        )
        actions = self._actions(mask) if actions is None else actions
        kl_e_weighed = kl_e.sum()
        if self.config.episode_free_nats > 0:  # free bits on the minibatch mean, as Kingma et al. (2016)
            kl_e_weighed = kl_e.mean().clamp_min(self.config.episode_free_nats) * kl_e.shape[0]
        loss = -(log_lik - weights[0] * kl_c).sum() / actions + weights[1] * kl_e_weighed / actions
        jac = self.act_log_jacobian() / self.horizon
        return loss, {
            "recon": log_lik.sum() / actions,
            "kl": kl_c.sum() / actions,
            "kl_episode": kl_e.mean(),
            "beta": torch.full((), self.beta_now, device=loss.device),
            "nll_elbo": -(log_lik - kl_c - kl_e).sum() / actions - jac,
            "active_dims": (mu_e.detach().var(0) > 0.01).sum(),
        }

    def _episode_beta_now(self) -> float:
        """The episode latent's KL weight, warmed up like beta or over its own episode_beta_warmup_steps."""
        c = self.config
        if c.episode_beta_warmup_steps is not None:
            step = c.episode_beta_warmup_steps if self._step is None else self._step  # outside training: final
            return c.episode_beta * min(1.0, step / c.episode_beta_warmup_steps)
        return c.episode_beta * (self.beta_now / c.final_beta if c.final_beta > 0 else 1.0)

    def hierarchical_iwae(self, obs_n: torch.Tensor, act: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
        """(B,) nested IWAE bound on each segment's log-likelihood: K draws of z_e ~ q(z_e | tau), each step's
        log pi(chunk_t | w_t, z_e) estimated by a CHUNK_IWAE_SAMPLES-sample IWAE over z_c."""
        step, dm = self._segment_masks(mask)
        act_n = self.normalize_act(act)
        B, T = step.shape
        if self.config.episode_level == "categorical":  # every code once: the sum over z_e is exact, K codes
            log_p = torch.log_softmax(self.episode_prior(obs_n[:, 0]), -1)  # (B, K)
            k = log_p.shape[1]
            z_e = torch.eye(k, dtype=obs_n.dtype, device=obs_n.device).expand(B, k, k)  # (B, K, K) one-hots
            log_q = torch.full_like(log_p, -math.log(k))  # the sum over codes as K times their mean
        else:
            mu_e, lv_e = self.segment_posterior(obs_n, act_n, step, "episode_encoder", dm)
            z_e = mu_e[:, None] + torch.exp(0.5 * lv_e)[:, None] * torch.randn(B, k, mu_e.shape[1], device=mu_e.device)
            log_q = diag_gaussian_log_prob(z_e, mu_e[:, None], 0.5 * lv_e[:, None])  # (B, K)
            log_p = self.prior_log_prob(z_e, self.prior_params(obs_n[:, 0], self.episode_prior))  # (B, K)
        cond = torch.cat(
            [obs_n[:, None].expand(B, k, T, obs_n.shape[-1]), z_e[:, :, None].expand(B, k, T, z_e.shape[-1])], -1
        ).reshape(B * k * T, -1)
        acts = act_n[:, None].expand(B, k, T, act_n.shape[-1]).reshape(B * k * T, -1)
        dms = None if dm is None else dm[:, None].expand(B, k, T, dm.shape[-1]).reshape(B * k * T, -1)
        if self.config.chunk_level == "codebook":  # the discrete level's marginal is exact
            per_step = self.codebook_log_lik(cond, acts, dms).reshape(B, k, T)
        else:
            per_step = self.iwae_normalized(cond, acts, CHUNK_IWAE_SAMPLES, dms).reshape(B, k, T)
        log_lik = (per_step * step[:, None].to(per_step.dtype)).sum(-1)  # (B, K)
        return torch.logsumexp(log_lik + log_p - log_q, dim=1) - math.log(k) + self._segment_jacobian(mask)

    # ------------------------------------------------------------------------------------- acting
    def _prior_sample(self, obs_n, n, net: torch.nn.Module | None | str = "chunk"):
        hierarchical = self.config.latent_scope == "hierarchical"
        if hierarchical and net is self.episode_prior and self.config.episode_level == "categorical":
            code = categorical_sample(torch.log_softmax(net(obs_n), -1), n)  # (B, n)
            return torch.nn.functional.one_hot(code, self.config.episode_codes).to(obs_n.dtype)  # (B, n, K)
        if self._episode_bank is not None and (net is self.episode_prior if hierarchical else net == "chunk"):
            mu_bank, lv_bank = self._episode_bank  # (E, dz) each
            j = torch.randint(mu_bank.shape[0], (obs_n.shape[0], n), device=obs_n.device)  # (B, n)
            return mu_bank[j] + torch.exp(0.5 * lv_bank[j]) * torch.randn_like(mu_bank[j])
        log_w, mean, log_var = self.prior_params(obs_n, net)
        B, K, dz = mean.shape
        k = categorical_sample(log_w, n) if K > 1 else log_w.new_zeros(B, n, dtype=torch.long)
        idx = k[..., None].expand(B, n, dz)
        mu, lv = mean.gather(1, idx), log_var.gather(1, idx)  # (B, n, dz)
        return mu + self.config.prior_scale * torch.exp(0.5 * lv) * torch.randn_like(mu)

    def _sample(self, obs_n, n):
        """(B, n, D) chunks from pi(. | window); the hierarchical scope draws z_e ~ p(z_e | window) with each."""
        if self.config.latent_scope == "hierarchical":
            z_e = self._prior_sample(obs_n, n, self.episode_prior)  # (B, n, dz)
            cond = torch.cat([obs_n[:, None].expand(-1, n, -1), z_e], -1)  # (B, n, O + dz)
            if self.config.chunk_level == "codebook":
                chunks = self.code_sample(cond.reshape(-1, cond.shape[-1]))  # (B n, D)
                return self.denormalize_act(chunks.reshape(obs_n.shape[0], n, -1))
            z = self._prior_sample(cond.reshape(-1, cond.shape[-1]), 1)[:, 0].reshape(obs_n.shape[0], n, -1)
            mean, log_std = self.decode(cond, z)
            return self.denormalize_act(mean + log_std.exp() * torch.randn_like(mean))
        z = self._prior_sample(obs_n, n)
        mean, log_std = self.decode(obs_n[:, None].expand(-1, n, -1), z)
        return self.denormalize_act(mean + log_std.exp() * torch.randn_like(mean))

    def param_groups(self, lr: float) -> list[dict]:
        c = self.config
        nets = ((self.prior, c.chunk_prior_rate, c.chunk_prior_delay), (self.decoder, c.decoder_lr_scale, 0))
        scaled = [(net, scale, delay) for net, scale, delay in nets if net is not None and scale != 1.0]
        if not scaled:
            return super().param_groups(lr)
        own = {id(p) for net, _, _ in scaled for p in net.parameters()}
        rest = [p for p in self.parameters() if id(p) not in own]
        return [{"params": rest, "lr": lr}] + [
            {"params": list(net.parameters()), "lr": lr * scale, "delay": delay} for net, scale, delay in scaled
        ]

    def _writable_held_state(self) -> None:
        """``predict`` runs in inference mode; a held latent made there is cloned before a normal-mode update."""
        if self._held_z is not None and self._held_z.is_inference() and not torch.is_inference_mode_enabled():
            self._held_z, self._held_valid = self._held_z.clone(), self._held_valid.clone()

    def _reset(self, mask: torch.Tensor | None) -> None:
        if mask is None or self._held_valid is None or mask.shape != self._held_valid.shape:
            self._held_z, self._held_valid = None, None
        else:  # in place, so that a captured CUDA graph sees the update
            self._writable_held_state()
            self._held_valid.logical_and_(~mask.to(self._held_valid.device))

    def _holds_latent(self) -> bool:
        return self.config.hold_latent or self.config.latent_scope in ("episode", "hierarchical")

    def _acting_latent(self, obs_n, rows=None, net: torch.nn.Module | None | str = "chunk"):
        """(B, dz): a fresh prior draw, or the one held since the episode's first step (no host sync). rows (B,):
        which acting environments the batch holds (None: all, in order)."""
        z_new = self._prior_sample(obs_n, 1, net)[:, 0]
        if not self._holds_latent():
            return z_new
        N = obs_n.shape[0] if rows is None else self._acting.num_envs
        if self._held_z is None or self._held_z.shape[0] != N or self._held_z.device != z_new.device:
            self._held_z = z_new.new_zeros(N, z_new.shape[1])
            self._held_valid = torch.zeros(N, dtype=torch.bool, device=z_new.device)
        self._writable_held_state()
        if rows is None:
            self._held_z.copy_(torch.where(self._held_valid[:, None], self._held_z, z_new))
            self._held_valid.fill_(True)
            return self._held_z
        z = torch.where(self._held_valid[rows, None], self._held_z[rows], z_new)
        self._held_z[rows] = z
        self._held_valid[rows] = True
        return z

    def _act(self, obs_n, deterministic, rows=None):
        if self.config.latent_scope == "hierarchical":  # z_e held for the episode, z_c fresh at each prediction
            cond = torch.cat([obs_n, self._acting_latent(obs_n, rows, self.episode_prior)], -1)
            if self.config.chunk_level == "codebook":
                return self.denormalize_act(self.code_sample(cond, deterministic))
            z = self._prior_sample(cond, 1)[:, 0]
            mean, log_std = self.decode(cond, z)
        else:
            mean, log_std = self.decode(obs_n, self._acting_latent(obs_n, rows))
        a_n = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        return self.denormalize_act(a_n)
