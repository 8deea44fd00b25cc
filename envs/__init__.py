"""Environments of lvm_policy. Importing this package registers ``TreeAvoid-v0`` with gymnasium."""

import gymnasium as gym

from envs.tree_avoid import (
    SIDE_LEFT,
    SIDE_NAMES,
    SIDE_NONE,
    SIDE_RIGHT,
    TreeAvoidEnv,
    TreeAvoidParams,
    TreeAvoidVectorEnv,
)

ENV_IDS = ("TreeAvoid-v0",)

if "TreeAvoid-v0" not in gym.registry:
    gym.register(
        id="TreeAvoid-v0",
        entry_point="envs.tree_avoid:TreeAvoidEnv",
        vector_entry_point="envs.tree_avoid:TreeAvoidVectorEnv",
        # The time limit is part of the dynamics (shared with the batched twin), not a TimeLimit wrapper.
        max_episode_steps=None,
    )

__all__ = [
    "ENV_IDS",
    "SIDE_LEFT",
    "SIDE_NAMES",
    "SIDE_NONE",
    "SIDE_RIGHT",
    "TreeAvoidEnv",
    "TreeAvoidParams",
    "TreeAvoidVectorEnv",
]
