"""The rollout step that CUDA graphs replay: correct on the CPU, and on CUDA free of host syncs when present.

The CUDA-only tests (``python -m pytest -k cuda``) run on a GPU machine through ``benchmarks/gpu.sh``.
"""

import numpy as np
import pytest
import torch

from envs import TreeAvoidVectorEnv
from lvm_policy import list_policies, load_policy, make_policy
from lvm_policy.evaluate import rollout, summarize
from lvm_policy.policies.latent import LatentConfig
from lvm_policy.rollout import make_rollout_step
from lvm_policy.train import TrainConfig, train

# every class, and the lvm with one latent per episode (its held z is per-episode state that reset(mask) redraws)
CLASSES = [(name, None) for name in list_policies()] + [
    ("lvm", LatentConfig(latent_scope="episode", action_horizon=1, action_steps=1))
]
CLASS_IDS = [name if cfg is None else f"{name}-episode" for name, cfg in CLASSES]

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
@pytest.mark.parametrize("name, config", CLASSES, ids=CLASS_IDS)
def test_cuda_rollout_loop_never_syncs(name, config):
    policy = make_policy(name, 3, 2, config).cuda().eval()
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
@pytest.mark.parametrize("name", ["gmm", "lvm"])
def test_cuda_graph_and_eager_agree_in_distribution(name):
    torch.manual_seed(0)
    policy = make_policy(name, 3, 2).cuda()
    a = summarize(rollout(policy, "TreeAvoid-v0", 4000, device="cuda", cuda_graph=True))
    b = summarize(rollout(policy, "TreeAvoid-v0", 4000, device="cuda", cuda_graph=False))
    for k in ("success_rate", "collision_rate", "off_road_rate"):
        assert abs(a[k] - b[k]) < 0.05, k


@cuda
@pytest.mark.parametrize("task", ["TreeAvoid-v0", "Slalom-v0", "MultiGoal-v0"])
def test_cuda_graph_replay_equals_eager_for_a_deterministic_policy(task):
    """The twins draw their starts from a counter-based hash of (seed, episode) and the Gaussian's low-noise
    action is its mean, so a replayed graph must give exactly the eager rollout's episodes."""
    env = __import__("gymnasium").make(task)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    torch.manual_seed(1)
    policy = make_policy("gaussian", obs_dim, act_dim).cuda().eval()
    a = rollout(policy, task, 3000, seed=7, device="cuda", deterministic=True, cuda_graph=True)
    b = rollout(policy, task, 3000, seed=7, device="cuda", deterministic=True, cuda_graph=False)
    assert torch.equal(a.length, b.length) and torch.equal(a.ret, b.ret)
    for k in a.info:
        assert torch.equal(a.info[k], b.info[k]), k


@cuda
@pytest.mark.parametrize("name, config", CLASSES, ids=CLASS_IDS)
def test_cuda_training_evaluation_and_predict(small_demos, tmp_path, name, config):
    """Each class trains, evaluates (graph rollout) and answers SB3's predict with everything on the GPU."""
    cfg = TrainConfig(
        demos=str(small_demos),
        policy=name,
        out=tmp_path / name,
        steps=40,
        batch_size=256,
        eval_every=20,
        eval_episodes=200,
        final_eval_episodes=500,
        device="cuda",
        progress=False,
    )
    if config is not None:
        cfg.lvm = config
    metrics = train(cfg)
    assert 0.0 <= metrics["success_rate"] <= 1.0
    policy = load_policy(tmp_path / name / "best", "cuda")
    assert policy.device.type == "cuda"
    action, _ = policy.predict(np.zeros((5, 3), dtype=np.float32), episode_start=np.ones(5, dtype=bool))
    assert action.shape == (5, 2) and np.isfinite(action).all()
