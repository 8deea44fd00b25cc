"""An environment the package did not write and a dataset recorded the way a user records one, end to end.

The env (tests/user_env.py) is registered by an entry-point string, has Dict observations and a [-2, 2] action
box; the dataset is written with ``minari.create_dataset_from_buffers`` under ``MINARI_DATASETS_PATH`` and named
by its dataset id. The training and evaluation subprocesses never import the env's module: they make the env
from the EnvSpec the dataset recorded.
"""

import json
import multiprocessing
import os
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import numpy as np
import pytest
import torch

from lvm_policy.errors import DatasetError, EnvError
from tests.test_cli import assert_one_line_error, run
from tests.user_env import scripted_action

DATASET_ID = "userfork/scripted-v0"


def record(root, dataset_id, env_id="UserFork-v0", episodes=300, seed=0, edit=None):
    """Play the scripted controller (a goal drawn per episode, 60/40; it reads the env's position, so camera
    versions of the env play the same way) and write a Minari dataset."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    buffers = []
    for e in range(episodes):
        goal = int(rng.random() < 0.4)
        obs, info = env.reset(seed=seed + e)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        infos = {k: [v] for k, v in info.items()}
        done = False
        while not done:
            action = scripted_action({"position": env.unwrapped.pos}, goal, rng)
            obs, r, term, trunc, info = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(r)
            terms.append(term)
            truncs.append(trunc)
            for k, v in info.items():
                infos[k].append(v)
            done = term or trunc
        buffers.append(
            EpisodeBuffer(
                id=e,
                seed=seed + e,
                observations=(
                    {k: np.stack([o[k] for o in observations]) for k in observations[0]}
                    if isinstance(obs, dict)
                    else np.stack(observations)
                ),
                actions=np.stack(actions),
                rewards=rewards,
                terminations=terms,
                truncations=truncs,
                infos={k: np.asarray(v) for k, v in infos.items()},
            )
        )
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id, buffer=buffers, env=gym.spec(env_id), algorithm_name="scripted"
            )
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
    return root / dataset_id


@pytest.fixture(scope="module")
def user_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    record(root, DATASET_ID)
    return root


@pytest.fixture(scope="module")
def user_runs(user_dataset, tmp_path_factory):
    """Every class trained from the CLI, the dataset named by its id under MINARI_DATASETS_PATH."""
    runs = tmp_path_factory.mktemp("user_runs")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(user_dataset), OMP_NUM_THREADS="1")

    def train(name: str) -> subprocess.CompletedProcess:
        args = ["--policy", name, "--demos", DATASET_ID, "--out", str(runs / name), "--steps", "400"]
        args += ["--eval-every", "0", "--final-eval-episodes", "40", "--vectorization", "sync", "--no-progress"]
        return run("scripts/train_bc.py", *args, "--device", "cpu", env=env)

    names = ("lvm", "gmm", "autoregressive", "gaussian")
    with ThreadPoolExecutor(max_workers=2) as pool:  # two one-thread processes at a time on the 2 cores
        results = dict(zip(names, pool.map(train, names)))
    for r in results.values():
        assert r.returncode == 0, r.stderr
        assert "run folder" in r.stdout and "next: python scripts/evaluate.py" in r.stdout  # the readable end
    return {name: runs / name for name in names}


def test_the_dataset_loads_with_its_dict_space_and_box(user_dataset, monkeypatch):
    from lvm_policy.data import load_demonstrations

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(user_dataset))
    d = load_demonstrations(DATASET_ID)
    assert d.obs.shape[1] == 3 and d.act.shape[1] == 2  # position (2) + time (1), in the Dict's key order
    assert d.env_id == "UserFork-v0" and d.action_space.high.tolist() == [2.0, 2.0]
    assert 0.5 < d.mode_shares(2)[0] < 0.7 and set(d.recorded) == {"mode", "success"}


@pytest.mark.parametrize("name", ["lvm", "gmm", "autoregressive", "gaussian"])
def test_every_class_trains_and_evaluates_through_the_vector_env(user_runs, name):
    run_dir = user_runs[name]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["environment"]["id"] == "UserFork-v0" and "Dict" in config["environment"]["observation_space"]
    r = run("scripts/evaluate.py", str(run_dir), "--episodes", "30", "--num-envs", "4", "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["engine"] == "gymnasium-async" and m["episodes"] == 30 and m["env_id"] == "UserFork-v0"
    assert m["demo_mode_shares"][0] > 0.5 and "mode_tv" in m and math_finite(m["nll"])
    if name != "gaussian":  # 400 steps: both goals kept in about the demonstrations' proportion (30 episodes)
        assert m["modes_covered"] == 2 and m["mode_tv"] <= 0.25, m
    if name in ("lvm", "autoregressive"):  # and mostly reached (200 episodes by hand: 0.905, 0.975; gmm 0.455)
        assert m["success_rate"] >= 0.7, m


def math_finite(x):
    return x is not None and np.isfinite(x)


def test_the_saved_policy_plays_the_dict_env_through_sb3(user_runs):
    from stable_baselines3.common.evaluation import evaluate_policy

    import tests.user_env  # noqa: F401  (registration, as a user's own code would do)
    from lvm_policy import load_policy

    policy = load_policy(user_runs["gmm"])
    env = gym.make("UserFork-v0")
    obs, _ = env.reset(seed=0)
    action, _ = policy.predict(obs)  # a single Dict observation
    assert action.shape == (2,) and np.all(np.abs(action) <= 2.0)
    mean_reward, _ = evaluate_policy(policy, env, n_eval_episodes=5, warn=False)
    assert np.isfinite(mean_reward)


@pytest.mark.parametrize(
    "env_id,message", [("UserForkFailStep-v0", "contact solver"), ("UserForkFailReset-v0", "scene")]
)
@pytest.mark.parametrize("vectorization", ["async", "sync"])
def test_a_failing_env_ends_with_one_line_and_no_orphans(user_runs, env_id, message, vectorization):
    import tests.user_env  # noqa: F401
    from lvm_policy import load_policy
    from lvm_policy.evaluate import rollout

    with pytest.raises(EnvError, match=message) as err:
        rollout(load_policy(user_runs["gmm"]), env_id, 20, num_envs=3, vectorization=vectorization)
    assert env_id in str(err.value) and "\n" not in str(err.value)
    assert multiprocessing.active_children() == []
    if vectorization == "async":
        r = run("scripts/evaluate.py", str(user_runs["gmm"]), "--env", f"tests.user_env:{env_id}", "--episodes", "20")
        assert r.returncode == 2
        assert_one_line_error(r, env_id, message)


def test_an_env_without_time_limit_is_capped(user_runs):
    import tests.user_env  # noqa: F401
    from lvm_policy import make_policy
    from lvm_policy.evaluate import rollout

    still = make_policy("gaussian", 3, 2, action_low=-2.0, action_high=2.0)
    still.act = lambda obs, deterministic=False: torch.zeros(obs.shape[0], 2)  # never reaches a goal
    r = rollout(still, "UserForkNoLimit-v0", 6, num_envs=3, vectorization="sync", max_episode_steps=25)
    assert r.length.tolist() == [25] * 6 and not bool(r.success.any())
    assert r.info["mode"].tolist() == [-1] * 6


def test_unsupported_and_mismatched_datasets_are_refused(tmp_path):
    from lvm_policy.data import load_demonstrations

    # observations that do not match the space the dataset records
    folder = record(tmp_path, "userfork/small-v0", episodes=3)
    meta_path = folder / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    recorded = meta["observation_space"]
    space = json.loads(recorded)
    space["subspaces"]["position"].update(shape=[5], low=[-3.0] * 5, high=[3.0] * 5)
    meta["observation_space"] = json.dumps(space)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="position") as err:
        load_demonstrations(folder)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)
    # discrete actions
    meta["action_space"] = json.dumps({"type": "Discrete", "dtype": "int64", "start": 0, "n": 3})
    meta["observation_space"] = recorded
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="supported: Box actions"):
        load_demonstrations(folder)


def test_training_without_the_env_reports_nll_only_and_says_why(tmp_path):
    """A dataset whose env's package is not installed here: training runs (validation NLL only) and says once
    why rollouts are off; evaluate.py then exits 2 with that reason."""
    folder = record(tmp_path, "userfork/elsewhere-v0", episodes=20)
    meta_path = folder / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["env_spec"] = meta["env_spec"].replace("tests.user_env:ForkEnv", "not_installed_pkg.envs:ForkEnv")
    meta_path.write_text(json.dumps(meta))
    out = tmp_path / "run"
    r = run(
        "scripts/train_bc.py",
        "--policy",
        "gmm",
        "--demos",
        str(folder),
        "--out",
        str(out),
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--no-progress",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("rollouts are off") == 1 and "not_installed_pkg" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert math_finite(metrics["nll"]) and "success_rate" not in metrics and metrics["rollouts_off"]
    assert (out / "best" / "model.safetensors").is_file()
    r = run("scripts/evaluate.py", str(out), "--episodes", "5")
    assert r.returncode == 2
    assert_one_line_error(r, "not_installed_pkg")


def test_recorded_paths_follow_the_episodes_in_order(user_runs):
    """The vector-env engine records the paths of episodes 0 .. P-1 (more than one per env) in episode order:
    each path is that episode's observations, from its reset to its own last one, and ends at its mode's goal."""
    import tests.user_env  # noqa: F401  (registers UserFork-v0)
    from lvm_policy import load_policy
    from lvm_policy.evaluate import rollout
    from tests.user_env import GOALS

    torch.manual_seed(0)
    policy = load_policy(user_runs["lvm"])
    r = rollout(policy, "UserFork-v0", 24, num_envs=4, vectorization="sync", record_paths=20)
    assert len(r.paths) == 20 and len(set(r.length[:20].tolist())) > 1  # lengths differ: the order is tested
    for j, path in enumerate(r.paths):
        assert path.shape == (int(r.length[j]) + 1, 3)
        if r.success[j]:  # the last position lies at the goal the episode's mode names
            assert np.linalg.norm(path[-1, :2] - GOALS[int(r.info["mode"][j])]) < 0.2 + 1e-5
    assert bool(r.success[:20].any())
