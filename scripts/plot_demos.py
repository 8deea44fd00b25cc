"""Draw demonstration paths, coloured by mode, to a PNG.

python scripts/plot_demos.py                         # results/demos.png from the default dataset
python scripts/plot_demos.py --demos PATH --out fig.png --max-paths 500
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import envs  # noqa: E402,F401  (registers the package's tasks)
from envs.collect import DEFAULT_DEMOS  # noqa: E402
from lvm_policy.cli import run_main  # noqa: E402


@dataclass
class Args:
    demos: str = str(DEFAULT_DEMOS)
    """Minari dataset folder or dataset id"""
    out: Path = Path("results/demos.png")
    """PNG to write"""
    max_paths: int = 300
    """episodes to draw"""


def main(args: Args) -> None:
    from gymnasium.envs.registration import EnvSpec

    from lvm_policy.data import load_demonstrations
    from lvm_policy.plots import demo_panel, env_figure, plot_paths

    demos = load_demonstrations(args.demos)
    names, figure = [], {}
    if demos.env_spec_json:
        names, figure = env_figure(EnvSpec.from_json(demos.env_spec_json))
    if not names and "mode" in demos.recorded:
        names = [str(i) for i in range(int(demos.mode.max()) + 1)]
    plot_paths([demo_panel(demos, args.max_paths)], args.out, names, figure)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
