"""Collect a task's expert demonstrations in its batched env and write them as a Minari dataset.

Every environment of the batch plays exactly one episode; the whole batch runs for the time limit with
fixed shapes, and each environment's first episode is cut out afterwards. The dataset is written to a
temporary folder beside the destination and renamed into place, so an interrupted collection never leaves
something that looks like a complete dataset.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from envs.experts import ExpertConfig, TreeAvoidExpert
from envs.tree_avoid import TreeAvoidParams, TreeAvoidVectorEnv

DATA_FORMAT = "hdf5"
DATASET_ID = "tree_avoid/expert-v0"
DEFAULT_DEMOS = Path(__file__).resolve().parent.parent / "demos" / DATASET_ID


@dataclass
class Episodes:
    """Episodes as numpy arrays, one list entry per episode."""

    observations: list[np.ndarray]  # (T+1, 3) float32 each
    actions: list[np.ndarray]  # (T, 2) float32
    rewards: list[np.ndarray]  # (T,) float32
    terminations: list[np.ndarray]  # (T,) bool
    truncations: list[np.ndarray]  # (T,) bool
    infos: list[dict[str, np.ndarray]]  # per-step (T+1,) arrays of the mode convention's keys (RECORDED_INFO)


# What goes to the dataset's per-step infos: the mode convention (what lvm_policy reads back). Minari's hdf5
# writer costs about 0.5 ms per stored array and episode, so TreeAvoid's other keys stay out.
RECORDED_INFO = ("success", "mode", "context", "outcome")


@torch.no_grad()
def rollout_expert(
    episodes: int, seed: int = 0, expert: ExpertConfig | None = None, params: TreeAvoidParams | None = None
) -> Episodes:
    """Play ``episodes`` expert episodes (one per environment of a batch) and return them."""
    params = params or TreeAvoidParams()
    env = TreeAvoidVectorEnv(num_envs=episodes, params=params)
    agent = TreeAvoidExpert(params, expert, seed=seed)
    obs, info0 = env.reset(seed=seed)
    agent.reset(obs)
    T, N = params.max_steps, episodes
    obs_buf = torch.empty(T + 1, N, 3)
    act_buf = torch.empty(T, N, 2)
    rew_buf = torch.empty(T, N)
    term_buf = torch.empty(T, N, dtype=torch.bool)
    trunc_buf = torch.empty(T, N, dtype=torch.bool)
    info_buf = {k: torch.empty((T + 1, N), dtype=info0[k].dtype) for k in RECORDED_INFO}
    for k in RECORDED_INFO:
        info_buf[k][0] = info0[k]
    done_buf = torch.empty(T, N, dtype=torch.bool)
    obs_buf[0] = obs
    for t in range(T):
        action = agent.act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        obs_buf[t + 1] = info["final_obs"]  # the episode's own last observation, not the reset one
        act_buf[t], rew_buf[t], term_buf[t], trunc_buf[t] = action, reward, terminated, truncated
        done_buf[t] = info["done"]
        for k in RECORDED_INFO:
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


def write_minari(data: Episodes, out: Path, description: str, seed: int) -> None:
    """Write ``data`` as a Minari dataset folder at ``out`` atomically (temporary folder, then rename)."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    import envs  # noqa: F401  (registers TreeAvoid-v0 for the dataset's env spec)

    out = Path(out)
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
                dataset_id=DATASET_ID,
                buffer=buffers,
                env=gym.spec("TreeAvoid-v0"),
                algorithm_name="scripted-bimodal-expert",
                author="lvm_policy",
                description=description,
                eval_env=gym.spec("TreeAvoid-v0"),
                data_format=DATA_FORMAT,
            )
        _move_into_place(tmp_root / DATASET_ID, out)
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
    out: Path = DEFAULT_DEMOS,
    episodes: int = 1000,
    seed: int = 0,
    noise: float = 0.05,
    left_prob: float = 0.5,
) -> Episodes:
    """Collect expert demonstrations and write them to ``out``; returns the episodes."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    config = ExpertConfig(left_prob=left_prob, noise=noise)
    data = rollout_expert(episodes, seed=seed, expert=config)
    desc = f"TreeAvoid-v0 scripted bimodal expert: {episodes} episodes, seed {seed}, expert {asdict(config)}"
    write_minari(data, Path(out), desc, seed)
    return data
