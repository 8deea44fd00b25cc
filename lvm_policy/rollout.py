"""The two rollout engines: a task's batched torch twin, or gymnasium's own vector env for any other env.

Both play exactly ``episodes`` episodes from fixed seeds (the same episodes for every policy) and return one
:class:`Episodes` record: per episode its success, return, length and every scalar key of the env's info at
the episode's last step (mode, context, outcome, switches and the task's own flags).

- Torch twin (``gym.make_vec(id, N, vectorization_mode="vector_entry_point", device=...)`` returning tensors):
  every environment plays one episode; the step is in place on fixed buffers with no host synchronisation, so
  it can be replayed from a CUDA graph; an outcome is latched with ``torch.where`` at the episode's first end.
- Gymnasium vector env (``"async"`` or ``"sync"``): K environments, environment i seeded ``seed + i`` plays a
  fixed quota of ceil((N - i) / K) episodes, counted by start (as SB3's ``evaluate_policy`` does), so short
  episodes are never over-counted; one batched ``policy.act`` per vector step.
"""

from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode

from lvm_policy import spaces
from lvm_policy.errors import EnvError
from lvm_policy.policies.base import Policy

DEFAULT_MAX_EPISODE_STEPS = 1000  # for an env whose spec sets no time limit: every evaluation ends


@dataclass
class Episodes:
    """Per-episode outcomes, each (N,) on the CPU, in the order the episodes started."""

    success: torch.Tensor | None  # bool; None when the env reports no info["success"]
    ret: torch.Tensor  # float64 undiscounted return
    length: torch.Tensor  # int64 steps
    info: dict[str, torch.Tensor]  # the last step's scalar info values: mode, context, outcome, switches, ...
    mode_names: list[str] | None = None  # the env's metadata["mode_names"]
    paths: list[np.ndarray] = field(default_factory=list)  # flat observations (T+1, O) of the first episodes
    engine: str = ""

    @property
    def num_episodes(self) -> int:
        return int(self.ret.numel())


def env_spec_of(env: str | EnvSpec) -> EnvSpec:
    """An EnvSpec from an id (gymnasium's ``"module:Env-v0"`` form included) or a spec; EnvError if unknown."""
    if isinstance(env, EnvSpec):
        return env
    try:
        if ":" in env:  # gymnasium's "module:Env-v0": importing the module registers the env
            module, env = env.split(":", 1)
            importlib.import_module(module)
        return gym.spec(env)
    except Exception as exc:  # noqa: BLE001  unknown id, or its module cannot be imported
        raise EnvError(f"environment {env!r} cannot be made ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def time_limit(spec: EnvSpec, max_episode_steps: int | None) -> int:
    """The evaluation's step cap: the option, else the spec's time limit, else DEFAULT_MAX_EPISODE_STEPS."""
    if max_episode_steps is not None:
        return max_episode_steps
    return spec.max_episode_steps or DEFAULT_MAX_EPISODE_STEPS


def mode_names_of(env: Any) -> list[str] | None:
    names = getattr(env, "metadata", {}).get("mode_names")
    return list(names) if names is not None else None


def check_policy_fits(policy: Policy, observation_space: gym.Space, action_space: gym.Space, env_id: str) -> None:
    """EnvError when the policy's input or output size differs from the env's."""
    obs_dim, act_dim = spaces.flat_dim(observation_space), int(np.prod(action_space.shape))
    if policy.obs_dim != obs_dim or policy.act_dim != act_dim:
        raise EnvError(
            f"policy made for observations of size {policy.obs_dim} and actions of size {policy.act_dim} "
            f"({policy.env_id or 'unknown env'}); {env_id} has {obs_dim} and {act_dim}"
        )


# ---------------------------------------------------------------------------------------------------------
# Engine 1: the batched torch twin
# ---------------------------------------------------------------------------------------------------------
def make_torch_twin(spec: EnvSpec, num_envs: int, device: torch.device) -> Any | None:
    """The env's torch twin with ``num_envs`` environments on ``device``, or None if it has none."""
    if spec.vector_entry_point is None:
        return None
    try:
        env = gym.make_vec(spec, num_envs=num_envs, vectorization_mode="vector_entry_point", device=device)
    except TypeError:  # a vector env that takes no device is not a torch twin
        return None
    return env


def make_rollout_step(
    policy: Policy, env: Any, obs0: Any, info0: dict[str, Any], deterministic: bool, record: int = 0, steps: int = 0
):
    """A step function that advances every environment by one step, entirely in place on fixed buffers.

    Everything it reads and writes lives in preallocated tensors (the env's state, the observation, the latched
    outcomes, a step counter), nothing is read back to the host and there is no branch on a tensor value, so
    the same function can be called eagerly or captured once in a CUDA graph and replayed. The latched keys are
    the (N,) tensors of the env's reset info (the mode convention: the same keys at reset and on every step).
    With ``record`` = P > 0 the flat observations of the first P episodes are kept in ``buffers["paths"]``
    (steps + 1, P, O), NaN after each episode's end. Returns (step, buffers).
    """
    space = env.single_observation_space
    flat0 = spaces.flatten_batch(space, obs0)  # (N, O)
    N, device = flat0.shape[0], flat0.device
    keys = [k for k, v in info0.items() if torch.is_tensor(v) and v.shape == (N,)]
    b: dict[str, torch.Tensor] = {f"info.{k}": info0[k].clone() for k in keys}
    b.update(
        obs=flat0.clone(),
        finished=torch.zeros(N, dtype=torch.bool, device=device),
        ret=torch.zeros(N, dtype=torch.float64, device=device),
        length=torch.zeros(N, dtype=torch.int64, device=device),
        t=torch.zeros(1, dtype=torch.int64, device=device),
    )
    P = min(record, N)

    def step() -> None:
        action = policy.act(b["obs"], deterministic=deterministic)  # (N, A)
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated | truncated
        first = done & ~b["finished"]  # (N,) episodes ending now for the first time
        for k in keys:
            torch.where(first, info[k], b[f"info.{k}"], out=b[f"info.{k}"])
        b["ret"].add_(torch.where(b["finished"], 0.0, reward.double()))
        b["t"].add_(1)
        torch.where(first, b["t"], b["length"], out=b["length"])
        if P:
            last = spaces.flatten_batch(space, info.get("final_obs", obs))[:P]  # (P, O) the episode's own last
            row = torch.where(b["finished"][:P, None], torch.nan, last)
            b["paths"].index_copy_(0, b["t"], row[None])
        b["finished"].logical_or_(done)
        b["obs"].copy_(spaces.flatten_batch(space, obs))
        policy.reset(done)  # per-episode state (a held latent) must not leak into the next episode

    if P:
        b["paths"] = torch.full((steps + 1, P, flat0.shape[1]), float("nan"), device=device)
        b["paths"][0] = flat0[:P]
    return step, b


def capture_cuda_graph(step, warmup: int = 3) -> torch.cuda.CUDAGraph:
    """Run ``warmup`` real calls of ``step`` eagerly on a side stream (they warm up the allocator and cuBLAS),
    then record one call into a CUDA graph (recorded, not executed) and return it for replays."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def replay_in_cuda_graph(step, steps: int, warmup: int = 3) -> None:
    """Run ``steps`` calls of ``step``: ``warmup`` eagerly, the rest as replays of one captured call. No host
    synchronisation in between."""
    warmup = min(warmup, steps)
    if steps - warmup <= 0:
        for _ in range(steps):
            step()
        return
    graph = capture_cuda_graph(step, warmup)
    for _ in range(steps - warmup):
        graph.replay()


def rollout_torch_twin(
    policy: Policy,
    env: Any,
    episodes: int,
    seed: int,
    deterministic: bool,
    cap: int,
    record_paths: int = 0,
    cuda_graph: bool | None = None,
    check_every: int = 10,
) -> Episodes:
    """Play one episode in each of the twin's environments (``episodes`` of them) for at most ``cap`` steps."""
    device = torch.device(env.device)
    use_graph = (device.type == "cuda") if cuda_graph is None else cuda_graph
    if use_graph and device.type != "cuda":
        raise ValueError("cuda_graph=True needs a CUDA device")
    obs0, info0 = env.reset(seed=seed)
    policy.reset()
    step, b = make_rollout_step(policy, env, obs0, info0, deterministic, record_paths, cap)
    # One graph captured for the whole rollout (its warm-up calls are real steps), replayed in chunks; between
    # chunks the host asks whether every episode has ended (one sync per chunk, none inside it).
    run_step, done_steps = step, 0
    if use_graph and cap > 3:
        run_step, done_steps = capture_cuda_graph(step, warmup=3).replay, 3
    while done_steps < cap:
        chunk = min(50 if use_graph else check_every, cap - done_steps)
        for _ in range(chunk):
            run_step()
        done_steps += chunk
        if bool(b["finished"].all()):
            break
    b["length"].copy_(torch.where(b["finished"], b["length"], done_steps))  # capped episodes ran the whole cap
    info = {k[5:]: v.cpu() for k, v in b.items() if k.startswith("info.")}
    success = info.pop("success", None)
    paths = []
    if record_paths:
        p = b["paths"].cpu()
        for i in range(p.shape[1]):
            keep = ~torch.isnan(p[:, i, 0])
            paths.append(p[keep, i].numpy())
    return Episodes(
        success=None if success is None else success.bool(),
        ret=b["ret"].cpu(),
        length=b["length"].cpu(),
        info=info,
        mode_names=mode_names_of(env),
        paths=paths,
        engine="torch",
    )


# ---------------------------------------------------------------------------------------------------------
# Engine 2: gymnasium's vector env, for any env
# ---------------------------------------------------------------------------------------------------------
def _scalar(v: Any) -> float | None:
    if isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating)):
        return float(v)
    if isinstance(v, np.ndarray) and v.size == 1 and v.dtype.kind in "biuf":
        return float(v.reshape(()))
    return None


def _item(batched: Any, i: int) -> Any:
    """Entry i of a batched observation (an array, or a dict of arrays)."""
    return {k: _item(v, i) for k, v in batched.items()} if isinstance(batched, dict) else batched[i]


def _make_single(spec: EnvSpec, cap: int) -> gym.Env:
    return gym.make(spec, max_episode_steps=cap)


def make_gym_vector(spec: EnvSpec, num_envs: int, vectorization: str, cap: int) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``gym.make(spec)`` capped at ``cap`` steps, auto-reset in the same step."""
    fns = [functools.partial(_make_single, spec, cap) for _ in range(num_envs)]
    cls = gym.vector.AsyncVectorEnv if vectorization == "async" else gym.vector.SyncVectorEnv
    return cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)


def rollout_gym_vector(
    policy: Policy,
    spec: EnvSpec,
    episodes: int,
    seed: int,
    deterministic: bool,
    cap: int,
    num_envs: int = 16,
    vectorization: str = "async",
    record_paths: int = 0,
) -> Episodes:
    """Play ``episodes`` episodes through gymnasium's vector env (see the module docstring for the counting)."""
    K = max(1, min(num_envs, episodes))
    level = gym.logger.min_level
    gym.logger.min_level = gym.logger.ERROR + 10  # a failing worker is reported once, below, not as a traceback
    quota = np.array([(episodes + K - 1 - i) // K for i in range(K)])  # env i plays episodes i, i + K, ...
    venv = None
    try:
        venv = make_gym_vector(spec, K, vectorization, cap)
        space = venv.single_observation_space
        check_policy_fits(policy, space, venv.single_action_space, spec.id)
        obs, info = venv.reset(seed=[seed + i for i in range(K)])
        keys = [k for k in info if not k.startswith("_") and _scalar(info[k][0]) is not None]
        kinds = {k: np.asarray(info[k]).dtype.kind for k in keys}
        mode_names = mode_names_of(venv)
        policy.reset()
        count = np.zeros(K, dtype=np.int64)
        ret, length = np.zeros(K), np.zeros(K, dtype=np.int64)
        records: list[dict[str, Any]] = [None] * episodes  # type: ignore[list-item]
        P = min(record_paths, episodes)  # paths of episodes 0 .. P-1 (env i plays episodes i, i + K, ...)
        flat_obs = spaces.flatten_batch(space, obs)  # (K, O), once per step
        current = [[flat_obs[i]] for i in range(K)]
        recorded: dict[int, np.ndarray] = {}
        device = policy.device
        while (count < quota).any():
            flat = torch.as_tensor(flat_obs, dtype=torch.float32, device=device)
            with torch.no_grad():
                action = policy.act(flat, deterministic=deterministic).cpu().numpy()
            obs, reward, terminated, truncated, info = venv.step(action.astype(venv.single_action_space.dtype))
            flat_obs = spaces.flatten_batch(space, obs)
            ret += reward
            length += 1
            done = terminated | truncated
            final = info.get("final_info", {})
            for i in range(K if P else 0):  # the paths of the first P episodes, for figures
                if i + K * count[i] >= P:
                    continue
                if done[i]:  # the episode's own last observation (obs already holds the next episode's)
                    last = spaces.add_batch_dim(space, _item(info["final_obs"], i))
                    current[i].append(spaces.flatten_batch(space, last)[0])
                    recorded[i + K * count[i]] = np.stack(current[i])
                    current[i] = [flat_obs[i]]  # the next episode's first observation
                else:
                    current[i].append(flat_obs[i])
            for i in np.nonzero(done)[0]:
                if count[i] < quota[i]:
                    values = {k: _scalar(final[k][i]) for k in keys if k in final and final[f"_{k}"][i]}
                    records[i + K * count[i]] = dict(values, ret=ret[i], length=length[i])
                count[i] += 1
                ret[i], length[i] = 0.0, 0
            policy.reset(torch.as_tensor(done, device=device))
    except EnvError:
        raise
    except Exception as exc:  # noqa: BLE001  anything the env raises, in this process or in a worker
        raise EnvError(f"environment {spec.id} failed ({type(exc).__name__}: {_first_line(exc)})") from None
    finally:
        if venv is not None:
            venv.close(**({"terminate": True} if vectorization == "async" else {}))
        gym.logger.min_level = level
    info_out: dict[str, torch.Tensor] = {}
    for k in keys:
        values = torch.tensor([r.get(k, math.nan) for r in records], dtype=torch.float64)
        kind = kinds[k]  # back to the env's own type: flags stay flags, ids stay integers
        info_out[k] = (
            values.nan_to_num(0) > 0.5 if kind == "b" else values.nan_to_num(-1).long() if kind in "iu" else values
        )
    success = info_out.pop("success", None)
    return Episodes(
        success=success,
        ret=torch.tensor([r["ret"] for r in records], dtype=torch.float64),
        length=torch.tensor([r["length"] for r in records], dtype=torch.int64),
        info=info_out,
        mode_names=mode_names,
        paths=[recorded[e] for e in sorted(recorded)],  # in episode order, like the other per-episode fields
        engine=f"gymnasium-{vectorization}",
    )
