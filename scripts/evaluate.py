"""Evaluate a trained policy by rolling it out in the batched TreeAvoid env (or through gymnasium + SB3).

python scripts/evaluate.py runs/lvm-seed0                       # 10,000 episodes, batched, table
python scripts/evaluate.py runs/lvm-seed0 --json                # one JSON object
python scripts/evaluate.py runs/gaussian-seed0 --deterministic  # the mean action: the averaging failure
python scripts/evaluate.py runs/lvm-seed0 --gym --episodes 500  # gym.make envs + SB3 evaluate_policy
python scripts/evaluate.py runs/lvm-seed0 --video lvm.gif       # a few rendered episodes
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import CheckpointError, ConfigError  # noqa: E402


@dataclass
class Args:
    run: Annotated[Path, tyro.conf.Positional]
    """run folder (or a folder written by policy.save)"""
    episodes: int = 10_000
    """episodes to play"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the batched rollouts run"""
    deterministic: bool = False
    """low-noise actions: the mean for gaussian; the mode or latent is still drawn for the multimodal classes"""
    json: bool = False
    """print the metrics as one JSON object"""
    gym: bool = False
    """play through gym.make("TreeAvoid-v0") and stable-baselines3's evaluate_policy instead (slower)"""
    video: Path | None = None
    """also write a .gif (or .mp4 with imageio-ffmpeg) of four episodes here"""
    seed: int = 1_000_000
    """seed of the evaluation episodes (the same for every policy)"""


def main(args: Args) -> None:
    from lvm_policy.evaluate import evaluate_policy_batched, resolve_device
    from lvm_policy.policies import load_policy

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {args.episodes}")
    if not args.run.exists():
        raise CheckpointError(f"{args.run}: no such run folder")
    device = resolve_device(args.device)
    policy = load_policy(args.run, device)
    reference, heldout = None, None
    if (args.run / "demo_stats.json").is_file():
        from lvm_policy.train import validation_split

        reference, heldout = validation_split(args.run, device)
    start = time.perf_counter()
    if args.gym:
        from lvm_policy.evaluate import heldout_nll
        from lvm_policy.gym_eval import evaluate_gym

        policy = policy.cpu()
        metrics = evaluate_gym(policy, reference, args.episodes, args.deterministic)
        if heldout is not None:
            metrics["nll"] = heldout_nll(policy, heldout.obs.cpu(), heldout.act.cpu())
    else:
        metrics = evaluate_policy_batched(
            policy, reference, heldout, args.episodes, args.deterministic, device, args.seed
        )
    metrics.update(
        policy=policy.name,
        mode="gym" if args.gym else "batched",
        deterministic=args.deterministic,
        device=str(device if not args.gym else "cpu"),
        seconds=time.perf_counter() - start,
    )
    if args.video is not None:
        from lvm_policy.gym_eval import record_video

        record_video(policy.cpu(), args.video, deterministic=args.deterministic)
    if args.json:
        print(json.dumps(metrics))
    else:
        for k, v in metrics.items():
            shown = f"[{v[0]:.4f}, {v[1]:.4f}]" if isinstance(v, list) else (f"{v:.4f}" if isinstance(v, float) else v)
            print(f"{k:>24}  {shown}")


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
