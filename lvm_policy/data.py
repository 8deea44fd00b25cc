"""Load a TreeAvoid demonstration dataset (Minari) into tensors, validating everything it reads.

A problem with the file raises :class:`DatasetError` whose message is one line naming the file and the
problem; the scripts print it and exit non-zero.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lvm_policy.errors import DatasetError

OBS_DIM, ACT_DIM = 3, 2
ENV_IDS = ("TreeAvoid-v0",)
ACTION_LOW, ACTION_HIGH = -1.0, 1.0


@dataclass
class Demonstrations:
    """Demonstration transitions and per-episode facts, as tensors on one device."""

    obs: torch.Tensor  # (S, O) float32, every step of every episode
    act: torch.Tensor  # (S, A) float32
    episode: torch.Tensor  # (S,) int64 index of the episode each step belongs to
    side: torch.Tensor  # (E,) int64 SIDE_* the demonstrator passed the tree on
    tree_x: torch.Tensor  # (E,) float32 tree offset of each episode
    x_at_tree: torch.Tensor  # (E,) float32 lateral position at the tree row (NaN if never crossed)
    source: str  # where it was loaded from

    @property
    def num_episodes(self) -> int:
        return int(self.side.shape[0])

    def to(self, device: str | torch.device) -> Demonstrations:
        d = torch.device(device)
        return Demonstrations(
            self.obs.to(d),
            self.act.to(d),
            self.episode.to(d),
            self.side.to(d),
            self.tree_x.to(d),
            self.x_at_tree.to(d),
            self.source,
        )

    def select_episodes(self, episodes: torch.Tensor) -> Demonstrations:
        """The subset made of the given episode indices (K,), renumbered 0..K-1."""
        keep = torch.zeros(self.num_episodes, dtype=torch.bool, device=self.obs.device)
        keep[episodes] = True
        renumber = torch.cumsum(keep.long(), 0) - 1
        steps = keep[self.episode]
        return Demonstrations(
            self.obs[steps],
            self.act[steps],
            renumber[self.episode[steps]],
            self.side[keep],
            self.tree_x[keep],
            self.x_at_tree[keep],
            self.source,
        )

    def split(self, val_fraction: float, seed: int) -> tuple[Demonstrations, Demonstrations]:
        """Split by whole episodes into (train, validation); validation holds at least one episode if E > 1."""
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
        E = self.num_episodes
        n_val = min(max(int(round(val_fraction * E)), 1 if val_fraction > 0 and E > 1 else 0), E - 1)
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(E, generator=g).to(self.obs.device)
        return self.select_episodes(perm[n_val:]), self.select_episodes(perm[:n_val])

    def left_fraction(self) -> float:
        """Share of the episodes that crossed the tree row which passed it on the left."""
        from lvm_policy.metrics import left_fraction

        return left_fraction(self.side)


def _crossing_x(obs: np.ndarray) -> float:
    """Lateral position where the path (T+1, 3) first crosses the tree row, as the env computes it; NaN if never."""
    from envs.tree_avoid import TreeAvoidParams

    tree_y = TreeAvoidParams().tree_y
    y = obs[:, 1]
    after = np.nonzero((y[:-1] < tree_y) & (y[1:] >= tree_y))[0]
    if len(after) == 0:
        return float("nan")
    k = int(after[0])
    frac = (tree_y - y[k]) / (y[k + 1] - y[k])
    return float(obs[k, 0] + frac * (obs[k + 1, 0] - obs[k, 0]))


def _fail(path: Path, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}")


def _check_array(path: Path, ep: int, name: str, arr: np.ndarray, shape: tuple, float_kind: bool) -> None:
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        raise _fail(
            path,
            f"episode {ep}: {name} has shape {arr.shape}, expected {tuple('T' if s is None else s for s in shape)}",
        )
    if float_kind and arr.dtype.kind != "f":
        raise _fail(path, f"episode {ep}: {name} has dtype {arr.dtype}, expected a float type")
    if float_kind and not np.isfinite(arr).all():
        raise _fail(path, f"episode {ep}: {name} holds NaN or infinite values")


def load_demonstrations(path: str | Path, device: str | torch.device = "cpu") -> Demonstrations:
    """Read and validate a Minari dataset folder (the one holding ``data/``), return tensors on ``device``."""
    path = Path(path)
    data_dir = path / "data" if (path / "data").is_dir() else path
    if not path.exists():
        raise _fail(path, "dataset not found (run scripts/collect_demos.py to create it)")
    if not (data_dir / "metadata.json").is_file():
        raise _fail(path, "not a Minari dataset (no data/metadata.json)")
    try:
        from minari.dataset.minari_dataset import MinariDataset

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = MinariDataset(data_dir)
            env_id = dataset.spec.env_spec.id if dataset.spec.env_spec is not None else None
            if env_id not in ENV_IDS:
                raise _fail(path, f"made for environment {env_id!r}; this package knows {', '.join(ENV_IDS)}")
            episodes = list(dataset.iterate_episodes())
    except DatasetError:
        raise
    except Exception as exc:  # h5py, json and Minari raise many types on a damaged file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(path, f"cannot read the dataset ({type(exc).__name__}: {msg})") from None
    if len(episodes) == 0:
        raise _fail(path, "the dataset holds no episodes")

    obs, act, ep_index, side, tree_x, x_at_tree = [], [], [], [], [], []
    for e, episode in enumerate(episodes):
        o, a = np.asarray(episode.observations), np.asarray(episode.actions)
        _check_array(path, e, "observations", o, (None, OBS_DIM), True)
        _check_array(path, e, "actions", a, (None, ACT_DIM), True)
        T = a.shape[0]
        if T < 1 or o.shape[0] != T + 1:
            raise _fail(path, f"episode {e}: {o.shape[0]} observations for {T} actions, expected {T + 1}")
        if a.min() < ACTION_LOW - 1e-6 or a.max() > ACTION_HIGH + 1e-6:
            raise _fail(path, f"episode {e}: actions outside the action space [{ACTION_LOW}, {ACTION_HIGH}]")
        for name in ("rewards", "terminations", "truncations"):
            if np.asarray(getattr(episode, name)).shape != (T,):
                raise _fail(
                    path, f"episode {e}: {name} has shape {np.asarray(getattr(episode, name)).shape}, expected ({T},)"
                )
        infos = episode.infos or {}
        if "side" not in infos:
            raise _fail(path, f"episode {e}: infos lack 'side' (which side the demonstrator passed the tree on)")
        obs.append(o[:-1])
        act.append(a)
        ep_index.append(np.full(T, e, dtype=np.int64))
        side.append(int(np.asarray(infos["side"])[-1]))
        tree_x.append(float(o[0, 2]))
        x_at_tree.append(_crossing_x(o))

    d = torch.device(device)
    return Demonstrations(
        obs=torch.as_tensor(np.concatenate(obs), dtype=torch.float32, device=d),
        act=torch.as_tensor(np.concatenate(act), dtype=torch.float32, device=d),
        episode=torch.as_tensor(np.concatenate(ep_index), device=d),
        side=torch.as_tensor(side, dtype=torch.int64, device=d),
        tree_x=torch.as_tensor(tree_x, dtype=torch.float32, device=d),
        x_at_tree=torch.as_tensor(x_at_tree, dtype=torch.float32, device=d),
        source=str(path),
    )
