"""Buffers (BatchNorm running statistics) put back after a skipped step, in a fixed number of ops.

A NaN batch writes NaN into BatchNorm's running statistics during the forward pass, before anything
knows the step will be skipped. `snapshot` keeps the buffers before the forward; `restore_if(bad, ...)`
puts them back when the device-side flag `bad` is true, with no host sync and with the same handful
of ops however many BatchNorm layers the model has: the buffers are packed into one flat tensor per
group of like buffers (torch.cat, or torch.stack for 0-d ones such as `num_batches_tracked`),
selected with one torch.where per group, and written back with one torch._foreach_copy_.

The selection is a where, never arithmetic: a lerp or a 0/1 multiply cannot undo a statistic that
went NaN (NaN * 0 is NaN), and `a + (b - a)` is not always `b` in floating point.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _groups(buffers: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Buffers that pack into one tensor: same device and dtype, and all 0-d or all not."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for b in buffers:
        groups.setdefault((b.device, b.dtype, b.dim() == 0), []).append(b)
    return list(groups.values())


def _pack(group: list[torch.Tensor]) -> torch.Tensor:
    if group[0].dim() == 0:
        return torch.stack(group)
    return torch.cat([b if b.dim() == 1 else b.reshape(-1) for b in group])


def _unpack(flat: torch.Tensor, group: list[torch.Tensor]) -> list[torch.Tensor]:
    if group[0].dim() == 0:
        return list(flat.unbind())
    parts = flat.split([b.numel() for b in group])
    return [p if b.dim() == 1 else p.view(b.shape) for p, b in zip(parts, group)]


def snapshot(buffers: Sequence[torch.Tensor]) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    """The buffers' values now: (group, packed copy) pairs, one op per group. Buffers do not require
    grad, so nothing here records autograd history (and no no_grad context costs host time)."""
    return [(g, _pack(g)) for g in _groups(buffers)]


def restore_if(bad: torch.Tensor, saved: list[tuple[list[torch.Tensor], torch.Tensor]]) -> None:
    """Where `bad` (a () bool tensor) is true, give the buffers of `snapshot(buffers)` back the
    values they had then (bit for bit); otherwise leave them as they are."""
    dst, src = [], []
    for g, s in saved:
        dst += g
        src += _unpack(torch.where(bad, s, _pack(g)), g)
    if dst:
        torch._foreach_copy_(dst, src)
