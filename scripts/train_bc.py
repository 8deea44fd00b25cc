"""Behavioural cloning on any Minari dataset with Box actions; the latent-variable policy by default.

python scripts/train_bc.py                                  # lvm on TreeAvoid's demos (collected if missing)
python scripts/train_bc.py --policy gmm --gmm.num-components 8 --seed 1
python scripts/train_bc.py --demos path/to/dataset          # your own Minari dataset (folder or dataset id)
python scripts/train_bc.py --demos my-dataset-v0 --env my_pkg.envs:MyEnv-v0
python scripts/train_bc.py --resume runs/lvm-seed0          # continue a run from its latest checkpoint
torchrun --nproc-per-node 2 scripts/train_bc.py --policy gmm  # DistributedDataParallel over 2 processes (or GPUs)
python scripts/train_bc.py --help                           # every option of every class
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import envs  # noqa: E402,F401  (registers the package's tasks, so that --env TreeAvoid-v0 works)
from envs.collect import DEFAULT_DEMOS  # noqa: E402
from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.report import format_metrics  # noqa: E402
from lvm_policy.train import TrainConfig, train  # noqa: E402


def main(cfg: TrainConfig) -> None:
    if cfg.resume is None and Path(cfg.demos) == DEFAULT_DEMOS and not DEFAULT_DEMOS.exists():
        from envs.collect import collect

        print(f"collecting the default demonstrations (TreeAvoid-v0) into {DEFAULT_DEMOS}")
        collect(DEFAULT_DEMOS)
    metrics = train(cfg)
    if not metrics:  # a rank other than 0 under torchrun: rank 0 reports
        return
    if cfg.json:
        print(json.dumps(metrics))
        return
    run = metrics["run"]
    print(f"\n{cfg.policy} trained in {metrics['train_seconds']:.0f} s; final evaluation of {run}/best:")
    print(format_metrics(metrics))
    print(f"\nrun folder: {run}")
    if metrics.get("rollouts_off"):
        print(f"next: python scripts/evaluate.py {run} --env ID   (an env that can be made here)")
    else:
        print(f"next: python scripts/evaluate.py {run}   (add --video run.gif for a few rendered episodes)")


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(TrainConfig, default=TrainConfig(demos=str(DEFAULT_DEMOS)))))
