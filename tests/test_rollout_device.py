"""The rollout step that CUDA graphs replay: correct on the CPU, and on CUDA free of host syncs when present."""

import pytest
import torch

from envs import TreeAvoidVectorEnv
from lvm_policy import make_policy
from lvm_policy.evaluate import rollout, summarize
from lvm_policy.rollout import make_rollout_step

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_graph_step_runs_eagerly_on_cpu_and_latches_first_episodes():
    torch.manual_seed(0)
    policy = make_policy("lvm", 3, 2).eval()
    env = TreeAvoidVectorEnv(num_envs=64)
    obs0, info0 = env.reset(seed=5)
    T = env.params.max_steps
    step, b = make_rollout_step(policy, env, obs0, info0, deterministic=False, record=4, steps=T)
    for _ in range(T):
        step()
    assert bool(b["finished"].all()) and int(b["t"]) == T
    assert bool((b["length"] >= 1).all()) and bool((b["length"] <= T).all())
    outcome = b["info.success"].long() + b["info.collision"].long() + b["info.off_road"].long()
    truncated = b["length"] == T
    assert bool(((outcome == 1) | truncated).all())  # exactly one ending per episode, or the time limit
    # modes latched at the end: a side where the tree row was crossed, -1 where it was not
    crossed = b["info.side"] != 0
    assert bool(((b["info.mode"] >= 0) == crossed).all()) and bool((b["info.outcome"][~crossed] == 0).all())
    # a recorded path starts at the first observation and stops (NaN) after its episode's end
    assert torch.equal(b["paths"][0], obs0[:4])
    n0 = int(b["length"][0])
    assert not bool(torch.isnan(b["paths"][n0, 0]).any()) and bool(torch.isnan(b["paths"][n0 + 1 :, 0]).all())


def test_cuda_graph_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA"):
        rollout(make_policy("gaussian", 3, 2), "TreeAvoid-v0", 8, cuda_graph=True)


@cuda
@pytest.mark.parametrize("name", ["lvm", "gmm", "autoregressive", "gaussian"])
def test_cuda_rollout_loop_never_syncs(name):
    policy = make_policy(name, 3, 2).cuda().eval()
    env = TreeAvoidVectorEnv(num_envs=256, device="cuda")
    obs0, info0 = env.reset(seed=0)
    step, _ = make_rollout_step(policy, env, obs0, info0, deterministic=False, record=0)
    step()  # first call allocates
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
def test_cuda_graph_and_eager_agree_in_distribution():
    torch.manual_seed(0)
    policy = make_policy("gmm", 3, 2).cuda()
    a = summarize(rollout(policy, "TreeAvoid-v0", 4000, device="cuda", cuda_graph=True))
    b = summarize(rollout(policy, "TreeAvoid-v0", 4000, device="cuda", cuda_graph=False))
    for k in ("success_rate", "collision_rate", "off_road_rate"):
        assert abs(a[k] - b[k]) < 0.05, k
