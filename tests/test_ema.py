"""The weight average that training evaluates and saves."""

import pytest
import torch

from lvm_policy.ema import WeightAverage
from lvm_policy.policies import make_policy


def _policy(seed: int):
    torch.manual_seed(seed)
    return make_policy("gaussian", 3, 2)


def test_average_follows_the_warmed_up_decay():
    policy, decay = _policy(0), 0.9
    avg = WeightAverage(policy, decay)
    expected = [p.detach().clone() for p in policy.parameters()]
    for t in range(30):
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(torch.randn_like(p))
        avg.update(policy)
        d = min(decay, (1 + t) / (10 + t))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, policy.parameters())]
    for e, a in zip(expected, avg.average.parameters()):
        torch.testing.assert_close(a, e)


def test_zero_decay_is_the_raw_weights_and_buffers_are_copied():
    policy = _policy(1)
    avg = WeightAverage(policy, 0.0)
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(3.0)
    policy.fit_normalizer(torch.randn(100, 3) * 5 + 2, torch.randn(100, 2))
    avg.update(policy)
    for (k, a), b in zip(avg.average.state_dict().items(), policy.state_dict().values()):
        assert torch.equal(a, b), k
    assert not any(p.requires_grad for p in avg.average.parameters())


def test_decay_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_policy(2), 1.0)
