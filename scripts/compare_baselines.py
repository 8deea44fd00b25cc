"""Train (or reuse) every policy class over several seeds on the same demonstrations and compare them.

    python scripts/compare_baselines.py                     # 4 classes x 3 seeds -> results/
    python scripts/compare_baselines.py --seeds 0 --policies lvm gmm --steps 500 --out /tmp/cmp

Writes ``results.md`` (mean and spread over seeds of every metric, both acting modes, training time),
``results.json`` (every run's metrics) and ``rollouts.png`` (demonstrations and each class's rollouts).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.collect import DEFAULT_DEMOS  # noqa: E402
from lvm_policy.errors import ConfigError  # noqa: E402
from lvm_policy.train import PolicyName, TrainConfig  # noqa: E402

COLUMNS = [  # (metric key, header, format)
    ("success_rate", "success", "{:.3f}"),
    ("collision_rate", "collision", "{:.3f}"),
    ("left_fraction", "left share", "{:.3f}"),
    ("side_calibration_error", "calibration err", "{:.3f}"),
    ("switches_per_episode", "switches/ep", "{:.3f}"),
    ("nll", "held-out NLL", "{:.2f}"),
    ("path_distance", "path dist", "{:.4f}"),
    ("train_seconds", "train s", "{:.0f}"),
]


@dataclass
class Args:
    policies: list[PolicyName] = field(default_factory=lambda: ["lvm", "gmm", "autoregressive", "gaussian"])
    """classes to compare"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """training seeds"""
    steps: int | None = None
    """gradient steps (default: train_bc's default)"""
    demos: Path = DEFAULT_DEMOS
    """Minari dataset folder shared by every run"""
    runs: Path = Path("runs/compare")
    """where the run folders go; a finished run there (with metrics.json) is reused"""
    out: Path = Path("results")
    """where results.md, results.json and rollouts.png go"""
    episodes: int = 10_000
    """evaluation episodes per run and acting mode"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """device of training and rollouts"""


def _mean_std(values: list[float]) -> tuple[float, float]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0)


def main(args: Args) -> None:
    from lvm_policy.evaluate import evaluate_policy_batched, resolve_device, rollout
    from lvm_policy.plots import demo_panel, plot_paths, rollout_panel
    from lvm_policy.policies import load_policy
    from lvm_policy.train import train, validation_split

    if not args.seeds or not args.policies:
        raise ConfigError("--seeds and --policies need at least one value each")
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {args.episodes}")
    device = resolve_device(args.device)
    base = TrainConfig(demos=args.demos, device=args.device, progress=True)
    if args.steps is not None:
        base = replace(base, steps=args.steps)
    records = []
    panels = [demo_panel(args.demos)] if args.demos.exists() else []
    for name in args.policies:
        for seed in args.seeds:
            run = args.runs / f"{name}-seed{seed}"
            if not (run / "metrics.json").is_file():
                if run.exists():
                    import shutil

                    shutil.rmtree(run)  # an unfinished run from an interrupted comparison
                train(replace(base, policy=name, seed=seed, out=run))
            trained = json.loads((run / "metrics.json").read_text())
            policy = load_policy(run, device)
            reference, heldout = validation_split(run, device)
            for deterministic in (False, True):
                t = time.perf_counter()
                m = evaluate_policy_batched(policy, reference, heldout, args.episodes, deterministic, device)
                m.update(
                    policy=name,
                    seed=seed,
                    deterministic=deterministic,
                    train_seconds=trained["train_seconds"],
                    eval_seconds=time.perf_counter() - t,
                )
                records.append(m)
            if seed == args.seeds[0]:
                r = rollout(policy, 300, deterministic=False, device=device, record_paths=300)
                panels.append(rollout_panel(name, r))
                if name == "gaussian":
                    r = rollout(policy, 300, deterministic=True, device=device, record_paths=300)
                    panels.append(rollout_panel("gaussian (mean)", r))
            print(
                f"{name} seed {seed}: success {records[-2]['success_rate']:.4f} (low-noise {records[-1]['success_rate']:.4f})"
            )

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(records, indent=1))
    demo_left = records[0].get("demo_left_fraction", float("nan"))
    lines = [
        f"Demonstrations: {args.demos.name}, left share {demo_left:.3f}. {args.episodes} evaluation episodes per run, "
        f"the same seeded episodes for every policy; mean ± standard deviation over seeds {args.seeds}; device {device}.",
        "",
        "| policy | acting | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for name in args.policies:
        for deterministic in (False, True):
            rows = [r for r in records if r["policy"] == name and r["deterministic"] == deterministic]
            cells = []
            for key, _, fmt in COLUMNS:
                m, s = _mean_std([r.get(key) for r in rows])
                cells.append(f"{fmt.format(m)} ± {fmt.format(s)}" if len(rows) > 1 else fmt.format(m))
            acting = "low-noise" if deterministic else "sampled"
            lines.append(f"| {name} | {acting} | " + " | ".join(cells) + " |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    if panels:
        plot_paths(panels, args.out / "rollouts.png")
    print("\n".join(lines))


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
