"""The MuJoCo PointMaze tasks: Gymnasium-Robotics' simulator (not ours) with route modes, the cell-planner
expert, the Minari dataset it records, and training and evaluation through the generic path only."""

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

from envs.point_maze import LAYOUTS, MISSING_DEPENDENCY, MazeExpert, MazeExpertConfig, make_point_maze
from tests.conftest import ROOT
from tests.test_cli import assert_one_line_error, run

pytest.importorskip("gymnasium_robotics")

MAZES = list(LAYOUTS)


@pytest.mark.parametrize("env_id", MAZES)
def test_every_shortest_path_is_one_route_and_every_route_is_shortest(env_id):
    layout = LAYOUTS[env_id]
    paths = layout.shortest_paths()
    assert len({len(p) for p in paths}) == 1  # equally short
    routes = [layout.route_of_path(p) for p in paths]  # raises if a path passed two routes' own cells
    assert sorted(set(routes)) == list(range(len(layout.route_names)))


@pytest.mark.parametrize("env_id", MAZES)
def test_env_checker_and_the_mode_convention(env_id):
    # Gymnasium-Robotics' own env; render checks need a display or an EGL device (MUJOCO_GL), skipped here
    gym_check_env(gym.make(env_id).unwrapped, skip_render_check=True)
    env = gym.make(env_id)
    gym_check_env(make_point_maze(env_id), skip_render_check=True)  # with the route modes added
    assert env.spec.max_episode_steps == LAYOUTS[env_id].max_episode_steps
    assert env.metadata["mode_names"] == list(LAYOUTS[env_id].route_names)
    assert len(env.metadata["figure"]["rects"]) > 0
    obs, info = env.reset(seed=3)
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
    assert info["mode"] == -1 and info["success"] is False


@pytest.mark.parametrize("env_id", MAZES)
def test_the_expert_succeeds_and_its_route_is_the_mode(env_id):
    layout = LAYOUTS[env_id]
    env = gym.make(env_id)
    expert = MazeExpert(layout, MazeExpertConfig(), seed=0)
    chosen, modes, success = [], [], []
    for episode in range(12):
        obs, info = env.reset(seed=episode)
        expert.reset(env, obs)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            done = terminated or truncated
        chosen.append(expert.route)
        modes.append(info["mode"])
        success.append(info["success"])
    assert all(success) and modes == chosen and len(set(modes)) == len(layout.route_names)


def test_route_probs_weight_the_routes_and_are_checked():
    expert = MazeExpert(LAYOUTS["PointMazeThreeRoutes-v0"], MazeExpertConfig(route_probs=(0.6, 0.2, 0.2)), seed=1)
    env = gym.make("PointMazeThreeRoutes-v0")
    obs, _ = env.reset(seed=0)
    counts = np.bincount([(expert.reset(env, obs), expert.route)[1] for _ in range(2000)], minlength=3)
    assert abs(counts[0] / 2000 - 0.6) < 0.05 and abs(counts[1] / 2000 - 0.2) < 0.04
    with pytest.raises(ValueError, match="route_probs"):
        MazeExpertConfig(route_probs=(0.5, 0.6))
    with pytest.raises(ValueError, match="route_probs"):
        MazeExpert(LAYOUTS["PointMazeThreeRoutes-v0"], MazeExpertConfig(route_probs=(0.5, 0.5)))


@pytest.fixture(scope="module")
def maze_demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("maze") / "maze2"
    r = run("scripts/collect_demos.py", "--task", "maze2", "--episodes", "60", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "expert success 1.0000" in r.stdout
    return out


def test_the_recorded_dataset_keeps_the_dict_observations_and_the_routes(maze_demos):
    from lvm_policy.data import load_demonstrations

    d = load_demonstrations(str(maze_demos))
    assert isinstance(d.observation_space, gym.spaces.Dict) and d.obs.shape[1] == 8  # 2 + 2 + 4, key order
    assert d.env_id == "PointMazeTwoRoutes-v0" and d.action_space.high.tolist() == [1.0, 1.0]
    shares = d.mode_shares(2)
    assert 0.3 < shares[0] < 0.7 and abs(sum(shares) - 1) < 1e-6


@pytest.mark.slow  # a MuJoCo training and evaluation (about 12 s): the default run stays under 5 minutes
def test_train_and_evaluate_through_gymnasiums_vector_env(maze_demos, tmp_path):
    out = tmp_path / "gmm"
    r = run(
        "scripts/train_bc.py", "--policy", "gmm", "--demos", str(maze_demos), "--out", str(out), "--steps", "40",
        "--eval-every", "0", "--final-eval-episodes", "8", "--num-envs", "4", "--no-progress", "--device", "cpu",
        "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["engine"] == "gymnasium-async"
    r = run("scripts/evaluate.py", str(out), "--episodes", "8", "--num-envs", "4", "--vectorization", "sync", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["engine"] == "gymnasium-sync" and m["episodes"] == 8 and m["env_id"] == "PointMazeTwoRoutes-v0"
    assert len(m["demo_mode_shares"]) == 2 and "mode_tv" in m


def test_without_the_simulator_one_line_says_what_to_install(tmp_path):
    hide = "import sys; sys.modules['gymnasium_robotics'] = None; "  # as if gymnasium-robotics were not installed
    code = hide + "from envs.point_maze import make_point_maze; make_point_maze()"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and MISSING_DEPENDENCY in r.stderr
    script = hide + f"import runpy, sys; sys.argv = ['collect_demos.py', '--task', 'maze2', '--out', '{tmp_path}/d']; "
    script += "runpy.run_path('scripts/collect_demos.py', run_name='__main__')"
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert_one_line_error(r, "gymnasium-robotics", "pip install")
    assert not (tmp_path / "d").exists()
    assert make_point_maze().metadata["mode_names"] == ["top", "bottom"]  # here, where it is installed
