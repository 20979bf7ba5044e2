"""Data order that a resumed run reproduces exactly, down to the batch inside an epoch, on one
process or sharded across torchrun ranks; and the DataLoader arguments for the device."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from nbtools.data.checked import CheckedSamples, collate_checked


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """An independent 63-bit seed per (run seed, epoch, stream)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class TrainBatches(Sampler[list[int]]):
    """The training batches of one epoch on one rank.

    The permutation comes from DistributedSampler (seed + epoch via set_epoch, never the global
    RNG), so epoch e has the same order in a straight run and a resumed one; rank r takes every
    world-th index. A ragged last batch is dropped when the shard holds more than one batch (a batch
    of 1 breaks BatchNorm); every sample is still seen over the epochs as the order changes.
    `start_batch` skips the batches a mid-epoch checkpoint already trained on.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank=0, world=1, start_batch=0):
        self.shard = DistributedSampler(
            range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.shard.set_epoch(epoch)
        self.batch_size, self.start_batch = batch_size, start_batch

    def num_batches(self) -> int:
        per_rank = len(self.shard)
        return per_rank // self.batch_size if per_rank > self.batch_size else min(1, per_rank)

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.shard)
        for b in range(self.start_batch, self.num_batches()):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]


class EvalBatches(Sampler[list[int]]):
    """Every index once, in order; rank r takes r, r + world, ... (no padding, so no sample is
    counted twice when the ranks' predictions are gathered)."""

    def __init__(self, n: int, batch_size: int, rank=0, world=1):
        self.indices = list(range(rank, n, world))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(len(self)):
            yield self.indices[b * self.batch_size : (b + 1) * self.batch_size]


def default_workers(device_type: str, cpus: int | None = None) -> int:
    """Loader processes when none are asked for: on a GPU one per CPU core, up to 8 (Colab gives 2 to
    12 cores), so decoding and augmenting overlap the GPU's step; on a CPU none, as the step itself
    needs every core there. cpus: the cores this process has (default: the machine's, shared by
    torchrun's LOCAL_WORLD_SIZE processes)."""
    if device_type != "cuda":
        return 0
    if cpus is None:
        cpus = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, cpus))


def loader_kwargs(num_workers: int | None, device_type: str, persistent: bool = False) -> dict:
    """The DataLoader arguments for a device: `num_workers` (None: `default_workers`), pinned host
    memory on CUDA (asynchronous copies), and with workers, `prefetch_factor` batches each in flight
    and, when `persistent`, workers kept from one pass over the data to the next.

    Training loaders are never persistent: a resumed run must draw each epoch's worker seeds afresh
    from its loader generator, as the straight run did, or the augmentations would differ."""
    workers = default_workers(device_type) if num_workers is None else num_workers
    kwargs: dict = {"num_workers": workers, "pin_memory": device_type == "cuda"}
    if workers > 0:
        kwargs.update(persistent_workers=persistent, prefetch_factor=4 if device_type == "cuda" else 2)
    return kwargs


def make_loader(
    data: Dataset, batches: Sampler, num_workers: int | None, pin_memory: bool, seed: int, persistent=False
) -> DataLoader:
    """pin_memory: the batches go to a CUDA device (see `loader_kwargs`)."""
    if isinstance(data, DataLoader):
        raise TypeError(
            "fit takes a Dataset, not a DataLoader: it builds the loader itself from TrainConfig.batch_size "
            "and num_workers so that a resumed run sees the same batches; pass loader.dataset"
        )
    # CheckedSamples: a file that fails to load, a batch of mixed shapes or a label outside the classes
    # is an error naming the sample's index and file (nbtools.data.checked)
    return DataLoader(
        CheckedSamples(data),
        batch_sampler=batches,
        collate_fn=collate_checked,
        # The loader draws worker seeds from this generator, not from the global RNG that a
        # checkpoint restores; workers get per-epoch seeds.
        generator=torch.Generator().manual_seed(seed),
        **loader_kwargs(num_workers, "cuda" if pin_memory else "cpu", persistent),
    )
