"""The same fit loop under torchrun: one process per device, PyTorch DistributedDataParallel.

`fit` asks `Distributed.from_env()` once. Outside torchrun it is a world of one and every method
is a no-op, so single-process training runs the same code. Under torchrun (RANK, WORLD_SIZE and
LOCAL_RANK set) it joins the process group (NCCL on GPUs, gloo on CPU) and:
- wraps the model in DDP (again after an unfreeze, since DDP only reduces what was trainable when
  it was built), skipping the gradient all-reduce on all but the last accumulation micro-batch;
- shards each epoch's permutation with DistributedSampler (set_epoch every epoch, resume included);
- all-reduces the skip flag of every step (a NaN on one rank skips the step on all) and the
  telemetry of every interval; gathers validation predictions so every rank computes the same
  metrics and takes the same early-stopping decision;
- lets rank 0 alone write checkpoints, metrics.json and figures, and show progress; every rank's
  RNG states go into the checkpoint, so a resumed DDP run continues each rank's random stream.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nbtools.step.buffers import BufferGuard

log = logging.getLogger(__name__)


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        """Join torchrun's process group (if launched by torchrun); a world of one otherwise."""
        if not launched_by_torchrun():
            return cls()
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            dist.init_process_group(backend)
            # We joined it, so we leave it: a process that exits with the group's threads still running
            # can abort in their destructors ("terminate called without an active exception").
            atexit.register(_leave_process_group)
            log.info(
                "joined process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend
            )
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to run forward/backward through: DDP under torchrun, the model itself otherwise.
        Checkpoints always save the bare model, so its keys carry no `module.` prefix."""
        if not self.active:
            return model
        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def any(self, flag: torch.Tensor) -> torch.Tensor:
        """A () float 0.0 / 1.0 flag: 1.0 on every rank if it is 1.0 on any (for the skip decision),
        in place. No host sync."""
        if self.active:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.active:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values /= self.world
        return values

    def agree(self, decision: bool) -> bool:
        """Rank 0's host-side decision (e.g. 'time for a checkpoint'), the same on every rank."""
        if not self.active:
            return decision
        box = [decision]
        dist.broadcast_object_list(box, src=0)
        return bool(box[0])

    def gather_objects(self, obj) -> list:
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate each rank's tensor along dim 0 (ranks may hold different lengths)."""
        if not self.active:
            return t
        sizes = [torch.zeros((), dtype=torch.int64, device=t.device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor(len(t), device=t.device))
        longest = int(max(sizes))
        padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[: len(t)] = t
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: int(n)] for p, n in zip(parts, sizes)])

    def broadcast_buffers(self, buffers: BufferGuard) -> None:
        """Give every rank rank 0's float buffers (BatchNorm running statistics): those of the model
        `buffers` guards.

        DDP does this at the start of each forward; doing it after each step too keeps the ranks'
        buffers, and so their EMA copies and validation predictions, identical at every moment. The
        flat tensors the buffers are views of go as they are, the buffers kept as copies in one
        collective of their own.
        """
        if not self.active:  # before any no_grad context: a world of one pays nothing here
            return
        rest = [b for group in buffers.copied for b in group if b.is_floating_point()]
        with torch.no_grad():
            for flat in buffers.flats:
                if flat.is_floating_point():
                    dist.broadcast(flat, src=0)
            if rest:
                packed = torch.cat([b.reshape(-1) for b in rest])
                dist.broadcast(packed, src=0)
                for b, part in zip(rest, packed.split([b.numel() for b in rest])):
                    b.copy_(part.view_as(b))

    def no_sync(self, ddp_model: nn.Module, last: bool):
        """Skip DDP's gradient all-reduce for accumulation micro-batches before the last one."""
        if self.active and not last and isinstance(ddp_model, DistributedDataParallel):
            return ddp_model.no_sync()
        return contextlib.nullcontext()


SINGLE_PROCESS = Distributed()  # the world of one that plain (non-torchrun) training runs in
