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

A categorical episode latent (the default lvm's) has an exact posterior and no holes; for it the script says
which demonstrated modes its codes hold: the training episodes' code posteriors q(k | tau) within each mode, and
the mutual information of code and mode against the modes' entropy (a code per coupled choice carries all of it).
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
    config = json.loads((args.run / "config.json").read_text())
    reference, _ = validation_split(args.run, device)
    train_set, _ = load_demonstrations(config["demos"], device).split(config["val_fraction"], seed=config["seed"])
    c = policy.config
    windows = train_set.windows(c.obs_horizon, c.action_horizon)
    episodes = torch.arange(train_set.num_episodes, device=device)
    if c.episode_level == "categorical":
        codes_and_modes(args, policy, windows, train_set, episodes, reference)
        return
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


def code_mode_information(q: torch.Tensor, mode: torch.Tensor, num_modes: int) -> tuple[torch.Tensor, float, float]:
    """Episodes' code posteriors q (E, K) and modes (E,) -> the joint share of code and mode (K, M), their mutual
    information I(code; mode) and the modes' entropy H(mode), in nats. I = H when each code holds one mode."""
    joint = torch.zeros(q.shape[1], num_modes, dtype=torch.float64, device=q.device)
    joint.index_add_(1, mode, q.double().T)
    joint /= joint.sum()
    code_share, mode_share = joint.sum(1), joint.sum(0)  # (K,), (M,)
    ratio = joint / (code_share[:, None] * mode_share[None]).clamp_min(1e-30)
    information = float((joint * torch.log(ratio.clamp_min(1e-30))).sum())
    entropy = float(-(mode_share * torch.log(mode_share.clamp_min(1e-30))).sum())
    return joint, information, entropy


def codes_and_modes(args: Args, policy, windows, train_set, episodes: torch.Tensor, reference: dict) -> None:
    """A categorical episode latent has an exact posterior and no prior holes: say instead which demonstrated
    modes its codes hold (the training episodes' posteriors q(k | tau) summed within each mode)."""
    if train_set.mode.numel() == 0 or int(train_set.mode.max()) < 0:
        raise ConfigError(f"{args.run}: the demonstrations record no modes (info['mode']) to set the codes against")
    q = torch.cat(
        [
            policy.episode_code_posteriors(*windows.gather_episodes(train_set.obs, train_set.act, e))
            for e in episodes.split(64)
        ]
    )  # (E, K)
    names = list(reference.get("mode_names") or range(int(train_set.mode.max()) + 1))
    known = train_set.mode >= 0
    joint, information, entropy = code_mode_information(q[known], train_set.mode[known], len(names))
    code_share = joint.sum(1)  # (K,)
    results = {
        "codes": [
            {"share": float(code_share[k]), "modes": (joint[k] / code_share[k].clamp_min(1e-30)).tolist()}
            for k in range(q.shape[1])
        ],
        "mode_names": [str(n) for n in names],
        "mode_information_nats": information,
        "mode_entropy_nats": entropy,
        "posterior_max_mean": float(q.max(1).values.mean()),
    }
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"{args.run}: a categorical episode latent; what its codes hold over {int(known.sum())} training episodes "
        f"(posterior q(k | tau), mean largest probability {results['posterior_max_mean']:.3f}). The codes carry "
        f"{information:.3f} of the modes' {entropy:.3f} nats (mutual information of code and mode).\n"
    )
    print("| code | share of episodes | " + " | ".join(f"{n}" for n in results["mode_names"]) + " |")
    print("|---|---|" + "---|" * len(names))
    for k, row in enumerate(results["codes"]):
        print(f"| {k} | {row['share']:.3f} | " + " | ".join(f"{v:.3f}" for v in row["modes"]) + " |")


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
