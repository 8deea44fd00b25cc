"""Numerical health of full trainings: every class over ten seeds with the default data and options.

    python scripts/check_numerics.py                               # 4 classes x 10 seeds -> results/numerics.md
    python scripts/check_numerics.py --policies gmm --seeds 0 1 --steps 200 --runs /tmp/num --out /tmp/num

Each run is ``train_bc``'s default training. The periodic rollouts are switched off: they read the weights
and draw from a forked random state, so the trained weights are those of a default run, for a quarter of
the time. A run counts as healthy when every gradient step had a finite loss (the training loop stops at
the first that is not), the final raw and averaged weights are finite (``load_policy`` refuses anything
else), and the held-out NLL is finite. The table gives the extremes of the logged loss and gradient norm.
Exit status 1 when any run is unhealthy. A finished run in ``--runs`` is reused; an interrupted one resumes.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import get_args

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import envs  # noqa: E402,F401  (registers the package's tasks)
from envs.collect import DEFAULT_DEMOS  # noqa: E402
from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import CheckpointError, ConfigError, TrainingDivergedError  # noqa: E402
from lvm_policy.policies import policy_class  # noqa: E402
from lvm_policy.train import PolicyName, TrainConfig  # noqa: E402


@dataclass
class Args:
    policies: list[PolicyName] = field(default_factory=lambda: list(get_args(PolicyName)))
    """classes to train"""
    seeds: list[int] = field(default_factory=lambda: list(range(10)))
    """training seeds"""
    steps: int | None = None
    """gradient steps (default: train_bc's default)"""
    demos: Path = DEFAULT_DEMOS
    """Minari dataset folder shared by every run"""
    runs: Path = Path("runs/numerics")
    """where the run folders go"""
    out: Path = Path("results")
    """where numerics.md and numerics.json go"""
    eval_episodes: int = 1000
    """rollout episodes of each run's final evaluation"""


def check_run(run: Path) -> dict:
    """Health record of one finished or diverged run folder."""
    from lvm_policy.policies import load_policy

    train_logs = []
    if (run / "log.jsonl").is_file():
        records = (json.loads(line) for line in (run / "log.jsonl").read_text().splitlines())
        train_logs = [r for r in records if r.get("kind") == "train"]
    losses = [r["loss"] for r in train_logs]
    grads = [r["grad_norm"] for r in train_logs if "grad_norm" in r]
    record = {
        "logged_steps": len(train_logs),
        "loss_min": min(losses, default=math.nan),
        "loss_max": max(losses, default=math.nan),
        "grad_norm_max": max(grads, default=math.nan),
        "weights_finite": True,
    }
    for folder in ("latest", "best"):
        try:
            load_policy(run / folder)
        except CheckpointError as exc:
            record["weights_finite"], record["problem"] = False, str(exc)
    if (run / "metrics.json").is_file():
        metrics = json.loads((run / "metrics.json").read_text())
        record.update(nll=metrics.get("nll", math.nan), success_rate=metrics.get("success_rate", math.nan))
        record["train_seconds"] = metrics["train_seconds"]
    return record


def main(args: Args) -> int:
    from lvm_policy.train import train

    if not args.seeds or not args.policies:
        raise ConfigError("--seeds and --policies need at least one value each")
    if Path(args.demos) == DEFAULT_DEMOS and not DEFAULT_DEMOS.exists():
        from envs.collect import collect

        collect(DEFAULT_DEMOS)
    base = TrainConfig(demos=str(args.demos), eval_every=0, final_eval_episodes=args.eval_episodes, progress=False)
    if args.steps is not None:
        base = replace(base, steps=args.steps)
    base.validate()
    records = []
    for name in args.policies:
        for seed in args.seeds:
            run = args.runs / f"{name}-seed{seed}"
            diverged = None
            if not (run / "metrics.json").is_file():
                resume = run if (run / "latest" / "train_state.json").is_file() else None
                try:
                    train(replace(base, policy=name, seed=seed, out=run, resume=resume))
                except TrainingDivergedError as exc:
                    diverged = str(exc)
            r = dict(policy=name, seed=seed, **check_run(run))
            # the held-out NLL must be finite where the class has a density (bet has none: NaN by definition)
            keys = ("loss_min", "loss_max", "grad_norm_max") + (("nll",) if policy_class(name).has_density else ())
            finite = all(math.isfinite(r.get(k, math.nan)) for k in keys)
            r["healthy"] = diverged is None and r["weights_finite"] and finite
            if diverged:
                r["problem"] = diverged
            records.append(r)
            print(
                f"{name} seed {seed}: {'healthy' if r['healthy'] else 'UNHEALTHY'}, loss [{r['loss_min']:.3g}, "
                f"{r['loss_max']:.3g}], max grad norm {r['grad_norm_max']:.3g}, held-out NLL {r.get('nll', math.nan):.3f}"
            )

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "numerics.json").write_text(json.dumps(records, indent=1))
    steps = base.steps
    lines = [
        f"{'Full trainings' if args.steps is None else 'Shortened trainings'} ({steps} steps, batch "
        f"{base.batch_size}, otherwise default options) on {args.demos.name}, "
        f"seeds {args.seeds[0]}-{args.seeds[-1]}; `python scripts/check_numerics.py`.",
        "",
        "| policy | healthy runs | logged loss min | logged loss max | max grad norm (pre-clip) "
        "| held-out NLL min | held-out NLL max | success min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in args.policies:
        rows = [r for r in records if r["policy"] == name]

        def ext(key, fn, rows=rows):
            values = [r[key] for r in rows if key in r]
            return fn(values) if values else math.nan

        lines.append(
            f"| {name} | {sum(r['healthy'] for r in rows)}/{len(rows)} | {ext('loss_min', min):.3f} "
            f"| {ext('loss_max', max):.3f} | {ext('grad_norm_max', max):.1f} | {ext('nll', min):.3f} "
            f"| {ext('nll', max):.3f} | {ext('success_rate', min):.3f} |"
        )
    (args.out / "numerics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["healthy"] for r in records) else 1


if __name__ == "__main__":
    run_main(lambda: sys.exit(main(tyro.cli(Args))))
