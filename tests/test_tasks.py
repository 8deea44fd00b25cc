"""Slalom-v0 and MultiGoal-v0: env checkers, single/batched parity through auto-resets, the mode convention,
their experts (success, mode mix, coupling) and the averaging failure."""

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from envs.collect import rollout_expert
from envs.experts import MultiGoalExpert, MultiGoalExpertConfig, SlalomExpert, SlalomExpertConfig
from envs.multigoal import MultiGoalVectorEnv
from envs.slalom import SlalomVectorEnv, route_names

TASKS = ["Slalom-v0", "MultiGoal-v0"]


@pytest.mark.parametrize("env_id", TASKS)
def test_checkers_render_and_mode_names(env_id):
    gym_check_env(gym.make(env_id).unwrapped, skip_render_check=False)
    sb3_check_env(gym.make(env_id).unwrapped, warn=True)
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and len(np.unique(frame.reshape(-1, 3), axis=0)) >= 3
    names = env.unwrapped.metadata["mode_names"]
    assert names == (route_names(3) if env_id == "Slalom-v0" else ["0 deg", "194 deg", "120 deg", "268 deg"])
    venv = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    assert venv.metadata["mode_names"] == names


@pytest.mark.parametrize("env_id", TASKS)
def test_single_and_batched_env_agree_step_by_step(env_id):
    """Same seeds and actions: identical observations, rewards, flags and infos, across auto-resets."""
    n, seed = 4, 7
    venv = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    singles = [gym.make(env_id).unwrapped for _ in range(n)]
    vobs, vinfo0 = venv.reset(seed=seed)
    resets = [e.reset(seed=seed + i) for i, e in enumerate(singles)]
    np.testing.assert_array_equal(vobs.numpy(), np.stack([o for o, _ in resets]))
    for _, info0 in resets:
        assert set(info0) == set(vinfo0) and info0["mode"] == -1 and not info0["success"]
    # An expert with noise gives successes on several routes; extra noise gives crashes as well.
    expert = (
        SlalomExpert(venv.params, SlalomExpertConfig(noise=0.3), seed=0)
        if env_id == "Slalom-v0"
        else MultiGoalExpert(venv.params, MultiGoalExpertConfig(noise=0.6), seed=0)
    )
    expert.reset(vobs)
    ended, modes = 0, set()
    for _ in range(500 if env_id == "Slalom-v0" else 120):
        actions = expert.act(vobs).numpy()
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(torch.from_numpy(actions))
        for i, env in enumerate(singles):
            o, r, te, tr, info = env.step(actions[i])
            np.testing.assert_array_equal(vinfo["final_obs"][i].numpy(), o)
            assert float(vrew[i]) == r and bool(vterm[i]) == te and bool(vtrunc[i]) == tr
            assert set(info) == set(vinfo0) - {"final_obs", "done"}
            for k, v in info.items():
                assert v == vinfo[k][i].item(), k
            if te or tr:
                ended += 1
                modes.add(info["mode"])
                o, _ = env.reset()
            np.testing.assert_array_equal(vobs[i].numpy(), o)
        expert.reset(vobs, vinfo["done"])
    assert ended >= 3 * n and len(modes) >= 3  # several auto-resets and several modes were compared


def _play(venv, expert, steps):
    obs, _ = venv.reset(seed=0)
    expert.reset(obs)
    n = venv.num_envs
    finished = torch.zeros(n, dtype=torch.bool)
    success, mode = torch.zeros(n, dtype=torch.bool), torch.full((n,), -1)
    for _ in range(steps):
        obs, _, _, _, info = venv.step(expert.act(obs))
        first = info["done"] & ~finished
        success |= first & info["success"]
        mode = torch.where(first, info["mode"], mode)
        finished |= info["done"]
        expert.reset(obs, info["done"])
    return success, mode


@pytest.mark.parametrize("coupling", ["independent", "same"])
def test_slalom_expert_routes(coupling):
    venv = SlalomVectorEnv(num_envs=4000)
    success, mode = _play(venv, SlalomExpert(venv.params, SlalomExpertConfig(coupling=coupling)), 250)
    assert float(success.float().mean()) >= 0.995
    shares = torch.bincount(mode[mode >= 0], minlength=8).float() / len(mode)
    if coupling == "independent":  # every route, about 1/8 each
        assert bool(((shares - 0.125).abs() < 0.03).all()), shares
    else:  # LLL and RRR only
        assert abs(float(shares[0]) - 0.5) < 0.03 and abs(float(shares[7]) - 0.5) < 0.03
        assert float(shares[1:7].sum()) == 0.0


def test_multigoal_expert_goal_weights():
    venv = MultiGoalVectorEnv(num_envs=4000)
    success, mode = _play(venv, MultiGoalExpert(venv.params), 15)
    assert float(success.float().mean()) >= 0.995
    shares = torch.bincount(mode[mode >= 0], minlength=4).float() / len(mode)
    torch.testing.assert_close(shares, torch.tensor([0.4, 0.3, 0.2, 0.1]), atol=0.025, rtol=0)


@pytest.mark.parametrize(
    "task,env_cls,steps", [("slalom", SlalomVectorEnv, 250), ("multigoal", MultiGoalVectorEnv, 15)]
)
def test_the_average_of_the_demonstrations_fails(task, env_cls, steps):
    """Acting with the demonstrations' mean action at each state (what a unimodal policy converges to) fails:
    here approximated by averaging the expert's noise-free action over its possible choices."""
    venv = env_cls(num_envs=500)
    obs, _ = venv.reset(seed=0)
    cls, cfg = (SlalomExpert, SlalomExpertConfig) if task == "slalom" else (MultiGoalExpert, MultiGoalExpertConfig)
    experts = []
    choices = 2 if task == "slalom" else 4
    for c in range(choices):
        e = cls(venv.params, cfg(noise=0.0), seed=0)
        e.reset(obs)
        if task == "slalom":
            e.u.fill_(0.0 if c == 0 else 1.0)  # always left / always right
        else:
            e.goal.fill_(c)
        experts.append(e)
    weights = [0.5, 0.5] if task == "slalom" else list(MultiGoalExpertConfig().goal_probs)
    finished = torch.zeros(500, dtype=torch.bool)
    success = torch.zeros(500, dtype=torch.bool)
    for _ in range(steps):
        action = sum(w * e.act(obs) for w, e in zip(weights, experts))
        obs, _, _, _, info = venv.step(action)
        success |= info["done"] & ~finished & info["success"]
        finished |= info["done"]
    assert float(success.float().mean()) <= 0.5


def test_collected_slalom_dataset_records_routes():
    data = rollout_expert(50, seed=0, task="slalom")
    modes = [int(i["mode"][-1]) for i in data.infos]
    assert set(data.infos[0]) == {"success", "mode"} and all(0 <= m < 8 for m in modes)
    assert all(int(i["mode"][0]) == -1 for i in data.infos)  # unknown at reset


@pytest.mark.slow  # two trainings and three runs of the script (about 30 s): the default run stays under 5 minutes
def test_compare_baselines_end_to_end_reuses_only_matching_runs(tmp_path):
    """Two rows on a small MultiGoal dataset: tables, figure; a second call reuses the runs, a changed option
    retrains."""
    import json

    from envs.collect import collect
    from tests.test_cli import run

    demos = tmp_path / "demos"
    collect(demos, episodes=100, seed=0, task="multigoal")
    args = ["scripts/compare_baselines.py", "--demos", str(demos), "--runs", str(tmp_path / "runs")]
    args += ["--out", str(tmp_path / "out"), "--policies", "gmm", "lvm-episode", "--seeds", "0", "--episodes", "50"]
    r = run(*args, "--steps", "30", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| gmm | sampled |" in table and "| lvm-episode | low-noise |" in table and "MultiGoal-v0" in table
    assert (tmp_path / "out" / "rollouts.png").stat().st_size > 10_000
    config = json.loads((tmp_path / "runs" / "lvm-episode-seed0" / "config.json").read_text())
    assert config["lvm"]["latent_scope"] == "episode"
    stamp = (tmp_path / "runs" / "gmm-seed0" / "metrics.json").stat().st_mtime_ns
    assert run(*args, "--steps", "30", "--device", "cpu").returncode == 0
    assert (tmp_path / "runs" / "gmm-seed0" / "metrics.json").stat().st_mtime_ns == stamp  # reused
    assert run(*args, "--steps", "31", "--device", "cpu").returncode == 0
    assert (tmp_path / "runs" / "gmm-seed0" / "metrics.json").stat().st_mtime_ns != stamp  # retrained
    # --summary-only: the comparison just written (a folder of its own, not a benchmark task) becomes a column
    assert run("scripts/compare_baselines.py", "--summary-only", "--out", str(tmp_path)).returncode == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| out: success / mode TV / NLL / train s |" in summary and "| lvm-episode | " in summary


def _script_module(name: str):
    """scripts/<name>.py imported as a module."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, f"scripts/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _compare_module():
    return _script_module("compare_baselines")


def test_reuse_compares_options_by_the_value_they_take(tmp_path):
    """A run stored with beta = 1.0 is the step-scope lvm's default (beta unset) but not the episode scope's."""
    import json
    from dataclasses import replace

    from lvm_policy.train import TrainConfig, config_to_json

    module = _compare_module()
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    for scope, reused in (("step", True), ("episode", False)):
        cfg = TrainConfig(demos="d", policy="lvm", out=run)
        cfg = replace(cfg, lvm=replace(cfg.lvm, latent_scope=scope, action_horizon=1, action_steps=1))
        stored = config_to_json(cfg)
        stored["lvm"]["beta"] = 1.0
        (run / "config.json").write_text(json.dumps(stored))
        assert module.reusable(run, cfg) is reused
        stored["lvm"]["beta"] = cfg.lvm.final_beta
        (run / "config.json").write_text(json.dumps(stored))
        assert module.reusable(run, cfg)
    # an option added since: a run stored without it behaved as the new default (segment_steps, a speed option)
    # or, where the new default changed what training does, as the class's absent_means says (prior_refit)
    cfg = TrainConfig(demos="d", policy="lvm", out=run)
    for option, reused in (("segment_steps", True), ("prior_refit", False)):
        stored = config_to_json(cfg)
        del stored["lvm"][option]
        (run / "config.json").write_text(json.dumps(stored))
        assert module.reusable(run, cfg) is reused, option
        assert module.reusable(run, replace(cfg, lvm=replace(cfg.lvm, prior_refit=False))) is not reused, option
    # the codebook prior's faster rate (session 15): a run stored without the options learned at one rate
    stored = config_to_json(cfg)
    del stored["lvm"]["chunk_prior_lr_scale"], stored["lvm"]["chunk_prior_lr_delay"]
    (run / "config.json").write_text(json.dumps(stored))
    assert not module.reusable(run, cfg)
    assert module.reusable(run, replace(cfg, lvm=replace(cfg.lvm, chunk_prior_lr_scale=1.0)))
    # image_shift's default went from DrQ's share to none: a run stored without it shifted its images
    for policy in ("gmm", "lvm"):
        cfg = TrainConfig(demos="d", policy=policy, out=run)
        stored = config_to_json(cfg)
        del stored[policy]["image_shift"]
        (run / "config.json").write_text(json.dumps(stored))
        shifted = replace(cfg, **{policy: replace(getattr(cfg, policy), image_shift=None)})
        assert not module.reusable(run, cfg) and module.reusable(run, shifted), policy


def _write_results(folder, rows):
    import json

    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(rows))


def test_summary_merges_a_task_named_comparison_into_its_column(tmp_path):
    """results/modern/tree_avoid adds its classes to the tree_avoid column; a class in several folders comes from
    the one with the most seeds, on a tie from results/tree_avoid; a single seed is marked."""
    module = _compare_module()

    def row(policy, seed, success, nll=-3.0):
        return dict(
            policy=policy,
            seed=seed,
            deterministic=False,
            success_rate=success,
            mode_tv=0.01,
            nll=nll,
            train_seconds=10.0,
        )

    _write_results(tmp_path / "tree_avoid", [row("gmm", 0, 0.9), row("gmm", 1, 0.8)])
    _write_results(tmp_path / "modern" / "tree_avoid", [row("gmm", 0, 0.1), row("bet", 0, 0.7, float("nan"))])
    _write_results(tmp_path / "bins" / "tree_avoid", [row("bet", 0, 0.6), row("bet", 1, 0.6)])  # more seeds
    _write_results(tmp_path / "mine", [row("flow", 0, 0.5, float("nan")), row("bet:num_bins=8", 0, 0.4)])
    module.write_summary(tmp_path)
    lines = (tmp_path / "summary.md").read_text().splitlines()
    assert (
        lines[2]
        == "| policy | tree_avoid: success / mode TV / NLL / train s | mine: success / mode TV / NLL / train s |"
    )
    assert "| gmm | 0.850 / 0.010 / -3.00 / 10 | – |" in lines
    assert "| bet | 0.600 / 0.010 / -3.00 / 10 | – |" in lines
    assert "| flow | – | 0.500 / 0.010 / – / 10 (1 seed) |" in lines  # no density: no NLL
    assert not any(line.startswith("| bet:num_bins=8") for line in lines)  # an ablation row stays out


def test_summary_prefers_a_current_measurement_to_a_superseded_one(tmp_path):
    """A row a folder's superseded.json names gives way to the same row elsewhere, even with fewer seeds; where it
    is the only measurement it is shown with a dagger and the footnote."""
    module = _compare_module()

    def row(policy, seed, success):
        return dict(policy=policy, seed=seed, deterministic=False, success_rate=success, mode_tv=0.01, nll=-3.0,
                    train_seconds=10.0)  # fmt: skip

    _write_results(tmp_path / "tree_avoid", [row("lvm", s, 0.5) for s in range(3)] + [row("gmm", 0, 0.9)])
    (tmp_path / "tree_avoid" / "superseded.json").write_text(json.dumps({"lvm": "an earlier default", "gmm": "too"}))
    _write_results(tmp_path / "new" / "tree_avoid", [row("lvm", 0, 0.99), row("lvm", 1, 0.97)])
    module.write_summary(tmp_path)
    lines = (tmp_path / "summary.md").read_text().splitlines()
    assert "| lvm | 0.980 / 0.010 / -3.00 / 10 |" in lines
    assert "| gmm | 0.900 / 0.010 / -3.00 / 10 (1 seed) † |" in lines
    assert lines[-1].startswith("† measured under an earlier definition")


def test_times_add_up_runs_and_their_final_evaluations(tmp_path):
    """times.md: per cell the mean over seeds of training plus evaluations (an evaluation reused for the other
    acting mode counts once), the grid x 3 seeds, and the final evaluations' share of --task all."""
    module = _compare_module()

    def rows(policy, seed, train, evals):
        return [dict(policy=policy, seed=seed, deterministic=d, success_rate=1.0, mode_tv=0.0, nll=-3.0,
                     train_seconds=train, eval_seconds=e) for d, e in zip((False, True), evals)]  # fmt: skip

    _write_results(tmp_path / "tree_avoid", rows("gmm", 0, 10.0, (2.0, 3.0)) + rows("gmm", 1, 30.0, (4.0, 4.0)))
    _write_results(tmp_path / "tree_avoid_pixels", rows("gmm", 0, 100.0, (50.0, 50.0)))  # not in --task all
    module.write_summary(tmp_path)
    text = (tmp_path / "times.md").read_text()
    # seed 0: 10 + 2 + 3 = 15 s; seed 1: 30 + 4 = 34 s (one evaluation for both modes); mean 24.5, x 3 = 73.5
    assert "| gmm | 24 | 150 |" in text and "| **3 seeds, every row** | **74** | **450** |" in text
    assert "| of which final evaluations | 14 | 150 |" in text  # 3 x (5 + 4) / 2 = 13.5; 3 x 50
    assert "`--task all` (tree_avoid) adds up to 74 s" in text and "take 14 s" in text


def test_compare_rows_with_changed_options():
    from lvm_policy.errors import ConfigError

    module = _compare_module()
    assert module.row_spec("bet:num_bins=16") == ("bet", {"num_bins": 16})
    episode = {"latent_scope": "episode", "action_horizon": 1, "action_steps": 1}
    assert module.row_spec("lvm-episode:beta=0.05") == ("lvm", {**episode, "beta": 0.05})
    assert module.run_name("lvm-episode:beta=0.05,latent_dim=1") == "lvm-episode-beta0.05-latent_dim1"
    # an option that may be None takes the type its annotation names beside None, or None itself
    assert module.row_spec("lvm:segment_steps=8,prior_refit=false") == (
        "lvm",
        {"segment_steps": 8, "prior_refit": False},
    )
    assert module.row_spec("lvm:segment_steps=none")[1]["segment_steps"] is None
    assert type(module.row_spec("lvm:segment_steps=8")[1]["segment_steps"]) is int  # noqa: E721  not a float
    # a Literal beside None takes one of the names it lists
    assert module.row_spec("lvm:chunk_latent=gaussian")[1] == {"chunk_latent": "gaussian"}
    for bad, words in (
        ("bet:num_bins=x", "takes a int"),
        ("bet:nope=1", "option=value"),
        ("zzz", "unknown row"),
        ("lvm:chunk_latent=discrete", "one of gaussian, codebook"),
    ):
        with pytest.raises(ConfigError, match=words):
            module.row_spec(bad)


def _diagnose_slalom_module():
    return _script_module("diagnose_slalom_choices")


def test_slalom_choices_read_sides_and_positions_from_observations():
    module = _diagnose_slalom_module()
    # (x, y, next tree's offset, distance to its row): tree 1 passed on the left, tree 2 on the right
    path = np.array(
        [[0.02, 0.0, 0.01, 3.0], [0.03, 2.0, 0.01, 1.0], [-0.4, 2.9, 0.01, 0.1], [-0.1, 3.1, -0.02, 3.4],
         [-0.01, 5.6, -0.02, 0.9], [0.4, 6.4, -0.02, 0.1], [0.3, 6.6, 0.0, 3.4]]
    )  # fmt: skip
    sides, x_before = module.choices(path, before=1.0)
    assert sides == [1, 0] and x_before == [0.03, -0.01]


def test_slalom_expert_choices_are_independent_of_the_last_side_and_the_car():
    """The diagnosis on the independent expert's own episodes: a side repeated half the time, and the same left share
    whichever side of the centre the car is on (within sampling noise of 3 x 2,000 choices)."""
    from envs.collect import rollout_expert
    from envs.experts import SlalomExpertConfig

    module = _diagnose_slalom_module()
    played = rollout_expert(2000, seed=3, expert=SlalomExpertConfig(coupling="independent"), task="slalom")
    row = module.summarise(played.observations, before=2.5, trees=3)
    assert row["trees_passed"] == 6000
    assert abs(row["repeat_rate"] - 0.5) < 0.04
    assert abs(row["left_given_car_left_of_centre"] - row["left_given_car_right_of_centre"]) < 0.05
    coupled = rollout_expert(500, seed=3, expert=SlalomExpertConfig(coupling="same"), task="slalom")
    assert module.summarise(coupled.observations, before=2.5, trees=3)["repeat_rate"] == 1.0


def test_code_mode_information_is_the_modes_entropy_when_each_code_holds_one_mode():
    """diagnose_episode_prior's measure of what a categorical episode latent holds: codes that each hold one mode
    carry all of the modes' entropy, codes drawn apart from the modes none of it."""
    module = _script_module("diagnose_episode_prior")
    mode = torch.tensor([0, 0, 0, 1, 2, 2])  # shares 1/2, 1/6, 1/3
    entropy = -sum(p * math.log(p) for p in (1 / 2, 1 / 6, 1 / 3))
    by_mode = torch.nn.functional.one_hot(torch.tensor([3, 3, 3, 0, 1, 1]), 4).float()  # code 3 for mode 0, ...
    joint, information, h = module.code_mode_information(by_mode, mode, 3)
    assert h == pytest.approx(entropy) and information == pytest.approx(entropy)
    assert (
        joint.shape == (4, 3) and float(joint.sum()) == pytest.approx(1.0) and float(joint[3, 0]) == pytest.approx(0.5)
    )
    _, none, _ = module.code_mode_information(torch.full((6, 4), 0.25), mode, 3)
    assert none == pytest.approx(0.0, abs=1e-12)


def test_episode_code_posteriors_are_a_distribution_and_only_for_a_categorical_latent():
    from lvm_policy.policies import make_policy
    from lvm_policy.policies.latent import LatentConfig

    torch.manual_seed(0)
    policy = make_policy("lvm", 3, 2, LatentConfig(action_horizon=2, action_steps=1)).eval()
    obs, act, mask = torch.randn(5, 7, 1, 3), torch.randn(5, 7, 2, 2), torch.ones(5, 7, 2, dtype=torch.bool)
    q = policy.episode_code_posteriors(obs, act, mask)
    assert q.shape == (5, policy.config.episode_codes) and torch.allclose(q.sum(1), torch.ones(5))
    gaussian = make_policy("lvm", 3, 2, LatentConfig(action_horizon=2, action_steps=1, episode_latent="gaussian"))
    with pytest.raises(ValueError, match="categorical"):
        gaussian.episode_code_posteriors(obs, act, mask)
