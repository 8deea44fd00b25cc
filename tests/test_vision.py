"""Camera observations: a user's image env (tests/user_env.py) recorded with Minari, kept as uint8, trained by
every class, evaluated through gymnasium's vector env, acted on through predict with the env's own observations,
saved and loaded."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from lvm_policy.policies import list_policies, load_policy, make_policy
from lvm_policy.vision import ImageSlot, image_slots, random_shift
from tests import user_env  # noqa: F401  (registers the camera envs)
from tests.test_user_env import record


@pytest.fixture(scope="module")
def camera_datasets(tmp_path_factory):
    """The fork's scripted controller (tests/test_user_env.py's recorder) seen through each camera env."""
    root = tmp_path_factory.mktemp("minari")
    envs = ("UserCameraFork-v0", "UserCameraDictFork-v0")
    return {e: record(root, f"camera/{e.lower()}", e, episodes=40) for e in envs}


def test_image_slots_find_each_layout():
    box_hwc = gym.spaces.Box(0, 255, (24, 24, 3), np.uint8)
    camera = gym.spaces.Box(0, 255, (1, 8, 6), np.uint8)
    space = gym.spaces.Dict({"a_time": gym.spaces.Box(0, 1, (2,)), "camera": camera})
    assert image_slots(box_hwc) == [ImageSlot(0, (24, 24, 3), True)]
    assert image_slots(space) == [ImageSlot(2, (1, 8, 6), False)]
    assert ImageSlot(2, (1, 8, 6), False).chw == (1, 8, 6)
    assert image_slots(gym.spaces.Box(-1, 1, (3,))) == []


def test_random_shift_moves_whole_images_within_the_pad():
    torch.manual_seed(0)
    img = torch.rand(64, 2, 10, 12)
    out = random_shift(img, 2)
    assert out.shape == img.shape
    # each output is the replicate-padded input cropped at one offset in [-2, 2]^2
    padded = torch.nn.functional.pad(img, (2, 2, 2, 2), mode="replicate")
    for b in range(8):
        crops = [padded[b, :, dy : dy + 10, dx : dx + 12] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[b], crop) for crop in crops), b
    assert not torch.equal(out, img)  # 64 draws of 25 offsets: some image moved


def test_camera_dataset_stays_uint8(camera_datasets):
    from lvm_policy.data import load_demonstrations

    with pytest.warns(UserWarning, match="JPEG-encoded"):  # recorded with Minari's default, as a user would
        only = load_demonstrations(camera_datasets["UserCameraFork-v0"])
    assert only.obs.dtype == torch.uint8 and only.obs.shape[1] == 24 * 24
    assert only.obs.element_size() * only.obs.numel() == only.obs.shape[0] * 576  # one byte per pixel
    with pytest.warns(UserWarning, match="JPEG-encoded"):  # an image inside a Dict too
        mixed = load_demonstrations(camera_datasets["UserCameraDictFork-v0"])
    assert mixed.obs.dtype == torch.float32 and mixed.obs.shape[1] == 1 + 576  # keys in order: camera, time
    assert float(mixed.obs[:, :576].max()) == 255.0


# two classes in the default run (one per-step density, the two-level lvm), every class with the slow checks
PIXEL_CLASSES = [n if n in ("gmm", "lvm") else pytest.param(n, marks=pytest.mark.slow) for n in list_policies()]


@pytest.mark.parametrize("name", PIXEL_CLASSES)
def test_every_class_trains_on_pixels_and_plays_through_the_vector_env(name, camera_datasets, tmp_path):
    from lvm_policy.train import TrainConfig, train

    cfg = TrainConfig(
        policy=name,
        demos=str(camera_datasets["UserCameraDictFork-v0"]),
        out=tmp_path / name,
        steps=4,
        batch_size=32,
        eval_every=0,
        final_eval_episodes=6,
        num_envs=2,
        vectorization="sync",
        device="cpu",
        progress=False,
    )
    metrics = train(cfg)
    assert metrics["engine"] == "gymnasium-sync" and metrics["episodes"] == 6
    policy = load_policy(tmp_path / name)
    assert policy.vision is not None and policy.image_slots == [ImageSlot(0, (1, 24, 24), False)]
    env = gym.make("UserCameraDictFork-v0")
    obs, _ = env.reset(seed=3)
    a1, _ = policy.predict(obs, deterministic=True, episode_start=np.array([True]))
    again = load_policy(tmp_path / name)
    a2, _ = again.predict(obs, deterministic=True, episode_start=np.array([True]))
    assert a1.shape == (2,) and np.all(np.abs(a1) <= 2.0)
    if name in ("gaussian", "act"):  # deterministic given the observation: the round trip is exact
        np.testing.assert_array_equal(a1, a2)


def test_pixels_and_their_float_copy_give_the_same_features():
    slots = [ImageSlot(0, (6, 6, 1), True)]
    policy = make_policy("gmm", 36 + 2, 2, image_slots=slots).eval()
    pixels = torch.randint(0, 256, (5, 38), dtype=torch.uint8)
    pixels[:, 36:] = 0
    torch.testing.assert_close(policy.normalize_obs(pixels), policy.normalize_obs(pixels.float()))
    assert policy.in_dim == 2 + 64  # two state numbers and one image's 64 features


@pytest.mark.parametrize("shift, moved", [(None, True), (2, True), (0, False)])
def test_image_shift_option_sets_the_training_augmentation(shift, moved):
    """image_shift None is DrQ's share (1 pixel on 6), 0 turns it off; evaluation never shifts."""
    from lvm_policy.policies.gmm import GMMConfig

    slots = [ImageSlot(0, (6, 6, 1), True)]
    policy = make_policy("gmm", 36, 2, GMMConfig(image_shift=shift), image_slots=slots)
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (64, 36), dtype=torch.uint8)
    train = policy.normalize_obs(pixels)
    assert (not torch.equal(train, policy.eval().normalize_obs(pixels))) == moved
    assert torch.equal(policy.normalize_obs(pixels), policy.normalize_obs(pixels))  # eval: deterministic
    with pytest.raises(ValueError, match="image_shift"):
        GMMConfig(image_shift=-1).validate()


def test_spatial_softmax_gives_the_coordinates_of_a_bright_spot():
    from lvm_policy.vision import SpatialSoftmax

    head = SpatialSoftmax(1, keypoints=1)
    with torch.no_grad():
        head.keypoints.weight.fill_(1.0)
        head.keypoints.bias.zero_()
    x = torch.zeros(1, 1, 5, 7)
    x[0, 0, 1, 5] = 50.0  # row 1 of 5 (y = -0.5), column 5 of 7 (x = 2/3)
    torch.testing.assert_close(head(x), torch.tensor([[2 / 3, -0.5]]), atol=1e-4, rtol=0)


def test_resnet18_encoder_is_resnet18_with_group_norm():
    """11.2M parameters (ResNet-18 without its classifier), GroupNorm only, a 4x4 map left at 32 pixels."""
    from lvm_policy.vision import ResNet18Encoder

    encoder = ResNet18Encoder((3, 32, 32), 64)
    assert 11.1e6 < sum(p.numel() for p in encoder.parameters()) < 11.3e6
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    assert encoder.trunk(torch.zeros(1, 3, 32, 32)).shape == (1, 512, 4, 4)


def test_patch_encoder_sees_a_4x4_grid_and_refuses_small_images():
    from lvm_policy.vision import PatchEncoder

    encoder = PatchEncoder((3, 32, 32), 64)
    assert encoder.conv[:-1](torch.zeros(2, 3, 32, 32)).shape == (2, 32, 4, 4)
    assert encoder(torch.zeros(2, 3, 32, 32)).shape == (2, 64)
    assert PatchEncoder((1, 24, 24), 8).conv[0].kernel_size == (3, 3)  # smaller images, smaller patches
    assert PatchEncoder((1, 6, 32), 8)(torch.zeros(1, 1, 6, 32)).shape == (1, 8)  # 1x1 patches
    with pytest.raises(ValueError, match="at least 8 pixels"):
        PatchEncoder((3, 6, 32), 64, patch=4)


@pytest.mark.parametrize("encoder", ["patch", "resnet18"])
def test_encoder_option_trains_and_round_trips(encoder, tmp_path):
    """Each vision_encoder option: a gradient step moves its first convolution; saved and loaded, a deterministic
    policy gives the same actions."""
    from lvm_policy.policies.gaussian import GaussianConfig

    slots = [ImageSlot(2, (32, 32, 3), True)]
    obs_dim = 2 + 32 * 32 * 3
    torch.manual_seed(0)
    policy = make_policy("gaussian", obs_dim, 2, GaussianConfig(vision_encoder=encoder), image_slots=slots)
    obs = torch.cat([torch.randn(8, 2), torch.randint(0, 256, (8, obs_dim - 2)).float()], 1)
    act = torch.rand(8, 2) * 2 - 1
    policy.fit_normalizer(obs, act)
    first = next(m for m in policy.vision.encoders[0].modules() if isinstance(m, torch.nn.Conv2d))
    before = first.weight.clone()
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    loss, _ = policy.loss(obs, act)
    loss.backward()
    opt.step()
    assert not torch.equal(before, first.weight)
    policy.eval().save(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    assert loaded.config.vision_encoder == encoder
    with torch.no_grad():
        torch.testing.assert_close(policy.act(obs[:3], deterministic=True), loaded.act(obs[:3], deterministic=True))


def test_a_policy_saved_before_the_encoder_option_loads_with_the_conv_encoder(tmp_path):
    """The default encoder changed from conv to patch: a saved policy without the option is a conv one (the
    gaussian: its low-noise action is its mean, where a mixture still draws a component)."""
    import json

    from lvm_policy.policies.gaussian import GaussianConfig

    slots = [ImageSlot(0, (3, 32, 32), False)]
    policy = make_policy("gaussian", 3 * 32 * 32, 2, GaussianConfig(vision_encoder="conv"), image_slots=slots).eval()
    policy.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "config.json").read_text())
    del meta["config"]["vision_encoder"], meta["config"]["image_shift"]
    (tmp_path / "p" / "config.json").write_text(json.dumps(meta))
    loaded = load_policy(tmp_path / "p")
    assert loaded.config.vision_encoder == "conv" and loaded.config.image_shift is None
    obs = torch.randint(0, 256, (4, 3 * 32 * 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(policy.act(obs, deterministic=True), loaded.act(obs, deterministic=True))
    assert make_policy("gaussian", 3 * 32 * 32, 2, image_slots=slots).config.vision_encoder == "patch"
