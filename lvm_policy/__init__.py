"""lvm_policy: multimodal imitation learning with latent-variable policies."""

from lvm_policy.policies import Policy, list_policies, load_policy, make_policy

__version__ = "0.1.0"
__all__ = ["Policy", "list_policies", "load_policy", "make_policy"]
