"""What the latent-variable policy needs on TreeAvoid: its prior, and whether the latent is held per episode.

    python scripts/ablate_lvm.py                      # 3 priors x seeds 0 -> results/lvm_ablation.md
    python scripts/ablate_lvm.py --seeds 0 1 2 --steps 2000

Each prior is trained once per seed; holding the latent is an acting option, so both acting modes are
evaluated on the same weights.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import envs  # noqa: E402,F401  (registers the package's tasks)
from envs.collect import DEFAULT_DEMOS  # noqa: E402
from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import ConfigError  # noqa: E402

PriorName = Literal["standard", "gaussian", "mixture"]


@dataclass
class Args:
    priors: list[PriorName] = field(default_factory=lambda: ["standard", "gaussian", "mixture"])
    """priors to compare"""
    seeds: list[int] = field(default_factory=lambda: [0])
    """training seeds"""
    steps: int | None = None
    """gradient steps (default: train_bc's default)"""
    demos: Path = DEFAULT_DEMOS
    """Minari dataset folder"""
    runs: Path = Path("runs/ablate")
    """run folders (a finished one is reused)"""
    out: Path = Path("results/lvm_ablation.md")
    """markdown table to write"""
    episodes: int = 10_000
    """evaluation episodes per variant"""


def main(args: Args) -> None:
    from lvm_policy.evaluate import evaluate
    from lvm_policy.policies import load_policy
    from lvm_policy.train import TrainConfig, train, validation_split

    if not args.priors or not args.seeds or args.episodes < 1:
        raise ConfigError("--priors and --seeds need a value each and --episodes must be at least 1")
    if Path(args.demos) == DEFAULT_DEMOS and not DEFAULT_DEMOS.exists():
        from envs.collect import collect

        collect(DEFAULT_DEMOS)
    base = TrainConfig(policy="lvm", demos=str(args.demos), device="cpu")
    if args.steps is not None:
        base = replace(base, steps=args.steps)
    lines = [
        f"Latent-variable policy on TreeAvoid, {args.episodes} evaluation episodes, sampled actions, seeds {args.seeds}.",
        "",
        "| prior p(z\\|s) | latent at test time | success | left share | mode TV | calibration err | switches/ep | held-out NLL (IWAE) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    results = []
    for prior in args.priors:
        for seed in args.seeds:
            run = args.runs / f"{prior}-seed{seed}"
            if not (run / "metrics.json").is_file():
                import shutil

                shutil.rmtree(run, ignore_errors=True)
                step_scope = dict(latent_scope="step", action_horizon=1, action_steps=1)  # the prior of one z per step
                train(replace(base, seed=seed, out=run, lvm=replace(base.lvm, prior=prior, **step_scope)))
            reference, heldout = validation_split(run)
            policy = load_policy(run)
            for hold in (True, False):
                policy.config.hold_latent = hold
                m = evaluate(policy, "TreeAvoid-v0", reference, heldout, args.episodes)
                m["left_share"] = m["mode_shares"][0]  # TreeAvoid's mode 0 is "left"
                m.update(prior=prior, seed=seed, hold_latent=hold)
                results.append(m)
    for prior in args.priors:
        for hold in (True, False):
            rows = [r for r in results if r["prior"] == prior and r["hold_latent"] == hold]
            mean = {
                k: sum(r[k] for r in rows) / len(rows)
                for k in (
                    "success_rate",
                    "left_share",
                    "mode_tv",
                    "mode_calibration_error",
                    "switches_per_episode",
                    "nll",
                )
            }
            lines.append(
                f"| {prior} | {'held for the episode' if hold else 'drawn every step'} | {mean['success_rate']:.3f} | "
                f"{mean['left_share']:.3f} | {mean['mode_tv']:.3f} | {mean['mode_calibration_error']:.3f} | "
                f"{mean['switches_per_episode']:.3f} | {mean['nll']:.2f} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
