"""Observation history and action chunks: the windows, the masking, the action queue, temporal ensembling, and
the parity of the batched rollout with single-env ``predict`` calls."""

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs import TreeAvoidVectorEnv
from lvm_policy import list_policies, load_policy, make_policy
from lvm_policy.policies.base import PolicyConfig
from lvm_policy.policies.latent import LatentConfig
from lvm_policy.temporal import Windows, window_index

CHUNKED = dict(obs_horizon=2, action_horizon=4, action_steps=2)


def config_of(name: str, **options) -> PolicyConfig:
    """A class's config with options changed; the lvm in its chunk scope (one z per prediction, no episodes)."""
    from lvm_policy.policies import CONFIG_CLASSES

    if name == "lvm":
        options = {"latent_scope": "chunk", **options}
    return CONFIG_CLASSES[name](**options)


def test_windows_repeat_the_first_observation_and_mask_past_the_end():
    episode = torch.tensor([0, 0, 0, 1, 1])
    obs_index, act_index, act_mask = window_index(episode, obs_horizon=2, action_horizon=3)
    assert obs_index.tolist() == [[0, 0], [0, 1], [1, 2], [3, 3], [3, 4]]
    assert act_index.tolist() == [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4]]
    assert act_mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0]]
    w = Windows(episode, 2, 3)
    obs, act = torch.arange(5.0)[:, None], 10 + torch.arange(5.0)[:, None]
    o, a, m = w.gather(obs, act, torch.tensor([1, 4]))
    assert o[..., 0].tolist() == [[0, 1], [3, 4]] and a[..., 0].tolist() == [[11, 12, 12], [14, 14, 14]]
    assert m.tolist() == [[1, 1, 0], [1, 0, 0]]
    o, a, m = w.gather_episodes(obs, act, torch.tensor([1]))  # episode 1 padded to the longest (3 steps)
    assert m.tolist() == [[[1, 1, 0], [1, 0, 0], [0, 0, 0]]] and o[0, :2, :, 0].tolist() == [[3, 3], [3, 4]]
    # with 1/1 a window is the step itself: no padding, no mask
    o, a, m = Windows(episode, 1, 1).gather(obs, act, torch.arange(5))
    assert torch.equal(o[:, 0], obs) and torch.equal(a[:, 0], act) and m is None


@pytest.mark.parametrize("name", ["gaussian", "gmm", "autoregressive", "lvm"])
def test_factorised_classes_leave_padded_actions_out_of_the_loss(name):
    torch.manual_seed(0)
    p = make_policy(name, 3, 2, config_of(name, **CHUNKED))
    obs, act = torch.randn(16, 2, 3), torch.rand(16, 4, 2) * 2 - 1
    p.fit_normalizer(obs.reshape(-1, 3), act.reshape(-1, 2), act)
    mask = torch.ones(16, 4, dtype=torch.bool)
    mask[:8, 2:] = False
    other = act.clone()
    other[:8, 2:] = torch.rand(8, 2, 2) * 2 - 1  # change only what the mask leaves out
    torch.manual_seed(1)
    a, _ = p.loss(obs, act, mask)
    torch.manual_seed(1)
    b, _ = p.loss(obs, other, mask)
    torch.manual_seed(1)
    c, _ = p.loss(obs, other)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_masked_mixture_density_is_the_marginal():
    """gmm over a 2-action chunk (A = 1): the masked density of a_t equals the integral of the chunk density."""
    torch.manual_seed(0)
    p = make_policy("gmm", 2, 1, config_of("gmm", action_horizon=2, action_steps=1, num_components=3)).double()
    obs_n = torch.randn(1, 2, dtype=torch.float64)
    a0 = torch.tensor([[0.3]], dtype=torch.float64)
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)[:, None]  # a_{t+1}, normalised units
    joint = p._log_prob_n(obs_n.expand(len(grid), -1), torch.cat([a0.expand(len(grid), -1), grid], 1))
    marginal = torch.logsumexp(joint, 0) + math.log(float(grid[1] - grid[0]))
    masked = p._log_prob_n(obs_n, torch.tensor([[0.3, 5.0]]).double(), torch.tensor([[1.0, 0.0]]).double())
    torch.testing.assert_close(masked[0], marginal, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", list_policies())
def test_1_1_1_through_the_chunk_machinery_equals_the_per_step_policy(name):
    torch.manual_seed(0)
    p = make_policy(name, 3, 2, config_of(name, action_horizon=1, action_steps=1)).eval()
    p.fit_normalizer(torch.randn(100, 3), torch.rand(100, 2) * 2 - 1)
    obs = [torch.randn(8, 3) for _ in range(4)]
    with torch.no_grad():
        torch.manual_seed(3)
        per_step = [p.act(o) for o in obs]
        p.reset()
        torch.manual_seed(3)
        machinery = [torch.clamp(p._act_temporal(p.normalize_obs(o), False), p.act_low, p.act_high) for o in obs]
    for a, b in zip(per_step, machinery):
        assert torch.equal(a, b)


def deterministic_chunked(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    p = make_policy("gaussian", 3, 2, config_of("gaussian", **options)).eval()
    p.fit_normalizer(torch.randn(100, 3), torch.rand(100, 2) * 2 - 1)
    return p


@pytest.mark.parametrize("set_at_evaluation", [False, True])
def test_queue_plays_ta_actions_then_replans_and_restarts_on_reset(set_at_evaluation):
    To, H, Ta = 2, 4, 3
    p = deterministic_chunked(obs_horizon=To, action_horizon=H, action_steps=1 if set_at_evaluation else Ta)
    if set_at_evaluation:  # evaluate.py --action-steps: the same weights, another Ta
        with pytest.raises(ValueError, match="action_steps"):
            p.set_action_steps(H + 1)
        p.set_action_steps(Ta)
    N, T = 3, 10
    obs = torch.randn(T, N, 3)
    resets = torch.zeros(T, N, dtype=torch.bool)
    resets[4, 1] = True  # env 1 starts an episode at step 4, in the middle of its chunk
    with torch.no_grad():
        got = []
        for t in range(T):
            p.reset(resets[t]) if t else p.reset()
            got.append(p.act(obs[t], deterministic=True))
        # the reference: per environment, a window of the episode's last To observations, a plan every Ta steps
        for i in range(N):
            start, plan_at = 0, None
            for t in range(T):
                if resets[t, i]:
                    start, plan_at = t, None
                if plan_at is None or t - plan_at >= Ta:
                    plan_at = t
                    steps = [max(start, t - To + 1 + k) for k in range(To)]
                    window = obs[steps, i].reshape(1, -1)
                    chunk = torch.clamp(p._mode(p.normalize_obs(window)), p.chunk_low, p.chunk_high).reshape(H, 2)
                torch.testing.assert_close(got[t][i], chunk[t - plan_at])


def test_temporal_ensemble_averages_the_chunks_for_the_step():
    H, m = 3, 0.5
    p = deterministic_chunked(action_horizon=H, action_steps=1, temporal_ensemble=m)
    obs = torch.randn(6, 2, 3)
    with torch.no_grad():
        p.reset()
        got = [p.act(obs[t], deterministic=True) for t in range(6)]
        chunks = [p._mode(p.normalize_obs(obs[t])).reshape(2, H, 2) for t in range(6)]
    for t in range(6):
        # predictions for step t from the chunks made at t - age, oldest first: weights exp(-m i)
        ages = [age for age in range(H) if t - age >= 0][::-1]
        w = torch.tensor([math.exp(-m * i) for i in range(len(ages))])
        expected = sum(w[i] * chunks[t - age][:, age] for i, age in enumerate(ages)) / w.sum()
        torch.testing.assert_close(got[t], torch.clamp(expected, -1, 1))


@pytest.mark.parametrize("options", [CHUNKED, dict(action_horizon=3, action_steps=1, temporal_ensemble=0.01)])
@pytest.mark.parametrize("replan", ["subset", "all"])
def test_batched_rollout_equals_single_env_predict_through_autoresets(options, replan):
    """The twin's batch of N environments and N single envs driven by predict(episode_start=) get the same
    actions step by step, across episode ends (the twin resets them in the same step)."""
    p = deterministic_chunked(**options)
    p.replan = replan
    N, seed = 4, 7
    venv = TreeAvoidVectorEnv(num_envs=N)
    singles = [gym.make("TreeAvoid-v0").unwrapped for _ in range(N)]
    policies = [copy.deepcopy(p) for _ in range(N)]
    vobs, _ = venv.reset(seed=seed)
    obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(singles)]
    start = [True] * N
    p.reset()
    ended = 0
    for _ in range(120):
        with torch.no_grad():
            batched = p.act(vobs, deterministic=True)
        for i in range(N):
            a, _ = policies[i].predict(obs[i], episode_start=np.array([start[i]]), deterministic=True)
            np.testing.assert_allclose(a, batched[i].numpy(), atol=1e-5)
        vobs, _, vterm, vtrunc, _ = venv.step(batched)
        p.reset(vterm | vtrunc)
        for i, env in enumerate(singles):
            o, _, te, tr, _ = env.step(batched[i].numpy())
            start[i] = te or tr
            if start[i]:
                ended += 1
                o, _ = env.reset()
            obs[i] = o
            np.testing.assert_allclose(vobs[i].numpy(), o, atol=1e-5)
    assert ended >= N  # auto-resets happened in the middle of queues


@pytest.mark.parametrize("name", list_policies())
def test_chunked_save_load_round_trip(name, tmp_path):
    torch.manual_seed(0)
    p = make_policy(name, 3, 2, config_of(name, **CHUNKED))
    act = torch.rand(100, 4, 2) * 2 - 1
    p.fit_normalizer(torch.randn(100, 3), act[:, 0], act)
    p.save(tmp_path / name)
    q = load_policy(tmp_path / name)
    assert q.config == p.config and q.in_dim == 6 and q.chunk_dim == 8
    p.eval(), q.eval()
    obs = [torch.randn(5, 3) for _ in range(5)]
    torch.manual_seed(2)
    a = [p.act(o) for o in obs]
    torch.manual_seed(2)
    b = [q.act(o) for o in obs]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_bad_temporal_options_are_refused():
    for options in (
        dict(action_horizon=2, action_steps=3),
        dict(obs_horizon=0),
        dict(action_horizon=4, action_steps=2, temporal_ensemble=0.01),
    ):
        with pytest.raises(ValueError):
            make_policy("gmm", 3, 2, config_of("gmm", **options))


# ------------------------------------------------------------------------------------ the two-level lvm
def hierarchical(**options):
    torch.manual_seed(0)
    options = {"chunk_latent": "gaussian", "episode_latent": "gaussian", **options}  # continuous unless asked
    cfg = LatentConfig(latent_scope="hierarchical", **CHUNKED, **options)
    p = make_policy("lvm", 3, 2, cfg)
    obs, act = torch.randn(4, 6, 2, 3), torch.rand(4, 6, 4, 2) * 2 - 1
    p.fit_normalizer(obs.reshape(-1, 3), act.reshape(-1, 2), act.reshape(-1, 4, 2))
    mask = torch.ones(4, 6, 4, dtype=torch.bool)
    mask[0, 4:] = False  # a shorter episode
    mask[0, 3, 1:] = False
    return p, obs.flatten(2), act.flatten(2), mask


def test_two_level_elbo_is_the_sum_of_its_terms_for_fixed_latents():
    from lvm_policy.nets import diag_gaussian_log_prob

    p, obs, act, mask = hierarchical()
    z_e, z_c = torch.randn(4, 2), torch.randn(4, 6, 2)
    with torch.no_grad():
        elbo = p.hierarchical_elbo(obs, act, mask, z_e, z_c)
        obs_n, act_n = p.normalize_obs(obs), p.normalize_act(act)
        step = mask[..., 0]
        mu_e, lv_e = p.segment_posterior(obs_n, act_n, step, "episode_encoder", p.dim_mask(mask))
        log_q_e = diag_gaussian_log_prob(z_e, mu_e, 0.5 * lv_e)
        log_p_e = p.prior_log_prob(z_e[:, None], p.prior_params(obs_n[:, 0], p.episode_prior))[:, 0]
        expected = log_p_e - log_q_e
        for b in range(4):
            for t in range(6):
                if not step[b, t]:
                    continue
                cond = torch.cat([obs_n[b, t], z_e[b]])[None]
                keep = mask[b, t].float().repeat_interleave(2)  # the chunk's actions inside the episode
                mu_c, lv_c = p.posterior(cond, act_n[b, t][None] * keep)
                zc = z_c[b, t][None]
                mean, log_std = p.decode(cond, zc)
                log_pi = diag_gaussian_log_prob(act_n[b, t], mean[0], log_std[0], keep)
                log_p_c = p.prior_log_prob(zc[:, None], p.prior_params(cond))[0, 0]
                log_q_c = diag_gaussian_log_prob(zc, mu_c, 0.5 * lv_c)[0]
                jacobian = -torch.log(p.act_std).sum() * mask[b, t].sum()
                expected[b] += log_pi + log_p_c - log_q_c + jacobian
    torch.testing.assert_close(elbo, expected, atol=1e-3, rtol=1e-5)


def test_two_level_iwae_bound_is_above_the_elbo():
    p, obs, act, mask = hierarchical()
    torch.manual_seed(5)
    with torch.no_grad():
        elbo = torch.stack([p.hierarchical_elbo(obs, act, mask) for _ in range(64)]).mean(0)
        iwae = p.segment_iwae(p.normalize_obs(obs), act, mask, 64)
    assert bool((iwae >= elbo).all()), (iwae, elbo)


def test_codebook_level_elbo_is_the_nearest_code_term_and_below_the_exact_marginal():
    from lvm_policy.nets import diag_gaussian_log_prob

    p, obs, act, mask = hierarchical(chunk_latent="codebook", codebook_size=5)
    assert bool(p.codebook.abs().sum() > 0)  # the k-means centres of the training chunks
    z_e = torch.randn(4, 2)
    with torch.no_grad():
        obs_n, act_n = p.normalize_obs(obs), p.normalize_act(act)
        log_lik, kl_c, *_ = p.hierarchical_elbo_terms(obs_n, act, mask, z_e)
        step, keep = mask[..., 0], p.dim_mask(mask)
        lik, kl, exact = torch.zeros(4), torch.zeros(4), torch.zeros(4)
        for b in range(4):
            for t in range(6):
                if not step[b, t]:
                    continue
                cond = torch.cat([obs_n[b, t], z_e[b]])[None]
                log_w, mean, log_std = p.code_decode(cond)
                k = int(((act_n[b, t] - p.codebook) ** 2).sum(-1).argmin())  # the nearest centre
                lik[b] += diag_gaussian_log_prob(act_n[b, t], mean[0, k], log_std[0, k], keep[b, t])
                kl[b] -= log_w[0, k]
                exact[b] += p.codebook_log_lik(cond, act_n[b, t][None], keep[b, t][None])[0]
    torch.testing.assert_close(log_lik, lik, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(kl_c, kl, atol=1e-4, rtol=1e-5)
    # one code's joint density is below the sum over codes (up to float32 rounding of sums near 1e3)
    assert bool((exact >= lik - kl - 1e-4 - 1e-6 * exact.abs()).all())


def test_codebook_level_iwae_is_above_the_elbo_and_acting_plays_a_code():
    p, obs, act, mask = hierarchical(chunk_latent="codebook", codebook_size=5)
    torch.manual_seed(5)
    with torch.no_grad():
        elbo = torch.stack([p.hierarchical_elbo(obs, act, mask) for _ in range(64)]).mean(0)
        iwae = p.segment_iwae(p.normalize_obs(obs), act, mask, 64)
        assert bool((iwae >= elbo).all()), (iwae, elbo)
        p.eval()
        p.reset(None)
        chunk = p.sample(obs[:, 0], 3)  # (B, n, H * A)
        first = p.act(obs[:, 0, -3:], deterministic=True)  # (B, A): the first action of a code's mean chunk
    assert chunk.shape == (4, 3, 8) and bool(torch.isfinite(chunk).all()) and first.shape == (4, 2)
    with pytest.raises(ValueError, match="codebook"):
        LatentConfig(latent_scope="chunk", chunk_latent="codebook").validate()


def test_code_params_are_the_full_decoders_rows_for_the_code():
    p, obs, *_ = hierarchical(chunk_latent="codebook", codebook_size=5)
    cond = torch.cat([p.normalize_obs(obs[:, 0]), torch.randn(4, 2)], -1)
    k = torch.tensor([0, 4, 2, 4])
    _, mean, log_std = p.code_decode(cond)  # every code's (B, K, D)
    picked = (mean[torch.arange(4), k], log_std[torch.arange(4), k])
    with torch.no_grad():  # acting: a weight block gathered per row
        gathered = p.code_params(cond, k)
    by_code = p.code_params(cond, k)  # training: the rows grouped by code
    for got in (gathered, by_code):
        torch.testing.assert_close(got[0], picked[0].detach())
        torch.testing.assert_close(got[1], picked[1].detach())
    # the gradients of the grouped form equal the full decoder's, and S conditions may share a row's code
    weights = [q for q in p.decoder.parameters()]
    loss = lambda m, s: (m.square() + s).sum()  # noqa: E731
    expected = torch.autograd.grad(loss(*picked), weights)
    for got, want in zip(torch.autograd.grad(loss(*by_code), weights), expected):
        torch.testing.assert_close(got, want)
    shared = torch.stack([cond, cond.flip(0)], 1)  # (4, 2, C)
    mean_s, _ = p.code_params(shared, k)
    torch.testing.assert_close(mean_s[:, 0], by_code[0])
    _, flipped, _ = p.code_decode(cond.flip(0))
    torch.testing.assert_close(mean_s[:, 1], flipped[torch.arange(4), k].detach())


def test_episode_free_nats_floor_the_minibatch_mean_of_the_episode_kl():
    losses, logs = {}, {}
    for free in (0.0, 50.0):
        p, obs, act, mask = hierarchical(chunk_latent="codebook", codebook_size=5, episode_free_nats=free)
        p.on_train_step(1000)  # both weights warmed up: episode weight 4
        torch.manual_seed(3)  # the same z_e draws
        losses[free], logs[free] = p._hierarchical_loss(p.normalize_obs(obs), act, mask)
    kl_mean, actions = logs[0.0]["kl_episode"].detach(), p._actions(mask)
    assert float(kl_mean) < 50.0
    expected = losses[0.0] + 4.0 * 4 * (50.0 - kl_mean) / actions  # 4 episodes' KL replaced by the floor
    torch.testing.assert_close(losses[50.0], expected)
    with pytest.raises(ValueError, match="episode_free_nats"):
        LatentConfig(latent_scope="hierarchical", episode_free_nats=-1.0).validate()


def test_categorical_episode_latent_elbo_is_the_exact_marginal_over_its_codes():
    p, obs, act, mask = hierarchical(chunk_latent="codebook", codebook_size=5, episode_latent="categorical")
    K = p.config.episode_codes
    code = torch.tensor([0, 3, 1, 3])
    with torch.no_grad():
        obs_n, act_n = p.normalize_obs(obs), p.normalize_act(act)
        step, keep = mask[..., 0], p.dim_mask(mask)
        log_p = torch.log_softmax(p.episode_prior(obs_n[:, 0]), -1)  # (B, K)
        bound = log_p.clone()  # log p(k | s_0) + sum_t [log pi(chunk_t | w_t, k*, k) + log p(k* | w_t, k)]
        exact = log_p.clone()  # log p(k | s_0) + sum_t log pi(chunk_t | w_t, k), the chunk codes summed over
        for b in range(4):
            for t in range(6):
                if not step[b, t]:
                    continue
                conds = torch.cat([obs_n[b, t].expand(K, -1), torch.eye(K)], -1)  # (K, O + K): every code
                acts, keeps = act_n[b, t].expand(K, -1), keep[b, t].expand(K, -1)
                lik, log_p_code = p.codebook_terms(conds, acts, keeps)
                bound[b] += lik + log_p_code
                exact[b] += p.codebook_log_lik(conds, acts, keeps)
        jacobian = p._segment_jacobian(mask)
        marginal_bound = torch.logsumexp(bound, 1) + jacobian  # z_e summed over exactly
        elbo = p.hierarchical_elbo(obs, act, mask)  # the exact posterior over the codes: no draw
        fixed = p.hierarchical_elbo(obs, act, mask, torch.nn.functional.one_hot(code, K).float())
        iwae = p.segment_iwae(obs_n, act, mask, 64)  # both levels summed over their codes: the exact likelihood
    torch.testing.assert_close(elbo, marginal_bound, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(fixed, marginal_bound, atol=1e-3, rtol=1e-5)  # log p - log q + L_k: any code
    torch.testing.assert_close(iwae, torch.logsumexp(exact, 1) + jacobian, atol=1e-3, rtol=1e-5)
    # where a code's posterior is one-hot the two are equal: allow float32 rounding at their magnitude (~2,000 nats)
    assert bool((iwae >= elbo - 1e-4 - 1e-6 * elbo.abs()).all())


def test_categorical_episode_latent_loss_is_the_tempered_marginal_and_acting_holds_a_code(tmp_path):
    p, obs, act, mask = hierarchical(chunk_latent="codebook", codebook_size=5, episode_latent="categorical")
    assert not hasattr(p, "episode_encoder")  # the posterior is computed, not encoded
    p.on_train_step(1000)  # beta 1, episode weight 4
    obs_n = p.normalize_obs(obs)
    torch.manual_seed(0)
    loss, logs = p._hierarchical_loss(obs_n, act, mask)
    K, B = p.config.episode_codes, 4
    with torch.no_grad():
        per_code = []  # L_k = sum_t [log pi - KL_c] at code k, on the same random steps of each episode
        for j in range(K):
            torch.manual_seed(0)
            lik, kl_c, *_ = p.hierarchical_elbo_terms(obs_n, act, mask, torch.eye(K)[j].expand(B, K), steps=16)
            per_code.append(lik - kl_c)
        log_p = torch.log_softmax(p.episode_prior(obs_n[:, 0]), -1)
        tempered = 4.0 * torch.logsumexp(log_p + torch.stack(per_code, 1) / 4.0, 1)  # max_q E_q L - 4 KL(q || p)
    torch.testing.assert_close(loss.detach(), -tempered.sum() / p._actions(mask), atol=1e-4, rtol=1e-5)
    loss.backward()
    assert float(p.episode_prior.layers[-1].weight.grad.abs().sum()) > 0  # the KL trains p(k | s_0)
    assert float(logs["kl_episode"].detach()) >= 0.0
    p.eval()
    p.reset(None)
    with torch.no_grad():
        p.act(obs[:, 0, -3:], deterministic=True)
        held = p._held_z.clone()
        p.act(obs[:, 1, -3:], deterministic=True)
    assert bool((held.sum(-1) == 1).all()) and torch.equal(held, p._held_z)  # one code, held for the episode
    p.save(tmp_path / "pol")
    q = load_policy(tmp_path / "pol")
    assert q.config.episode_latent == "categorical"
    torch.testing.assert_close(q.episode_prior.layers[0].weight, p.episode_prior.layers[0].weight)
    with pytest.raises(ValueError, match="episode_latent"):
        LatentConfig(latent_scope="episode", episode_latent="categorical").validate()
    with pytest.raises(ValueError, match="episode_codes"):
        LatentConfig(latent_scope="hierarchical", episode_latent="categorical", episode_codes=1).validate()


def test_episode_weight_rises_over_its_own_warm_up():
    p, *_ = hierarchical(episode_beta=4.0, episode_beta_warmup_steps=3000)
    assert p._episode_beta_now() == 4.0  # outside training: the final weight
    p.on_train_step(1500)
    assert p.beta_now == 1.0 and p._episode_beta_now() == pytest.approx(2.0)  # beta warmed up in 500 steps
    p.on_train_step(6000)
    assert p._episode_beta_now() == 4.0
    q, *_ = hierarchical(episode_beta=4.0)  # None: the episode weight follows beta's warm-up
    q.on_train_step(250)
    assert q._episode_beta_now() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="episode_beta_warmup_steps"):
        LatentConfig(latent_scope="hierarchical", episode_beta_warmup_steps=0).validate()


def test_random_steps_draw_real_steps_without_replacement():
    from lvm_policy.policies.latent import random_steps, take_steps

    step = torch.ones(3, 10, dtype=torch.bool)
    step[1, 4:] = False  # 4 real steps, fewer than k
    step[2, 7:] = False
    pick, valid = random_steps(step, 6)
    assert pick.shape == valid.shape == (3, 6)
    for b in range(3):
        assert len(set(pick[b].tolist())) == 6  # no step twice
        assert torch.equal(valid[b], step[b, pick[b]])
    assert int(valid[1].sum()) == 4 and bool(valid[0].all()) and bool(valid[2].all())
    x = torch.arange(3 * 10 * 2).reshape(3, 10, 2)
    assert torch.equal(take_steps(x, pick)[2, 1], x[2, pick[2, 1]])


def test_episode_steps_estimate_the_chunk_level_sums_without_bias():
    """Segments cut to random steps, scaled by the episodes' lengths: on average the full episodes' chunk terms."""
    from lvm_policy.policies.latent import random_steps, take_steps

    p, obs, act, mask = hierarchical()
    z_e, z_c = torch.randn(4, 2), torch.randn(4, 6, 2)
    obs_n, step = p.normalize_obs(obs), mask[..., 0]
    with torch.no_grad():
        full_lik, full_kl, *_ = p.hierarchical_elbo_terms(obs_n, act, mask, z_e, z_c)
        torch.manual_seed(1)
        draws = []
        for _ in range(1500):
            pick, _ = random_steps(step, 3)
            lik, kl, *_ = p.hierarchical_elbo_terms(
                take_steps(obs_n, pick),
                take_steps(act, pick),
                take_steps(mask, pick),
                z_e,
                take_steps(z_c, pick),
                steps=2,
                lengths=step.sum(1),
            )
            draws.append(torch.stack([lik, kl]))
    mean, sem = torch.stack(draws).mean(0), torch.stack(draws).std(0) / 1500**0.5
    assert bool(((mean - torch.stack([full_lik, full_kl])).abs() <= 4 * sem + 1e-4).all()), (mean, full_lik, full_kl)


@pytest.mark.parametrize("episode_latent", ["gaussian", "categorical"])
def test_with_episode_steps_the_episode_prior_still_reads_the_first_observation(episode_latent):
    """p(z_e | s_0) is conditioned on each episode's first observation, whichever steps are drawn (before the fix
    it read the first of the steps drawn, a random one)."""
    chunk = "codebook" if episode_latent == "categorical" else "gaussian"
    p, obs, act, mask = hierarchical(episode_latent=episode_latent, chunk_latent=chunk)
    seen = []
    hook = p.episode_prior.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    p.config.episode_steps = 2
    for seed in range(5):
        torch.manual_seed(seed)
        p.loss(obs, act, mask)
    hook.remove()
    first = p.normalize_obs(obs[:, 0])  # (B, O)
    assert len(seen) == 5 and all(torch.equal(x, first) for x in seen)


def test_a_categorical_episode_latent_draws_its_steps_before_encoding_with_the_same_numbers():
    """A categorical z_e is read by no encoder, so the loss draws the chunk level's segment_steps before any network
    reads the episode (a camera encoder then encodes those images only): the same random draw as drawing them after
    encoding every step, so on state observations the loss and every gradient are equal to the bit."""
    from lvm_policy.policies.base import Policy

    p, obs, act, mask = hierarchical(episode_latent="categorical", chunk_latent="codebook", segment_steps=3)
    read = []
    hook = p.prior.register_forward_hook(lambda m, i, o: read.append(tuple(i[0].shape[:-1])))

    def loss_and_grads(loss_fn):
        torch.manual_seed(7)
        p.zero_grad()
        loss, _ = loss_fn(obs, act, mask)
        loss.backward()
        return [loss.detach()] + [q.grad.clone() for q in p.parameters() if q.grad is not None]

    normalize, encoded = p.normalize_obs, []
    p.normalize_obs = lambda x: encoded.append(tuple(x.shape[:-1])) or normalize(x)  # what the encoder would read
    drawn_first = loss_and_grads(p.loss)
    encoded_all = loss_and_grads(lambda *batch: Policy.loss(p, *batch))  # every step encoded, then drawn
    hook.remove()
    assert encoded == [(4, 3), (4,), (4, 6)]  # drawn first: 3 steps and s_0 per episode; else all 6 steps
    assert len(drawn_first) == len(encoded_all) > 1
    assert all(torch.equal(a, b) for a, b in zip(drawn_first, encoded_all))
    assert read[0] == read[1] == (4 * 3, p.config.episode_codes)  # the chunk prior: B segment_steps x codes


def test_episode_steps_feed_the_networks_only_the_steps_drawn():
    """The option's point: the per-step networks (a camera encoder among them) read B x episode_steps steps, not
    every step; with episode_steps at least the episodes' length the loss is today's, number for number."""
    p, obs, act, mask = hierarchical()
    read = []
    hook = p.episode_encoder.register_forward_hook(lambda m, i, o: read.append(i[0].shape[:-1]))
    torch.manual_seed(3)
    p.loss(obs, act, mask)
    p.config.episode_steps = 2
    p.loss(obs, act, mask)
    hook.remove()
    assert read == [(4, 6), (4, 2)]
    p.config.episode_steps = None
    torch.manual_seed(4)
    everything = p.loss(obs, act, mask)[0]
    p.config.episode_steps = 6
    torch.manual_seed(4)
    assert torch.equal(p.loss(obs, act, mask)[0], everything)
    with pytest.raises(ValueError, match="episode_steps"):
        LatentConfig(latent_scope="hierarchical", episode_steps=0).validate()


@pytest.mark.parametrize("scope", ["chunk", "episode", "hierarchical"])
def test_lvm_scopes_act_with_chunks_and_hold_the_episode_latent(scope):
    torch.manual_seed(0)
    p = make_policy("lvm", 3, 2, LatentConfig(latent_scope=scope, **CHUNKED)).eval()
    p.fit_normalizer(torch.randn(100, 3), torch.rand(100, 2) * 2 - 1)
    with torch.no_grad():
        p.reset()
        for t in range(5):
            a = p.act(torch.randn(6, 3))
            if t == 0 and scope != "chunk":
                held = p._held_z.clone()
        assert a.shape == (6, 2)
        if scope != "chunk":  # the episode latent stays until reset(mask) redraws it
            assert torch.equal(p._held_z, held)
            p.reset(torch.tensor([True, False, False, False, False, False]))
            p.act(torch.randn(6, 3))
            assert not torch.equal(p._held_z[0], held[0]) and torch.equal(p._held_z[1:], held[1:])


def test_episode_latents_can_be_drawn_from_a_bank_of_posteriors():
    """The prior-hole probe: z_e comes from the given posteriors, the chunk latent still from its prior; None
    restores the learned prior; a scope without an episode latent refuses."""
    from lvm_policy.policies import make_policy
    from lvm_policy.policies.latent import LatentConfig

    torch.manual_seed(0)
    policy = make_policy("lvm", 3, 2, LatentConfig(latent_scope="hierarchical", chunk_latent="gaussian")).eval()
    dz = policy.config.latent_dim
    bank = (torch.full((4, dz), 5.0), torch.full((4, dz), -20.0))  # four codes at 5, std 4.5e-5
    obs_n = torch.randn(16, policy.in_dim)
    policy.draw_episode_latents_from(bank)
    z_e = policy._prior_sample(obs_n, 3, policy.episode_prior)
    assert z_e.shape == (16, 3, dz) and torch.allclose(z_e, torch.full_like(z_e, 5.0), atol=1e-3)
    cond = torch.cat([obs_n, z_e[:, 0]], -1)
    assert not torch.allclose(policy._prior_sample(cond, 1), torch.full((16, 1, dz), 5.0), atol=0.5)
    policy.draw_episode_latents_from(None)
    assert not torch.allclose(policy._prior_sample(obs_n, 3, policy.episode_prior), z_e, atol=0.5)
    step_scope = make_policy("lvm", 3, 2, LatentConfig(latent_scope="step", action_horizon=1, action_steps=1))
    with pytest.raises(ValueError, match="episode latent"):
        step_scope.draw_episode_latents_from(bank)


@pytest.mark.parametrize("scope", ["episode", "hierarchical"])
def test_refit_episode_prior_covers_two_narrow_clusters_of_codes(scope, monkeypatch):
    """The refit puts the prior's mass on the posteriors: two narrow, distant clusters of episode codes (3:1) that a
    freshly initialised prior misses get prior draws near them in their proportions, and the draws' likelihood
    under the prior rises; a prior without holes is kept; the refit is off with prior_refit=False."""
    from lvm_policy.policies import make_policy
    from lvm_policy.policies.latent import LatentConfig

    torch.manual_seed(0)
    options = dict(latent_scope=scope, action_horizon=1, action_steps=1)
    if scope == "hierarchical":
        options["episode_latent"] = "gaussian"  # the refit is of a Gaussian z_e's mixture prior
    policy = make_policy("lvm", 3, 2, LatentConfig(**options)).eval().requires_grad_(False)
    E, dz = 400, policy.config.latent_dim
    codes = torch.where(torch.arange(E)[:, None] < 300, torch.tensor([4.0, -3.0]), torch.tensor([-5.0, 2.0]))
    monkeypatch.setattr(policy, "episode_posteriors", lambda o, a, m: (codes[: o.shape[0]], torch.full((E, dz), -8.0)))
    episodes = [(torch.randn(E, 5, 1, 3), torch.randn(E, 5, 1, 2), torch.ones(E, 5, 1, dtype=torch.bool))]
    net = policy.episode_prior if scope == "hierarchical" else policy.prior

    def near_shares() -> torch.Tensor:  # shares of prior draws within 0.3 of each cluster
        z = policy._prior_sample(torch.randn(2000, policy.in_dim), 1, net if scope == "hierarchical" else "chunk")
        d = torch.cdist(z[:, 0], torch.tensor([[4.0, -3.0], [-5.0, 2.0]]))  # (2000, 2)
        return (d < 0.3).float().mean(0)

    assert near_shares().sum() < 0.2  # the untrained prior misses the codes
    fit = policy.refit(lambda: iter(episodes), seed=0)
    assert fit["prior_log_lik_refit"] > fit["prior_log_lik_before"] + 5 and fit["prior_refit_kept"] == 1.0
    assert all(not p.requires_grad for p in policy.parameters())  # the evaluated copy stays frozen
    assert fit["prior_holes_before"] > 0.9 and fit["prior_holes_refit"] < 0.2
    shares = near_shares()
    assert abs(float(shares[0]) - 0.75) < 0.06 and abs(float(shares[1]) - 0.25) < 0.06, shares
    refit_state = {k: v.clone() for k, v in net.state_dict().items()}
    again = policy.refit(lambda: iter(episodes), seed=1)  # a prior without holes is kept
    assert again["prior_refit_kept"] == 0
    assert all(torch.equal(v, refit_state[k]) for k, v in net.state_dict().items())
    off = make_policy("lvm", 3, 2, LatentConfig(prior_refit=False, **options))
    assert off.refit(lambda: iter(episodes)) == {}
    assert (
        make_policy("lvm", 3, 2, LatentConfig(latent_scope="step", action_horizon=1, action_steps=1)).refit(
            lambda: iter(episodes)
        )
        == {}
    )
