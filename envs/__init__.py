"""The tasks of lvm_policy. Importing this package registers them with gymnasium.

The mode convention
-------------------
Every task of the package follows it, and any user's environment that follows it gets the mode metrics of
``lvm_policy.evaluate`` (one that does not still gets success, return and held-out NLL):

- ``info["success"]`` (bool) on every step: the episode has done the task (read at its last step).
- ``info["mode"]`` (int) on every step and in the reset info: -1 until the episode's way of doing the task is
  known; at the episode's last step an id in ``[0, num_modes)``, or -1 if it never chose one (a crash before
  the decision, for instance).
- ``metadata["mode_names"]`` (list of str): the names of the modes, indexed by id.
- optional ``info["context"]`` (float): the per-episode quantity a demonstrator's preference between modes
  depends on (TreeAvoid: the tree's offset); used for calibration by context bins.
- optional ``info["switches"]`` (int): how often the episode changed its mind (dithering).
- optional ``info["outcome"]`` (float): a per-episode number describing how the task was done (TreeAvoid:
  where the path crossed the tree row), read at the last step of episodes whose mode is known; its
  distribution is compared with the demonstrations' by energy distance.
- The same keys on every step and at reset, so that Minari records the infos; no NaN (gymnasium's env
  checker compares infos for equality, and NaN != NaN).

Tasks with a batched torch twin register it as ``vector_entry_point``: ``gym.make_vec(id, n,
vectorization_mode="vector_entry_point", device=...)`` takes and returns torch tensors on that device.
"""

import gymnasium as gym

from envs.tree_avoid import (
    MODE_NAMES,
    SIDE_LEFT,
    SIDE_NAMES,
    SIDE_NONE,
    SIDE_RIGHT,
    TreeAvoidEnv,
    TreeAvoidParams,
    TreeAvoidVectorEnv,
)

ENV_IDS = (
    "TreeAvoid-v0",
    "Slalom-v0",
    "MultiGoal-v0",
    "PointMazeTwoRoutes-v0",
    "PointMazeThreeRoutes-v0",
    "TreeAvoidPixels-v0",
    "SlalomPixels-v0",
)

for _id, _module, _name in (
    ("TreeAvoid-v0", "tree_avoid", "TreeAvoid"),
    ("Slalom-v0", "slalom", "Slalom"),
    ("MultiGoal-v0", "multigoal", "MultiGoal"),
    ("TreeAvoidPixels-v0", "pixels", "TreeAvoidPixels"),  # the same dynamics through a top-down camera
    ("SlalomPixels-v0", "pixels", "SlalomPixels"),
):
    if _id not in gym.registry:
        gym.register(
            id=_id,
            entry_point=f"envs.{_module}:{_name}Env",
            vector_entry_point=f"envs.{_module}:{_name}VectorEnv",
            # The time limit is part of the dynamics (shared with the batched twin), not a TimeLimit wrapper.
            max_episode_steps=None,
        )

# Gymnasium-Robotics' MuJoCo PointMaze on maps with equally short routes (no torch twin; gymnasium-robotics and
# mujoco are imported only when one is made).
for _id, _steps in (("PointMazeTwoRoutes-v0", 400), ("PointMazeThreeRoutes-v0", 500)):
    if _id not in gym.registry:
        gym.register(
            id=_id, entry_point="envs.point_maze:make_point_maze", kwargs={"maze": _id}, max_episode_steps=_steps
        )

__all__ = [
    "ENV_IDS",
    "MODE_NAMES",
    "SIDE_LEFT",
    "SIDE_NAMES",
    "SIDE_NONE",
    "SIDE_RIGHT",
    "TreeAvoidEnv",
    "TreeAvoidParams",
    "TreeAvoidVectorEnv",
]
