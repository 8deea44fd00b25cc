"""Evaluate one trained policy under several values of an acting option, and print a table.

python scripts/sweep_sampling.py runs/compare/tree_avoid/flow-seed0 --option steps --values 1 2 3 5 10 20
python scripts/sweep_sampling.py runs/compare/tree_avoid/diffusion-seed0 --option inference_steps \\
    --values 5 10 20 50 100 --episodes 2000
python scripts/sweep_sampling.py runs/compare/tree_avoid/diffusion-seed0 --option eta --values 0 0.5 1
python scripts/sweep_sampling.py runs/compare/tree_avoid/diffusion-seed0 --option inference_steps \\
    --values 10 20 50 100 --fixed eta=1

For the iterative samplers: flow's Euler steps (``steps``) and diffusion's DDIM steps (``inference_steps``)
are chosen at acting time, so one trained run answers how success and mode fidelity depend on them. Every
value plays the same seeded episodes. ``--out FILE`` also writes the table (markdown).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import envs  # noqa: E402,F401  (registers the package's tasks)
from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import ConfigError  # noqa: E402


@dataclass
class Args:
    run: Annotated[Path, tyro.conf.Positional]
    """a run folder written by train_bc.py (its best/ policy is evaluated)"""
    option: str = "steps"
    """a field of the policy's config that only acting reads (e.g. flow: steps; diffusion: inference_steps)"""
    values: list[float] = field(default_factory=lambda: [1, 2, 3, 5, 10, 20])
    """the values to evaluate (cast to the option's type: steps are integers, diffusion's eta a float)"""
    episodes: int = 10_000
    """evaluation episodes per value"""
    fixed: list[str] = field(default_factory=list)
    """other acting options held at a value for the whole sweep, as NAME=VALUE (e.g. eta=1)"""
    deterministic: bool = False
    """low-noise acting instead of sampled"""
    device: str = "auto"
    """cpu, cuda or auto"""
    out: Path | None = None
    """also write the table here"""


def _cast(name: str, value: float | str, like: object) -> int | float:
    """``value`` as the type of the option's current value ``like`` (int or float)."""
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} takes a number, got {value!r}") from None
    if isinstance(like, int) and number != int(number):
        raise ConfigError(f"{name} takes whole numbers, got {value}")
    return int(number) if isinstance(like, int) else number


def _parse_fixed(item: str, config: object, names: set[str]) -> tuple[str, int | float]:
    name, sep, value = item.partition("=")
    if not sep or name not in names:
        raise ConfigError(f"--fixed wants NAME=VALUE with NAME an option of the policy, got {item!r}")
    return name, _cast(name, value, getattr(config, name))


def main(args: Args) -> None:
    from gymnasium.envs.registration import EnvSpec

    from lvm_policy.evaluate import evaluate, resolve_device
    from lvm_policy.policies import load_policy
    from lvm_policy.train import validation_split

    if args.episodes < 1 or not args.values:
        raise ConfigError("--episodes must be at least 1 and --values needs at least one value")
    device = resolve_device(args.device)
    policy = load_policy(args.run, device)
    names = {f.name for f in dataclasses.fields(policy.config)}
    fixed = dict(_parse_fixed(item, policy.config, names) for item in args.fixed)
    if args.option not in names:
        raise ConfigError(f"{policy.name} has no option {args.option!r}")
    policy.config = dataclasses.replace(policy.config, **fixed)
    reference, _ = validation_split(args.run, device)  # the demonstrations' mode shares, for mode TV
    env = EnvSpec.from_json(policy.env_spec_json) if policy.env_spec_json else policy.env_id
    trained = getattr(policy.config, args.option)
    lines = [
        f"{policy.name} from {args.run} (trained with {args.option} = {trained}), {args.episodes} episodes per value, "
        f"{'low-noise' if args.deterministic else 'sampled'} actions, device {device}"
        + "".join(f", {k} = {v}" for k, v in fixed.items()),
        "",
        f"| {args.option} | success | mode TV | modes covered | eval s |",
        "|---|---|---|---|---|",
    ]
    for value in args.values:
        value = _cast(args.option, value, trained)
        policy.config = dataclasses.replace(policy.config, **{args.option: value})
        policy.config.validate()
        t = time.perf_counter()
        m = evaluate(policy, env, reference, None, args.episodes, args.deterministic, device)
        seconds = time.perf_counter() - t
        lines.append(
            f"| {value} | {m['success_rate']:.4f} | {m.get('mode_tv', float('nan')):.3f} "
            f"| {m.get('modes_covered', float('nan'))} | {seconds:.0f} |"
        )
        print(lines[-1], flush=True)
        if args.out:  # after every value, so that a run cut short keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
