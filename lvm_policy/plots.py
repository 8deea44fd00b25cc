"""Figures: demonstration paths and policies' rollouts, coloured by mode, one panel each.

Generic over tasks: a path is a sequence of flat observations; which two observation dimensions to draw and
what to draw behind the paths (obstacles, goals, a finish line) come from the env's ``metadata["figure"]``:
``{"xy": [i, j], "circles": [[x, y, r], ...], "rects": [[x0, y0, w, h], ...], "hlines": [y, ...], "xlim": [lo, hi],
"ylim": [lo, hi]}`` (rects: walls, e.g. a maze's).
Without it the first two observation dimensions are drawn on an empty background.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MODE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
NONE_COLOUR = "#7f7f7f"

Panel = tuple[str, list[np.ndarray], list[int]]  # title, paths (T, O) each, mode id of each path (-1: none)


def _colour(mode: int) -> str:
    return MODE_COLOURS[mode % len(MODE_COLOURS)] if mode >= 0 else NONE_COLOUR


def _draw_panel(ax, panel: Panel, mode_names: list[str], figure: dict[str, Any]) -> None:
    import matplotlib.patches as mpatches

    title, paths, modes = panel
    i, j = figure.get("xy", [0, 1])
    for cx, cy, r in figure.get("circles", []):
        ax.add_patch(mpatches.Circle((cx, cy), r, color="#2e7d32", alpha=0.8, zorder=3))
    for x0, y0, w, h in figure.get("rects", []):
        ax.add_patch(mpatches.Rectangle((x0, y0), w, h, color="#555555", zorder=3))
    for y in figure.get("hlines", []):
        ax.axhline(y, color="k", lw=0.8, ls=":")
    for path, mode in zip(paths, modes):
        ax.plot(path[:, i], path[:, j], color=_colour(mode), lw=0.6, alpha=0.35)
    n = max(len(modes), 1)
    counts = [(name, sum(m == k for m in modes) / n) for k, name in enumerate(mode_names)]
    shares = [f"{name} {share:.0%}" for name, share in counts if share > 0]  # modes the panel shows
    none = sum(m < 0 for m in modes) / n
    shares += [f"none {none:.0%}"] if none else []
    lines = ["  ".join(shares[i : i + 3]) for i in range(0, len(shares), 3)]  # three per line: panels are narrow
    ax.set_title("\n".join([title, *lines]), fontsize=7)
    if "xlim" in figure:
        ax.set_xlim(*figure["xlim"])
    if "ylim" in figure:
        ax.set_ylim(*figure["ylim"])
    ax.set_aspect("equal")


def plot_paths(panels: list[Panel], out: Path, mode_names: list[str], figure: dict[str, Any] | None = None) -> None:
    """Side-by-side panels written as a PNG, with a legend of the modes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = figure or {}
    fig, axes = plt.subplots(1, len(panels), figsize=(max(2.6 * len(panels), 5.0), 5.2), sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        _draw_panel(ax, panel, mode_names, figure)
    handles = [plt.Line2D([], [], color=_colour(k), label=name) for k, name in enumerate(mode_names)]
    handles.append(plt.Line2D([], [], color=NONE_COLOUR, label="no mode"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)


def demo_panel(demos, max_paths: int = 300) -> Panel:
    """The first ``max_paths`` episodes of loaded Demonstrations as a panel."""
    paths, modes = [], []
    for e in range(min(max_paths, demos.num_episodes)):
        paths.append(demos.obs[demos.episode == e].cpu().numpy())
        modes.append(int(demos.mode[e]))
    return "demonstrations", paths, modes


def rollout_panel(title: str, episodes) -> Panel:
    """A panel from a rollout recorded with ``record_paths=P`` (its first P episodes)."""
    P = len(episodes.paths)
    mode = episodes.info.get("mode")
    modes = mode[:P].tolist() if mode is not None else [-1] * P
    return title, episodes.paths, modes


def env_figure(env_id_or_spec) -> tuple[list[str], dict[str, Any]]:
    """The mode names and the figure hints of an env (its metadata), for plot_paths."""
    import gymnasium as gym

    env = gym.make(env_id_or_spec)
    try:
        meta = env.metadata  # through the wrappers: a wrapper may add the mode names
        return list(meta.get("mode_names", [])), dict(meta.get("figure", {}))
    finally:
        env.close()
