"""Load any Minari dataset with Box actions into tensors, validating everything it reads.

A dataset is named by a folder (the one holding ``data/``) or by a dataset id under ``MINARI_DATASETS_PATH``
(Minari's local storage). Observations are a ``Box`` or a ``Dict`` of ``Box`` es, flattened as
:mod:`lvm_policy.spaces` documents; actions a ``Box`` with any bounds. Where the recorded infos follow the mode
convention (see the ``envs`` package) each episode's mode, context and outcome are kept for the metrics.

A problem with the data raises :class:`DatasetError` whose message is one line naming the file and the problem;
the scripts print it and exit non-zero.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces as gym_spaces

from lvm_policy import spaces
from lvm_policy.errors import DatasetError
from lvm_policy.temporal import Windows
from lvm_policy.vision import image_slots, is_image, only_images


@dataclass
class Demonstrations:
    """Demonstration transitions and per-episode facts, as tensors on one device."""

    obs: torch.Tensor  # (S, O) flat observations, every step of every episode: float32, or uint8 (images only)
    act: torch.Tensor  # (S, A) float32
    episode: torch.Tensor  # (S,) int64 index of the episode each step belongs to
    mode: torch.Tensor  # (E,) int64 mode id at the episode's end (info["mode"]), -1 if none or not recorded
    context: torch.Tensor  # (E,) float32 info["context"] of each episode, NaN if not recorded
    outcome: torch.Tensor  # (E,) float32 info["outcome"] at the episode's end, NaN if none or mode unknown
    source: str  # where it was loaded from
    observation_space: gym_spaces.Space | None = None  # the recorded (native) spaces
    action_space: gym_spaces.Box | None = None
    env_spec_json: str | None = None  # the EnvSpec Minari recorded, as gymnasium's JSON (None if none)
    env_id: str | None = None
    recorded: tuple[str, ...] = field(default_factory=tuple)  # which mode-convention keys the infos held

    @property
    def num_episodes(self) -> int:
        return int(self.mode.shape[0])

    def to(self, device: str | torch.device) -> Demonstrations:
        d = torch.device(device)
        return replace(
            self,
            obs=self.obs.to(d),
            act=self.act.to(d),
            episode=self.episode.to(d),
            mode=self.mode.to(d),
            context=self.context.to(d),
            outcome=self.outcome.to(d),
        )

    def select_episodes(self, episodes: torch.Tensor) -> Demonstrations:
        """The subset made of the given episode indices (K,), renumbered 0..K-1."""
        keep = torch.zeros(self.num_episodes, dtype=torch.bool, device=self.obs.device)
        keep[episodes] = True
        renumber = torch.cumsum(keep.long(), 0) - 1
        steps = keep[self.episode]
        return replace(
            self,
            obs=self.obs[steps],
            act=self.act[steps],
            episode=renumber[self.episode[steps]],
            mode=self.mode[keep],
            context=self.context[keep],
            outcome=self.outcome[keep],
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

    def windows(self, obs_horizon: int, action_horizon: int) -> Windows:
        """Every step's training window (To observations, a chunk of H actions) as index tensors into obs and act:
        no copy of the data per window (see :mod:`lvm_policy.temporal`)."""
        return Windows(self.episode, obs_horizon, action_horizon)

    def mode_shares(self, num_modes: int) -> list[float]:
        """Share of each mode among the episodes whose mode is known."""
        from lvm_policy.metrics import mode_shares

        return mode_shares(self.mode.cpu(), num_modes)


def _fail(path: Path | str, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}")


def resolve_dataset(ref: str | Path) -> Path:
    """The folder of a dataset given as a path or as a Minari dataset id (looked up in Minari's local storage)."""
    path = Path(ref)
    if path.exists():
        return path
    text = str(ref)
    if not text.startswith((".", "/", "~")):
        root = os.environ.get("MINARI_DATASETS_PATH", str(Path("~/.minari/datasets").expanduser()))
        candidate = Path(root) / text
        if (candidate / "data").is_dir():
            return candidate
        raise _fail(ref, f"dataset not found (neither a folder nor a dataset id under {root})")
    raise _fail(path, "dataset not found")


def _check_array(path: Path, ep: int, name: str, arr: np.ndarray, shape: tuple, float_kind: bool) -> None:
    """Shape; then a float type with finite values (``float_kind``), or uint8 pixels (an image entry)."""
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        raise _fail(
            path,
            f"episode {ep}: {name} has shape {arr.shape}, expected {tuple('T' if s is None else s for s in shape)}",
        )
    if not float_kind and arr.dtype != np.uint8:
        raise _fail(path, f"episode {ep}: {name} has dtype {arr.dtype}, expected uint8 (an image)")
    if float_kind and arr.dtype.kind != "f":
        raise _fail(path, f"episode {ep}: {name} has dtype {arr.dtype}, expected a float type")
    if float_kind and not np.isfinite(arr).all():
        raise _fail(path, f"episode {ep}: {name} holds NaN or infinite values")


def _flat_observations(path: Path, e: int, space: gym_spaces.Space, raw: Any, T: int) -> np.ndarray:
    """(T+1, O) float observations of episode e, checked against the recorded space."""
    if isinstance(space, gym_spaces.Dict):
        if not isinstance(raw, dict) or set(raw) != set(space.spaces):
            got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise _fail(path, f"episode {e}: observations hold {got}, the recorded space has {sorted(space.spaces)}")
        for k, sub in space.spaces.items():
            _check_array(path, e, f"observations[{k!r}]", np.asarray(raw[k]), (T + 1, *sub.shape), not is_image(sub))
        return spaces.flatten_batch(space, {k: np.asarray(raw[k]) for k in space.spaces})
    o = np.asarray(raw)
    _check_array(path, e, "observations", o, (T + 1, *space.shape), not is_image(space))
    return o.reshape(T + 1, -1)


def _episode_info(infos: dict, key: str, index: int, default: float) -> float:
    values = infos.get(key)
    if values is None or np.ndim(values) != 1 or len(values) == 0:
        return default
    return float(np.asarray(values)[index])


def load_demonstrations(ref: str | Path, device: str | torch.device = "cpu") -> Demonstrations:
    """Read and validate a Minari dataset (folder or dataset id), return tensors on ``device``."""
    path = resolve_dataset(ref)
    data_dir = path / "data" if (path / "data").is_dir() else path
    if not (data_dir / "metadata.json").is_file():
        raise _fail(path, "not a Minari dataset (no data/metadata.json)")
    try:
        from minari.dataset.minari_dataset import MinariDataset

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = MinariDataset(data_dir)
            obs_space, act_space = dataset.observation_space, dataset.action_space
            env_spec = dataset.spec.env_spec
            # Minari stores images JPEG-encoded unless told not to (versions without the option stored them raw)
            jpeg = bool(getattr(dataset.storage, "jpeg_encoding", False))
            episodes = list(dataset.iterate_episodes())
    except Exception as exc:  # h5py, json and Minari raise many types on a damaged file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(path, f"cannot read the dataset ({type(exc).__name__}: {msg})") from None
    try:
        spaces.check_observation_space(obs_space)
        spaces.check_action_space(act_space)
    except spaces.UnsupportedSpaceError as exc:
        raise _fail(path, str(exc)) from None
    if len(episodes) == 0:
        raise _fail(path, "the dataset holds no episodes")
    if jpeg and image_slots(obs_space):
        warnings.warn(
            f"{path}: its images are stored JPEG-encoded (Minari's default; lossy), so the policy learns from frames "
            "unlike the raw ones its env shows it; record with jpeg_encoding=False to keep them as they were",
            stacklevel=2,
        )

    A = act_space.shape[0]
    low, high = act_space.low.astype(np.float64), act_space.high.astype(np.float64)
    tol_low, tol_high = 1e-5 * np.maximum(1.0, np.abs(low)), 1e-5 * np.maximum(1.0, np.abs(high))
    obs, act, ep_index, mode, context, outcome = [], [], [], [], [], []
    recorded: set[str] = set()
    for e, episode in enumerate(episodes):
        a = np.asarray(episode.actions)
        _check_array(path, e, "actions", a, (None, A), True)
        T = a.shape[0]
        if T < 1:
            raise _fail(path, f"episode {e}: holds no steps")
        o = _flat_observations(path, e, obs_space, episode.observations, T)
        if (a < low - tol_low).any() or (a > high + tol_high).any():
            raise _fail(path, f"episode {e}: actions outside the action space [{act_space.low}, {act_space.high}]")
        for name in ("rewards", "terminations", "truncations"):
            if np.asarray(getattr(episode, name)).shape != (T,):
                raise _fail(
                    path, f"episode {e}: {name} has shape {np.asarray(getattr(episode, name)).shape}, expected ({T},)"
                )
        infos = episode.infos or {}
        recorded.update(k for k in ("mode", "context", "outcome", "success") if k in infos)
        obs.append(o[:-1])
        act.append(a)
        ep_index.append(np.full(T, e, dtype=np.int64))
        mode.append(int(_episode_info(infos, "mode", -1, -1)))
        context.append(_episode_info(infos, "context", -1, float("nan")))
        # the outcome means something only where the episode chose a mode (the convention)
        known = "mode" not in infos or mode[-1] >= 0
        outcome.append(_episode_info(infos, "outcome", -1, float("nan")) if known else float("nan"))

    spec_json = None
    if env_spec is not None:
        try:
            spec_json = env_spec.to_json()
        except Exception:  # noqa: BLE001  a spec with a callable entry point cannot be written; the id remains
            spec_json = None
    d = torch.device(device)
    # Camera-only observations stay uint8 (one byte per pixel, converted per minibatch by the policy); with state
    # entries beside the images the flat observation is float32.
    obs_dtype = torch.uint8 if only_images(obs_space) else torch.float32
    return Demonstrations(
        obs=torch.as_tensor(np.concatenate(obs), dtype=obs_dtype, device=d),
        act=torch.as_tensor(np.concatenate(act), dtype=torch.float32, device=d),
        episode=torch.as_tensor(np.concatenate(ep_index), device=d),
        mode=torch.as_tensor(mode, dtype=torch.int64, device=d),
        context=torch.as_tensor(context, dtype=torch.float32, device=d),
        outcome=torch.as_tensor(outcome, dtype=torch.float32, device=d),
        source=str(path),
        observation_space=obs_space,
        action_space=act_space,
        env_spec_json=spec_json,
        env_id=None if env_spec is None else env_spec.id,
        recorded=tuple(sorted(recorded)),
    )
