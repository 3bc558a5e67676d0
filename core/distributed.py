"""One run over several processes: DistributedDataParallel as torchrun starts it (core.launcher).

torchrun (``python -m torch.distributed.run``) starts ``nproc`` copies of a run's process with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment. :func:`from_env` joins them into
one process group: NCCL with one GPU per rank (``cuda:LOCAL_RANK``) on CUDA, gloo on the CPU.

``train.batch_size`` stays the global batch (Goyal et al. 2017's linear scaling rule and the
presets keep their meaning): every rank draws the same global batch (the batcher is seeded alike
on all ranks) and keeps its contiguous shard (:meth:`Dist.shard`; sizes differ by at most one).
Rank r's loss is its shard's mean times ``w_r = n_r * N / B`` (n_r of the B examples, N ranks):
DDP averages the gradients over the ranks, so the update is (1/N) sum_r w_r grad(mean_r) =
grad of the mean over the global batch, the one-process gradient, for equal and unequal shards
alike (a term that does not depend on the examples, such as a penalty, gets weight
sum_r n_r / B = 1 too). The N-process trajectory thus equals the one-process one up to the
order of the reductions. Batch normalisation is the exception: each rank normalises with its
shard's statistics (and DDP broadcasts rank 0's running statistics), so a BN model's trajectory
differs from one process over the global batch.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch

__all__ = ["Dist", "from_env", "world_size_from_env"]


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when the process was not started by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass
class Dist:
    """The process group of a run: this process's rank among ``world`` ranks."""

    rank: int
    local_rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the one rank that writes events, status and checkpoints and runs the probes."""
        return self.rank == 0

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's contiguous part of a global batch (x: (B, ...), y: (B, ...)) and the weight
        ``w_r = n_r * N / B`` its mean loss takes so that DDP's average is the global batch's
        gradient. Shards differ by at most one example; every rank gets one when B >= N (the
        preflight requires that of every batch: core.launcher.check_launch)."""
        b = x.shape[0]
        lo, hi = (self.rank * b) // self.world, ((self.rank + 1) * b) // self.world
        return x[lo:hi], y[lo:hi], (hi - lo) * self.world / b

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model inside DistributedDataParallel (it broadcasts rank 0's weights now)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, output_device=ids[0] if ids else None)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce ``t`` in place (sum over the ranks); returns it."""
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def from_env(device: torch.device, timeout_s: Optional[float] = None) -> Optional[Dist]:
    """Join torchrun's process group (None when this process runs alone). On CUDA each rank takes
    the GPU ``LOCAL_RANK`` of those it sees, with NCCL; on the CPU gloo. ``timeout_s`` bounds a
    collective that waits for a rank (default: ``HEUR_DIST_TIMEOUT_S``, else 30 minutes: rank 0
    may spend that long in a probe or an evaluation while the others wait)."""
    world = world_size_from_env()
    if world <= 1:
        return None
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    timeout_s = timeout_s or float(os.environ.get("HEUR_DIST_TIMEOUT_S") or 1800)
    kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s)}
    if backend == "nccl":
        kwargs["device_id"] = device
    dist.init_process_group(**kwargs)
    return Dist(rank=rank, local_rank=local, world=world, device=device)
