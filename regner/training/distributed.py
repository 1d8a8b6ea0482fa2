"""Data-parallel training without DDP's wrapper.

Regularizers run several forwards and backwards per step (VAT's power iteration, FGM's second
pass, the gradient penalty's double backward), which DDP's hook-based reducer does not allow. So
each rank runs the regularizer's step on its own shard, and then the gradients of all ranks are
averaged with one flattened all-reduce, the loss riding along so every rank sees the same mean
loss (a NaN on any rank stops all of them together). Ranks start from identical weights
(broadcast from rank 0) and apply identical updates, so they stay in sync; rank 0 alone writes.
Launch with ``torchrun --nproc_per_node N -m regner.cli train ...`` or ``accelerate launch``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def env_rank() -> int:
    """This process's rank as set by torchrun/accelerate (0 when not launched data-parallel)."""
    return int(os.environ.get("RANK", "0"))


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    joined: bool = False  # a member of a process group (torchrun launched it, even with one process)

    @classmethod
    def from_env(cls, device_type: str) -> Distributed:
        """Join the process group when launched by torchrun/accelerate (``WORLD_SIZE`` > 1, or any world size
        under torchrun, whose collectives then run over one process: the NCCL path on a single GPU)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank) if device_type == "cuda" else torch.device("cpu")
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, device, joined=True)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.joined

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batches: list[list[int]]) -> list[list[int]]:
        """This rank's batches: every rank gets the same number, in the same global order."""
        if not self.enabled:
            return batches
        usable = len(batches) // self.world_size * self.world_size
        return batches[:usable][self.rank :: self.world_size]

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        if self.enabled:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def average_gradients(self, parameters: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        """Average gradients (one all-reduce) and return the mean loss over ranks."""
        if not self.enabled:
            return loss
        for p in parameters:
            if p.grad is None:  # keep the flattened layout identical on every rank
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in parameters]
        flat = torch.cat([g.reshape(-1).float() for g in grads] + [loss.detach().reshape(1).float().to(grads[0].device)])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        return flat[-1]

    def broadcast_object(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's value of ``flag`` on every rank."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def in_sync(self, module: torch.nn.Module) -> bool:
        """True when every rank holds bit-identical weights (checked by exact checksums)."""
        if not self.enabled:
            return True
        with torch.no_grad():
            params = [p.detach().double() for p in module.parameters()]
            mine = torch.stack([sum(p.sum() for p in params), sum(p.abs().sum() for p in params)]).to(self.device)
        gathered = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)
        return all(torch.equal(g, gathered[0]) for g in gathered)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
