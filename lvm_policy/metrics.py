"""Metrics that show whether a policy learned the modes: pure functions of per-episode outcomes.

Modes follow the convention of the ``envs`` package: an id in [0, M) per episode, -1 when the episode never
chose one. Shares are taken among the episodes whose mode is known (a crash before the decision is counted by
the success rate, not as a mode).
"""

from __future__ import annotations

import math

import torch


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (Wilson 1927); (nan, nan) when n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mode_counts(mode: torch.Tensor, num_modes: int) -> torch.Tensor:
    """(M,) float64 number of episodes of each mode; ids outside [0, M) (-1: none) are not counted."""
    known = (mode >= 0) & (mode < num_modes)
    return torch.bincount(mode[known].long().cpu(), minlength=num_modes)[:num_modes].double()


def mode_shares(mode: torch.Tensor, num_modes: int) -> list[float]:
    """Share of each mode among the episodes whose mode is known; NaNs when none is."""
    counts = mode_counts(mode, num_modes)
    total = float(counts.sum())
    return [float(c) / total if total > 0 else float("nan") for c in counts]


def total_variation(p: list[float], q: list[float]) -> float:
    """Total variation distance 0.5 * sum |p_m - q_m| between two distributions over the same modes."""
    if not p or any(math.isnan(x) for x in p) or any(math.isnan(x) for x in q):
        return float("nan")
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q))


def modes_covered(policy: list[float], demos: list[float], min_share: float = 0.01, fraction: float = 0.25) -> int:
    """How many modes of the demonstrations (share >= min_share) the policy reproduces in at least ``fraction``
    of their demonstration share."""
    return sum(1 for p, d in zip(policy, demos) if d >= min_share and not math.isnan(p) and p >= fraction * d)


def context_bin_edges(context: torch.Tensor, bins: int) -> list[float]:
    """Quantile edges (bins + 1) of the demonstrations' contexts: every bin holds about as many episodes."""
    c = context[~torch.isnan(context)].double().cpu()
    if c.numel() == 0:
        return []
    q = torch.quantile(c, torch.linspace(0, 1, bins + 1, dtype=torch.float64))
    return q.tolist()


def mode_shares_by_context(
    mode: torch.Tensor, context: torch.Tensor, edges: list[float], num_modes: int
) -> list[list[float]]:
    """(bins, M) mode shares per context bin (a row of NaN for a bin with no known mode)."""
    inner = torch.tensor(edges[1:-1], dtype=torch.float64)
    b = torch.bucketize(context.double().cpu().contiguous(), inner)  # (E,) bin in [0, bins)
    return [mode_shares(mode.cpu()[b == i], num_modes) for i in range(len(edges) - 1)]


def mode_calibration_error(policy_by_bin: list[list[float]], demo_by_bin: list[list[float]]) -> float:
    """Mean over context bins (where both are defined) of the total variation between the mode shares."""
    tvs = [total_variation(p, d) for p, d in zip(policy_by_bin, demo_by_bin)]
    tvs = [t for t in tvs if not math.isnan(t)]
    return sum(tvs) / len(tvs) if tvs else float("nan")


def energy_distance_1d(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| of two 1-D samples, exactly, in O(n log n).

    In one dimension it equals 2 * integral (F(t) - G(t))^2 dt (Szekely & Rizzo 2013), where F and G are the
    empirical distribution functions; NaN entries (no outcome) are dropped.
    """
    x, y = x[~torch.isnan(x)].double().cpu(), y[~torch.isnan(y)].double().cpu()
    if x.numel() == 0 or y.numel() == 0:
        return float("nan")
    pts, _ = torch.sort(torch.cat([x, y]))
    xs, ys = torch.sort(x).values, torch.sort(y).values
    F = torch.searchsorted(xs, pts[:-1], right=True).double() / xs.numel()
    G = torch.searchsorted(ys, pts[:-1], right=True).double() / ys.numel()
    return float(2.0 * ((F - G).pow(2) * (pts[1:] - pts[:-1])).sum())


def tv_noise_floor(
    shares: list[float], demo_episodes: int, policy_episodes: int, draws: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """(mean, 95th percentile) of the mode TV that a perfect policy shows by chance: the TV between the mode
    shares of ``policy_episodes`` and of ``demo_episodes`` episodes, both drawn from ``shares``."""
    g = torch.Generator().manual_seed(seed)
    p = torch.tensor(shares, dtype=torch.float64).clamp_min(0)
    if p.numel() == 0 or float(p.sum()) <= 0 or demo_episodes < 1 or policy_episodes < 1:
        return float("nan"), float("nan")
    a = torch.multinomial(p, demo_episodes * draws, replacement=True, generator=g).reshape(draws, demo_episodes)
    b = torch.multinomial(p, policy_episodes * draws, replacement=True, generator=g).reshape(draws, policy_episodes)
    fa = torch.nn.functional.one_hot(a, p.numel()).double().mean(1)  # (draws, M)
    fb = torch.nn.functional.one_hot(b, p.numel()).double().mean(1)
    tv = 0.5 * (fa - fb).abs().sum(1)
    return float(tv.mean()), float(torch.quantile(tv, 0.95))
