"""Are a Slalom policy's choices at successive trees independent, as the demonstrations' are, and what do they
depend on?

    python scripts/diagnose_slalom_choices.py runs/refit/slalom/lvm-seed0
    python scripts/diagnose_slalom_choices.py RUN_DIR --episodes 10000 --before 1.0 --json

Plays the run's best/ policy on seeded episodes of its Slalom env and reads, from the observations (car x, car y,
the next tree's offset, the distance to its row), the side on which each tree was passed and where the car was
``--before`` metres ahead of each tree's row. The same is read from the run's training demonstrations. Printed for
both: the left share at each tree, how often a side is repeated at the next tree, and the left share given the
car's side of the lane centre before the tree. An expert whose choices are independent repeats a side half the time
and does not care where the car is (its choice tilts with the tree's offset only).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import envs  # noqa: E402,F401  (registers the package's tasks)
from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import ConfigError  # noqa: E402


@dataclass
class Args:
    run: Annotated[Path, tyro.conf.Positional]
    """a training run folder of any class on a Slalom dataset"""
    episodes: int = 10_000
    """evaluation episodes"""
    before: float = 2.5
    """where the car's side of the lane centre is read: this far (metres) ahead of each tree's row. The expert
    decides about 0.8 m ahead; at 2.5 m (1 m past the tree before) the car is still coming back from its last
    pass and nothing has been decided for this tree"""
    device: str = "cpu"
    """device of the rollouts"""
    json: bool = False
    """print one JSON line instead of the table"""


def choices(path: np.ndarray, before: float) -> tuple[list[int], list[float]]:
    """One episode's observations (T, 4) -> the side of each tree passed (1 left, 0 right) and the car's x
    ``before`` metres ahead of that tree's row."""
    x, tree_x, distance = path[:, 0], path[:, 2], path[:, 3]
    crossed = np.flatnonzero(distance[1:] > distance[:-1] + 0.5)  # last step before each row is crossed
    sides, x_before, start = [], [], 0
    for c in crossed:
        ahead = np.flatnonzero(distance[start : c + 1] <= before)
        if ahead.size:
            sides.append(int(x[c] < tree_x[c]))
            x_before.append(float(x[start + ahead[0]]))
        start = c + 1
    return sides, x_before


def summarise(paths: list[np.ndarray], before: float, trees: int) -> dict:
    per_tree = [[] for _ in range(trees)]
    repeats, given_left, given_right, pairs = [], [], [], []
    for path in paths:
        sides, x_before = choices(path, before)
        for k, (side, xb) in enumerate(zip(sides, x_before)):
            per_tree[k].append(side)
            pairs.append((xb, side))
            if k > 0:
                repeats.append(side == sides[k - 1])
                (given_left if sides[k - 1] else given_right).append(side)
    xs = np.array([p[0] for p in pairs])
    left = np.array([p[1] for p in pairs])

    def share(values) -> float | None:
        return float(np.mean(values)) if len(values) else None

    return {
        "episodes": len(paths),
        "trees_passed": int(left.size),
        "left_share_per_tree": [share(s) for s in per_tree],
        "repeat_rate": share(repeats),
        "left_after_left": share(given_left),
        "left_after_right": share(given_right),
        "left_given_car_left_of_centre": share(left[xs < 0]),
        "left_given_car_right_of_centre": share(left[xs > 0]),
    }


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, list):
        return " / ".join(_fmt(u) for u in v)
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main(args: Args) -> None:
    from lvm_policy.data import load_demonstrations
    from lvm_policy.evaluate import resolve_device, rollout
    from lvm_policy.policies import load_policy

    if args.episodes < 1 or not args.before > 0:
        raise ConfigError(f"--episodes must be at least 1 and --before above 0, got {args.episodes}, {args.before}")
    device = resolve_device(args.device)
    policy = load_policy(args.run / "best", device)
    config = json.loads((args.run / "config.json").read_text())
    demos, _ = load_demonstrations(config["demos"], "cpu").split(config["val_fraction"], seed=config["seed"])
    if demos.obs.shape[1] != 4 or not (policy.env_id or "").startswith("Slalom"):
        raise ConfigError(f"{args.run}: not a run on Slalom's state observations (env {policy.env_id})")
    obs, episode = demos.obs.numpy(), demos.episode.numpy()
    starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
    demo_paths = np.split(obs, starts[1:])
    played = rollout(policy, policy.env_id, args.episodes, device=device, record_paths=args.episodes)
    trees = int(np.max([len(choices(p, args.before)[0]) for p in demo_paths]))
    rows = {
        "demonstrations": summarise(demo_paths, args.before, trees),
        "policy": summarise(played.paths, args.before, trees),
    }
    if args.json:
        print(json.dumps({"run": str(args.run), "before": args.before, **rows}))
        return
    keys = list(rows["policy"])
    print(f"{args.run}: the car's side read {args.before} m ahead of each tree's row\n")
    print("| | " + " | ".join(k.replace("_", " ") for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(_fmt(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
