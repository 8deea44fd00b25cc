"""Batched rollouts of a policy in the torch TreeAvoid twin, and the metrics of the package.

Every environment of the batch plays exactly one episode, from fixed seeds, so two policies meet the same
episodes. The loop runs the time limit with fixed shapes and no host synchronisation: an episode's outcome is
recorded with ``torch.where`` at its first ``done``; what the environment does after its autoreset is ignored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from envs.tree_avoid import TreeAvoidParams, TreeAvoidVectorEnv
from lvm_policy.data import Demonstrations
from lvm_policy.errors import CheckpointError, ConfigError
from lvm_policy.metrics import (
    energy_distance_1d,
    left_fraction,
    left_prob_by_offset,
    side_calibration_error,
    wilson_interval,
)
from lvm_policy.policies.base import Policy

EVAL_SEED = 1_000_000  # evaluation episodes never share seeds with the demonstrations (seeds 0 .. E-1)
CALIBRATION_BINS = 5


@dataclass
class Rollouts:
    """Per-episode outcomes of a batched rollout, each (N,)."""

    success: torch.Tensor
    collision: torch.Tensor
    off_road: torch.Tensor
    side: torch.Tensor
    switches: torch.Tensor
    length: torch.Tensor
    x_at_tree: torch.Tensor
    tree_x: torch.Tensor
    paths: torch.Tensor | None = None  # (T+1, P, 2) x, y of the first P episodes when recorded


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


def check_compatible(policy: Policy, params: TreeAvoidParams) -> None:
    if policy.obs_dim != params.obs_dim or policy.act_dim != 2:
        raise CheckpointError(
            f"policy made for observations of size {policy.obs_dim} and actions of size {policy.act_dim} "
            f"({policy.env_id or 'unknown env'}); TreeAvoid-v0 has {params.obs_dim} and 2"
        )


@contextlib.contextmanager
def evaluating(policy: Policy, seed: int) -> Iterator[None]:
    """Eval mode and a forked RNG seeded with ``seed`` for the block; the policy's mode and the caller's random
    state are restored afterwards, so evaluation is reproducible and never perturbs training."""
    was_training = policy.training
    policy.eval()
    devices = [policy.device] if policy.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        if was_training:
            policy.train()


@torch.no_grad()
def rollout(
    policy: Policy,
    episodes: int = 10_000,
    seed: int = EVAL_SEED,
    deterministic: bool = False,
    device: str | torch.device = "cpu",
    record_paths: int = 0,
    params: TreeAvoidParams | None = None,
    cuda_graph: bool | None = None,
) -> Rollouts:
    """Play ``episodes`` episodes in parallel and return their outcomes (on the CPU).

    The policy's random draws come from a forked RNG seeded with ``seed``: evaluation is reproducible and
    leaves the caller's random state untouched (training resumes identically). ``cuda_graph`` (default: on for
    CUDA) captures one environment step plus the policy's action in a CUDA graph and replays it; the same step
    function runs eagerly otherwise.
    """
    params = params or TreeAvoidParams()
    check_compatible(policy, params)
    device = torch.device(device)
    use_graph = (device.type == "cuda") if cuda_graph is None else cuda_graph
    if use_graph and device.type != "cuda":
        raise ValueError("cuda_graph=True needs a CUDA device")
    policy = policy.to(device)
    env = TreeAvoidVectorEnv(num_envs=episodes, device=device, params=params)
    with evaluating(policy, seed):
        obs0, _ = env.reset(seed=seed)
        policy.reset()
        step, buffers = make_rollout_step(policy, env, obs0, deterministic, record_paths)
        T = params.max_steps
        if use_graph:
            replay_in_cuda_graph(step, T)
        else:
            # On the CPU there is no device to wait for, so asking whether every episode has ended costs
            # nothing and saves the steps after the last one ends (about half of the time limit).
            for t in range(T):
                if t % 10 == 0 and t > 0 and bool(buffers["finished"].all()):
                    break
                step()
    out = {k: buffers[k].cpu() for k in ("success", "collision", "off_road", "side", "switches", "x_at_tree", "length")}
    paths = buffers.get("paths")
    return Rollouts(**out, tree_x=obs0[:, 2].cpu(), paths=None if paths is None else paths.cpu())


def make_rollout_step(
    policy: Policy, env: TreeAvoidVectorEnv, obs0: torch.Tensor, deterministic: bool, record_paths: int = 0
):
    """A step function that advances every environment by one step, entirely in place on fixed buffers.

    Everything it reads and writes lives in preallocated tensors (the env state, the observation, the latched
    outcomes, a step counter), nothing is read back to the host and there is no branch on a tensor value, so
    the same function can be called eagerly or captured once in a CUDA graph and replayed. Returns
    (step, buffers); an episode's outcome is latched with ``torch.where`` at its first end.
    """
    N, T, device = env.num_envs, env.params.max_steps, env.device
    b: dict[str, torch.Tensor] = {
        "obs": obs0.clone(),
        "finished": torch.zeros(N, dtype=torch.bool, device=device),
        "success": torch.zeros(N, dtype=torch.bool, device=device),
        "collision": torch.zeros(N, dtype=torch.bool, device=device),
        "off_road": torch.zeros(N, dtype=torch.bool, device=device),
        "side": torch.zeros(N, dtype=torch.int64, device=device),
        "switches": torch.zeros(N, dtype=torch.int64, device=device),
        "x_at_tree": torch.full((N,), float("nan"), device=device),
        "length": torch.zeros(N, dtype=torch.int64, device=device),
        "t": torch.zeros(1, dtype=torch.int64, device=device),
    }
    P = min(record_paths, N)
    if P:
        b["paths"] = torch.full((T + 1, P, 2), float("nan"), device=device)
        b["paths"][0] = obs0[:P, :2]
    # The env updates its state tensors in place (autoreset_state with out=), so they are the graph's fixed inputs.
    latched = ("success", "collision", "off_road", "side", "switches", "x_at_tree")

    def step() -> None:
        action = policy.act(b["obs"], deterministic=deterministic)  # (N, 2)
        obs, _, _, _, info = env.step(action)
        done = info["done"]
        first = done & ~b["finished"]  # (N,) episodes ending now for the first time
        for k in latched:
            torch.where(first, info[k], b[k], out=b[k])
        b["t"].add_(1)
        torch.where(first, b["t"], b["length"], out=b["length"])
        if P:
            row = b["paths"].index_select(0, b["t"])[0]  # (P, 2)
            new = torch.where(b["finished"][:P, None], row, info["final_obs"][:P, :2])
            b["paths"].index_copy_(0, b["t"], new[None])
        b["finished"].logical_or_(done)
        b["obs"].copy_(obs)
        policy.reset(done)  # per-episode state (a held latent) must not leak into the next episode

    return step, b


def replay_in_cuda_graph(step, steps: int, warmup: int = 3) -> None:
    """Run ``steps`` calls of ``step``: a few eagerly (real steps that also warm up the allocator and
    cuBLAS), one captured into a CUDA graph, the rest as replays of it. No host synchronisation in between."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(min(warmup, steps)):
            step()
    torch.cuda.current_stream().wait_stream(side)
    remaining = steps - min(warmup, steps)
    if remaining <= 0:
        return
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()  # recorded, not executed
    for _ in range(remaining):
        graph.replay()


def demo_reference(demos: Demonstrations, params: TreeAvoidParams | None = None) -> dict[str, Any]:
    """What the metrics compare a policy with, computed from the demonstrations it was trained on (JSON-able)."""
    params = params or TreeAvoidParams()
    edges = torch.linspace(-params.tree_offset_range, params.tree_offset_range, CALIBRATION_BINS + 1)
    return {
        "left_fraction": left_fraction(demos.side.cpu()),
        "offset_bin_edges": edges.tolist(),
        "left_prob_by_offset": left_prob_by_offset(demos.side.cpu(), demos.tree_x.cpu(), edges).tolist(),
        "x_at_tree": demos.x_at_tree.cpu().tolist(),
        "episodes": demos.num_episodes,
        "source": demos.source,
    }


@torch.no_grad()
def heldout_nll(policy: Policy, obs: torch.Tensor, act: torch.Tensor, batch_size: int = 8192, seed: int = 0) -> float:
    """Mean negative log-likelihood of held-out actions, nats per action (IWAE bound for lvm)."""
    if obs.shape[0] == 0:
        return float("nan")
    dev = policy.device
    with evaluating(policy, seed):
        total = torch.zeros((), dtype=torch.float64, device=dev)
        for i in range(0, obs.shape[0], batch_size):
            total += policy.log_prob(obs[i : i + batch_size].to(dev), act[i : i + batch_size].to(dev)).double().sum()
    return float(-total / obs.shape[0])


def summarize(r: Rollouts, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluation keys (success_rate, success_ci95, ..., path_distance) from rollouts and the demo reference."""
    n = int(r.success.numel())
    k = int(r.success.sum())
    metrics: dict[str, Any] = {
        "episodes": n,
        "success_rate": k / n,
        "success_ci95": list(wilson_interval(k, n)),
        "collision_rate": float(r.collision.float().mean()),
        "off_road_rate": float(r.off_road.float().mean()),
        "mean_episode_length": float(r.length.float().mean()),
        "left_fraction": left_fraction(r.side),
        "switches_per_episode": float(r.switches.float().mean()),
    }
    if reference is not None:
        edges = torch.tensor(reference["offset_bin_edges"])
        demo_probs = torch.tensor(reference["left_prob_by_offset"], dtype=torch.float32)
        metrics["demo_left_fraction"] = reference["left_fraction"]
        metrics["side_calibration_error"] = side_calibration_error(
            left_prob_by_offset(r.side, r.tree_x, edges), demo_probs
        )
        metrics["path_distance"] = energy_distance_1d(r.x_at_tree, torch.tensor(reference["x_at_tree"]))
    return metrics


def evaluate_policy_batched(
    policy: Policy,
    reference: dict[str, Any] | None = None,
    heldout: Demonstrations | None = None,
    episodes: int = 10_000,
    deterministic: bool = False,
    device: str | torch.device = "cpu",
    seed: int = EVAL_SEED,
) -> dict[str, Any]:
    """Roll out, summarise, and add the held-out NLL when held-out demonstrations are given."""
    metrics = summarize(rollout(policy, episodes, seed, deterministic, device), reference)
    if heldout is not None:
        metrics["nll"] = heldout_nll(policy, heldout.obs, heldout.act)
    return metrics
