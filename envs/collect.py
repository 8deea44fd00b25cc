"""Collect a task's expert demonstrations and write them as a Minari dataset.

A task with a batched twin plays there: every environment of the batch plays exactly one episode; the whole
batch runs for the time limit with fixed shapes, and each environment's first episode is cut out afterwards.
A task without one (the MuJoCo mazes) plays its episodes one after another in its single gymnasium env,
observations recorded as the env gives them (a Dict stays a Dict). The dataset is written to a
temporary folder beside the destination and renamed into place, so an interrupted collection never leaves
something that looks like a complete dataset.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.experts import (
    ExpertConfig,
    MultiGoalExpert,
    MultiGoalExpertConfig,
    SlalomExpert,
    SlalomExpertConfig,
    TreeAvoidExpert,
)
from envs.point_maze import LAYOUTS, MazeExpert, MazeExpertConfig

DATA_FORMAT = "hdf5"
# The state experts reach their passing line 0.1 m past the tree's front row, which leaves a policy no step to
# spare. A camera cannot place the car that finely (its pixels are 12.5 cm), so the pixel tasks' experts reach
# it 0.05 m before the front row: 0.15 m earlier, a little more than a pixel and one step at full speed. Measured
# (gmm, 2,000 steps, 500 episodes): success 0.88 with the state experts' margin, 0.96 with this one.
PIXEL_MARGIN = 0.05
DEMOS_ROOT = Path(__file__).resolve().parent.parent / "demos"


@dataclass(frozen=True)
class Task:
    """A task of the package as collection sees it: its env, its expert and where its datasets go."""

    env_id: str
    expert: Callable[..., Any]  # (params or layout, config, seed) -> expert
    config: Callable[..., Any]  # expert options -> config
    algorithm: str
    batched: bool = True  # played in the batched twin (expert: reset(obs), act(obs) on tensors), else one by one


TASKS = {
    "tree_avoid": Task("TreeAvoid-v0", TreeAvoidExpert, ExpertConfig, "scripted-bimodal-expert"),
    "slalom": Task("Slalom-v0", SlalomExpert, SlalomExpertConfig, "scripted-slalom-expert"),
    "multigoal": Task("MultiGoal-v0", MultiGoalExpert, MultiGoalExpertConfig, "scripted-multigoal-expert"),
    # the same experts, reading the state while the camera's pixels are recorded, with slack for the camera
    "tree_avoid_pixels": Task(
        "TreeAvoidPixels-v0", TreeAvoidExpert, partial(ExpertConfig, margin=PIXEL_MARGIN), "scripted-bimodal-expert"
    ),
    "slalom_pixels": Task(
        "SlalomPixels-v0", SlalomExpert, partial(SlalomExpertConfig, margin=PIXEL_MARGIN), "scripted-slalom-expert"
    ),
    "maze2": Task("PointMazeTwoRoutes-v0", MazeExpert, MazeExpertConfig, "cell-planner-pd-expert", batched=False),
    "maze3": Task("PointMazeThreeRoutes-v0", MazeExpert, MazeExpertConfig, "cell-planner-pd-expert", batched=False),
}


def dataset_id(task: str, variant: str = "expert") -> str:
    """Minari dataset id of a task's dataset: <task>/<variant>-v0 (e.g. slalom/coupled-v0)."""
    return f"{task}/{variant}-v0"


def default_demos(task: str, variant: str = "expert") -> Path:
    """Where a task's default dataset lives: demos/<task>/<variant>-v0."""
    return DEMOS_ROOT / dataset_id(task, variant)


DATASET_ID = dataset_id("tree_avoid")
DEFAULT_DEMOS = default_demos("tree_avoid")


@dataclass
class Episodes:
    """Episodes as numpy arrays, one list entry per episode."""

    observations: list[Any]  # (T+1, O) arrays each, or dicts of them for a Dict observation space
    actions: list[np.ndarray]  # (T, 2) float32
    rewards: list[np.ndarray]  # (T,) float32
    terminations: list[np.ndarray]  # (T,) bool
    truncations: list[np.ndarray]  # (T,) bool
    infos: list[dict[str, np.ndarray]]  # per-step (T+1,) arrays of the mode convention's keys (RECORDED_INFO)


# What goes to the dataset's per-step infos: the mode convention (what lvm_policy reads back). Minari's hdf5
# writer costs about 0.5 ms per stored array and episode, so TreeAvoid's other keys stay out.
RECORDED_INFO = ("success", "mode", "context", "outcome")


@torch.no_grad()
def rollout_expert(episodes: int, seed: int = 0, expert: Any = None, task: str = "tree_avoid") -> Episodes:
    """Play ``episodes`` expert episodes of ``task`` (one per environment of its batched twin) and return them.

    ``expert`` is the task's expert config (default options when None)."""
    import gymnasium as gym

    import envs  # noqa: F401  (registration)

    spec = TASKS[task]
    env = gym.make_vec(spec.env_id, num_envs=episodes, vectorization_mode="vector_entry_point")
    params = env.params
    agent = spec.expert(params, expert or spec.config(), seed=seed)
    obs, info0 = env.reset(seed=seed)
    # The expert reads the state; a pixel task records its camera meanwhile.
    state_of = getattr(env.task, "state_observation", None)
    agent.reset(obs if state_of is None else state_of(env.state))
    T, N = params.max_steps, episodes
    act_dim = env.single_action_space.shape[0]
    obs_buf = torch.empty((T + 1, N, *obs.shape[1:]), dtype=obs.dtype)
    act_buf = torch.empty(T, N, act_dim)
    rew_buf = torch.empty(T, N)
    term_buf = torch.empty(T, N, dtype=torch.bool)
    trunc_buf = torch.empty(T, N, dtype=torch.bool)
    keys = [k for k in RECORDED_INFO if k in info0]
    info_buf = {k: torch.empty((T + 1, N), dtype=info0[k].dtype) for k in keys}
    for k in keys:
        info_buf[k][0] = info0[k]
    done_buf = torch.empty(T, N, dtype=torch.bool)
    obs_buf[0] = obs
    for t in range(T):
        action = agent.act(obs if state_of is None else state_of(env.state))
        obs, reward, terminated, truncated, info = env.step(action)
        obs_buf[t + 1] = info["final_obs"]  # the episode's own last observation, not the reset one
        act_buf[t], rew_buf[t], term_buf[t], trunc_buf[t] = action, reward, terminated, truncated
        done_buf[t] = info["done"]
        for k in keys:
            info_buf[k][t + 1] = info[k]
    # Length of each environment's first episode: index of its first done, plus one.
    lengths = (done_buf.long().argmax(dim=0) + 1).tolist()  # (N,)
    if not bool(done_buf.any(dim=0).all()):
        raise RuntimeError("some episodes did not end within the time limit")  # cannot happen: truncation
    out = Episodes([], [], [], [], [], [])
    arrays = {
        "obs": obs_buf.numpy(),
        "act": act_buf.numpy(),
        "rew": rew_buf.numpy(),
        "term": term_buf.numpy(),
        "trunc": trunc_buf.numpy(),
    }
    infos_np = {k: v.numpy() for k, v in info_buf.items()}
    for i, n in enumerate(lengths):
        out.observations.append(np.ascontiguousarray(arrays["obs"][: n + 1, i]))
        out.actions.append(np.ascontiguousarray(arrays["act"][:n, i]))
        out.rewards.append(np.ascontiguousarray(arrays["rew"][:n, i]))
        out.terminations.append(np.ascontiguousarray(arrays["term"][:n, i]))
        out.truncations.append(np.ascontiguousarray(arrays["trunc"][:n, i]))
        out.infos.append({k: np.ascontiguousarray(v[: n + 1, i]) for k, v in infos_np.items()})
    return out


def rollout_single_env_expert(episodes: int, seed: int = 0, expert: Any = None, task: str = "maze2") -> Episodes:
    """Play ``episodes`` expert episodes of ``task`` one after another in its single env (episode i reset with
    seed + i) and return them; observations are kept as the env gives them."""
    import gymnasium as gym

    import envs  # noqa: F401  (registration)

    spec = TASKS[task]
    env = gym.make(spec.env_id)
    agent = spec.expert(LAYOUTS[spec.env_id], expert or spec.config(), seed=seed)
    out = Episodes([], [], [], [], [], [])
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        agent.reset(env, obs)
        obs_list, acts, rews, terms, truncs = [obs], [], [], [], []
        infos = {k: [info[k]] for k in RECORDED_INFO if k in info}
        done = False
        while not done:
            action = agent.act(obs)
            obs, reward, terminated, truncated, info = env.step(action)
            obs_list.append(obs)
            acts.append(action)
            rews.append(reward)
            terms.append(terminated)
            truncs.append(truncated)
            for k in infos:
                infos[k].append(info[k])
            done = terminated or truncated
        if isinstance(obs, dict):
            out.observations.append({k: np.stack([o[k] for o in obs_list]) for k in obs})
        else:
            out.observations.append(np.stack(obs_list))
        out.actions.append(np.stack(acts).astype(np.float32))
        out.rewards.append(np.asarray(rews, dtype=np.float32))
        out.terminations.append(np.asarray(terms, dtype=bool))
        out.truncations.append(np.asarray(truncs, dtype=bool))
        out.infos.append({k: np.asarray(v) for k, v in infos.items()})
    env.close()
    return out


@contextlib.contextmanager
def _minari_root(path: Path):
    """Point Minari's local storage at ``path`` for the duration of the block."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_minari(
    data: Episodes, out: Path, description: str, seed: int, task: str = "tree_avoid", variant: str = "expert"
) -> None:
    """Write ``data`` as a Minari dataset folder at ``out`` atomically (temporary folder, then rename)."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    import envs  # noqa: F401  (registers the tasks for the dataset's env spec)

    spec = TASKS[task]
    name = dataset_id(task, variant)
    # Absolute: Minari resolves a relative MINARI_DATASETS_PATH against itself a second time, so a relative --out
    # (demos/mine/expert-v0) failed with a doubled path.
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=".collect-", dir=out.parent))
    try:
        buffers = [
            EpisodeBuffer(
                id=i,
                seed=seed + i,
                observations=data.observations[i],
                actions=data.actions[i],
                rewards=list(data.rewards[i]),
                terminations=list(data.terminations[i]),
                truncations=list(data.truncations[i]),
                infos=data.infos[i],
            )
            for i in range(len(data.actions))
        ]
        # Minari warns about metadata (code permalink, e-mail) that a local dataset has no use for.
        with _minari_root(tmp_root), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            minari.create_dataset_from_buffers(
                dataset_id=name,
                buffer=buffers,
                env=gym.spec(spec.env_id),
                algorithm_name=spec.algorithm,
                author="lvm_policy",
                description=description,
                eval_env=gym.spec(spec.env_id),
                data_format=DATA_FORMAT,
                # Minari JPEG-encodes image observations by default. That is lossy: on the 32-pixel cameras it
                # erased the car's dot and blurred the trees' edges, so policies trained on frames unlike those
                # the rollouts show them (gmm: collision rate 0.98). The frames are stored as drawn.
                jpeg_encoding=False,
            )
        _move_into_place(tmp_root / name, out)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def _move_into_place(staged: Path, target: Path) -> None:
    """Rename the finished dataset over ``target``; an old one is moved aside first and removed only after."""
    aside = target.with_name(target.name + ".old")
    if target.exists():
        shutil.rmtree(aside, ignore_errors=True)
        target.rename(aside)
    staged.rename(target)
    shutil.rmtree(aside, ignore_errors=True)


def collect(
    out: Path | None = None,
    episodes: int = 1000,
    seed: int = 0,
    task: str = "tree_avoid",
    variant: str = "expert",
    **expert_options: Any,
) -> Episodes:
    """Collect ``task`` 's expert demonstrations (its expert config built from ``expert_options``) and write
    them to ``out`` (default: demos/<task>/<variant>-v0); returns the episodes."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    config = TASKS[task].config(**expert_options)
    play = rollout_expert if TASKS[task].batched else rollout_single_env_expert
    data = play(episodes, seed=seed, expert=config, task=task)
    desc = f"{TASKS[task].env_id} scripted expert: {episodes} episodes, seed {seed}, expert {asdict(config)}"
    write_minari(data, Path(out or default_demos(task, variant)), desc, seed, task, variant)
    return data
