import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from envs import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT, TreeAvoidParams, TreeAvoidVectorEnv
from envs.experts import ExpertConfig, TreeAvoidExpert
from envs.tree_avoid import counter_uniform, reset_state


def test_registered_and_checkers_pass():
    env = gym.make("TreeAvoid-v0")
    gym_check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(gym.make("TreeAvoid-v0").unwrapped, warn=True)


def test_render_rgb_array():
    env = gym.make("TreeAvoid-v0", render_mode="rgb_array")
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.float32))
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) >= 4  # grass, road, tree, path at least


def test_mode_convention_metadata():
    env = gym.make("TreeAvoid-v0")
    assert env.unwrapped.metadata["mode_names"] == ["left", "right"]
    venv = gym.make_vec("TreeAvoid-v0", num_envs=2, vectorization_mode="vector_entry_point")
    assert venv.metadata["mode_names"] == ["left", "right"]


def test_vector_env_from_make_vec_is_torch():
    venv = gym.make_vec("TreeAvoid-v0", num_envs=8, vectorization_mode="vector_entry_point", device="cpu")
    assert isinstance(venv, TreeAvoidVectorEnv)
    obs, _ = venv.reset(seed=3)
    assert isinstance(obs, torch.Tensor) and obs.shape == (8, 3) and obs.dtype == torch.float32
    obs, rew, term, trunc, info = venv.step(torch.zeros(8, 2))
    assert rew.shape == (8,) and term.dtype == torch.bool and info["side"].shape == (8,)


def test_counter_uniform_is_uniform_and_pure():
    seed = torch.arange(100_000, dtype=torch.int64)
    u = counter_uniform(seed, torch.zeros_like(seed), stream=1)
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    hist = torch.histc(u, bins=10, min=0, max=1) / len(u)
    assert torch.allclose(hist, torch.full_like(hist, 0.1), atol=0.005)
    assert torch.equal(u[5:10], counter_uniform(seed[5:10], torch.zeros(5, dtype=torch.int64), stream=1))


@pytest.mark.parametrize("num_envs", [1, 5])
def test_single_and_batched_env_agree_step_by_step(num_envs):
    """Same seeds and actions: identical observations, rewards, flags and info, across autoresets."""
    seed = 11
    venv = TreeAvoidVectorEnv(num_envs=num_envs)
    singles = [gym.make("TreeAvoid-v0").unwrapped for _ in range(num_envs)]
    vobs, vinfo0 = venv.reset(seed=seed)
    resets = [e.reset(seed=seed + i) for i, e in enumerate(singles)]
    np.testing.assert_array_equal(vobs.numpy(), np.stack([o for o, _ in resets]))
    keys = set(vinfo0)
    for i, (_, info0) in enumerate(resets):  # the mode convention's keys at reset too, with the same values
        assert set(info0) == keys and info0["mode"] == -1 and not info0["success"]
        assert info0["context"] == vinfo0["context"][i].item() == float(vobs[i, 2])
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(300):
        # Random lateral actions with a forward bias: a mix of crashes, successes and side crossings.
        actions = np.clip(rng.normal([0.0, 0.8], [0.7, 0.3], size=(num_envs, 2)), -1, 1).astype(np.float32)
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(torch.from_numpy(actions))
        for i, env in enumerate(singles):
            o, r, te, tr, info = env.step(actions[i])
            np.testing.assert_allclose(vinfo["final_obs"][i].numpy(), o, atol=1e-6)
            assert abs(float(vrew[i]) - r) < 1e-6
            assert bool(vterm[i]) == te and bool(vtrunc[i]) == tr
            assert set(info) == keys  # the same keys on every step (Minari records them)
            for k in ("success", "collision", "off_road", "side", "switches", "mode", "context", "outcome"):
                a, b = info[k], vinfo[k][i].item()
                assert a == b, k
            if te or tr:
                ended += 1
                o, _ = env.reset()
            np.testing.assert_allclose(vobs[i].numpy(), o, atol=1e-6)
    assert ended >= num_envs * 3  # several autoresets were compared


def test_outcomes_of_scripted_paths():
    params = TreeAvoidParams()
    env = TreeAvoidVectorEnv(num_envs=3, params=params)
    env.reset(seed=0)
    s = env.state
    env.state = s._replace(x=torch.zeros(3), tree_x=torch.zeros(3))
    # straight ahead hits the tree; hard left leaves the road; go left then straight passes on the left
    for t in range(200):
        x = env.state.x
        steer_left_then_hold = torch.where(x > -0.6, -1.0, 0.0)
        act = torch.stack(
            [torch.tensor([0.0, -1.0, 0.0]) + torch.tensor([0, 0, 1.0]) * steer_left_then_hold, torch.zeros(3)], -1
        )
        _, _, term, trunc, info = env.step(act)
        if t == 0:
            first = {k: v.clone() for k, v in info.items()}
        if bool(info["done"][0]):
            assert bool(info["collision"][0]) and int(info["side"][0]) == SIDE_NONE
        if bool(info["done"][1]):
            assert bool(info["off_road"][1])
        if bool(info["done"][2]):
            assert bool(info["success"][2]) and int(info["side"][2]) == SIDE_LEFT
            break
    assert int(first["side"][0]) == SIDE_NONE
    assert SIDE_RIGHT == 2


def test_expert_success_and_side_preference():
    """>= 99.5% success over 10,000 episodes; the wider side is preferred; left_prob sets the overall share."""
    n = 10_000
    for left_prob in (0.5, 0.8):
        env = TreeAvoidVectorEnv(num_envs=n)
        expert = TreeAvoidExpert(config=ExpertConfig(left_prob=left_prob), seed=0)
        obs, _ = env.reset(seed=0)
        tree_x = obs[:, 2].clone()
        expert.reset(obs)
        done_once = torch.zeros(n, dtype=torch.bool)
        success = torch.zeros(n, dtype=torch.bool)
        side = torch.zeros(n, dtype=torch.int64)
        for _ in range(env.params.max_steps):
            obs, _, _, _, info = env.step(expert.act(obs))
            new = info["done"] & ~done_once
            success |= new & info["success"]
            side = torch.where(new, info["side"], side)
            done_once |= info["done"]
            expert.reset(obs, info["done"])
        assert float(success.float().mean()) >= 0.995
        left = (side == SIDE_LEFT).float()
        assert abs(float(left.mean()) - left_prob) < 0.02
        # tree shifted right (positive x) leaves more room on the left
        gap = float(left[tree_x > 0.025].mean()) - float(left[tree_x < -0.025].mean())
        assert gap > 0.5 * min(left_prob, 1 - left_prob)  # expected: 0.75 of it


def test_episode_starts_are_fixed_numbers():
    """The starts are part of the task: the same (seed, episode) gives the same start in every release."""
    seed, episode = torch.tensor([0, 1, 2, 12345, 2**32 - 1]), torch.tensor([0, 5, 1, 99, 7])
    car = [0.6453031301498413, 0.6099867224693298, 0.955504834651947, 0.8970732092857361, 0.5206064581871033]
    tree = [0.9395370483398438, 0.5657783150672913, 0.6757745146751404, 0.14653617143630981, 0.4768071174621582]
    assert counter_uniform(seed, episode, 1).tolist() == car
    assert counter_uniform(seed, episode, 2).tolist() == tree
    state = reset_state(TreeAvoidParams(), seed, episode)
    p = TreeAvoidParams()
    assert torch.equal(state.x, (2 * torch.tensor(car) - 1) * p.start_x_range)
    assert torch.equal(state.tree_x, (2 * torch.tensor(tree) - 1) * p.tree_offset_range)
