"""Group a stream of samples into chunks (B, ...) of one shape and dtype, copying as little as possible.

The fused checks in `scan.py` are fast on a chunk and slow sample by sample (each torch call has a
fixed host cost, larger than checking a 32^3 volume takes). Samples that sit next to each other in one
storage, as those of an in-memory tensor dataset do, become a chunk without a copy (one strided view);
others are stacked into a buffer that is reused, because a fresh 64 MB allocation page-faults and costs
more than the checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def _adjacent(prev: torch.Tensor, t: torch.Tensor) -> bool:
    """True when t starts right where prev ends, in the same storage, both contiguous."""
    return (
        t.is_contiguous()
        and t.untyped_storage().data_ptr() == prev.untyped_storage().data_ptr()
        and t.data_ptr() == prev.data_ptr() + prev.nbytes
    )


class Chunker:
    """Collects (name, tensor) samples and calls `emit(names, chunk)` with chunks of about `max_bytes`.

    A chunk holds consecutive samples of one shape, dtype and device; a sample of another kind, or
    one that would pass `max_bytes`, starts a new chunk. A sample bigger than `max_bytes` is a chunk
    of one. The chunk passed to `emit` is only valid during the call (its buffer is reused).
    """

    def __init__(self, emit: Callable[[Sequence, torch.Tensor], None], max_bytes: int) -> None:
        self.emit, self.max_bytes = emit, max_bytes
        self.names: list = []
        self.samples: list[torch.Tensor] = []
        self.contiguous = True  # all samples so far adjacent in one storage
        self.buf: torch.Tensor | None = None

    def add(self, name, t: torch.Tensor) -> None:
        if self.samples:
            first = self.samples[0]
            if (
                t.shape != first.shape
                or t.dtype != first.dtype
                or t.device != first.device
                or (len(self.samples) + 1) * t.nbytes > self.max_bytes
            ):
                self.flush()
            else:
                self.contiguous = self.contiguous and _adjacent(self.samples[-1], t)
        if not self.samples:
            self.contiguous = t.is_contiguous()
        self.samples.append(t)
        self.names.append(name)

    def flush(self) -> None:
        if not self.samples:
            return
        first, k = self.samples[0], len(self.samples)
        if k == 1:
            chunk = first.unsqueeze(0)
        elif self.contiguous:
            chunk = first.as_strided(
                (k, *first.shape), (first.numel(), *first.stride()), first.storage_offset()
            )
        else:
            buf = self.buf
            if (
                buf is None
                or len(buf) < k
                or buf.shape[1:] != first.shape
                or buf.dtype != first.dtype
                or buf.device != first.device
            ):
                per = max(k, self.max_bytes // max(1, first.nbytes))
                buf = self.buf = torch.empty((per, *first.shape), dtype=first.dtype, device=first.device)
            chunk = torch.stack(self.samples, out=buf[:k])
        names = self.names
        self.names, self.samples = [], []
        self.emit(names, chunk)
