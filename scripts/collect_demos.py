"""Collect a task's expert demonstrations as a Minari dataset.

python scripts/collect_demos.py                                   # TreeAvoid: demos/tree_avoid/expert-v0
python scripts/collect_demos.py --task slalom                     # 3 trees, sides independent: slalom/expert-v0
python scripts/collect_demos.py --task slalom --coupling same     # one side per episode: slalom/coupled-v0
python scripts/collect_demos.py --task multigoal --goal-probs 0.4 0.3 0.2 0.1
python scripts/collect_demos.py --task maze3 --route-probs 0.5 0.25 0.25   # MuJoCo PointMaze (needs .[maze])
python scripts/collect_demos.py --task tree_avoid_pixels        # the camera's RGB images (3 x 32 x 32) as observations
python scripts/collect_demos.py --episodes 200 --left-prob 0.7 --out /tmp/demos
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from envs.collect import TASKS, collect, default_demos  # noqa: E402
from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import ConfigError  # noqa: E402


@dataclass
class Args:
    task: Literal["tree_avoid", "slalom", "multigoal", "maze2", "maze3", "tree_avoid_pixels", "slalom_pixels"] = (
        "tree_avoid"
    )
    """which task's expert to play (the *_pixels tasks record the top-down camera, RGB 3 x 32 x 32)"""
    episodes: int = 1000
    """number of episodes"""
    seed: int = 0
    """seed of the episode starts and of the expert's choices and noise"""
    noise: float | None = None
    """standard deviation of the expert's Gaussian action noise (default: the expert's, 0.05; mazes 0.1)"""
    left_prob: float = 0.5
    """tree_avoid, slalom: overall probability of passing a tree on the left"""
    coupling: Literal["independent", "same"] = "independent"
    """slalom: each tree's side drawn on its own, or one side for every tree of an episode"""
    goal_probs: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    """multigoal: probability of each goal (east, north, west, south)"""
    route_probs: tuple[float, ...] | None = None
    """maze2, maze3: probability of each route, in the env's mode_names order (default: equal)"""
    out: Path | None = None
    """dataset folder to write, replaced atomically if it exists (default: demos/<task>/<variant>-v0)"""


def main(args: Args) -> None:
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {args.episodes}")
    options: dict = {} if args.noise is None else {"noise": args.noise}
    if args.task in ("tree_avoid", "slalom", "tree_avoid_pixels", "slalom_pixels"):
        options["left_prob"] = args.left_prob
    if args.task in ("slalom", "slalom_pixels"):
        options["coupling"] = args.coupling
    if args.task == "multigoal":
        options["goal_probs"] = tuple(args.goal_probs)
    if args.task in ("maze2", "maze3") and args.route_probs is not None:
        options["route_probs"] = tuple(args.route_probs)
    variant = "coupled" if args.task in ("slalom", "slalom_pixels") and args.coupling == "same" else "expert"
    out = args.out or default_demos(args.task, variant)
    try:
        TASKS[args.task].config(**options)
    except ValueError as exc:
        raise ConfigError(f"expert options: {exc}") from None
    start = time.perf_counter()
    try:
        data = collect(out, args.episodes, args.seed, args.task, variant, **options)
    except ImportError as exc:  # a maze without gymnasium-robotics / mujoco: what to install, in one line
        raise ConfigError(str(exc)) from None
    except ValueError as exc:  # e.g. route_probs of the wrong length for the maze
        raise ConfigError(f"expert options: {exc}") from None
    seconds = time.perf_counter() - start
    steps = sum(len(a) for a in data.actions)
    modes = [int(i["mode"][-1]) for i in data.infos]
    success = sum(int(bool(i["success"][-1])) for i in data.infos)
    counts = {m: modes.count(m) for m in sorted(set(modes))}
    shares = ", ".join(f"mode {m}: {c / len(modes):.3f}" for m, c in counts.items())
    print(
        f"wrote {args.episodes} episodes ({steps} steps) to {out} in {seconds:.2f} s; "
        f"expert success {success / args.episodes:.4f}; {shares}"
    )


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
