"""Collect the TreeAvoid expert demonstrations as a Minari dataset.

python scripts/collect_demos.py                 # the standard dataset: demos/tree_avoid/expert-v0
python scripts/collect_demos.py --episodes 200 --left-prob 0.7 --out /tmp/demos
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from envs.collect import DEFAULT_DEMOS, collect  # noqa: E402
from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import ConfigError  # noqa: E402


@dataclass
class Args:
    episodes: int = 1000
    """number of episodes (one per environment of the batch)"""
    seed: int = 0
    """seed of the episode starts and of the expert's choices and noise"""
    noise: float = 0.05
    """standard deviation of the expert's Gaussian action noise"""
    left_prob: float = 0.5
    """overall probability that the expert passes the tree on the left"""
    out: Path = DEFAULT_DEMOS
    """dataset folder to write (replaced atomically if it exists)"""


def main(args: Args) -> None:
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {args.episodes}")
    if not 0.0 <= args.left_prob <= 1.0:
        raise ConfigError(f"--left-prob must lie in [0, 1], got {args.left_prob}")
    if not args.noise >= 0.0:
        raise ConfigError(f"--noise must be >= 0, got {args.noise}")
    start = time.perf_counter()
    data = collect(args.out, args.episodes, args.seed, args.noise, args.left_prob)
    seconds = time.perf_counter() - start
    steps = sum(len(a) for a in data.actions)
    left = sum(int(i["mode"][-1] == 0) for i in data.infos)
    success = sum(int(bool(i["success"][-1])) for i in data.infos)
    print(
        f"wrote {args.episodes} episodes ({steps} steps) to {args.out} in {seconds:.2f} s; "
        f"expert success {success / args.episodes:.4f}, left share {left / args.episodes:.3f}"
    )


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
