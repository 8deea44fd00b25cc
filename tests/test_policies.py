"""The mathematics of the policy classes and the interface they share, over the whole registry."""

import math

import numpy as np
import pytest
import torch

from lvm_policy import list_policies, load_policy, make_policy
from lvm_policy.nets import diag_gaussian_kl
from lvm_policy.policies.autoregressive import AutoregressiveConfig
from lvm_policy.policies.gmm import GMMConfig
from lvm_policy.policies.latent import LatentConfig

ALL = list_policies()
STEP = dict(latent_scope="step", action_horizon=1, action_steps=1)  # the lvm's per-step scope
EPISODE = dict(latent_scope="episode", action_horizon=1, action_steps=1)  # one z per episode, one action per step


def test_registry_has_every_class():
    assert set(ALL) == {"gaussian", "gmm", "autoregressive", "lvm", "flow", "diffusion", "bet", "act"}
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("nope", 3, 2)


@pytest.mark.parametrize("name", ALL)
def test_interface_shapes_and_bounds(name):
    torch.manual_seed(0)
    p = make_policy(name, 3, 2)
    To, H = p.config.obs_horizon, p.config.action_horizon  # windows and chunks (1 and 1 but for act)
    window, chunk = torch.randn(16, To, 3), torch.rand(16, H, 2) * 2 - 1
    obs = window[:, -1]
    p.fit_normalizer(obs, chunk[:, 0], chunk)
    if p.segments_per_batch() is None:
        loss, logs = p.loss(window, chunk)
    else:  # a class that learns from whole episodes: here 16 episodes of one step
        loss, logs = p.loss(window[:, None], chunk[:, None], torch.ones(16, 1, H, dtype=torch.bool))
    assert loss.dim() == 0 and all(isinstance(v, float) for v in logs.values())
    assert p.log_prob(window, chunk).shape == (16,)
    assert bool(torch.isfinite(p.log_prob(window, chunk)).all()) == p.has_density
    s = p.sample(window.flatten(1), 5)
    assert s.shape == (16, 5, H * 2) and bool((s.abs() <= 1).all())
    for det in (False, True):
        a = p.act(obs, deterministic=det)
        assert a.shape == (16, 2) and bool((a.abs() <= 1).all())
    a, state = p.predict(np.zeros(3, dtype=np.float32), episode_start=np.array([True]))
    assert a.shape == (2,) and a.dtype == np.float32 and state is None


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip_gives_same_actions(name, tmp_path):
    torch.manual_seed(0)
    p = make_policy(name, 3, 2)
    p.fit_normalizer(torch.randn(100, 3) * 2 + 1, torch.rand(100, 2) * 2 - 1)
    p.save(tmp_path / name)
    q = load_policy(tmp_path / name)
    assert type(q) is type(p) and q.config == p.config
    obs = torch.randn(32, 3)
    for det in (False, True):
        p.eval(), q.eval()
        p.reset(), q.reset()
        torch.manual_seed(7)
        a = p.act(obs, deterministic=det)
        torch.manual_seed(7)
        b = q.act(obs, deterministic=det)
        assert torch.equal(a, b)
    assert not list(tmp_path.rglob("*.pt")) and (tmp_path / name / "model.safetensors").is_file()


def test_gmm_log_prob_is_the_mixture_formula():
    torch.manual_seed(0)
    p = make_policy("gmm", 3, 2, GMMConfig(num_components=3, hidden_dim=32))
    p.fit_normalizer(torch.randn(50, 3), torch.rand(50, 2) * 1.5 - 0.75)
    obs, act = torch.randn(10, 3), torch.rand(10, 2) * 2 - 1
    log_w, mean, log_std = p._mixture(p.normalize_obs(obs))
    w, m, sd = log_w.exp().double(), p.denormalize_act(mean).double(), (log_std.exp() * p.act_std).double()
    a = act.double()[:, None, :]
    dens = (torch.exp(-0.5 * ((a - m) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))).prod(-1)  # (B, K)
    direct = torch.log((w * dens).sum(-1))
    torch.testing.assert_close(p.log_prob(obs, act).double(), direct, rtol=1e-4, atol=1e-4)


def test_autoregressive_density_integrates_to_one_and_sampling_matches_bins():
    torch.manual_seed(0)
    p = make_policy("autoregressive", 3, 2, AutoregressiveConfig(num_bins=8, hidden_dim=32))
    obs = torch.randn(1, 3)
    # Midpoint rule on a grid four times finer than the bins: exact for a piecewise-constant density.
    g = (torch.arange(32) + 0.5) / 32 * 2 - 1
    A = torch.cartesian_prod(g, g)  # (1024, 2)
    with torch.no_grad():
        dens = p.log_prob(obs.expand(len(A), -1), A).exp()
    integral = float(dens.sum() * (2 / 32) ** 2)
    assert abs(integral - 1.0) < 1e-4
    # First-dimension bin frequencies of 200,000 samples against its softmax.
    probs = torch.softmax(p.heads[0](p.normalize_obs(obs)), -1)[0]
    s = p.sample(obs, 200_000)[0]
    freq = torch.bincount(p._bins(s)[:, 0], minlength=8).float() / len(s)
    assert float((freq - probs).abs().max()) < 0.005
    # Conditional frequencies of the second dimension given a first-dimension bin.
    b0 = int(torch.argmax(probs))
    a0 = torch.tensor([[-1 + (b0 + 0.5) * 0.25]])
    cond = torch.softmax(p.heads[1](torch.cat([p.normalize_obs(obs), a0], -1)), -1)[0]
    in_bin = p._bins(s)[:, 0] == b0
    freq1 = torch.bincount(p._bins(s)[in_bin][:, 1], minlength=8).float() / int(in_bin.sum())
    assert float((freq1 - cond).abs().max()) < 0.03  # a0 is the bin centre, samples spread over the bin


def test_gaussian_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mq, lq, mp, lp = (
        torch.tensor([0.3, -1.0]),
        torch.tensor([-0.5, 0.4]),
        torch.tensor([0.1, 0.5]),
        torch.tensor([0.2, -0.3]),
    )
    z = mq + torch.exp(0.5 * lq) * torch.randn(1_000_000, 2)
    log_q = -0.5 * ((z - mq) ** 2 / lq.exp() + lq + math.log(2 * math.pi))
    log_p = -0.5 * ((z - mp) ** 2 / lp.exp() + lp + math.log(2 * math.pi))
    mc = (log_q - log_p).mean(0)
    torch.testing.assert_close(diag_gaussian_kl(mq, lq, mp, lp), mc, atol=5e-3, rtol=0)


@pytest.mark.parametrize("prior", ["standard", "gaussian", "mixture"])
def test_iwae_bound_at_least_elbo_and_grows_with_k(prior):
    torch.manual_seed(0)
    p = make_policy("lvm", 3, 2, LatentConfig(prior=prior, hidden_dim=32, **STEP))
    obs, act = torch.randn(64, 3), torch.rand(64, 2) * 2 - 1
    with torch.no_grad():
        elbo = p.elbo(obs, act, samples=2000).mean()
        obs_n = p.normalize_obs(obs)
        bounds = [torch.stack([p.iwae(obs_n, act, k) for _ in range(200 // k + 20)]).mean() for k in (1, 4, 16, 64)]
    assert abs(float(bounds[0] - elbo)) < 0.05 * abs(float(elbo)) + 0.05  # K = 1 is the ELBO
    for a, b in zip(bounds, bounds[1:]):
        assert float(b) >= float(a) - 0.02
    assert float(bounds[-1]) > float(elbo)


# ------------------------------------------------------------------------------------------------------
# The toy problem of the lecture: the action given the state is an even mix of two separated values.
# ------------------------------------------------------------------------------------------------------
def _toy(n=4096):
    obs = torch.rand(n, 3) * 2 - 1
    side = torch.where(torch.rand(n) < 0.5, -0.6, 0.6)
    act = torch.stack([side, torch.full((n,), 0.2)], -1) + 0.03 * torch.randn(n, 2)
    return obs, act.clamp(-1, 1)


# diffusion needs 3,000 steps of a wider net on the toy (about 55 s): a slow check, like the other long trainings
TOY_CLASSES = [pytest.param(n, marks=pytest.mark.slow) if n == "diffusion" else n for n in ALL]


@pytest.mark.parametrize("name", TOY_CLASSES)
def test_toy_bimodal_modes(name):
    torch.manual_seed(0)
    obs, act = _toy()
    cfgs = {"lvm": dict(beta_warmup_steps=100, **STEP), "autoregressive": dict(num_bins=32), "bet": dict(num_bins=8)}
    # (hidden width, steps, learning rate): diffusion needs more of everything to place its mode weights
    budget = {"diffusion": (128, 3000, 1e-3)}.get(name, (64, 600, 3e-3))
    cfgs["act"] = dict(action_horizon=1, action_steps=1)  # the toy is one step: chunks of one action
    config = make_policy(name, 3, 2).config_class(hidden_dim=budget[0], **cfgs.get(name, {}))
    p = _train(make_policy(name, 3, 2, config), obs, act, budget[1], lr=budget[2])
    test_obs = torch.rand(64, 3) * 2 - 1
    with torch.no_grad():
        lateral = p.sample(test_obs, 200)[..., 0]  # (64, 200)
        near_left = float(((lateral + 0.6).abs() < 0.2).float().mean())
        near_right = float(((lateral - 0.6).abs() < 0.2).float().mean())
        between = float((lateral.abs() < 0.3).float().mean())
        if name == "gaussian":
            mean = p.act(test_obs, deterministic=True)[:, 0]
            assert float(mean.abs().max()) < 0.25  # the mean sits between the modes
        elif name == "act":
            # z = 0 at test time: one action per state (collapse or average, which side varies with the numerics),
            # so it cannot put half its samples on each mode as the other classes must
            assert float(lateral.std(1).max()) == 0.0
            assert not (0.4 < near_left < 0.6 and 0.4 < near_right < 0.6), (near_left, near_right)
        else:
            assert 0.4 < near_left < 0.6 and 0.4 < near_right < 0.6, (near_left, near_right)
            assert between < 0.05


def test_held_latent_survives_switching_between_predict_and_act():
    """predict runs in inference mode; the latent it holds must stay usable (and held) in normal mode."""
    torch.manual_seed(0)
    policy = make_policy("lvm", 3, 2, LatentConfig(hold_latent=True, **STEP)).eval()
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    first, _ = policy.predict(obs, episode_start=np.ones(4, dtype=bool), deterministic=True)
    with torch.no_grad():
        policy.reset(torch.zeros(4, dtype=torch.bool))  # no episode ends: the held latents stay
        again = policy.act(torch.from_numpy(obs), deterministic=True).numpy()
    np.testing.assert_allclose(again, first, atol=1e-6)
    second, _ = policy.predict(obs, episode_start=np.zeros(4, dtype=bool), deterministic=True)
    np.testing.assert_allclose(second, first, atol=1e-6)


# ------------------------------------------------------------------------------------------------------
# flow, diffusion, bet
# ------------------------------------------------------------------------------------------------------
def _train(p, obs, act, steps, lr=3e-3):
    p.fit_normalizer(obs, act)
    opt = torch.optim.Adam(p.parameters(), lr=lr)
    for step in range(steps):
        idx = torch.randint(len(obs), (256,))
        p.on_train_step(step)
        loss, _ = p.loss(obs[idx], act[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return p.eval()


@pytest.mark.parametrize("act_dim", [1, 2])
def test_flow_density_integrates_to_one(act_dim):
    """The change-of-variables density of a trained (bimodal) flow, summed over a grid, is about 1."""
    from lvm_policy.policies.flow import FlowConfig

    torch.manual_seed(0)
    obs, act = _toy(2048)
    p = _train(make_policy("flow", 3, act_dim, FlowConfig(hidden_dim=64, num_layers=2)), obs, act[:, :act_dim], 300)
    s = torch.zeros(1, 3)
    n = 400 if act_dim == 1 else 60
    lo, hi = p.act_mean - 6 * p.act_std, p.act_mean + 6 * p.act_std  # the density's support, raw units
    axes = [torch.linspace(float(lo[j]), float(hi[j]), n) for j in range(act_dim)]
    grid = torch.cartesian_prod(*axes).reshape(-1, act_dim)
    cell = math.prod(float(a[1] - a[0]) for a in axes)
    with torch.no_grad():
        dens = torch.cat([p.log_prob(s.expand(len(c), -1), c).exp() for c in grid.split(4096)])
    assert abs(float(dens.sum()) * cell - 1.0) < 0.05


def _ddpm_reference(p, obs_n, n):
    """Textbook DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), written independently of the class."""
    abar = p.alpha_bar
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    x = torch.randn(n, p.act_dim)
    for k in range(p.config.train_steps, 0, -1):
        e = p.eps(obs_n.expand(n, -1), x, torch.full((n,), k))
        mean = (x - (1 - alphas[k - 1]) / (1 - abar[k - 1]).sqrt() * e) / alphas[k - 1].sqrt()
        if k > 1:
            var = (1 - abar[k - 2]) / (1 - abar[k - 1]) * (1 - alphas[k - 1])
            x = mean + var.sqrt() * torch.randn_like(x)
        else:
            x = mean
    return p.denormalize_act(x)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
def test_ddim_with_every_step_matches_ddpm(prediction):
    """DDIM over all 100 steps (eta 1: ancestral, eta 0: deterministic) samples what textbook DDPM samples, for
    a network that predicts the noise and for one that predicts the clean action (converted to noise)."""
    from lvm_policy.policies.diffusion import DiffusionConfig

    torch.manual_seed(0)
    obs, act = _toy()
    config = DiffusionConfig(hidden_dim=64, num_layers=2, prediction=prediction)
    p = _train(make_policy("diffusion", 3, 2, config), obs, act, 600)
    s = p.normalize_obs(torch.zeros(1, 3))
    n = 4000
    with torch.no_grad():
        ddpm = _ddpm_reference(p, s, n)[:, 0]
        ancestral = p.denormalize_act(p.denoise(s.expand(n, -1), torch.randn(n, 2), 100, eta=1.0))[:, 0]
        ddim = p.denormalize_act(p.denoise(s.expand(n, -1), torch.randn(n, 2), 100, eta=0.0))[:, 0]
    for x in (ancestral, ddim):
        # same share per mode (sampling noise of 4,000 draws: +-0.016) and the same spread around each mode
        for side in (-0.6, 0.6):
            assert (
                abs(float(((x - side).abs() < 0.2).float().mean()) - float(((ddpm - side).abs() < 0.2).float().mean()))
                < 0.05
            )
        assert abs(float(x.abs().mean()) - float(ddpm.abs().mean())) < 0.05


def test_kmeans_is_reproducible_and_finds_the_clusters():
    from lvm_policy.nets import kmeans

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    x = torch.cat([torch.randn(500, 2, generator=g) * 0.05 + c for c in centres])
    a, b, c = kmeans(x, 3, seed=1), kmeans(x, 3, seed=1), kmeans(x, 3, seed=2)
    assert torch.equal(a, b)
    found = sorted(a.tolist())
    assert all(
        abs(f[0] - t[0]) < 0.05 and abs(f[1] - t[1]) < 0.05 for f, t in zip(found, sorted([[-1, 0], [0, 2], [1, 0]]))
    )
    torch.testing.assert_close(torch.tensor(sorted(c.tolist())), torch.tensor(found), atol=1e-4, rtol=0)  # other seed


def test_bet_bins_are_fitted_on_the_data_and_saved(tmp_path):
    from lvm_policy.evaluate import heldout_nll

    torch.manual_seed(0)
    obs, act = _toy(1024)
    p = make_policy("bet", 3, 2)
    p.fit_normalizer(obs, act)
    assert float(p.centres.abs().sum()) > 0
    p.save(tmp_path / "bet")
    q = load_policy(tmp_path / "bet")
    assert torch.equal(q.centres, p.centres)
    assert math.isnan(heldout_nll(q, obs, act))  # no density: NaN, not a number that looks like one


# ------------------------------------------------------------------------------------------------------
# the episode-scope latent
# ------------------------------------------------------------------------------------------------------
def _episode_lvm(**kw):
    torch.manual_seed(0)
    p = make_policy("lvm", 3, 2, LatentConfig(hidden_dim=32, **EPISODE, **kw))
    obs, act = torch.randn(5, 7, 3), torch.rand(5, 7, 2) * 2 - 1
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[1, 4:] = False  # a shorter episode
    p.fit_normalizer(obs.reshape(-1, 3), act.reshape(-1, 2))
    return p, obs, act, mask


def test_sequence_elbo_is_the_sum_of_per_step_terms_for_a_fixed_z():
    p, obs, act, mask = _episode_lvm()
    obs_n = p.normalize_obs(obs)
    z = torch.randn(5, 2)
    with torch.no_grad():
        log_lik, kl, _, _ = p.sequence_elbo_terms(obs_n, act, mask, z)
        for b in range(5):
            steps = int(mask[b].sum())
            mean, log_std = p.decode(obs_n[b, :steps], z[b].expand(steps, 2))
            per_step = diag_gaussian_log_prob_of(p.normalize_act(act[b, :steps]), mean, log_std)
            assert abs(float(log_lik[b]) - float(per_step.sum())) < 1e-4
            # the KL term is log q(z|tau) - log p(z|s_0) at that z (mixture prior), with the prior at the first state
            mu_q, lv_q = p.segment_posterior(obs_n[b : b + 1], p.normalize_act(act[b : b + 1]), mask[b : b + 1])
            log_q = diag_gaussian_log_prob_of(z[b : b + 1], mu_q, 0.5 * lv_q)
            log_prior = p.prior_log_prob(z[b : b + 1, None], p.prior_params(obs_n[b : b + 1, 0]))[:, 0]
            assert abs(float(kl[b]) - float(log_q - log_prior)) < 1e-4


def diag_gaussian_log_prob_of(x, mean, log_std):
    from lvm_policy.nets import diag_gaussian_log_prob

    return diag_gaussian_log_prob(x, mean, log_std)


def test_segment_iwae_at_least_the_elbo_and_grows_with_k():
    p, obs, act, mask = _episode_lvm()
    obs_n = p.normalize_obs(obs)
    with torch.no_grad():
        elbo = (
            torch.stack([(lambda t: t[0] - t[1])(p.sequence_elbo_terms(obs_n, act, mask)) for _ in range(4000)]).mean(0)
            + mask.sum(1) * p.act_log_jacobian()
        )
        bounds = [
            torch.stack([p.segment_iwae(obs_n, act, mask, k) for _ in range(400 // k + 20)]).mean(0) for k in (1, 8, 64)
        ]
    torch.testing.assert_close(bounds[0], elbo, atol=0.05 * float(elbo.abs().max()) + 0.05, rtol=0)  # K = 1: ELBO
    for a, b in zip(bounds, bounds[1:]):
        assert bool((b >= a - 0.05).all())
    assert bool((bounds[-1] >= elbo - 0.05).all())


def test_episode_latent_changes_only_at_episode_starts():
    from envs import TreeAvoidVectorEnv

    policy = make_policy("lvm", 3, 2, LatentConfig(**EPISODE)).eval()
    # in a batched rollout (the evaluator's order: act, step, reset the finished environments)
    env = TreeAvoidVectorEnv(num_envs=64)
    obs, _ = env.reset(seed=0)
    ended = torch.zeros(64, dtype=torch.bool)
    redraws = 0
    with torch.no_grad():
        policy.act(obs)
        for _ in range(250):
            before = policy._held_z.clone()
            obs, _, _, _, info = env.step(policy.act(obs))
            changed = (policy._held_z != before).any(1)
            assert torch.equal(changed, ended), "z changed outside an episode start, or was not redrawn at one"
            redraws += int(changed.sum())
            ended = info["done"]
            policy.reset(ended)
    assert redraws > 64  # several episodes per environment were started
    # in predict: a held latent persists without episode_start, and is redrawn for the starting envs only
    o = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    torch.manual_seed(1)
    a0, _ = policy.predict(o, episode_start=np.ones(4, dtype=bool), deterministic=True)
    z0 = policy._held_z.clone()
    a1, _ = policy.predict(o, episode_start=np.zeros(4, dtype=bool), deterministic=True)
    np.testing.assert_allclose(a1, a0, atol=1e-6)
    policy.predict(o, episode_start=np.array([True, False, False, True]), deterministic=True)
    z2 = policy._held_z
    assert torch.equal(z2[1:3], z0[1:3]) and not torch.equal(z2[[0, 3]], z0[[0, 3]])


def test_lvm_beta_defaults_by_scope_and_an_explicit_beta_wins():
    for scope, beta in (("step", 1.0), ("chunk", 1.0), ("episode", 0.2), ("hierarchical", 1.0)):
        p = make_policy("lvm", 3, 2, LatentConfig(latent_scope=scope, beta_warmup_steps=10))
        p.on_train_step(5)
        assert p.beta_now == pytest.approx(beta / 2)
        p.on_train_step(50)
        assert p.beta_now == pytest.approx(beta) and p.config.effective().beta == pytest.approx(beta)
    p = make_policy("lvm", 3, 2, LatentConfig(latent_scope="episode", beta=0.7, beta_warmup_steps=0))
    assert p.beta_now == pytest.approx(0.7)


def test_lvm_prior_scale_zero_draws_component_means():
    torch.manual_seed(0)
    p = make_policy("lvm", 3, 2, LatentConfig(prior_scale=0.0, **STEP)).eval()
    obs_n = torch.randn(5, 3)
    with torch.no_grad():
        z = p._prior_sample(obs_n, 50)  # (5, 50, dz)
        means = p.prior_params(obs_n)[1]  # (5, K, dz)
    distance = (z[:, :, None] - means[:, None]).norm(dim=-1).min(-1).values  # to the nearest component mean
    assert float(distance.max()) < 1e-6


def test_chunk_prior_learns_at_its_own_rate():
    """chunk_prior_lr_scale puts the chunk prior's parameters, and only them, in a group at that multiple of the
    rate; the cosine schedule scales both groups alike."""
    from lvm_policy.train import TrainConfig, make_optimizer

    policy = make_policy("lvm", 3, 2, LatentConfig(chunk_prior_lr_scale=3.0))
    opt, sched = make_optimizer(policy, TrainConfig(demos="unused", lr=1e-3, steps=10))
    rest, prior = opt.param_groups
    assert {id(p) for p in prior["params"]} == {id(p) for p in policy.prior.parameters()}
    assert len(rest["params"]) + len(prior["params"]) == len(list(policy.parameters()))
    assert (rest["lr"], prior["lr"]) == (1e-3, 3e-3)
    for _ in range(5):
        opt.step()
        sched.step()
    assert prior["lr"] == pytest.approx(3 * rest["lr"]) and rest["lr"] < 1e-3
    # the default lvm's codebook prior: 3 times the rate after 2,000 steps at the base rate; the step scope: one rate
    default = make_optimizer(make_policy("lvm", 3, 2), TrainConfig(demos="unused", lr=1e-3))[0].param_groups
    assert len(default) == 2 and default[1]["delay"] == 2000
    assert default[1]["initial_lr"] == pytest.approx(3e-3) and default[1]["lr"] == pytest.approx(1e-3)
    step_scope = make_policy("lvm", 3, 2, LatentConfig(**STEP))
    assert len(make_optimizer(step_scope, TrainConfig(demos="unused"))[0].param_groups) == 1
    with pytest.raises(ValueError, match="chunk_prior_lr_scale"):
        LatentConfig(chunk_prior_lr_scale=0.0).validate()
    both = make_policy("lvm", 3, 2, LatentConfig(chunk_prior_lr_scale=3.0, decoder_lr_scale=2.0))
    rest, prior, decoder = make_optimizer(both, TrainConfig(demos="unused", lr=1e-3, steps=10))[0].param_groups
    assert {id(p) for p in decoder["params"]} == {id(p) for p in both.decoder.parameters()}
    assert (rest["lr"], prior["lr"], decoder["lr"]) == (1e-3, 3e-3, 2e-3)
    assert len(rest["params"]) + len(prior["params"]) + len(decoder["params"]) == len(list(both.parameters()))
    with pytest.raises(ValueError, match="decoder_lr_scale"):
        LatentConfig(decoder_lr_scale=float("inf")).validate()


def test_chunk_prior_learns_at_the_base_rate_until_its_delay():
    """chunk_prior_lr_delay: the chunk prior's group follows the base rate's cosine schedule until that step, then its
    own multiple of it; the other groups are untouched."""
    from lvm_policy.train import TrainConfig, make_optimizer

    policy = make_policy("lvm", 3, 2, LatentConfig(chunk_prior_lr_scale=3.0, chunk_prior_lr_delay=4))
    opt, sched = make_optimizer(policy, TrainConfig(demos="unused", lr=1e-3, steps=10))
    rest, prior = opt.param_groups
    assert prior["lr"] == pytest.approx(1e-3)
    for step in range(1, 7):
        opt.step()
        sched.step()
        assert prior["lr"] == pytest.approx(rest["lr"] * (1.0 if step < 4 else 3.0)), step
    with pytest.raises(ValueError, match="chunk_prior_lr_delay"):
        LatentConfig(chunk_prior_lr_delay=-1).validate()
