"""Training across processes: ``torchrun --nproc-per-node N scripts/train_bc.py ...`` runs the same training loop
in N processes with DistributedDataParallel (gloo on the CPU, nccl on CUDA, one GPU per process).

Every rank draws the same global minibatch indices from the same seeded generator and keeps its own slice of
them, so the N shards together are the single-process minibatch; DDP averages the gradients, which is then the
gradient of the mean loss over the global batch. For a class whose loss draws no random numbers the final
weights equal a single-process run's with the same global batch, up to float rounding (tested with 2 ranks on
the CPU); classes that draw noise in their loss (the lvm's latents, flow's and diffusion's noise) draw it per
rank, so they match in distribution. Rank 0 alone writes checkpoints, logs and evaluations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from lvm_policy.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_from_env(device: torch.device) -> tuple[Ranks, torch.device]:
    """The ranks torchrun describes in the environment (one process alone: Ranks()), with the process group
    started, and this rank's device (its own GPU under CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), device
    import torch.distributed as dist

    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        if torch.cuda.device_count() < ranks.local_rank + 1:
            raise ConfigError(f"rank {ranks.rank} needs GPU {ranks.local_rank}; torch sees {torch.cuda.device_count()}")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    elif os.environ.get("MASTER_ADDR", "127.0.0.1") in LOOPBACK:
        # gloo otherwise picks the interface of the machine's host name: keep a one-machine run on loopback
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def shard(indices: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """This rank's contiguous slice of the global minibatch indices (B,) -> (B / world,)."""
    if not ranks.distributed:
        return indices
    B = indices.shape[0]
    if B % ranks.world:
        raise ConfigError(f"the minibatch ({B}) must divide evenly among {ranks.world} processes")
    return indices.view(ranks.world, B // ranks.world)[ranks.rank]


class LossModule(torch.nn.Module):
    """The policy's loss as a module's forward, which is what DistributedDataParallel wraps."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, obs, act, mask):
        return self.policy.loss(obs, act, mask)


def wrap(policy: torch.nn.Module, ranks: Ranks, device: torch.device):
    """The loss to call each step: ``policy.loss`` in one process, its DDP-wrapped form in several."""
    if not ranks.distributed:
        return policy.loss
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: some classes leave networks out of some losses (the lvm's scopes)
    return DistributedDataParallel(LossModule(policy), device_ids=ids, find_unused_parameters=True)


def finish(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
