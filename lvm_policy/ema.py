"""Exponential moving average of a policy's weights, the copy that is evaluated and saved.

The gradient steps of a small behavioural-cloning batch move the rare, decisive states (the one step per
episode where the demonstrator picks a side) by a few samples at a time, so the raw weights' side share
wanders from one evaluation to the next. An average over the last ~1/(1 - decay) steps keeps the fit and
drops that noise; diffusion_policy, LeRobot and robomimic evaluate such an average for the same reason.
"""

from __future__ import annotations

import copy

import torch

from lvm_policy.policies import Policy


class WeightAverage:
    """``average`` follows ``policy`` with decay min(decay, (1 + t) / (10 + t)) at update t.

    The warm-up term lets the average forget the random initialisation within the first few hundred steps
    instead of carrying it for ~1/(1 - decay) steps. Buffers (the normalisers) are copied, not averaged.
    """

    def __init__(self, policy: Policy, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.average = copy.deepcopy(policy).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, policy: Policy) -> None:
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for avg, p in zip(self.average.parameters(), policy.parameters()):
            avg.lerp_(p, 1.0 - d)
        for avg, b in zip(self.average.buffers(), policy.buffers()):
            avg.copy_(b)
        self.updates += 1

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The averaged weights, for a training checkpoint (safetensors)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.average.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        self.average.load_state_dict(tensors, strict=True)
        self.updates = updates
