"""Buffers (BatchNorm running statistics) put back after a skipped step, in a fixed number of ops.

A NaN batch writes NaN into BatchNorm's running statistics during the forward pass, before anything
knows the step will be skipped. `BufferGuard.snapshot` keeps the buffers before the forward;
`restore_if(bad, ...)` puts them back when the device-side flag `bad` is true, with no host sync and
with the same handful of ops however many BatchNorm layers the model has.

`BufferGuard(model)` (what `fit` uses) moves each group of like buffers (same device and dtype, all
0-d or all not) once into one flat tensor and makes the model's buffers views of it, the way
optimizers' flat parameter buffers work: values, shapes, names and the state_dict stay the same, and
BatchNorm updates the views in place. A snapshot is then one multi-tensor copy of all the groups
into tensors kept for it (`torch._foreach_copy_`) and a restore one `torch.where(bad, saved, flat,
out=flat)` per group: three ops a step for a BatchNorm model (float statistics and int64 counters),
and no host work per buffer. Buffers that cannot be views of a flat tensor without changing what the model
means (ones that require grad, are not contiguous, or share memory with another tensor of the model)
are guarded as copies instead, like every buffer of `BufferGuard(model, flatten=False)`, which
`train_step` uses for a model that is not fit's to change: each step packs them into one tensor per
group (torch.cat, or torch.stack for 0-d ones such as `num_batches_tracked`) and a restore selects
with one torch.where per group and writes back with one torch._foreach_copy_.

The selection is a where, never arithmetic: a lerp or a 0/1 multiply cannot undo a statistic that
went NaN (NaN * 0 is NaN), and `a + (b - a)` is not always `b` in floating point. Buffers do not
require grad, so nothing here records autograd history (and no no_grad context costs host time).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn

_FLAT = "_nbtools_flat_buffers"  # marks the flat tensors made here (their views may be flattened again)


def like_groups(tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Tensors that pack into one flat tensor: same device and dtype, and all 0-d or all not."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype, t.dim() == 0), []).append(t)
    return list(groups.values())


def _pack(group: list[torch.Tensor]) -> torch.Tensor:
    if group[0].dim() == 0:
        return torch.stack(group)
    return torch.cat([b if b.dim() == 1 else b.reshape(-1) for b in group])


def views_of(flat: torch.Tensor, group: list[torch.Tensor]) -> list[torch.Tensor]:
    """Views of `flat` (a group's tensors one after the other) in the group's shapes."""
    if group[0].dim() == 0:
        return list(flat.unbind())
    parts = flat.split([b.numel() for b in group])
    return [p if b.dim() == 1 else p.view(b.shape) for p, b in zip(parts, group)]


def _slots(model: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """(module, name, buffer) for every buffer the model holds, shared ones once per holder."""
    return [(m, k, b) for m in model.modules() for k, b in m._buffers.items() if b is not None]


def _flattenable(model: nn.Module, slots: list[tuple[nn.Module, str, torch.Tensor]]) -> set[int]:
    """ids of the buffers that can become views of a flat tensor: plain, contiguous, not requiring
    grad, and sharing memory with no other buffer or parameter (a view would lose the link)."""
    own = list({id(b): b for _, _, b in slots}.values())
    ours = {id(b) for b in own if b._base is not None and getattr(b._base, _FLAT, False)}  # flattened before
    others = [b for b in own if id(b) not in ours] + list(model.parameters())
    storages = Counter(t.untyped_storage().data_ptr() for t in others if t.numel())
    return {
        id(b)
        for b in own
        if (b._base is None or id(b) in ours)
        and not b.requires_grad
        and b.layout == torch.strided
        and b.is_contiguous()
        and b.numel()
        and (id(b) in ours or storages[b.untyped_storage().data_ptr()] == 1)
    }


class BufferGuard:
    """Keeps a model's buffers so that a skipped step can put them back (module docstring)."""

    def __init__(self, model: nn.Module, flatten: bool = True) -> None:
        slots = _slots(model)
        flat_ids = _flattenable(model, slots) if flatten else set()
        self.flats: list[torch.Tensor] = []
        self.views: list[tuple[nn.Module, str, torch.Tensor]] = []
        views: dict[int, torch.Tensor] = {}
        for group in like_groups(list({id(b): b for _, _, b in slots if id(b) in flat_ids}.values())):
            flat = _pack(group).clone()  # a tensor of its own: the old buffers (or old flat) are let go
            setattr(flat, _FLAT, True)
            self.flats.append(flat)
            views.update({id(b): v for b, v in zip(group, views_of(flat, group))})
        for m, k, b in slots:
            if id(b) in views:
                m._buffers[k] = views[id(b)]
                self.views.append((m, k, views[id(b)]))
        self.saved = [torch.empty_like(f) for f in self.flats]  # snapshot() fills them
        self.copied = like_groups(list({id(b): b for _, _, b in slots if id(b) not in flat_ids}.values()))

    def intact(self) -> bool:
        """The model still holds the views (nothing replaced a buffer since the guard was made)."""
        return all(m._buffers.get(k) is v for m, k, v in self.views)

    def snapshot(self) -> list[torch.Tensor]:
        """The buffers' values now: one tensor per group. The flat groups' tensors are the guard's
        own, refilled at each call: a snapshot holds until the next one is taken."""
        if self.flats:
            torch._foreach_copy_(self.saved, self.flats)
        return self.saved + [_pack(g) for g in self.copied]

    def restore_if(self, bad: torch.Tensor, saved: list[torch.Tensor]) -> None:
        """Where `bad` (a () bool tensor) is true, give the buffers the values of `saved`, a
        snapshot, bit for bit; otherwise leave them as they are."""
        for f, s in zip(self.flats, saved):
            torch.where(bad, s, f, out=f)
        dst, src = [], []
        for g, s in zip(self.copied, saved[len(self.flats) :]):
            dst += g
            src += views_of(torch.where(bad, s, _pack(g)), g)
        if dst:
            torch._foreach_copy_(dst, src)
