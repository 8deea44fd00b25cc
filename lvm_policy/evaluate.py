"""Evaluate a policy on any env: rollouts (either engine of :mod:`lvm_policy.rollout`), metrics, held-out NLL.

Every policy meets the same seeded episodes. The metrics compare with a *reference* computed from the
demonstrations the policy was trained on (:func:`demo_reference`, stored in a run's ``demo_stats.json``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from gymnasium.envs.registration import EnvSpec

from lvm_policy.data import Demonstrations
from lvm_policy.errors import ConfigError
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
from lvm_policy.policies.base import Policy
from lvm_policy.rollout import (
    Episodes,
    check_policy_fits,
    env_spec_of,
    make_torch_twin,
    rollout_gym_vector,
    rollout_torch_twin,
    time_limit,
)
from lvm_policy.temporal import Windows

EVAL_SEED = 1_000_000  # evaluation episodes never share seeds with the demonstrations (seeds 0 .. E-1)
CALIBRATION_BINS = 5


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


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
    env: str | EnvSpec,
    episodes: int = 10_000,
    seed: int = EVAL_SEED,
    deterministic: bool = False,
    device: str | torch.device = "cpu",
    record_paths: int = 0,
    engine: str = "auto",
    num_envs: int = 16,
    vectorization: str = "async",
    max_episode_steps: int | None = None,
    cuda_graph: bool | None = None,
) -> Episodes:
    """Play ``episodes`` episodes of ``env`` (an id or a spec) and return their outcomes (on the CPU).

    ``engine="auto"`` uses the env's torch twin when it has one (all episodes at once on ``device``), else
    gymnasium's vector env (``vectorization`` "async" or "sync", ``num_envs`` copies, the policy on ``device``);
    ``"gym"`` forces the latter. The policy's random draws come from a forked RNG seeded with ``seed``.
    """
    spec = env_spec_of(env)
    cap = time_limit(spec, max_episode_steps)
    device = torch.device(device)
    policy = policy.to(device)
    with evaluating(policy, seed):
        twin = make_torch_twin(spec, episodes, device) if engine == "auto" else None
        if twin is not None:
            try:
                check_policy_fits(policy, twin.single_observation_space, twin.single_action_space, spec.id)
                return rollout_torch_twin(policy, twin, episodes, seed, deterministic, cap, record_paths, cuda_graph)
            finally:
                twin.close()
        return rollout_gym_vector(
            policy, spec, episodes, seed, deterministic, cap, num_envs, vectorization, record_paths
        )


def demo_reference(demos: Demonstrations, mode_names: list[str] | None = None) -> dict[str, Any]:
    """What the metrics compare a policy with, from the demonstrations it was trained on (JSON-able).

    The number of modes comes from the env's ``metadata["mode_names"]`` when known, else from the data.
    """
    recorded = set(demos.recorded)
    num_modes = len(mode_names) if mode_names else (int(demos.mode.max()) + 1 if "mode" in recorded else 0)
    ref: dict[str, Any] = {
        "episodes": demos.num_episodes,
        "source": demos.source,
        "mode_names": list(mode_names) if mode_names else [str(i) for i in range(num_modes)],
        "mode_shares": mode_shares(demos.mode.cpu(), num_modes) if num_modes else [],
    }
    if num_modes and "context" in recorded:
        edges = context_bin_edges(demos.context.cpu(), CALIBRATION_BINS)
        ref["context_bin_edges"] = edges
        ref["mode_shares_by_context"] = mode_shares_by_context(demos.mode.cpu(), demos.context.cpu(), edges, num_modes)
    if "outcome" in recorded:
        ref["outcome"] = demos.outcome.cpu().tolist()
    return ref


@torch.no_grad()
def heldout_nll(
    policy: Policy,
    obs: torch.Tensor,
    act: torch.Tensor,
    episode: torch.Tensor | None = None,
    batch_size: int = 8192,
    seed: int = 0,
) -> float:
    """Mean negative log-likelihood of held-out actions, nats per action (IWAE bound for lvm; for a class that
    learns from whole episodes, its bound on each held-out episode's log-likelihood divided by its actions).

    With chunks (H > 1) it is the density of each whole chunk that lies inside its episode divided by H: nats
    per action of the chunk model, which is not the per-step NLL -log pi(a_t | s_t) of a per-step policy."""
    if obs.shape[0] == 0 or not policy.has_density:
        return float("nan")
    dev, c = policy.device, policy.config
    if episode is None:  # single transitions: each its own episode
        episode = torch.arange(obs.shape[0])
    obs, act, episode = obs.to(dev), act.to(dev), episode.to(dev)
    windows = Windows(episode, c.obs_horizon, c.action_horizon)
    with evaluating(policy, seed):
        total = torch.zeros((), dtype=torch.float64, device=dev)
        if policy.segments_per_batch() is not None:
            E, T = windows.step_index.shape
            per = max(1, batch_size // max(1, T))  # episodes per chunk
            actions = torch.zeros((), dtype=torch.float64, device=dev)
            for i in range(0, E, per):
                w_obs, w_act, mask = windows.gather_episodes(obs, act, torch.arange(i, min(i + per, E), device=dev))
                lp = policy.segment_log_prob(w_obs.flatten(2), w_act.flatten(2), mask)
                total += lp.double().sum()
                actions += mask.sum()
            return float(-total / actions)
        rows = torch.arange(obs.shape[0], device=dev)
        if c.action_horizon > 1:  # whole chunks only: a padded chunk's density is not a density of actions
            rows = rows[windows.act_mask.all(1)]
        for i in range(0, rows.shape[0], batch_size):
            w_obs, w_act, _ = windows.gather(obs, act, rows[i : i + batch_size])
            total += policy.log_prob(w_obs, w_act).double().sum()
    return float(-total / (rows.shape[0] * c.action_horizon))


def summarize(r: Episodes, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluation's metrics from per-episode outcomes and the demonstrations' reference.

    Always: episodes, mean_return, mean_episode_length; with info["success"]: success_rate, success_ci95; with
    info["mode"]: mode_shares, and against the reference demo_mode_shares, mode_tv, modes_covered,
    mode_calibration_error (with info["context"]); switches_per_episode, outcome_distance (energy distance of
    info["outcome"]); and for every other boolean flag of the info (TreeAvoid: collision, off_road) its rate.
    """
    n = r.num_episodes
    m: dict[str, Any] = {
        "episodes": n,
        "mean_return": float(r.ret.double().mean()),
        "mean_episode_length": float(r.length.double().mean()),
    }
    if r.success is not None:
        k = int(r.success.sum())
        m["success_rate"], m["success_ci95"] = k / n, list(wilson_interval(k, n))
    info, ref = r.info, reference or {}
    names = ref.get("mode_names") or r.mode_names or []
    if "mode" in info and names:
        M = len(names)
        m["mode_names"] = list(names)
        m["mode_shares"] = mode_shares(info["mode"], M)
        if ref.get("mode_shares"):
            demo = ref["mode_shares"]
            m["demo_mode_shares"] = demo
            m["mode_tv"] = total_variation(m["mode_shares"], demo)
            m["modes_covered"] = modes_covered(m["mode_shares"], demo)
            m["demo_modes"] = modes_covered(demo, demo)
        if "context" in info and ref.get("context_bin_edges"):
            by_bin = mode_shares_by_context(info["mode"], info["context"], ref["context_bin_edges"], M)
            m["mode_calibration_error"] = mode_calibration_error(by_bin, ref["mode_shares_by_context"])
    if "switches" in info:
        m["switches_per_episode"] = float(info["switches"].double().mean())
    if "outcome" in info and ref.get("outcome"):
        outcome = info["outcome"].double()
        if "mode" in info:  # read only where the episode chose a mode (the convention)
            outcome = torch.where(info["mode"] >= 0, outcome, torch.nan)
        m["outcome_distance"] = energy_distance_1d(outcome, torch.tensor(ref["outcome"]))
    for k, v in info.items():
        if k not in ("mode", "context", "outcome", "switches") and v.dtype == torch.bool:
            m[f"{k}_rate"] = float(v.double().mean())
    return m


def eval_score(metrics: dict[str, Any]) -> float:
    """Periodic-evaluation score that picks best/: the success rate (else the mean return; without rollouts the
    negative validation NLL), minus the part of the mode TV beyond 0.05 (a 1,000-episode estimate of a 50/50
    share carries about +-0.03).

    An evaluation in which no episode succeeds scores in (-2, -1), rising with its mean return: below any
    evaluation with a success, and ordered among its like by progress, where a dense reward measures it. Without
    this, a run that never succeeds kept its first checkpoint as best/ (every such evaluation tied)."""
    base = metrics.get("success_rate", metrics.get("mean_return", -metrics.get("nll", math.inf)))
    if not math.isfinite(base):  # no density and no rollouts: nothing to rank; training keeps its final weights
        return -math.inf
    ret = metrics.get("mean_return", math.nan)
    if "success_rate" in metrics and base == 0.0 and math.isfinite(ret):
        return -1.5 + 0.5 * ret / (1.0 + abs(ret))  # a monotone map of the return into (-2, -1)
    tv = metrics.get("mode_tv", 0.0)
    return base - (max(0.0, tv - 0.05) if math.isfinite(tv) else 1.0)


def evaluate(
    policy: Policy,
    env: str | EnvSpec | None,
    reference: dict[str, Any] | None = None,
    heldout: Demonstrations | None = None,
    episodes: int = 10_000,
    deterministic: bool = False,
    device: str | torch.device = "cpu",
    seed: int = EVAL_SEED,
    **rollout_options: Any,
) -> dict[str, Any]:
    """Roll out (when an env is given), summarise, and add the held-out NLL when held-out demonstrations are
    given. ``rollout_options`` go to :func:`rollout` (engine, num_envs, vectorization, max_episode_steps)."""
    metrics: dict[str, Any] = {}
    if env is not None:
        r = rollout(policy, env, episodes, seed, deterministic, device, **rollout_options)
        metrics = summarize(r, reference)
        metrics["engine"] = r.engine
    if heldout is not None:
        metrics["nll"] = heldout_nll(policy, heldout.obs, heldout.act, heldout.episode)
    return metrics
