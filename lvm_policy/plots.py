"""Figures: the demonstration paths around the tree and policies' rollouts beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from envs.tree_avoid import SIDE_LEFT, SIDE_RIGHT, TreeAvoidParams

SIDE_COLOURS = {SIDE_LEFT: "#1f77b4", SIDE_RIGHT: "#d62728"}
OTHER_COLOUR = "#7f7f7f"


def _draw_panel(
    ax, paths: list[np.ndarray], sides: list[int], tree_xs: list[float], title: str, params: TreeAvoidParams
) -> None:
    """Paths (T, 2) drawn relative to their tree (x - tree_x), so that every episode's tree is the same disc."""
    import matplotlib.patches as mpatches

    ax.add_patch(mpatches.Circle((0.0, params.tree_y), params.tree_radius, color="#2e7d32", zorder=3))
    for path, side, tx in zip(paths, sides, tree_xs):
        ax.plot(path[:, 0] - tx, path[:, 1], color=SIDE_COLOURS.get(side, OTHER_COLOUR), lw=0.6, alpha=0.35)
    ax.axhline(params.finish_y, color="k", lw=0.8, ls=":")
    n = max(len(sides), 1)
    left = sum(s == SIDE_LEFT for s in sides) / n
    right = sum(s == SIDE_RIGHT for s in sides) / n
    ax.set_title(f"{title}\nleft {left:.0%}  right {right:.0%}  neither {max(0.0, 1 - left - right):.0%}", fontsize=9)
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-0.1, params.finish_y + 0.2)
    ax.set_aspect("equal")
    ax.set_xlabel("x - tree x")


def plot_paths(
    panels: list[tuple[str, list[np.ndarray], list[int], list[float]]], out: Path, params: TreeAvoidParams | None = None
) -> None:
    """Side-by-side panels (title, paths, sides, tree offsets), written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = params or TreeAvoidParams()
    fig, axes = plt.subplots(1, len(panels), figsize=(max(2.6 * len(panels), 5.0), 5.2), sharey=True, squeeze=False)
    for ax, (title, paths, sides, tree_xs) in zip(axes[0], panels):
        _draw_panel(ax, paths, sides, tree_xs, title, params)
    axes[0][0].set_ylabel("y (forward)")
    handles = [
        plt.Line2D([], [], color=c, label=lbl)
        for c, lbl in (
            (SIDE_COLOURS[SIDE_LEFT], "passed left"),
            (SIDE_COLOURS[SIDE_RIGHT], "passed right"),
            (OTHER_COLOUR, "crashed"),
        )
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)


def demo_panel(demos_path: Path, max_paths: int = 300) -> tuple[str, list[np.ndarray], list[int], list[float]]:
    """The first ``max_paths`` demonstration episodes as a panel."""
    from lvm_policy.data import load_demonstrations

    d = load_demonstrations(demos_path)
    paths, sides, txs = [], [], []
    for e in range(min(max_paths, d.num_episodes)):
        steps = d.obs[d.episode == e]
        paths.append(steps[:, :2].numpy())
        sides.append(int(d.side[e]))
        txs.append(float(d.tree_x[e]))
    return "demonstrations", paths, sides, txs


def rollout_panel(title: str, rollouts) -> tuple[str, list[np.ndarray], list[int], list[float]]:
    """A panel from ``evaluate.rollout(..., record_paths=P)``."""
    paths_t = rollouts.paths  # (T+1, P, 2), NaN after each episode's end
    P = paths_t.shape[1]
    paths = []
    for i in range(P):
        p = paths_t[:, i]
        paths.append(p[~torch.isnan(p[:, 0])].numpy())
    return title, paths, rollouts.side[:P].tolist(), rollouts.tree_x[:P].tolist()
