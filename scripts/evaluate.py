"""Evaluate a trained policy by rolling it out in its environment, and print the metrics.

python scripts/evaluate.py runs/lvm-seed0                       # 10,000 episodes, table
python scripts/evaluate.py runs/lvm-seed0 --json                # one JSON object
python scripts/evaluate.py runs/gaussian-seed0 --deterministic  # the mean action: the averaging failure
python scripts/evaluate.py runs/my-run --num-envs 32 --vectorization sync   # an env without a torch twin
python scripts/evaluate.py runs/lvm-seed0 --sb3 --episodes 500  # gym.make + stable-baselines3's evaluate_policy
python scripts/evaluate.py runs/lvm-seed0 --video lvm.gif       # a few rendered episodes
python scripts/evaluate.py runs/lvm-seed0 --action-steps 8      # execute whole chunks (trained with 4 of 8)

The env is the run's (recorded at training), or ``--env ID``. It is played through its batched torch twin on
``--device`` when it has one, else through gymnasium's vector env with the policy on ``--device``.
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

import envs  # noqa: E402,F401  (registers the package's tasks, so that --env TreeAvoid-v0 works)
from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import CheckpointError, ConfigError, EnvError  # noqa: E402


@dataclass
class Args:
    run: Annotated[Path, tyro.conf.Positional]
    """run folder (or a folder written by policy.save)"""
    episodes: int = 10_000
    """episodes to play, each counted once"""
    env: str | None = None
    """gymnasium env id to play instead of the run's own ("module:Env-v0" imports module first)"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the policy (and a torch twin's envs) run"""
    num_envs: int = 16
    """environments of gymnasium's vector env (an env without a torch twin)"""
    vectorization: Literal["async", "sync"] = "async"
    """gymnasium vector env kind (an env without a torch twin)"""
    max_episode_steps: int | None = None
    """step cap of an episode (default: the env spec's time limit, else 1,000)"""
    deterministic: bool = False
    """low-noise actions: the mean for gaussian; the mode or latent is still drawn for the multimodal classes"""
    json: bool = False
    """print the metrics as one JSON object"""
    sb3: bool = False
    """play one gym.make env through stable-baselines3's evaluate_policy instead (slow; a cross-check)"""
    video: Path | None = None
    """also write a .gif (or .mp4 with imageio-ffmpeg) of four episodes here"""
    seed: int = 1_000_000
    """seed of the evaluation episodes (the same for every policy)"""
    action_steps: int | None = None
    """a chunked policy: actions executed per prediction, 1 to its action_horizon (default: as trained)"""


def run_environment(run: Path, policy) -> str | object:
    """The env a run plays: its recorded spec (config.json), else the policy's; an EnvError if none."""
    from gymnasium.envs.registration import EnvSpec

    env = {}
    if (run / "config.json").is_file():
        env = json.loads((run / "config.json").read_text()).get("environment") or {}
    spec_json, env_id = env.get("spec") or policy.env_spec_json, env.get("id") or policy.env_id
    if spec_json:
        return EnvSpec.from_json(spec_json)
    if env_id:
        return env_id
    raise EnvError(f"{run}: no environment recorded; pass --env ID")


def main(args: Args) -> None:
    from lvm_policy.evaluate import evaluate, heldout_nll, resolve_device, summarize
    from lvm_policy.policies import load_policy
    from lvm_policy.report import format_metrics
    from lvm_policy.rollout import env_spec_of

    if args.episodes < 1 or args.num_envs < 1:
        raise ConfigError(f"--episodes and --num-envs must be at least 1, got {args.episodes}, {args.num_envs}")
    if args.max_episode_steps is not None and args.max_episode_steps < 1:
        raise ConfigError(f"--max-episode-steps must be at least 1, got {args.max_episode_steps}")
    if not args.run.exists():
        raise CheckpointError(f"{args.run}: no such run folder")
    device = resolve_device(args.device)
    policy = load_policy(args.run, device)
    if args.action_steps is not None:
        try:
            policy.set_action_steps(args.action_steps)
        except ValueError as exc:
            raise ConfigError(f"--action-steps {args.action_steps}: {exc}") from None
    env = env_spec_of(args.env if args.env is not None else run_environment(args.run, policy))
    try:
        import gymnasium as gym

        gym.make(env).close()  # one clear line now, rather than from inside a worker
    except Exception as exc:  # noqa: BLE001
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EnvError(f"environment {env.id!r} cannot be made ({type(exc).__name__}: {msg})") from None
    reference, heldout = None, None
    if (args.run / "demo_stats.json").is_file():
        from lvm_policy.train import validation_split

        reference, heldout = validation_split(args.run, device)
    start = time.perf_counter()
    if args.sb3:
        from lvm_policy.gym_eval import rollout_sb3

        policy = policy.cpu()
        r = rollout_sb3(policy, env, args.episodes, args.seed, args.deterministic, args.max_episode_steps)
        metrics = dict(summarize(r, reference), engine=r.engine)
        if heldout is not None:
            metrics["nll"] = heldout_nll(policy, heldout.obs.cpu(), heldout.act.cpu(), heldout.episode.cpu())
    else:
        metrics = evaluate(
            policy,
            env,
            reference,
            heldout,
            args.episodes,
            args.deterministic,
            device,
            args.seed,
            num_envs=args.num_envs,
            vectorization=args.vectorization,
            max_episode_steps=args.max_episode_steps,
        )
    metrics.update(
        env_id=env.id,
        policy=policy.name,
        deterministic=args.deterministic,
        action_steps=policy.config.action_steps,
        device=str(device if not args.sb3 else "cpu"),
        seconds=time.perf_counter() - start,
    )
    if args.video is not None:
        from lvm_policy.gym_eval import record_video

        record_video(policy.cpu(), env, args.video, deterministic=args.deterministic)
    print(json.dumps(metrics) if args.json else format_metrics(metrics))


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
