"""Metrics on hand-made episodes whose answers are known."""

import math

import torch

from envs import TreeAvoidVectorEnv
from lvm_policy.evaluate import rollout, summarize
from lvm_policy.metrics import (
    context_bin_edges,
    energy_distance_1d,
    mode_calibration_error,
    mode_shares,
    mode_shares_by_context,
    modes_covered,
    total_variation,
    wilson_interval,
)
from lvm_policy.policies.base import Policy, PolicyConfig
from lvm_policy.rollout import Episodes


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


def test_mode_shares_tv_and_coverage():
    mode = torch.tensor([0, 0, 1, -1, 2, 0, 1, 1, -1, 0])  # 4 / 3 / 1 of 8 known
    assert mode_shares(mode, 3) == [0.5, 0.375, 0.125]
    assert total_variation([0.5, 0.375, 0.125], [0.5, 0.5, 0.0]) == 0.125
    assert total_variation([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert math.isnan(total_variation(mode_shares(torch.tensor([-1]), 2), [0.5, 0.5]))
    # demos 0.6 / 0.3 / 0.095 / 0.005: the last is below 1% and not counted; the policy's 0.02 for mode 2 is
    # under a quarter of 0.095
    demos = [0.6, 0.3, 0.095, 0.005]
    assert modes_covered([0.7, 0.28, 0.02, 0.0], demos) == 2
    assert modes_covered([0.6, 0.3, 0.1, 0.0], demos) == 3
    assert modes_covered(demos, demos) == 3


def test_calibration_by_context_bins():
    # demonstrations: 20% mode 0 where the context is low, 80% where it is high
    demo_mode = torch.tensor([0] * 2 + [1] * 8 + [0] * 8 + [1] * 2)
    demo_ctx = torch.tensor([-0.1] * 10 + [0.1] * 10)
    edges = context_bin_edges(demo_ctx, 2)
    demo_by_bin = mode_shares_by_context(demo_mode, demo_ctx, edges, 2)
    assert demo_by_bin == [[0.2, 0.8], [0.8, 0.2]]
    # always mode 0: TV 0.8 in the first bin, 0.2 in the second
    ctx = torch.tensor([-0.1, -0.05, -0.01, 0.02, 0.1, 0.12])
    policy_by_bin = mode_shares_by_context(torch.zeros(6, dtype=torch.long), ctx, edges, 2)
    assert abs(mode_calibration_error(policy_by_bin, demo_by_bin) - 0.5) < 1e-9
    assert mode_calibration_error(demo_by_bin, demo_by_bin) == 0.0


def _episodes(mode, success, context):
    n = len(mode)
    return Episodes(
        success=torch.tensor(success),
        ret=torch.ones(n, dtype=torch.float64),
        length=torch.full((n,), 50),
        info={
            "mode": torch.tensor(mode),
            "context": torch.tensor(context),
            "collision": ~torch.tensor(success),
        },
        mode_names=["left", "right"],
    )


def test_summary_keys_from_hand_made_episodes():
    reference = {
        "mode_names": ["left", "right"],
        "mode_shares": [0.5, 0.5],
        "context_bin_edges": [-0.2, 0.0, 0.2],
        "mode_shares_by_context": [[0.2, 0.8], [0.8, 0.2]],
    }
    # crashes (mode -1) count in the success rate, not in the mode shares
    m = summarize(_episodes([0, 0, 0, -1], [True, True, True, False], [-0.1, 0.1, 0.1, 0.0]), reference)
    assert m["success_rate"] == 0.75 and m["collision_rate"] == 0.25 and m["mean_return"] == 1.0
    assert m["mode_shares"] == [1.0, 0.0] and m["mode_tv"] == 0.5 and m["modes_covered"] == 1
    assert m["demo_modes"] == 2
    assert abs(m["mode_calibration_error"] - (0.8 + 0.2) / 2) < 1e-9
    # an env without the convention still gets success-free generic keys
    bare = Episodes(success=None, ret=torch.tensor([1.0, 3.0]), length=torch.tensor([5, 7]), info={})
    assert summarize(bare) == {"episodes": 2, "mean_return": 2.0, "mean_episode_length": 6.0}


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


def test_rollout_of_a_scripted_left_policy_in_both_engines():
    for engine, n in (("auto", 200), ("gym", 40)):
        r = rollout(_SteerLeft(), "TreeAvoid-v0", episodes=n, engine=engine, vectorization="sync", num_envs=7)
        m = summarize(r)
        assert r.num_episodes == n
        assert m["success_rate"] == 1.0 and m["mode_shares"] == [1.0, 0.0] and m["switches_per_episode"] == 0.0
        assert bool((r.info["outcome"] < r.info["context"] - 0.3).all())  # crossed well left of the tree


def test_switches_count_a_change_of_side():
    env = TreeAvoidVectorEnv(num_envs=1)
    env.reset(seed=0)
    env.state = env.state._replace(x=torch.zeros(1), tree_x=torch.zeros(1), y=torch.full((1,), 1.6))
    # head clearly left, then clearly right, then left again, all within the approach window
    for lateral in (-1.0, -1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0):  # the car then hits the tree
        _, _, _, _, info = env.step(torch.tensor([[lateral, 1.0]]))
    assert int(info["switches"][0]) == 2


def test_tv_noise_floor_matches_the_binomial_value():
    from lvm_policy.metrics import tv_noise_floor

    # two equal modes: TV = |p_a - p_b| with p_a - p_b ~ N(0, 0.25/900 + 0.25/10000): E = sd * sqrt(2/pi)
    mean, p95 = tv_noise_floor([0.5, 0.5], 900, 10_000, draws=400)
    expected = math.sqrt(0.25 / 900 + 0.25 / 10_000) * math.sqrt(2 / math.pi)
    assert abs(mean - expected) < 0.15 * expected and p95 > mean


def test_eval_score_ranks_failing_evaluations_by_return_below_any_success():
    from lvm_policy.evaluate import eval_score

    def fail(ret: float) -> dict:
        return dict(success_rate=0.0, mode_tv=math.nan, mean_return=ret)

    # no success anywhere: later, longer-driving checkpoints must beat the first (they used to tie at -1)
    assert eval_score(fail(1.79)) < eval_score(fail(5.46)) < eval_score(fail(60.0)) < -1.0
    assert eval_score(fail(-3.0)) > -2.0
    # one success beats every failure, however far the failures drove; the success ranking itself is unchanged
    rare = dict(success_rate=0.001, mode_tv=1.0, mean_return=0.1)
    assert eval_score(rare) > eval_score(fail(1e6))
    assert eval_score(dict(success_rate=1.0, mode_tv=0.03, mean_return=1.0)) == 1.0
    assert eval_score(dict(success_rate=0.9, mode_tv=0.15, mean_return=1.0)) == 0.9 - 0.1
    assert eval_score(dict(nll=2.0)) == -2.0 and eval_score({}) == -math.inf
