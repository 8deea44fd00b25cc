"""Draw the demonstration paths around the tree, coloured by the side taken, to a PNG.

python scripts/plot_demos.py                         # results/demos.png from the default dataset
python scripts/plot_demos.py --demos PATH --out fig.png --max-paths 500
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.collect import DEFAULT_DEMOS  # noqa: E402


@dataclass
class Args:
    demos: Path = DEFAULT_DEMOS
    """Minari dataset folder"""
    out: Path = Path("results/demos.png")
    """PNG to write"""
    max_paths: int = 300
    """episodes to draw"""


def main(args: Args) -> None:
    from lvm_policy.plots import demo_panel, plot_paths

    plot_paths([demo_panel(args.demos, args.max_paths)], args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
