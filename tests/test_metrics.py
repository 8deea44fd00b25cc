"""Metrics on hand-made rollouts whose answers are known."""

import math

import torch

from envs import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT, TreeAvoidVectorEnv
from lvm_policy.evaluate import Rollouts, rollout, summarize
from lvm_policy.metrics import energy_distance_1d, left_prob_by_offset, side_calibration_error, wilson_interval
from lvm_policy.policies.base import Policy, PolicyConfig


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert abs(lo - 0.2366) < 1e-4 and abs(hi - 0.7634) < 1e-4
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and abs(hi - 0.2775) < 1e-4
    lo, hi = wilson_interval(10_000, 10_000)
    assert hi > 0.99999 and 0.9995 < lo < 0.9997


def test_energy_distance_matches_pairwise_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, generator=g), torch.randn(200, generator=g) * 1.5 + 0.4
    brute = (
        2 * (x[:, None] - y[None]).abs().mean()
        - (x[:, None] - x[None]).abs().mean()
        - (y[:, None] - y[None]).abs().mean()
    )
    assert abs(energy_distance_1d(x, y) - float(brute)) < 1e-5
    assert energy_distance_1d(x, x) == 0.0
    assert math.isnan(energy_distance_1d(torch.tensor([float("nan")]), y))


def _rollouts(side, tree_x, success=None):
    n = len(side)
    side = torch.tensor(side)
    return Rollouts(
        success=torch.ones(n, dtype=torch.bool) if success is None else torch.tensor(success),
        collision=torch.zeros(n, dtype=torch.bool),
        off_road=torch.zeros(n, dtype=torch.bool),
        side=side,
        switches=torch.zeros(n, dtype=torch.int64),
        length=torch.full((n,), 50),
        x_at_tree=torch.zeros(n),
        tree_x=torch.tensor(tree_x),
    )


def test_always_left_has_left_fraction_one_and_the_expected_calibration_error():
    edges = torch.tensor([-0.15, 0.0, 0.15])
    # demonstrations: 20% left where the tree is shifted left, 80% where it is shifted right
    demo_side = torch.tensor([SIDE_LEFT] * 2 + [SIDE_RIGHT] * 8 + [SIDE_LEFT] * 8 + [SIDE_RIGHT] * 2)
    demo_tx = torch.tensor([-0.1] * 10 + [0.1] * 10)
    demo_probs = left_prob_by_offset(demo_side, demo_tx, edges)
    torch.testing.assert_close(demo_probs, torch.tensor([0.2, 0.8]))
    reference = {
        "left_fraction": 0.5,
        "offset_bin_edges": edges.tolist(),
        "left_prob_by_offset": demo_probs.tolist(),
        "x_at_tree": [0.0] * 20,
    }
    m = summarize(_rollouts([SIDE_LEFT] * 6, [-0.1, -0.05, -0.01, 0.02, 0.1, 0.12]), reference)
    assert m["left_fraction"] == 1.0
    assert abs(m["side_calibration_error"] - ((1 - 0.2) + (1 - 0.8)) / 2) < 1e-6
    # a perfectly calibrated policy has error 0; crashes before the tree do not count toward the side share
    m = summarize(
        _rollouts(
            [
                SIDE_LEFT,
                SIDE_RIGHT,
                SIDE_NONE,
                SIDE_LEFT,
                SIDE_LEFT,
                SIDE_LEFT,
                SIDE_LEFT,
                SIDE_RIGHT,
                SIDE_LEFT,
                SIDE_RIGHT,
                SIDE_RIGHT,
                SIDE_RIGHT,
            ],
            [-0.1] * 6 + [0.1] * 6,
        ),
        None,
    )
    assert abs(m["left_fraction"] - 6 / 11) < 1e-6
    assert side_calibration_error(torch.tensor([0.2, 0.8]), demo_probs) == 0.0


class _SteerLeft(Policy):
    """Steers hard left until 0.5 left of the tree, then holds: always passes on the left."""

    name = "_steer_left_test"
    config_class = PolicyConfig

    def __init__(self):
        super().__init__(3, 2, PolicyConfig())

    def _act(self, obs_n, deterministic):
        obs = obs_n * self.obs_std + self.obs_mean
        lateral = torch.where(obs[:, 0] > obs[:, 2] - 0.5, -1.0, 0.0)
        return torch.stack([lateral, torch.full_like(lateral, 0.5)], -1)


def test_rollout_of_a_scripted_left_policy():
    r = rollout(_SteerLeft(), episodes=200)
    m = summarize(r)
    assert m["success_rate"] == 1.0 and m["left_fraction"] == 1.0 and m["switches_per_episode"] == 0.0
    assert bool((r.x_at_tree < r.tree_x - 0.3).all())


def test_switches_count_a_change_of_side():
    env = TreeAvoidVectorEnv(num_envs=1)
    env.reset(seed=0)
    env.state = env.state._replace(x=torch.zeros(1), tree_x=torch.zeros(1), y=torch.full((1,), 1.6))
    # head clearly left, then clearly right, then left again, all within the approach window
    for lateral in (-1.0, -1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0):  # the car then hits the tree
        _, _, _, _, info = env.step(torch.tensor([[lateral, 1.0]]))
    assert int(info["switches"][0]) == 2
