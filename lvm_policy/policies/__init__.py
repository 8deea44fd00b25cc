"""Policy classes behind one interface; importing this package registers all of them."""

from lvm_policy.policies import autoregressive, gaussian, gmm, latent  # noqa: F401  (registration)
from lvm_policy.policies.base import Policy, PolicyConfig, list_policies, load_policy, policy_class, register_policy

CONFIG_CLASSES = {name: policy_class(name).config_class for name in list_policies()}


def make_policy(name: str, obs_dim: int, act_dim: int, config: PolicyConfig | None = None) -> Policy:
    """Build a registered policy by name, with its default config unless one is given."""
    cls = policy_class(name)
    return cls(obs_dim, act_dim, config or cls.config_class())


__all__ = ["CONFIG_CLASSES", "Policy", "PolicyConfig", "list_policies", "load_policy", "make_policy", "register_policy"]
