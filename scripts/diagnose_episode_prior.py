"""Does an lvm with an episode latent fail because draws from its learned prior p(z_e | s_0) miss the codes its
encoder gives the demonstrations (a prior hole)?

    python scripts/diagnose_episode_prior.py runs/compare/slalom_coupled/lvm-seed1
    python scripts/diagnose_episode_prior.py RUN_DIR --episodes 10000 --json

Evaluates the run's best/ policy on the same seeded episodes three ways: acting as saved (z_e ~ p(z_e | s_0), held
for the episode); with z_e drawn from the posterior q(z_e | tau_j) of a random training demonstration j (the
aggregate posterior; it ignores the start state); and with the prior refit to the training posteriors
(``LatentPolicy.refit_episode_prior``, kept here whatever its hole test says; training keeps it only where the
saved prior's draws fall in holes). Also prints
how narrow the posteriors are against the spread of their means. A large gain with posterior draws says the decoder
is fine and the prior is what fails.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import envs  # noqa: E402,F401  (registers the package's tasks)
from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import ConfigError  # noqa: E402


@dataclass
class Args:
    run: Annotated[Path, tyro.conf.Positional]
    """a training run folder of the lvm with latent_scope episode or hierarchical"""
    episodes: int = 2000
    """evaluation episodes of each way of drawing z_e"""
    device: str = "cpu"
    """device of the rollouts"""
    json: bool = False
    """print one JSON line instead of the table"""


def main(args: Args) -> None:
    from lvm_policy.data import load_demonstrations
    from lvm_policy.evaluate import evaluate, resolve_device
    from lvm_policy.policies import load_policy
    from lvm_policy.train import validation_split

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {args.episodes}")
    device = resolve_device(args.device)
    policy = load_policy(args.run, device)
    if policy.name != "lvm" or policy.config.latent_scope not in ("episode", "hierarchical"):
        raise ConfigError(f"{args.run}: not an lvm with an episode latent (latent_scope episode or hierarchical)")
    if policy.config.episode_level == "categorical":
        raise ConfigError(
            f"{args.run}: a categorical episode latent has no Gaussian posteriors or mixture prior to probe"
        )
    config = json.loads((args.run / "config.json").read_text())
    reference, _ = validation_split(args.run, device)
    train_set, _ = load_demonstrations(config["demos"], device).split(config["val_fraction"], seed=config["seed"])
    c = policy.config
    windows = train_set.windows(c.obs_horizon, c.action_horizon)
    episodes = torch.arange(train_set.num_episodes, device=device)
    mean, log_var = policy.episode_posteriors(*windows.gather_episodes(train_set.obs, train_set.act, episodes))
    env = config["environment"]["id"]
    results = {"posterior_std": float(torch.exp(0.5 * log_var).mean()), "spread_of_means": float(mean.std(0).mean())}
    keys = ("success_rate", "mode_tv", "collision_rate", "switches_per_episode")
    for name, bank in (("prior", None), ("posterior", (mean, log_var))):
        policy.draw_episode_latents_from(bank)
        m = evaluate(policy, env, reference, None, args.episodes, device=device)
        results[name] = {k: m.get(k) for k in keys}
    policy.draw_episode_latents_from(None)
    batches = (windows.gather_episodes(train_set.obs, train_set.act, e) for e in episodes.split(64))
    fit = policy.refit_episode_prior(batches, seed=config["seed"], force=True)
    m = evaluate(policy, env, reference, None, args.episodes, device=device)
    results["refit"] = dict({k: m.get(k) for k in keys}, **fit)
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"{args.run}: episode posteriors' standard deviation {results['posterior_std']:.3f} (mean over dims), spread "
        f"of their means {results['spread_of_means']:.3f}; {args.episodes} evaluation episodes\n"
    )
    print("| z_e drawn from | success | mode TV |")
    print("|---|---|---|")
    rows = (
        ("prior", "p(z_e \\| s_0), as saved"),
        ("posterior", "q(z_e \\| tau_j), training episodes"),
        ("refit", "p(z_e \\| s_0) refit to the posteriors"),
    )
    for name, label in rows:
        r = results[name]
        print(f"| {label} | {r['success_rate']:.3f} | {r['mode_tv']:.3f} |")


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
