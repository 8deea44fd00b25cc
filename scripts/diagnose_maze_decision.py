"""Is a policy's second decision on the three-route maze calibrated? The chunks it draws at the junction of the top
row and the middle column, against the demonstrations' own.

    python scripts/diagnose_maze_decision.py runs/alone/maze3/lvm-seed0
    python scripts/diagnose_maze_decision.py RUN_DIR --samples 64 --json

The maze's second decision is taken on the move: a ball rolling right along the top row either goes on (the top
route) or turns down into the middle column. The expert turns when it comes within its switch radius of the
junction cell's centre, so in its data the turn starts within a few centimetres of one place. This script takes the
run's training demonstrations at the states on the top row before and at the junction where the ball is not yet
moving down, in bins of the distance to the junction's centre, and compares in each bin:

- the share of the demonstrations' next chunks (H actions) that push down (mean downward force above 0.3), and
- the share of chunks drawn from the policy (``Policy.sample``, ``--samples`` per state) that do.

A policy whose down share is below the demonstrations' where they turn and above it just after turns too late: a
late turn misses the column's opening and the ball goes on along the top route. The hierarchical lvm's ``sample``
draws its episode latent from p(z_e | state) at each state (acting draws it once, at the episode's first state).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import envs  # noqa: E402,F401  (registers the package's tasks)
from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import ConfigError  # noqa: E402

MAZE = "PointMazeThreeRoutes-v0"
DOWN_FORCE = 0.3  # a chunk pushes down when its mean y force is below minus this
MOVING_DOWN = -0.3  # m/s: a ball already this fast downwards has turned


@dataclass
class Args:
    run: Annotated[Path, tyro.conf.Positional]
    """a training run folder of any class on the three-route maze's demonstrations"""
    samples: int = 64
    """chunks drawn from the policy per demonstration state"""
    states: int = 1000
    """demonstration states per bin at most (the first ones in the data)"""
    bin_width: float = 0.2
    """metres of distance to the junction's centre per bin"""
    device: str = "cpu"
    """device of the policy"""
    seed: int = 0
    """seed of the policy's draws (the figures repeat exactly on the same device)"""
    json: bool = False
    """print one JSON line instead of the table"""


def observation_offsets(space) -> dict[str, int]:
    """Where each key of a Dict observation space starts in the flattened observation (gymnasium's order)."""
    from gymnasium import spaces

    offsets, at = {}, 0
    for key, sub in space.spaces.items():
        offsets[key] = at
        at += spaces.flatdim(sub)
    return offsets


def junction_xy() -> np.ndarray:
    """The centre of the top-row cell above the middle route's first cell, in the maze's coordinates."""
    import gymnasium as gym

    from envs.point_maze import LAYOUTS

    layout = LAYOUTS[MAZE]
    middle = layout.route_cells[layout.route_names.index("middle")]
    row, col = min(middle)  # the middle column's first cell below the top row
    env = gym.make(MAZE)
    try:
        return np.asarray(env.unwrapped.maze.cell_rowcol_to_xy(np.array([row - 1, col])), dtype=np.float64)
    finally:
        env.close()


def main(args: Args) -> None:
    import torch

    from lvm_policy.data import load_demonstrations
    from lvm_policy.evaluate import resolve_device
    from lvm_policy.policies import load_policy

    if args.samples < 1 or args.states < 1 or not args.bin_width > 0:
        raise ConfigError(
            f"--samples and --states must be at least 1 and --bin-width above 0, got {args.samples}, "
            f"{args.states}, {args.bin_width}"
        )
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    policy = load_policy(args.run / "best", device)
    if policy.env_id != MAZE:
        raise ConfigError(f"{args.run}: not a run on {MAZE} (env {policy.env_id})")
    config = json.loads((args.run / "config.json").read_text())
    demos, _ = load_demonstrations(config["demos"], "cpu").split(config["val_fraction"], seed=config["seed"])
    at = observation_offsets(demos.observation_space)["observation"]
    obs, act, episode = demos.obs, demos.act, demos.episode
    x, y, vy = obs[:, at].numpy(), obs[:, at + 1].numpy(), obs[:, at + 3].numpy()
    from envs.point_maze import LAYOUTS

    names = LAYOUTS[MAZE].route_names
    route = demos.mode[episode].numpy()
    went_right = np.isin(route, [names.index("top"), names.index("middle")])  # the routes through the junction
    jx, jy = junction_xy()
    H, To, N = policy.config.action_horizon, policy.config.obs_horizon, obs.shape[0]
    step = np.arange(N)
    ep = episode.numpy()
    first = np.maximum.accumulate(np.where(np.r_[True, ep[1:] != ep[:-1]], step, 0))  # each step's episode start
    inside = ep[np.minimum(step + H - 1, N - 1)] == ep  # its next H actions lie in its episode
    chunk = act[torch.as_tensor(np.minimum(step[:, None] + np.arange(H), N - 1))]  # (N, H, A)
    demo_down = (chunk[..., 1].mean(-1) < -DOWN_FORCE).numpy()  # (N,) the demonstration's next chunk turns down
    candidate = went_right & inside & (np.abs(y - jy) < 0.5) & (vy > MOVING_DOWN)
    edges = np.arange(-1.5, 0.5 + 1e-9, args.bin_width)  # distance to the junction's centre along x, in metres
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        pick = np.flatnonzero(candidate & (x - jx >= lo) & (x - jx < hi))[: args.states]
        if pick.size == 0:
            continue
        back = np.maximum(pick[:, None] - np.arange(To - 1, -1, -1), first[pick, None])  # (B, To): the history
        windows = obs[torch.as_tensor(back)].flatten(1).to(device)  # (B, To O), the first step repeated
        with torch.no_grad():
            drawn = torch.cat([policy.sample(w, args.samples) for w in windows.split(256)])  # (B, n, H A)
        drawn_down = drawn.reshape(pick.size, args.samples, H, -1)[..., 1].mean(-1) < -DOWN_FORCE  # (B, n)
        rows.append(
            {
                "from_m": round(float(lo), 3),
                "to_m": round(float(hi), 3),
                "states": int(pick.size),
                "demonstrations_down": float(demo_down[pick].mean()),
                "policy_down": float(drawn_down.float().mean()),
            }
        )
    starts = first == step  # one step per episode
    top_given_right = float(np.mean(route[starts & went_right] == names.index("top")))
    if args.json:
        print(json.dumps({"run": str(args.run), "top_given_right_in_demonstrations": top_given_right, "bins": rows}))
        return
    print(
        f"{args.run}: chunks that turn down on the top row, by distance to the junction's centre "
        f"({policy.config.action_horizon} actions; the demonstrations go on along the top in {top_given_right:.3f} "
        "of the episodes that go right)\n"
    )
    print("| distance to the junction (m) | states | demonstrations: down share | policy: down share |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['from_m']:+.1f} to {r['to_m']:+.1f} | {r['states']} | {r['demonstrations_down']:.3f} | "
            f"{r['policy_down']:.3f} |"
        )


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
