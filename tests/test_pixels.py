"""TreeAvoidPixels-v0 and SlalomPixels-v0: the camera drawn by the torch twin equals the single env's through
auto-resets, the env checkers pass, what the camera shows, and the experts record pixel datasets."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from envs.collect import rollout_expert, write_minari
from envs.experts import ExpertConfig, SlalomExpert, SlalomExpertConfig, TreeAvoidExpert
from lvm_policy.data import load_demonstrations

PIXEL_TASKS = ["TreeAvoidPixels-v0", "SlalomPixels-v0"]


@pytest.mark.parametrize("env_id", PIXEL_TASKS)
def test_checker_and_what_the_camera_shows(env_id):
    check_env(gym.make(env_id).unwrapped, skip_render_check=True)
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8
    red, green, blue = (obs[..., c] > 0 for c in range(3))
    assert red.any() and red[:16].any() and not red[24:].any()  # the (first) tree lies ahead of the car
    assert (green | red)[:, 16].all() and not green[:, 0].any()  # road (or tree) ahead of the car, off-road at the edge
    assert blue[24:28, 15:17].any()  # the car, just above the bottom edge (0.5 m behind is in view)
    assert env.unwrapped.metadata["mode_names"]


@pytest.mark.parametrize("env_id", PIXEL_TASKS)
def test_single_and_batched_cameras_agree_through_resets(env_id):
    n, seed = 3, 5
    venv = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    singles = [gym.make(env_id).unwrapped for _ in range(n)]
    vobs, _ = venv.reset(seed=seed)
    np.testing.assert_array_equal(vobs.numpy(), np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(singles)]))
    state = venv.task.state_observation(venv.state)
    expert = (
        TreeAvoidExpert(venv.params, ExpertConfig(noise=0.3), seed=0)
        if env_id == "TreeAvoidPixels-v0"
        else SlalomExpert(venv.params, SlalomExpertConfig(noise=0.3), seed=0)
    )
    expert.reset(state)
    ended = 0
    for _ in range(150):
        actions = expert.act(state).numpy()
        vobs, _, _, _, vinfo = venv.step(torch.from_numpy(actions))
        for i, env in enumerate(singles):
            o, r, te, tr, info = env.step(actions[i])
            np.testing.assert_array_equal(vinfo["final_obs"][i].numpy(), o)
            assert info["mode"] == vinfo["mode"][i].item()
            if te or tr:
                ended += 1
                o, _ = env.reset()
            np.testing.assert_array_equal(vobs[i].numpy(), o)
        state = venv.task.state_observation(venv.state)
        expert.reset(state, vinfo["done"])
    assert ended >= n  # auto-resets were compared


def test_the_expert_records_pixels():
    data = rollout_expert(40, seed=0, task="tree_avoid_pixels")
    assert data.observations[0].dtype == np.uint8 and data.observations[0].shape[1:] == (32, 32, 3)
    success = np.mean([bool(i["success"][-1]) for i in data.infos])
    modes = {int(i["mode"][-1]) for i in data.infos}
    assert success > 0.9 and modes == {0, 1}


def test_the_pixel_experts_leave_a_camera_pixel_to_spare():
    """The camera's pixels are 4 m / 32 wide: the pixel tasks' expert swerves at least that much earlier."""
    from envs.collect import TASKS
    from envs.pixels import Camera

    pixel = Camera().metres / Camera().size
    state_line = TreeAvoidExpert().decision_y()
    camera_line = TreeAvoidExpert(config=TASKS["tree_avoid_pixels"].config()).decision_y()
    assert camera_line <= state_line - pixel
    assert TASKS["slalom_pixels"].config(noise=0.0).margin - TASKS["slalom"].config().margin >= pixel


def test_a_recorded_pixel_dataset_keeps_the_frames_as_drawn(tmp_path):
    """Minari would JPEG-encode the camera (lossy: the car's dot vanished); what loads must be what was drawn."""
    data = rollout_expert(3, seed=0, task="tree_avoid_pixels")
    write_minari(data, tmp_path / "px", "three episodes", seed=0, task="tree_avoid_pixels")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning of JPEG frames
        demos = load_demonstrations(tmp_path / "px")
    drawn = np.concatenate([o[:-1] for o in data.observations]).reshape(len(demos.obs), -1)  # (T, 32 * 32 * 3)
    assert demos.obs.dtype == torch.uint8
    np.testing.assert_array_equal(demos.obs.numpy(), drawn)
