"""lvm_policy: multimodal imitation learning with latent-variable policies."""

__version__ = "0.1.0"
