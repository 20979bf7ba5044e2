"""What does the per-term gradient probe cost? Run: python bench/term_grads.py [--rounds 5]

A small 3D net with two heads (seed 002's shape: a 3x3 covariance by MSE, the source count K by
cross-entropy, MultiTaskLoss weights 1 and 0.05): nbtools' ResNet-10-3D trunk at half width on 32^3
volumes, batch 4, fp32 on the CPU. A step is forward, MultiTaskLoss.with_terms, backward, Adam step.
The probed step runs TermGradProbe between the loss and the backward (autograd.grad with retain_graph,
so no extra forward), at each scope: "nearest" (the shared parameters nearest the heads, here the last
BatchNorm's), "last" (the nearest shared layer with a weight of 2+ dims: a conv) and "all" (the trunk).

Steps of the four kinds alternate one by one on the same model (round after round), so drift of the
machine's speed hits all alike. Step times are medians. The probe's cost: its own time (timed around the
call) over a plain step's, both medians; and, as a check, the median over neighbouring pairs of
probed / plain - 1 (noisier: it is the difference of two whole steps). At one probe per log interval of
`log_every` steps the run pays cost / log_every (the target: <= 3 % at log_every=10, i.e. a probe <= 30 %
of a step).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import nbtools as nbt
from nbtools.losses import MultiTaskLoss
from nbtools.step.term_grads import SCOPES, TermGradProbe


class TwoHeads(nn.Module):
    def __init__(self, width: float) -> None:
        super().__init__()
        self.trunk = nbt.models.resnet3d(depth=10, num_classes=2, width=width)
        c = self.trunk.fc.in_features
        self.cov, self.k = nn.Linear(c, 9), nn.Linear(c, 4)

    def forward(self, x):
        z = self.trunk.forward_features(x)
        return {"cov": self.cov(z).reshape(-1, 3, 3), "k": self.k(z)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=6, help="steps of each kind per round")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TwoHeads(args.width)
    loss_fn = MultiTaskLoss({"cov": (nn.MSELoss(), 1.0), "k": (nn.CrossEntropyLoss(), 0.05)})
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 1, args.size, args.size, args.size)
    y = {"cov": torch.randn(args.batch, 3, 3), "k": torch.randint(0, 4, (args.batch,))}
    probes = {scope: TermGradProbe(model, scope) for scope in SCOPES}

    def step(probe: TermGradProbe | None) -> tuple[float, float]:
        """(the step's time, the probe's share of it) in seconds."""
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total, terms = loss_fn.with_terms(model(x), y)
        t1 = t2 = time.perf_counter()
        if probe is not None:
            found = probe({n: terms[n] for n in loss_fn.names})
            found.norms.sum().item()  # wait for it (on a GPU the record's one read does this)
            t2 = time.perf_counter()
        total.backward()
        opt.step()
        return time.perf_counter() - t0, t2 - t1

    for kind in (None, *SCOPES):  # warm-up, and the probes find their parameters
        step(probes.get(kind))
    times: dict[str, list[tuple[float, float]]] = {"plain": [], **{scope: [] for scope in SCOPES}}
    for _ in range(args.rounds):
        for _ in range(args.steps):
            times["plain"].append(step(None))
            for scope in SCOPES:
                times[scope].append(step(probes[scope]))
    plain = [t for t, _ in times["plain"]]
    params = sum(p.numel() for p in model.parameters())
    print(
        f"two-head ResNet-10-3D (width {args.width}, {params / 1e6:.2f} M params) at {args.size}^3, batch "
        f"{args.batch}, {args.threads} thread(s), {args.rounds} x {args.steps} steps of each kind"
    )
    print(f"  plain step              {statistics.median(plain) * 1e3:8.1f} ms")
    for scope in SCOPES:
        probe_ms = statistics.median(p for _, p in times[scope])
        direct = probe_ms / statistics.median(plain)
        paired = statistics.median(t / p for (t, _), p in zip(times[scope], plain)) - 1
        print(
            f"  step + probe {scope:7s}    {statistics.median(t for t, _ in times[scope]) * 1e3:8.1f} ms   "
            f"probe {probe_ms * 1e3:6.1f} ms = {direct:6.1%} of a step (paired steps: {paired:+6.1%}), "
            f"{direct / 10:5.2%} of the run at log_every=10   [{probes[scope].describe()}]"
        )


if __name__ == "__main__":
    main()
