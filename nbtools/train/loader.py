"""Data order that a resumed run can reproduce exactly, down to the batch inside an epoch."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """An independent 63-bit seed per (run seed, epoch, stream)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class EpochBatchSampler(Sampler[list[int]]):
    """The batches of one epoch: a permutation drawn from (seed, epoch) alone, never from the global
    RNG, so epoch e has the same order in a straight run and a resumed one. `start_batch` skips the
    batches a mid-epoch checkpoint already trained on."""

    def __init__(
        self, n: int, batch_size: int, seed: int, epoch: int, shuffle: bool, drop_last: bool, start_batch=0
    ):
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch

    def num_batches(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        for b in range(self.start_batch, self.num_batches()):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]


def make_loader(
    data: Dataset,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool,
    start_batch: int = 0,
) -> DataLoader:
    if isinstance(data, DataLoader):
        raise TypeError(
            "fit takes a Dataset, not a DataLoader: it builds the loader itself from TrainConfig.batch_size "
            "and num_workers so that a resumed run sees the same batches; pass loader.dataset"
        )
    n = len(data)
    # Training drops a ragged last batch (a batch of 1 breaks BatchNorm); every sample is still seen
    # over the epochs because the order changes each epoch.
    drop_last = shuffle and n > batch_size
    sampler = EpochBatchSampler(n, batch_size, seed, epoch, shuffle, drop_last, start_batch)
    return DataLoader(
        data,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        # The loader draws worker seeds from this generator, not from the global RNG that a
        # checkpoint restores; workers get per-epoch seeds.
        generator=torch.Generator().manual_seed(epoch_seed(seed, epoch, stream=1)),
    )
