"""What the scripts print for a person: the metrics as an aligned table, mode shares named."""

from __future__ import annotations

import math
from typing import Any

ORDER = (
    "env_id",
    "policy",
    "engine",
    "episodes",
    "success_rate",
    "success_ci95",
    "mean_return",
    "mean_episode_length",
    "nll",
    "mode_shares",
    "demo_mode_shares",
    "mode_tv",
    "modes_covered",
    "mode_calibration_error",
    "switches_per_episode",
    "outcome_distance",
)
HIDDEN = ("mode_names", "demo_modes", "run", "rollouts_off")


def _format(key: str, value: Any, metrics: dict[str, Any]) -> str:
    if key in ("mode_shares", "demo_mode_shares") and isinstance(value, list):
        names = metrics.get("mode_names") or [str(i) for i in range(len(value))]
        return "  ".join(f"{n} {v:.3f}" for n, v in zip(names, value))
    if key == "success_ci95":
        return f"[{value[0]:.4f}, {value[1]:.4f}]"
    if key == "modes_covered" and "demo_modes" in metrics:
        return f"{value} of {metrics['demo_modes']}"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def format_metrics(metrics: dict[str, Any]) -> str:
    """Lines ``key  value``: the generic keys first in a fixed order, then the task's own."""
    keys = [k for k in ORDER if k in metrics] + [k for k in metrics if k not in ORDER and k not in HIDDEN]
    width = max(len(k) for k in keys) if keys else 0
    lines = [f"{k:>{width}}  {_format(k, metrics[k], metrics)}" for k in keys if metrics[k] is not None]
    if metrics.get("rollouts_off"):
        lines.append(f"{'rollouts':>{width}}  off: {metrics['rollouts_off']}")
    return "\n".join(lines)
