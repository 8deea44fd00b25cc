"""Small network builders shared by the policy classes."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def mish_written_out(x: torch.Tensor) -> torch.Tensor:
    """Mish as three vectorised ops, x * tanh(softplus(x))."""
    return x * torch.tanh(F.softplus(x))


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish, x * tanh(softplus(x)). On the CPU it is written out: the fused ``F.mish`` kernel of the pinned torch
    is not vectorised there, and the three vectorised ops take 0.6x its time forward and 0.6x forward and backward
    at (2048, 128) (``python benchmarks/speed.py --tables activation``). On CUDA the fused kernel is one launch."""
    return F.mish(x) if x.is_cuda else mish_written_out(x)


class MLP(nn.Module):
    """Linear layers with Mish between them; forward calls the functional ops directly.

    At batch size 1 a policy step is dominated by Python overhead, and calling ``F.linear`` on the weights
    avoids the per-submodule ``__call__`` machinery of ``nn.Sequential`` (see benchmarks/speed.py).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 256, num_layers: int = 2):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * num_layers + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = self.layers[-1]
        return F.linear(self.features(x), last.weight, last.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations (..., hidden_dim): everything but the output layer."""
        for layer in self.layers[:-1]:
            x = mish(F.linear(x, layer.weight, layer.bias))
        return x


def mlp(in_dim: int, out_dim: int, hidden_dim: int = 256, num_layers: int = 2) -> MLP:
    """``num_layers`` hidden layers of width ``hidden_dim`` with Mish, then a linear output layer."""
    return MLP(in_dim, out_dim, hidden_dim, num_layers)


LOG_2PI = math.log(2.0 * math.pi)


def diag_gaussian_log_prob(
    x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, dim_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """log N(x; mean, diag(exp(log_std)^2)) summed over the last dimension. Shapes broadcast; returns (...).

    With ``dim_mask`` (broadcastable to x, 1 = keep) only the kept dimensions are summed: the exact marginal
    density of those dimensions, since a diagonal Gaussian factorises."""
    z = (x - mean) * torch.exp(-log_std)
    terms = -0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI
    return (terms if dim_mask is None else terms * dim_mask).sum(-1)


def diag_gaussian_kl(
    mean_q: torch.Tensor, log_var_q: torch.Tensor, mean_p: torch.Tensor, log_var_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_q, var_q) || N(mean_p, var_p)) per dimension (closed form, no sum): (..., D)."""
    return 0.5 * (log_var_p - log_var_q + (log_var_q.exp() + (mean_q - mean_p).pow(2)) * torch.exp(-log_var_p) - 1.0)


def bounded_log_std(raw: torch.Tensor, min_std: float, max_std: float) -> torch.Tensor:
    """Map an unbounded network output to log of a standard deviation in [min_std, max_std] smoothly."""
    lo, hi = math.log(min_std), math.log(max_std)
    return lo + (hi - lo) * torch.sigmoid(raw)


def categorical_sample(logits: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, n) indices drawn from Cat(softmax(logits (B, K))) by the Gumbel-max trick.

    One uniform draw and an argmax: several times faster than ``torch.multinomial`` on the CPU for large B.
    """
    u = torch.rand(logits.shape[0], n, logits.shape[1], device=logits.device, dtype=logits.dtype, generator=generator)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
    return torch.argmax(logits[:, None, :] + gumbel, dim=-1)


def kmeans(x: torch.Tensor, k: int, seed: int, iterations: int = 50, max_points: int = 100_000) -> torch.Tensor:
    """(k, D) centres of ``x`` (N, D): k-means++ initialisation then Lloyd iterations, reproducible for a seed."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = x.detach().float().cpu()
    if x.shape[0] > max_points:  # a seeded subsample keeps the cost bounded on large datasets
        x = x[torch.randperm(x.shape[0], generator=g)[:max_points]]
    k = min(k, x.shape[0])
    centres = x[torch.randint(x.shape[0], (1,), generator=g)]
    for _ in range(1, k):
        d2 = torch.cdist(x, centres).pow(2).min(dim=1).values  # (N,)
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / len(d2))
        centres = torch.cat([centres, x[torch.multinomial(probs, 1, generator=g)]])
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(dim=1)  # (N,)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()[:, None]
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centres)  # an empty cluster keeps its centre
        if torch.allclose(new, centres):
            break
        centres = new
    return centres
