"""Metrics that show whether a policy learned the modes: pure functions of per-episode outcomes."""

from __future__ import annotations

import math

import torch

from envs.tree_avoid import SIDE_LEFT, SIDE_NONE


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (Wilson 1927); (nan, nan) when n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def left_fraction(side: torch.Tensor) -> float:
    """Among episodes that crossed the tree row (side != none), the share that passed on the left."""
    passed = side != SIDE_NONE
    n = int(passed.sum())
    return float((side == SIDE_LEFT)[passed].float().sum() / n) if n else float("nan")


def left_prob_by_offset(side: torch.Tensor, tree_x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(bins,) probability of passing on the left per bin of tree offset (NaN for a bin with no crossing)."""
    passed = side != SIDE_NONE
    b = torch.bucketize(tree_x.contiguous(), edges[1:-1].contiguous().to(tree_x.device))  # (E,) bin in [0, bins)
    bins = edges.numel() - 1
    n = torch.zeros(bins, device=side.device).index_add_(0, b, passed.float())
    k = torch.zeros(bins, device=side.device).index_add_(0, b, ((side == SIDE_LEFT) & passed).float())
    return torch.where(n > 0, k / n.clamp_min(1), torch.full_like(n, float("nan"))).cpu()


def side_calibration_error(policy_probs: torch.Tensor, demo_probs: torch.Tensor) -> float:
    """Mean over offset bins (where both are defined) of |p_left_policy(bin) - p_left_demos(bin)|."""
    ok = ~torch.isnan(policy_probs) & ~torch.isnan(demo_probs)
    return float((policy_probs[ok] - demo_probs[ok]).abs().mean()) if bool(ok.any()) else float("nan")


def energy_distance_1d(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| of two 1-D samples, exactly, in O(n log n).

    In one dimension it equals 2 * integral (F(t) - G(t))^2 dt (Szekely & Rizzo 2013), where F and G are the
    empirical distribution functions; NaN entries (no crossing) are dropped.
    """
    x, y = x[~torch.isnan(x)].double().cpu(), y[~torch.isnan(y)].double().cpu()
    if x.numel() == 0 or y.numel() == 0:
        return float("nan")
    pts, _ = torch.sort(torch.cat([x, y]))
    xs, ys = torch.sort(x).values, torch.sort(y).values
    F = torch.searchsorted(xs, pts[:-1], right=True).double() / xs.numel()
    G = torch.searchsorted(ys, pts[:-1], right=True).double() / ys.numel()
    return float(2.0 * ((F - G).pow(2) * (pts[1:] - pts[:-1])).sum())
