"""The observation and action spaces the package supports, and how observations become flat vectors.

Supported: ``Box`` actions (any bounds, float dtype) and observations that are a ``Box`` or a ``Dict`` of
``Box`` es, among them camera images (a ``Box`` of uint8, (H, W, C) or (C, H, W) with C in 1, 3, 4; their encoder
is lvm_policy/vision.py). A ``Dict`` is flattened by concatenating its entries in the space's own key order
(gymnasium sorts the keys of a ``Dict`` built from a plain dict), each entry flattened in C order: the order
of ``gymnasium.spaces.flatten``. Discrete spaces are refused with one line saying what is supported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

SUPPORTED = "supported: Box actions, and Box or Dict-of-Box observations (uint8 images: H x W x C or C x H x W)"


class UnsupportedSpaceError(ValueError):
    """A space the policies cannot model; the message is one line."""


def check_observation_space(space: spaces.Space) -> None:
    """Raise :class:`UnsupportedSpaceError` unless ``space`` is a Box or a Dict of Boxes; an image's channels must
    be its first or last axis."""
    from lvm_policy.vision import image_slot, is_image

    entries = list(space.spaces.values()) if isinstance(space, spaces.Dict) else [space]
    for s in entries:
        if not isinstance(s, spaces.Box):
            raise UnsupportedSpaceError(f"observation space {space} is not supported ({SUPPORTED})")
        if is_image(s):
            try:
                image_slot(s, 0)
            except ValueError as exc:
                raise UnsupportedSpaceError(f"{exc} ({SUPPORTED})") from None


def check_action_space(space: spaces.Space) -> None:
    """Raise :class:`UnsupportedSpaceError` unless ``space`` is a one-dimensional float Box."""
    if not isinstance(space, spaces.Box) or len(space.shape) != 1 or space.dtype.kind != "f":
        raise UnsupportedSpaceError(f"action space {space} is not supported ({SUPPORTED})")


def flat_dim(space: spaces.Space) -> int:
    """Length of the flat observation vector."""
    return int(spaces.flatdim(space))


def flatten_batch(space: spaces.Space, obs: Any) -> np.ndarray | torch.Tensor:
    """(N, D) flat observations from a batch (N, ...) of ``space`` 's observations: an array or a dict of them.

    numpy stays numpy and torch stays torch (on its device), so both rollout paths share it.
    """
    if isinstance(space, spaces.Dict):
        parts = [obs[k].reshape(obs[k].shape[0], -1) for k in space.spaces]
        return torch.cat(parts, dim=1) if torch.is_tensor(parts[0]) else np.concatenate(parts, axis=1)
    return obs.reshape(obs.shape[0], -1)


def is_single(space: spaces.Space, obs: Any) -> bool:
    """Whether ``obs`` is one observation of ``space`` rather than a batch of them."""
    first = obs[next(iter(space.spaces))] if isinstance(space, spaces.Dict) else obs
    shape = space[next(iter(space.spaces))].shape if isinstance(space, spaces.Dict) else space.shape
    return np.ndim(first) == len(shape)


def add_batch_dim(space: spaces.Space, obs: Any) -> Any:
    if isinstance(space, spaces.Dict):
        return {k: np.asarray(obs[k])[None] for k in space.spaces}
    return np.asarray(obs)[None]


def to_json(space: spaces.Space) -> str:
    """Minari's serialisation of a space (what its datasets record): a JSON string."""
    from minari.serialization import serialize_space

    return serialize_space(space)


def from_json(text: str) -> spaces.Space:
    from minari.serialization import deserialize_space

    return deserialize_space(text)
