"""Policy classes behind one interface; importing this package registers all of them.

Every module of this package is imported here, so a new class is one new file: a ``@register_policy`` class with
its config dataclass. The training command's options, the loader and compare_baselines' rows come from the registry.
"""

import importlib
import pkgutil
from collections.abc import Sequence

from lvm_policy.policies.base import Policy, PolicyConfig, list_policies, load_policy, policy_class, register_policy

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

CONFIG_CLASSES = {name: policy_class(name).config_class for name in list_policies()}


def make_policy(
    name: str,
    obs_dim: int,
    act_dim: int,
    config: PolicyConfig | None = None,
    action_low: float | Sequence[float] = -1.0,
    action_high: float | Sequence[float] = 1.0,
    image_slots: Sequence | None = None,
) -> Policy:
    """Build a registered policy by name, with its default config unless one is given; the action box is
    [action_low, action_high] (scalars or one bound per dimension); ``image_slots`` (lvm_policy.vision) say where
    camera images lie in the flat observation."""
    cls = policy_class(name)
    return cls(
        obs_dim,
        act_dim,
        config or cls.config_class(),
        action_low=action_low,
        action_high=action_high,
        image_slots=image_slots,
    )


__all__ = ["CONFIG_CLASSES", "Policy", "PolicyConfig", "list_policies", "load_policy", "make_policy", "register_policy"]
