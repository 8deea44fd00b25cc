"""Behavioural cloning on the TreeAvoid demonstrations; the latent-variable policy by default.

python scripts/train_bc.py                                  # lvm, default demos (collected if missing)
python scripts/train_bc.py --policy gmm --gmm.num-components 8 --seed 1
python scripts/train_bc.py --resume runs/lvm-seed0          # continue a run from its latest checkpoint
python scripts/train_bc.py --help                           # every option of every class
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.train import TrainConfig, train  # noqa: E402

KEYS = (
    "success_rate",
    "collision_rate",
    "left_fraction",
    "demo_left_fraction",
    "side_calibration_error",
    "switches_per_episode",
    "nll",
    "path_distance",
    "train_seconds",
)


def main(cfg: TrainConfig) -> None:
    metrics = train(cfg)
    print(json.dumps({k: metrics[k] for k in KEYS if k in metrics}))


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(TrainConfig)))
