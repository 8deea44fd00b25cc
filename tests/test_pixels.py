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
    assert obs.shape == (3, 32, 32) and obs.dtype == np.uint8
    red, green, blue = (obs[c] > 0 for c in range(3))
    assert red.any() and red[:16].any() and not red[24:].any()  # the (first) tree lies ahead of the car
    assert (green | red)[:, 16].all() and not green[:, 0].any()  # road (or tree) ahead of the car, off-road at the edge
    assert blue[24:28, 15:17].any()  # the car, just above the bottom edge (0.5 m behind is in view)
    assert env.unwrapped.metadata["mode_names"]


def test_each_pixel_holds_the_share_of_its_area_an_object_covers():
    """Antialiased: a pixel whose centre lies on an edge is half covered (128), one well inside is full (255)."""
    from envs.pixels import Camera, Scene, draw

    camera = Camera()  # 32 pixels over 4 m: column c's centre lies (c + 0.5) / 8 - 2 m from the car
    tree = torch.tensor([[[0.0, 2.0, 0.3]]])  # (1, 1, 3): x, y, radius
    # the car at x = 1/16: column 7's centre is the road's left edge (x = -1), column 16's is x = 0.125
    image = draw(camera, Scene(torch.tensor([0.0625]), torch.tensor([0.0]), tree, 1.0, 10.0))[0]  # (3, 32, 32)
    assert image.shape == (3, 32, 32)
    assert (image[1, 24:, 7] == 128).all() and (image[1, 24:, 8] == 255).all() and (image[1, :, 6] == 0).all()
    # the tree's centre (x = 0, y = 2): row 11 spans 2.0-2.125 m ahead of the car's 0.5 m behind the view
    row = 32 - int((2.0 + camera.behind) * 8) - 1
    assert image[0, row, 15] == 255 and image[1, row, 15] == 0
    assert 0 < image[0, row, 13] < 255  # the tree's left edge (x = -0.3) falls inside column 13
    # the car's dot (radius 0.12 m), 0.5 m above the bottom edge, centred on the corner of four pixels whose centres
    # lie 0.088 m away: each is (0.12 - 0.088) / 0.125 + 0.5 = 3/4 covered
    assert (image[2, 27:29, 15:17] == 192).all() and image[2, 26, 16] == 0


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
    assert data.observations[0].dtype == np.uint8 and data.observations[0].shape[1:] == (3, 32, 32)
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
